import NIOCore
import Testing

@testable import Signaling

/// Live presence state (`update`, `peer-updated`, re-joins that change `meta`) and volatile signals on the
/// single hub, without sockets (Docs/protocol.md, "Presence state and volatile messages").
@Suite struct HubStatePresenceTests {
    @Test func anUpdateTellsTheOthersAndLaterJoinersSeeTheNewMeta() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.connect("carol")
        hub.send("alice", #"{"type":"join","room":"r","meta":{"name":"A"}}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        let update = hub.send("alice", #"{"type":"update","room":"r","meta":{"name":"A2","typing":true},"id":"u1"}"#)
        #expect(
            hub.texts(update, to: "bob") == [
                #"{"type":"peer-updated","room":"r","peer":"alice","meta":{"name":"A2","typing":true},"seq":1}"#
            ]
        )
        #expect(hub.texts(update, to: "alice") == [#"{"type":"updated","room":"r","id":"u1"}"#])
        // Presence state is sequenced: kept for bob's resume like peer-joined.
        #expect(hub.state.bufferedCount(of: "bob") == 1)
        let joined = hub.send("carol", #"{"type":"join","room":"r","id":"j"}"#)
        #expect(
            hub.texts(joined, to: "carol") == [
                #"{"type":"joined","room":"r","peers":[{"peer":"alice","meta":{"name":"A2","typing":true}},{"peer":"bob","meta":{}}],"id":"j"}"#
            ]
        )
        // Only a member may update its meta in a room.
        let outside = hub.send("carol", #"{"type":"update","room":"elsewhere","meta":{},"id":"u2"}"#)
        #expect(
            hub.texts(outside, to: "carol") == [
                #"{"type":"error","code":"not-in-room","message":"not in room \"elsewhere\"","id":"u2"}"#
            ]
        )
        #expect(outside.count == 1, "nobody else hears of a refused update")
    }

    @Test func aRejoinWithAnotherMetaIsAnUpdateAndAResentJoinIsNot() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"r","meta":{"n":1}}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        let same = hub.send("alice", #"{"type":"join","room":"r","meta":{"n":1},"id":"j1"}"#)
        #expect(hub.texts(same, to: "bob").isEmpty, "a resent join changes nothing")
        #expect(hub.texts(same, to: "alice").first?.hasPrefix(#"{"type":"joined""#) == true)
        let other = hub.send("alice", #"{"type":"join","room":"r","meta":{"n":2},"id":"j2"}"#)
        #expect(
            hub.texts(other, to: "bob") == [
                #"{"type":"peer-updated","room":"r","peer":"alice","meta":{"n":2},"seq":1}"#
            ]
        )
        #expect(
            hub.texts(other, to: "alice") == [
                #"{"type":"joined","room":"r","peers":[{"peer":"bob","meta":{}}],"id":"j2"}"#
            ]
        )
        let none = hub.send("alice", #"{"type":"join","room":"r"}"#)
        #expect(
            hub.texts(none, to: "bob") == [#"{"type":"peer-updated","room":"r","peer":"alice","meta":{},"seq":2}"#],
            "no meta resets it to {}"
        )
        let braces = hub.send("alice", #"{"type":"join","room":"r","meta":{}}"#)
        #expect(hub.texts(braces, to: "bob").isEmpty, "{} after no meta changes nothing")
    }

    @Test func volatileSignalsReachOnlyConnectedPeersAndAreNeverKept() {
        var hub = HubHarness()
        for peer in ["alice", "bob", "carol"] {
            hub.connect(peer)
            hub.send(peer, #"{"type":"join","room":"r"}"#)
        }
        hub.drop("carol")
        let buffered = (bob: hub.state.bufferedCount(of: "bob"), carol: hub.state.bufferedCount(of: "carol"))
        // Addressed, to a connected peer: written without a seq, acked.
        let direct = hub.send("alice", #"{"type":"message","to":"bob","data":"typing","volatile":true,"id":"v1"}"#)
        #expect(
            hub.texts(direct, to: "bob") == [
                #"{"type":"message","to":"bob","data":"typing","volatile":true,"id":"v1","from":"alice"}"#
            ]
        )
        #expect(hub.texts(direct, to: "alice") == [#"{"type":"ack","id":"v1"}"#])
        // A broadcast: the connected member gets it, the away one nothing; the ack never says queued.
        let broadcast = hub.send("alice", #"{"type":"message","room":"r","data":{"x":1},"volatile":true,"id":"v2"}"#)
        #expect(
            hub.texts(broadcast, to: "bob") == [
                #"{"type":"message","room":"r","data":{"x":1},"volatile":true,"id":"v2","from":"alice"}"#
            ]
        )
        #expect(hub.texts(broadcast, to: "alice") == [#"{"type":"ack","id":"v2"}"#])
        #expect(broadcast.count == 2)
        // Addressed, to the away peer: refused, nothing queued.
        let away = hub.send("alice", #"{"type":"message","to":"carol","data":1,"volatile":true,"id":"v3"}"#)
        #expect(
            hub.texts(away, to: "alice") == [
                #"{"type":"error","code":"peer-unavailable","message":"peer \"carol\" is away; a volatile message is not kept for it","id":"v3"}"#
            ]
        )
        #expect(hub.state.bufferedCount(of: "bob") == buffered.bob)
        #expect(hub.state.bufferedCount(of: "carol") == buffered.carol)
        // A normal message is queued for carol meanwhile; her resume replays it and nothing volatile.
        let queued = hub.send("alice", #"{"type":"message","to":"carol","data":2,"id":"n1"}"#)
        #expect(hub.texts(queued, to: "alice") == [#"{"type":"ack","id":"n1","queued":true}"#])
        let token = hub.state.resumeToken(of: "carol")!
        let (outcome, actions) = hub.resume("carol", token: token, last: 0)
        #expect(outcome == .opened(peer: "carol", resumed: true, gap: false, replayed: 1))
        let replay = hub.texts(actions, to: "carol").dropFirst()
        #expect(replay.map { $0.contains(#""id":"n1""#) } == [true])
        // Connected again: volatile messages reach her.
        let back = hub.send("bob", #"{"type":"message","to":"carol","data":3,"volatile":true,"id":"v4"}"#)
        #expect(hub.texts(back, to: "carol").count == 1 && hub.texts(back, to: "bob") == [#"{"type":"ack","id":"v4"}"#])
    }

    @Test func volatileSignalsObeyTheRoutingRules() {
        var limits = HubLimits()
        limits.requireSharedRoom = true
        var hub = HubHarness(limits: limits)
        hub.connect("alice")
        hub.connect("mallory")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        let noShare = hub.send("mallory", #"{"type":"message","to":"alice","data":1,"volatile":true,"id":"m"}"#)
        #expect(hub.texts(noShare, to: "mallory").first?.contains(#""code":"not-in-room""#) == true)
        #expect(hub.texts(noShare, to: "alice").isEmpty)
        let notMember = hub.send("mallory", #"{"type":"message","room":"r","data":1,"volatile":true,"id":"b"}"#)
        #expect(hub.texts(notMember, to: "mallory").first?.contains(#""code":"not-in-room""#) == true)
        let nobody = hub.send("alice", #"{"type":"message","to":"nobody","data":1,"volatile":true,"id":"n"}"#)
        #expect(hub.texts(nobody, to: "alice").first?.contains(#""code":"peer-unavailable""#) == true)
    }
}
