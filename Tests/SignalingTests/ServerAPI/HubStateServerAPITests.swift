import NIOCore
import Testing

@testable import Signaling

@Suite struct HubStateServerAPITests {
    static let prefix = ServerMessage.serverMessagePrefix(data: ByteBuffer(string: #"{"n":1}"#), room: "r")

    @Test func publishesToARoomsMembersConnectedOrAway() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        hub.drop("bob")
        var actions: [HubAction] = []
        #expect(
            hub.state.publish(Self.prefix, toRoom: "r", actions: &actions) == APIPublishCount(delivered: 1, queued: 1)
        )
        #expect(
            hub.texts(actions, to: "alice") == [
                #"{"type":"message","room":"r","data":{"n":1},"from":"@server","seq":2}"#
            ]
        )
        #expect(hub.state.bufferedCount(of: "bob") == 1, "kept for bob's resume")
        #expect(hub.state.publish(Self.prefix, toRoom: "nowhere", actions: &actions) == nil)
    }

    @Test func publishesToOnePeer() {
        var hub = HubHarness()
        hub.connect("bob")
        var actions: [HubAction] = []
        let prefix = ServerMessage.serverMessagePrefix(data: ByteBuffer(string: "true"), to: "bob")
        #expect(hub.state.publish(prefix, toPeer: "bob", actions: &actions) == APIPublishCount(delivered: 1))
        #expect(
            hub.texts(actions, to: "bob") == [#"{"type":"message","to":"bob","data":true,"from":"@server","seq":1}"#]
        )
        #expect(hub.state.publish(prefix, toPeer: "carol", actions: &actions) == nil)
    }

    @Test func listsRoomsMembersAndSessions() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"b","meta":{"name":"A"}}"#)
        hub.send("alice", #"{"type":"join","room":"a"}"#)
        hub.send("bob", #"{"type":"join","room":"b"}"#)
        #expect(hub.state.roomSummaries() == [.init(room: "a", members: 1), .init(room: "b", members: 2)])
        #expect(
            hub.state.roomMembers("b")
                == [.init(peer: "alice", meta: ByteBuffer(string: #"{"name":"A"}"#)), .init(peer: "bob", meta: nil)]
        )
        #expect(hub.state.roomMembers("c") == nil)
        #expect(hub.state.sessionInfo("alice") == APIPeerSession(peer: "alice", connected: true, rooms: ["b", "a"]))
        hub.drop("alice")
        #expect(hub.state.sessionInfo("alice")?.connected == false)
        #expect(hub.state.sessionInfo("carol") == nil)
    }

    @Test func kickClosesWith4003EndsTheSessionAndRefusesItsResume() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        let token = hub.state.resumeToken(of: "bob")!
        let bobConnection = hub.connections["bob"]!
        var actions: [HubAction] = []
        #expect(hub.state.kick("bob", actions: &actions))
        #expect(hub.closes(actions).map(\.1) == [.kicked])
        #expect(hub.closes(actions).map(\.0) == [bobConnection])
        #expect(hub.texts(actions, to: "alice") == [#"{"type":"peer-left","room":"r","peer":"bob","seq":2}"#])
        #expect(!hub.state.hasSession("bob"))
        #expect(hub.drop("bob", keep: true).isEmpty, "the kicked connection's close changes nothing")
        let (outcome, _) = hub.resume("bob", token: token, last: 0)
        #expect(outcome == .refused(.sessionNotResumable))
        #expect(!hub.state.kick("bob", actions: &actions))
    }

    @Test func kickEndsASessionWaitingToResume() {
        var hub = HubHarness()
        hub.connect("bob")
        hub.drop("bob")
        var actions: [HubAction] = []
        #expect(hub.state.kick("bob", actions: &actions))
        #expect(hub.closes(actions).isEmpty)
        #expect(!hub.state.hasSession("bob"))
    }
}
