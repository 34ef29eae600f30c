import Crypto
import Foundation

/// Mutual authentication of a node-to-node link, in three messages:
///
/// 1. initiator → responder: `hello(initiatorKey, initiatorNonce)`
/// 2. responder → initiator: `challenge(responderKey, responderNonce, proof(.responder))`
/// 3. initiator → responder: `proof(.initiator)`
///
/// Both proofs cover the same transcript — `"peermesh/link/v1" ‖ initiatorKey ‖ responderKey ‖
/// initiatorNonce ‖ responderNonce` — and carry two things: an HMAC-SHA256 under the mesh secret (the
/// sender is a member of this mesh) and an Ed25519 signature (the sender holds the private key of the
/// node id it claims). The role byte in the MAC stops a proof being reflected back to its sender, and
/// fresh nonces from both sides stop a recorded proof being replayed on another link.
public struct LinkAuthenticator: Sendable {
    public enum Role: UInt8, Sendable {
        case initiator = 1
        case responder = 2
    }

    /// What one side sends to prove itself.
    public struct Proof: Hashable, Sendable {
        public var mac: [UInt8]
        public var signature: [UInt8]

        public init(mac: [UInt8], signature: [UInt8]) {
            self.mac = mac
            self.signature = signature
        }
    }

    /// The public facts both sides agree on once `hello` and `challenge` have crossed.
    public struct Transcript: Hashable, Sendable {
        public var initiatorKey: [UInt8]
        public var responderKey: [UInt8]
        public var initiatorNonce: [UInt8]
        public var responderNonce: [UInt8]

        public init(initiatorKey: [UInt8], responderKey: [UInt8], initiatorNonce: [UInt8], responderNonce: [UInt8]) {
            self.initiatorKey = initiatorKey
            self.responderKey = responderKey
            self.initiatorNonce = initiatorNonce
            self.responderNonce = responderNonce
        }

        var bytes: [UInt8] {
            Array("peermesh/link/v1".utf8) + initiatorKey + responderKey + initiatorNonce + responderNonce
        }
    }

    /// Nonces are 32 random bytes; shorter ones are refused.
    public static let nonceSize = 32

    let secret: MeshSecret
    let identity: NodeIdentity

    public init(secret: MeshSecret, identity: NodeIdentity) {
        self.secret = secret
        self.identity = identity
    }

    /// This node's proof for `role` over `transcript`.
    public func prove(as role: Role, transcript: Transcript) -> Proof {
        let message = [role.rawValue] + transcript.bytes
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: secret.key)
        let signature = try! identity.privateKey.signature(for: message)
        return Proof(mac: Array(mac), signature: Array(signature))
    }

    /// Checks the other side's proof: it must know the mesh secret and hold the private key of the
    /// public key it announced in the transcript. Returns the other node's id when both hold.
    public func verify(_ proof: Proof, from role: Role, transcript: Transcript) -> MeshKey? {
        guard transcript.initiatorNonce.count >= Self.nonceSize, transcript.responderNonce.count >= Self.nonceSize
        else { return nil }
        let message = [role.rawValue] + transcript.bytes
        guard HMAC<SHA256>.isValidAuthenticationCode(proof.mac, authenticating: message, using: secret.key) else {
            return nil
        }
        let claimedKey = role == .initiator ? transcript.initiatorKey : transcript.responderKey
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: claimedKey),
            key.isValidSignature(proof.signature, for: message)
        else { return nil }
        return MeshKey(nodePublicKey: key)
    }
}
