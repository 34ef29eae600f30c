import Crypto
import Testing

@testable import PeerMesh

@Suite struct IdentityTests {
    let alice = try! NodeIdentity(seed: [UInt8](repeating: 1, count: 32))
    let mallory = try! NodeIdentity(seed: [UInt8](repeating: 2, count: 32))
    let secret = try! MeshSecret(bytes: Array("a mesh secret of at least 32 bytes!".utf8))

    func record(host: MeshKey, sequence: UInt64 = 7) -> LocationRecord {
        LocationRecord(subject: .peer("bob"), host: host, sequence: sequence, expiresAt: 60_000_000_000, present: true)
    }

    @Test func signedRecordVerifiesAndRoundTrips() throws {
        let location = record(host: alice.id).signed(by: alice)
        let decoded = try SignedRecord(decoding: location.signed.encoded())
        let verified = try VerifiedLocation(verifying: decoded)
        #expect(verified.record == record(host: alice.id))
        #expect(decoded.signerID == alice.id)
    }

    @Test func tamperedRecordIsRefused() {
        let signed = record(host: alice.id).signed(by: alice).signed
        var body = signed.body
        body[body.count - 2] ^= 1  // flip a bit of expiresAt
        let tampered = SignedRecord(signer: signed.signer, body: body, signature: signed.signature)
        #expect(!tampered.isValid)
        #expect(throws: MeshIdentityError.self) { try VerifiedLocation(verifying: tampered) }
    }

    @Test func aNodeCannotSignForAnother() {
        // Mallory signs a record claiming bob is on Alice's node: the signature is valid, but the
        // signer is not the host the record names.
        let forged = mallory.sign(body: record(host: alice.id).canonicalBytes)
        #expect(forged.isValid)
        #expect(throws: MeshIdentityError.self) { try VerifiedLocation(verifying: forged) }
        // Swapping in Alice's public key breaks the signature instead.
        let swapped = SignedRecord(
            signer: Array(alice.publicKey.rawRepresentation),
            body: forged.body,
            signature: forged.signature
        )
        #expect(!swapped.isValid)
    }

    @Test func truncatedRecordDoesNotDecode() {
        let bytes = record(host: alice.id).signed(by: alice).signed.encoded()
        #expect(throws: MeshDecodingError.self) { try SignedRecord(decoding: Array(bytes.dropLast())) }
    }

    func transcript(_ a: NodeIdentity, _ b: NodeIdentity, nonces: UInt8 = 9) -> LinkAuthenticator.Transcript {
        LinkAuthenticator.Transcript(
            initiatorKey: Array(a.publicKey.rawRepresentation),
            responderKey: Array(b.publicKey.rawRepresentation),
            initiatorNonce: [UInt8](repeating: nonces, count: 32),
            responderNonce: [UInt8](repeating: nonces &+ 1, count: 32)
        )
    }

    @Test func linkAuthenticationNeedsTheSecretAndTheKey() throws {
        let responder = try NodeIdentity(seed: [UInt8](repeating: 3, count: 32))
        let t = transcript(alice, responder)
        let mine = LinkAuthenticator(secret: secret, identity: alice)
        let theirs = LinkAuthenticator(secret: secret, identity: responder)
        // Both sides prove themselves and learn the other's id.
        #expect(theirs.verify(mine.prove(as: .initiator, transcript: t), from: .initiator, transcript: t) == alice.id)
        #expect(
            mine.verify(theirs.prove(as: .responder, transcript: t), from: .responder, transcript: t) == responder.id
        )
        // A wrong secret is refused.
        let outsider = LinkAuthenticator(
            secret: try MeshSecret(bytes: [UInt8](repeating: 0x55, count: 32)),
            identity: alice
        )
        #expect(theirs.verify(outsider.prove(as: .initiator, transcript: t), from: .initiator, transcript: t) == nil)
        // A proof is bound to its nonces and its role.
        let proof = mine.prove(as: .initiator, transcript: t)
        #expect(theirs.verify(proof, from: .initiator, transcript: transcript(alice, responder, nonces: 10)) == nil)
        #expect(theirs.verify(proof, from: .responder, transcript: t) == nil)
        // A member with the secret cannot claim another node's key.
        let impostor = LinkAuthenticator(secret: secret, identity: mallory)
        #expect(theirs.verify(impostor.prove(as: .initiator, transcript: t), from: .initiator, transcript: t) == nil)
    }

    @Test func shortSecretIsRefused() {
        #expect(throws: MeshIdentityError.self) { try MeshSecret(bytes: [1, 2, 3]) }
    }
}
