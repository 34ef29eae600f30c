import Testing

@testable import PeerMesh

/// The link format: every message survives encode/decode, sizes match `wireSize`, and malformed bytes
/// are refused rather than misread.
@Suite struct WireTests {
    let alice = try! NodeIdentity(seed: [UInt8](repeating: 1, count: 32))
    let bob = try! NodeIdentity(seed: [UInt8](repeating: 3, count: 32))
    let secret = try! MeshSecret(bytes: Array("a mesh secret of at least 32 bytes!".utf8))

    var messages: [MeshMessage] {
        let update = MemberUpdate(signedBy: alice, address: "127.0.0.1:7001", incarnation: 3, status: .suspect)
        let unsigned = MemberUpdate(node: bob.id, address: "127.0.0.1:7002", incarnation: 0xFFFF_FFFF, status: .left)
        let record = LocationRecord(subject: .peer("bob"), host: alice.id, sequence: 9, expiresAt: 42, present: true)
            .signed(by: alice).signed
        var signal = MeshSignal(
            origin: alice.id,
            id: 77,
            from: "p-a",
            target: .peers(["x", "y"]),
            route: .viaHome,
            hops: 2,
            payload: Array("{\"type\":\"offer\",\"from\":\"p-a\",\"seq\":".utf8)
        )
        signal.credential = SignalCredential.sign(signal, sender: record, as: alice)
        return [
            .membership(.ping(probe: 1, updates: [update])),
            .membership(.pingRequest(probe: 2, target: bob.id, updates: [])),
            .membership(.ack(probe: 3, updates: [update, unsigned])),
            .membership(.join(update)),
            .membership(.joinReply(members: [update])),
            .membership(.gossip(updates: [update])),
            .membership(.announce(update)),
            .store(batch: 5, records: [record, record]),
            .storeAck(batch: 5),
            .signal(signal),
            .signal(
                MeshSignal(origin: bob.id, id: 1, from: "a", target: .peer("b"), route: .direct, hops: 1, payload: [])
            ),
            .signal(
                MeshSignal(
                    origin: bob.id,
                    id: 2,
                    from: "a",
                    target: .room("lobby"),
                    route: .viaHome,
                    hops: 1,
                    payload: [1, 2]
                )
            ),
            .hopAck(signal.key, .accepted, location: record),
            .hopAck(signal.key, .notFound, location: nil),
            .undeliverable(signal.key),
        ]
    }

    @Test func everyMessageRoundTripsAtItsDeclaredSize() throws {
        for message in messages {
            let bytes = MeshWire.encode(message)
            #expect(bytes.count + 4 == message.wireSize, "\(message)")
            #expect(try MeshWire.decode(bytes) == message)
        }
    }

    @Test func malformedBytesAreRefused() {
        for message in messages {
            let bytes = MeshWire.encode(message)
            #expect(throws: MeshDecodingError.self) { try MeshWire.decode(Array(bytes.dropLast())) }
            #expect(throws: MeshDecodingError.self) { try MeshWire.decode(bytes + [0]) }
        }
        #expect(throws: MeshDecodingError.self) { try MeshWire.decode([]) }
        #expect(throws: MeshDecodingError.self) { try MeshWire.decode([99]) }
    }

    @Test func handshakeAuthenticatesBothSides() throws {
        var (initiator, hello) = LinkHandshake.initiator(LinkAuthenticator(secret: secret, identity: alice))
        var responder = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: bob))
        guard case .send(let challenge) = responder.receive(hello) else {
            Issue.record("no challenge")
            return
        }
        guard case .established(let peer, let proof?) = initiator.receive(challenge) else {
            Issue.record("initiator did not accept the responder")
            return
        }
        #expect(peer == bob.id)
        #expect(responder.receive(proof) == .established(peer: alice.id, frame: nil))
    }

    @Test func handshakeRefusesAnotherMeshAndReplays() throws {
        let other = try MeshSecret(bytes: Array("another mesh's secret, 32 bytes+!".utf8))
        var (initiator, hello) = LinkHandshake.initiator(LinkAuthenticator(secret: other, identity: alice))
        var responder = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: bob))
        guard case .send(let challenge) = responder.receive(hello) else { return }
        guard case .failed = initiator.receive(challenge) else {
            Issue.record("a responder from another mesh was accepted")
            return
        }
        // A proof recorded on one link does not open another (fresh nonces).
        var (good, hello2) = LinkHandshake.initiator(LinkAuthenticator(secret: secret, identity: alice))
        var first = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: bob))
        guard case .send(let challenge2) = first.receive(hello2),
            case .established(_, let proof?) = good.receive(challenge2)
        else {
            Issue.record("handshake failed")
            return
        }
        var second = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: bob))
        _ = second.receive(hello2)
        guard case .failed = second.receive(proof) else {
            Issue.record("a replayed proof was accepted")
            return
        }
        // Garbage is refused at any step.
        var fresh = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: bob))
        guard case .failed = fresh.receive([0x12, 1, 2, 3]) else {
            Issue.record("garbage accepted")
            return
        }
    }
}
