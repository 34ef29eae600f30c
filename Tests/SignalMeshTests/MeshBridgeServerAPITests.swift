import NIOCore
import PeerMesh
import Signaling
import Testing

@testable import SignalMesh

/// The server API on one mesh node acts on the sessions of every node (two bridges over real loopback
/// mesh runtimes).
@Suite(.serialized, .timeLimit(.minutes(1))) struct MeshBridgeServerAPITests {
    static func apiNodes() async throws -> (MeshTestNode, MeshTestNode) {
        let (a, b) = try await twoNodes()
        a.bridge.hostAPIPeer()
        b.bridge.hostAPIPeer()
        return (a, b)
    }

    static func prefix(to peer: String? = nil, room: String? = nil, _ data: String) -> ByteBuffer {
        ServerMessage.serverMessagePrefix(data: ByteBuffer(string: data), to: peer, room: room)
    }

    @Test func aMessageReachesAPeerOnAnotherNodeAndIsCounted() async throws {
        let (a, b) = try await Self.apiNodes()
        let bob = b.connect("bob")
        try await Task.sleep(for: .milliseconds(300))  // bob's location reaches its home nodes
        let count = try await a.bridge.publish(Self.prefix(to: "bob", #"{"call":1}"#), toPeer: "bob")
        #expect(count == APIPublishCount(delivered: 1))
        #expect(bob.messages() == [#"{"type":"message","to":"bob","data":{"call":1},"from":"@server","seq":1}"#])
        // Away: kept for its resume.
        b.bridge.closed(bob.connection, keepSession: true)
        #expect(try await a.bridge.publish(Self.prefix(to: "bob", "2"), toPeer: "bob") == APIPublishCount(queued: 1))
        // Nobody holds carol: not found (the mesh says so), no invalid payload anywhere.
        #expect(try await a.bridge.publish(Self.prefix(to: "carol", "3"), toPeer: "carol") == nil)
        #expect(a.bridge.invalidPayloads == 0 && b.bridge.invalidPayloads == 0)
        await a.stop()
        await b.stop()
    }

    @Test func roomMessagesAndListingsSpanTheNodes() async throws {
        let (a, b) = try await Self.apiNodes()
        let alice = a.connect("alice")
        a.send(alice, #"{"type":"join","room":"r","meta":{"n":"A"},"id":"j"}"#)
        let bob = b.connect("bob")
        b.send(bob, #"{"type":"join","room":"r","id":"j"}"#)
        b.send(bob, #"{"type":"join","room":"s","id":"j2"}"#)
        try await Task.sleep(for: .milliseconds(300))
        let count = try await a.bridge.publish(Self.prefix(room: "r", "9"), toRoom: "r")
        #expect(count == APIPublishCount(delivered: 2))
        #expect(alice.contains(#"{"type":"message","room":"r","data":9,"from":"@server","seq":"#))
        #expect(bob.contains(#"{"type":"message","room":"r","data":9,"from":"@server","seq":"#))
        #expect(try await a.bridge.publish(Self.prefix(room: "s", "1"), toRoom: "s") == APIPublishCount(delivered: 1))
        #expect(try await a.bridge.publish(Self.prefix(room: "none", "1"), toRoom: "none") == nil)
        #expect(
            try await a.bridge.listRooms() == [
                APIRoomSummary(room: "r", members: 2), APIRoomSummary(room: "s", members: 1),
            ]
        )
        let members = try #require(try await a.bridge.members(ofRoom: "r"))
        #expect(members.map(\.peer) == ["alice", "bob"])
        #expect(members.map { $0.meta.map { String(buffer: $0) } } == [#"{"n":"A"}"#, nil])
        #expect(try await a.bridge.members(ofRoom: "s")?.map(\.peer) == ["bob"])
        #expect(try await a.bridge.members(ofRoom: "none") == nil)
        await a.stop()
        await b.stop()
    }

    @Test func aPeerOnAnotherNodeIsReadAndKicked() async throws {
        let (a, b) = try await Self.apiNodes()
        let alice = a.connect("alice")
        a.send(alice, #"{"type":"join","room":"r","id":"j"}"#)
        let bob = b.connect("bob")
        b.send(bob, #"{"type":"join","room":"r","id":"j"}"#)
        try await Task.sleep(for: .milliseconds(300))
        let session = try #require(try await a.bridge.session(ofPeer: "bob"))
        #expect(session.connected && session.rooms == ["r"])
        #expect(session.node == b.runtime.id.description)
        #expect(try await a.bridge.session(ofPeer: "alice")?.node == a.runtime.id.description)
        #expect(try await a.bridge.kick("bob"))
        #expect(bob.outbox.take().0.contains { if case .close = $0 { true } else { false } })
        try await eventually("peer-left on a") { alice.contains(#""type":"peer-left","room":"r","peer":"bob""#) }
        #expect(try await a.bridge.session(ofPeer: "bob") == nil)
        #expect(try await a.bridge.kick("bob") == false)
        await a.stop()
        await b.stop()
    }
}
