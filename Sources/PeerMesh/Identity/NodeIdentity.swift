import Crypto
import Foundation

/// A node's long-lived identity: an Ed25519 key pair. The node's id in the mesh is
/// `MeshKey(nodePublicKey:)`, the SHA-256 of its public key, so a node cannot choose where it lands in
/// the key space and cannot claim another node's id without that node's private key.
public struct NodeIdentity: Sendable {
    public let privateKey: Curve25519.Signing.PrivateKey
    /// The node id: SHA-256 of the public key.
    public let id: MeshKey

    public init(privateKey: Curve25519.Signing.PrivateKey = .init()) {
        self.privateKey = privateKey
        self.id = MeshKey(nodePublicKey: privateKey.publicKey)
    }

    /// A reproducible identity from 32 seed bytes (simulations and tests; production nodes use `init()`
    /// and keep the key on disk).
    public init(seed: [UInt8]) throws {
        try self.init(privateKey: Curve25519.Signing.PrivateKey(rawRepresentation: seed))
    }

    public var publicKey: Curve25519.Signing.PublicKey { privateKey.publicKey }

    /// Signs `body` (canonical bytes) under the record domain.
    public func sign(body: [UInt8]) -> SignedRecord {
        let signature = try! privateKey.signature(for: SignedRecord.signedBytes(of: body))
        return SignedRecord(signer: Array(publicKey.rawRepresentation), body: body, signature: Array(signature))
    }
}
