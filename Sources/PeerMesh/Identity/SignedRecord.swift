import Crypto
import Foundation

/// Canonical bytes signed by a node: the signer's Ed25519 public key, the body, and the signature over
/// `"peermesh/record/v1" ‖ body`. Wire layout: `signer[32] ‖ length:UInt16 ‖ body ‖ signature[64]`.
///
/// A signed record says nothing about who *should* have signed it: the type that decodes the body
/// (`VerifiedLocation`) checks that the signer is the node the body names.
public struct SignedRecord: Hashable, Sendable {
    /// The signer's raw Ed25519 public key (32 bytes).
    public let signer: [UInt8]
    /// The canonical body.
    public let body: [UInt8]
    /// Ed25519 signature (64 bytes).
    public let signature: [UInt8]

    static let domain = Array("peermesh/record/v1".utf8)

    public init(signer: [UInt8], body: [UInt8], signature: [UInt8]) {
        self.signer = signer
        self.body = body
        self.signature = signature
    }

    static func signedBytes(of body: [UInt8]) -> [UInt8] {
        domain + body
    }

    /// The id of the node whose key signed this record (whether or not the signature is valid).
    public var signerID: MeshKey? {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: signer) else { return nil }
        return MeshKey(nodePublicKey: key)
    }

    /// True when `signature` is a valid Ed25519 signature by `signer` over the body.
    public var isValid: Bool {
        guard signature.count == 64, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: signer) else {
            return false
        }
        return key.isValidSignature(signature, for: Self.signedBytes(of: body))
    }

    /// Bytes on the wire.
    public var wireSize: Int { 32 + 2 + body.count + 64 }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(raw: signer)
        writer.write(UInt16(body.count))
        writer.write(raw: body)
        writer.write(raw: signature)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(MeshDecodingError) {
        var reader = ByteReader(bytes)
        let signer = try reader.read(count: 32)
        let length = Int(try reader.readUInt16())
        let body = try reader.read(count: length)
        let signature = try reader.read(count: 64)
        guard reader.isAtEnd else { throw MeshDecodingError("trailing bytes after a signed record") }
        self.init(signer: signer, body: body, signature: signature)
    }
}
