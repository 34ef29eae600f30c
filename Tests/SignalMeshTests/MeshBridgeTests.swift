import NIOCore
import PeerMesh
import Signaling
import Testing

@testable import SignalMesh

/// Two bridges over real loopback mesh runtimes: a signal crosses nodes under the same rules as on one hub,
/// the sender's `ack` waits for the recipient's node, and what a node relays is validated.
@Suite(.serialized, .timeLimit(.minutes(1))) struct MeshBridgeTests {
    static var sharedRoom: HubLimits {
        var limits = HubLimits()
        limits.requireSharedRoom = true
        return limits
    }

    @Test func aSignalCrossesNodesAndIsAckedOnceDelivered() async throws {
        let (a, b) = try await twoNodes()
        let alice = a.connect("alice")
        let bob = b.connect("bob")
        try await Task.sleep(for: .milliseconds(300))  // bob's location reaches its home nodes
        a.send(alice, #"{"type":"offer","to":"bob","sdp":"v=0","id":"o1"}"#)
        try await eventually("the offer on b") { bob.contains(#""type":"offer""#) }
        let offer = try #require(bob.messages().first { $0.contains(#""type":"offer""#) })
        #expect(offer.hasPrefix(#"{"type":"offer","to":"bob","sdp":"v=0","id":"o1","from":"alice","seq":"#))
        try await eventually("alice's ack") { alice.contains(#""type":"ack""#) }
        #expect(alice.messages() == [#"{"type":"ack","id":"o1"}"#])
        await a.stop()
        await b.stop()
    }

    @Test func mallorySharesNoRoomWithAliceAndGetsOnlyNotInRoom() async throws {
        let (a, b) = try await twoNodes(limits: Self.sharedRoom)
        let alice = a.connect("alice")
        a.send(alice, #"{"type":"join","room":"x","id":"j"}"#)
        let mallory = b.connect("mallory")
        try await Task.sleep(for: .milliseconds(300))
        // In no room, then in room y: refused by alice's node both times, with mallory's request id.
        for (attempt, join) in [nil, #"{"type":"join","room":"y","id":"jy"}"#].enumerated() {
            if let join { b.send(mallory, join) }
            let id = "m\(attempt)"
            b.send(mallory, #"{"type":"offer","to":"alice","sdp":"v=0","id":"\#(id)"}"#)
            try await eventually("mallory's error") { mallory.contains(#""id":"\#(id)""#) }
            let answers = mallory.messages().filter { $0.contains(#""id":"\#(id)""#) }
            #expect(answers == [Refusal.noSharedRoom("alice").errorMessage(id: id).description(as: String.self)])
        }
        #expect(!mallory.contains(#""type":"ack""#))
        try await Task.sleep(for: .milliseconds(200))
        #expect(!alice.contains("mallory"))
        // Once they share room y, the same offer goes through.
        a.send(alice, #"{"type":"join","room":"y","id":"jy"}"#)
        b.send(mallory, #"{"type":"offer","to":"alice","sdp":"v=0","id":"m2"}"#)
        try await eventually("the offer on a") { alice.contains(#""from":"mallory""#) }
        try await eventually("mallory's ack") { mallory.contains(#"{"type":"ack","id":"m2"}"#) }
        await a.stop()
        await b.stop()
    }

    @Test func roomScopedSignalsAreCheckedOnBothNodes() async throws {
        let (a, b) = try await twoNodes()
        let alice = a.connect("alice")
        let carol = a.connect("carol")
        let bob = b.connect("bob")
        a.send(alice, #"{"type":"join","room":"r","id":"j"}"#)
        try await Task.sleep(for: .milliseconds(300))
        // The sender's node: carol is not in r.
        a.send(carol, #"{"type":"offer","to":"bob","room":"r","sdp":"v=0","id":"c1"}"#)
        #expect(carol.messages() == [Refusal.senderNotInRoom("r").errorMessage(id: "c1").description(as: String.self)])
        // The recipient's node: bob is not in r.
        a.send(alice, #"{"type":"offer","to":"bob","room":"r","sdp":"v=0","id":"a1"}"#)
        try await eventually("alice's error") { alice.contains(#""id":"a1""#) }
        #expect(
            alice.messages().filter { $0.contains(#""id":"a1""#) }
                == [
                    Refusal.recipientNotInRoom(peer: "bob", room: "r").errorMessage(id: "a1").description(
                        as: String.self
                    )
                ]
        )
        #expect(!bob.contains(#""type":"offer""#))
        // Once bob is in r, it is delivered.
        b.send(bob, #"{"type":"join","room":"r","id":"j"}"#)
        a.send(alice, #"{"type":"offer","to":"bob","room":"r","sdp":"v=0","id":"a2"}"#)
        try await eventually("the offer on b") { bob.contains(#""id":"a2""#) }
        try await eventually("alice's ack") { alice.contains(#"{"type":"ack","id":"a2"}"#) }
        await a.stop()
        await b.stop()
    }

    @Test func aRoomMessageReachesOnlyTheRoomsMembersOnTheOtherNode() async throws {
        let (a, b) = try await twoNodes()
        let alice = a.connect("alice")
        let bob = b.connect("bob")
        let dave = b.connect("dave")
        a.send(alice, #"{"type":"join","room":"r","id":"j"}"#)
        try await Task.sleep(for: .milliseconds(300))  // alice's membership reaches the room's home node
        b.send(bob, #"{"type":"join","room":"r","id":"j"}"#)
        try await eventually("bob's presence on a") { alice.contains(#""type":"peer-joined""#) }
        a.send(alice, #"{"type":"message","room":"r","data":"hi all","id":"b1"}"#)
        #expect(alice.messages().contains(#"{"type":"ack","id":"b1"}"#))
        try await eventually("the room message on b") { bob.contains(#""data":"hi all""#) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(!dave.contains("hi all"))
        await a.stop()
        await b.stop()
    }

    @Test func theAckWaitsForTheRecipientsNodeAndAnAwayRecipientIsQueued() async throws {
        let (a, b) = try await twoNodes()
        let alice = a.connect("alice")
        let bob = b.connect("bob")
        try await Task.sleep(for: .milliseconds(300))
        // Bob's node is away for a moment: no answer, no ack, until the timeout says peer-unavailable.
        b.runtime.setDelivery(SilentDelivery())
        a.send(alice, #"{"type":"offer","to":"bob","sdp":"v=0","id":"o1"}"#)
        try await Task.sleep(for: .milliseconds(500))
        #expect(alice.messages().isEmpty)
        a.bridge.sweep(now: .max)
        #expect(
            alice.messages() == [Refusal.peerUnavailable("bob").errorMessage(id: "o1").description(as: String.self)]
        )
        // Bob's node answers again; bob drops and is kept for resume: ack with queued:true.
        b.runtime.setDelivery(b.bridge)
        b.bridge.closed(bob.connection, keepSession: true)
        a.send(alice, #"{"type":"offer","to":"bob","sdp":"v=0","id":"o2"}"#)
        try await eventually("alice's ack") { alice.contains(#""id":"o2""#) }
        #expect(alice.messages().last == #"{"type":"ack","id":"o2","queued":true}"#)
        await a.stop()
        await b.stop()
    }

    @Test func aRequestResentAfterAResumeIsAnsweredAgainAndNotDeliveredTwice() async throws {
        let (a, b) = try await twoNodes()
        let alice = a.connect("alice")
        let bob = b.connect("bob")
        try await Task.sleep(for: .milliseconds(300))
        a.send(alice, #"{"type":"offer","to":"bob","sdp":"v=0","id":"o1"}"#)
        try await eventually("alice's ack") { alice.contains(#""id":"o1""#) }
        // The same id again on the same connection is a new request, as on one hub.
        a.send(alice, #"{"type":"offer","to":"bob","sdp":"v=0 again","id":"o1"}"#)
        try await eventually("the second offer on b") { bob.contains("v=0 again") }
        try await eventually("alice's second ack") { alice.messages().filter { $0.contains(#""id":"o1""#) }.count == 2 }
        // Alice's client did not see that ack (its connection dropped): it resumes and resends o1, which is
        // answered again and not delivered again.
        let resumed = a.resume(alice)
        a.send(resumed, #"{"type":"offer","to":"bob","sdp":"v=0 again","id":"o1"}"#)
        #expect(resumed.messages() == [#"{"type":"ack","id":"o1"}"#])
        try await Task.sleep(for: .milliseconds(200))
        #expect(bob.messages().filter { $0.contains(#""type":"offer""#) }.count == 2)
        // Still in flight when the connection drops: the answer goes to the resumed connection, once.
        b.runtime.setDelivery(SilentDelivery())
        a.send(resumed, #"{"type":"offer","to":"bob","sdp":"v=0 lost","id":"o2"}"#)
        let again = a.resume(resumed)
        a.send(again, #"{"type":"offer","to":"bob","sdp":"v=0 lost","id":"o2"}"#)
        a.bridge.sweep(now: .max)
        #expect(
            again.messages() == [Refusal.peerUnavailable("bob").errorMessage(id: "o2").description(as: String.self)]
        )
        #expect(resumed.messages().filter { $0.contains("o2") }.isEmpty)
        await a.stop()
        await b.stop()
    }

    @Test func aTakeoverOnAliceNodeIsSeenByTheRoomOnTheOtherNode() async throws {
        let (a, b) = try await twoNodes()
        let old = a.connect("alice", subject: "alice")
        a.send(old, #"{"type":"join","room":"r","id":"j"}"#)
        try await Task.sleep(for: .milliseconds(300))
        let bob = b.connect("bob")
        b.send(bob, #"{"type":"join","room":"r","id":"j"}"#)
        try await eventually("alice's presence on b") {
            bob.contains(#""type":"peer-joined","room":"r","peer":"alice""#)
        }
        // Alice's token takes her id over on her node: the older session ends and leaves its rooms.
        let new = a.connect("alice", subject: "alice")
        try await eventually("peer-left on b") { bob.contains(#""type":"peer-left","room":"r","peer":"alice""#) }
        // The new session joins again, and is announced again.
        a.send(new, #"{"type":"join","room":"r","id":"j2"}"#)
        try await eventually("the new session's presence on b") {
            bob.messages().filter { $0.contains(#""type":"peer-joined","room":"r","peer":"alice""#) }.count == 2
        }
        await a.stop()
        await b.stop()
    }

    @Test func whatAnotherNodeRelaysIsValidatedBeforeAClientSeesIt() async throws {
        let node = try await MeshTestNode.start()
        let bob = node.connect("bob")
        let forged: [(payload: [UInt8], from: String)] = [
            ([0xFF, 1, 2], "alice"),
            (Self.signal(#"{"type":"offer","to":"bob","sdp":"v=0","from":"carol","seq":"#), "alice"),
            (Self.signal(#"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":1,"x":"#), "alice"),
            (Self.signal(#"{"type":"welcome","to":"bob","from":"alice","seq":"#), "alice"),
            (
                BridgePayload.presence(prefix: Array(#"{"type":"peer-left","room":"r","peer":"carol","seq":"#.utf8))
                    .encoded, "alice"
            ),
        ]
        for (payload, from) in forged {
            node.bridge.deliver(payload, from: from, to: "bob", addressed: true)
        }
        #expect(node.bridge.invalidPayloads == forged.count)
        #expect(bob.messages().isEmpty)
        // The same path delivers a valid one.
        node.bridge.deliver(
            Self.signal(#"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":"#),
            from: "alice",
            to: "bob",
            addressed: true
        )
        #expect(node.bridge.invalidPayloads == forged.count)
        #expect(bob.messages() == [#"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":1}"#])
        await node.stop()
    }

    static func signal(_ json: String) -> [UInt8] {
        BridgePayload.signal(
            .init(type: .offer, ticket: 1, id: nil, room: nil, senderRooms: [], prefix: Array(json.utf8))
        ).encoded
    }
}

extension ByteBuffer {
    func description(as: String.Type) -> String { String(buffer: self) }
}
