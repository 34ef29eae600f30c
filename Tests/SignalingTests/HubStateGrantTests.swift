import NIOCore
import Testing

@testable import Signaling

/// `HubState.replaceGrant`: a session's new token decides its rooms from now on.
@Suite struct HubStateGrantTests {
    @Test func roomsTheNewGrantDoesNotAllowAreLeftWithPeerLeftToTheOthers() {
        var hub = HubHarness()
        hub.connect("alice", subject: "alice", grant: .only(["a", "b", "c"]))
        hub.connect("bob")
        for room in ["a", "b", "c"] {
            hub.send("alice", #"{"type":"join","room":"\#(room)"}"#)
            hub.send("bob", #"{"type":"join","room":"\#(room)"}"#)
        }
        var actions: [HubAction] = []
        let left = hub.state.replaceGrant(of: "alice", with: .only(["b", "d"]), actions: &actions)
        #expect(left == ["a", "c"])
        #expect(
            hub.texts(actions, to: "bob") == [
                #"{"type":"peer-left","room":"a","peer":"alice","seq":1}"#,
                #"{"type":"peer-left","room":"c","peer":"alice","seq":2}"#,
            ]
        )
        #expect(hub.texts(actions, to: "alice") == [#"{"type":"left","room":"a"}"#, #"{"type":"left","room":"c"}"#])
        #expect(hub.state.members(of: "a") == ["bob"])
        #expect(hub.state.members(of: "b") == ["alice", "bob"])
        // The new grant decides joins from now on.
        let refused = hub.send("alice", #"{"type":"join","room":"a","id":"j"}"#)
        #expect(hub.texts(refused, to: "alice").first?.contains(#""code":"forbidden""#) == true)
        let joined = hub.send("alice", #"{"type":"join","room":"d","id":"k"}"#)
        #expect(hub.texts(joined, to: "alice").first?.hasPrefix(#"{"type":"joined","room":"d""#) == true)
    }

    @Test func aWiderGrantOrAnAwaySessionChangesNoRoom() {
        var hub = HubHarness()
        hub.connect("alice", subject: "alice", grant: .only(["a"]))
        hub.send("alice", #"{"type":"join","room":"a"}"#)
        var actions: [HubAction] = []
        #expect(hub.state.replaceGrant(of: "alice", with: .all, actions: &actions).isEmpty)
        #expect(actions.isEmpty)
        #expect(hub.state.members(of: "a") == ["alice"])
        hub.connect("bob")
        hub.send("bob", #"{"type":"join","room":"a"}"#)
        hub.drop("alice")  // away, in its grace period: its rooms are still left, only others are told
        #expect(hub.state.replaceGrant(of: "alice", with: .only([]), actions: &actions) == ["a"])
        #expect(hub.texts(actions, to: "bob") == [#"{"type":"peer-left","room":"a","peer":"alice","seq":1}"#])
        #expect(hub.state.replaceGrant(of: "nobody", with: .all, actions: &actions).isEmpty)
    }
}

/// `auth` and `grant` requests reaching the hub itself.
@Suite struct HubStateAuthRequestTests {
    @Test func anAuthRequestOnAHubWithoutTokensIsRefused() {
        var hub = HubHarness()
        hub.connect("alice")
        let reply = hub.send("alice", #"{"type":"auth","token":"x.y.z","id":"a1"}"#)
        #expect(
            hub.texts(reply, to: "alice") == [
                #"{"type":"error","code":"bad-message","message":"this server does not check tokens","id":"a1"}"#
            ]
        )
    }

    @Test func aGrantRequestReplacesTheGrant() {
        var hub = HubHarness()
        hub.connect("alice", subject: "alice", grant: .only(["a", "b"]))
        hub.send("alice", #"{"type":"join","room":"a"}"#)
        hub.send("alice", #"{"type":"join","room":"b"}"#)
        var actions: [HubAction] = []
        hub.state.receive(
            hub.connections["alice"]!,
            ClientMessage(id: nil, request: .grant(.only(["b"]))),
            actions: &actions
        )
        #expect(hub.texts(actions, to: "alice") == [#"{"type":"left","room":"a"}"#])
        #expect(hub.state.members(of: "b") == ["alice"])
    }
}
