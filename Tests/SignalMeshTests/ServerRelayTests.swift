import NIOCore
import PeerMesh
import Signaling
import Testing

@testable import SignalMesh

/// Server API calls between nodes: their payloads, and what a node accepts of them.
@Suite struct ServerRelayTests {
    let validator = RelayValidator(maxSenderRooms: 16)
    let origin = MeshKey(bytes: Array(repeating: 0xAB, count: 32))
    let here = MeshKey(bytes: Array(repeating: 0x01, count: 32))
    var sender: String { MeshBridge.apiPeer(of: origin) }
    var local: String { MeshBridge.apiPeer(of: here) }

    func message(to peer: String? = nil, room: String? = nil, data: String = #"{"n":1}"#) -> [UInt8] {
        Array(buffer: ServerMessage.serverMessagePrefix(data: ByteBuffer(string: data), to: peer, room: room))
    }

    func request(_ operation: ServerRequest.Operation, _ name: String?, prefix: [UInt8] = [], ticket: UInt64 = 7)
        -> [UInt8]
    {
        BridgePayload.server(ServerRequest(operation: operation, ticket: ticket, name: name, prefix: prefix)).encoded
    }

    func validate(_ bytes: [UInt8], from: String? = nil, origin: MeshKey? = nil, to recipient: String)
        -> RelayValidator.ServerRelayed?
    {
        validator.validateServer(
            bytes,
            from: from ?? sender,
            origin: origin ?? self.origin,
            to: recipient,
            addressed: true,
            localAPIPeer: local
        )
    }

    @Test func apiPeersAreNamedAfterTheirNodeAndNoPeerCanTakeTheName() {
        #expect(sender == "@api." + String(repeating: "ab", count: 16))
        #expect(sender.utf8.count <= 64)
        #expect(!Identifier.isValidQualified(sender))
    }

    @Test func requestsAndAnswersRoundTrip() {
        let requests = [
            ServerRequest(operation: .messagePeer, ticket: 1, name: "bob", prefix: message(to: "bob")),
            ServerRequest(operation: .messageRoom, ticket: .max, name: "t/lobby", prefix: message(room: "lobby")),
            ServerRequest(operation: .kick, ticket: 3, name: "bob"),
            ServerRequest(operation: .session, ticket: 4, name: "bob"),
            ServerRequest(operation: .listRooms, ticket: 5, name: nil),
            ServerRequest(operation: .members, ticket: 6, name: "lobby"),
        ]
        for request in requests {
            #expect(BridgePayload(BridgePayload.server(request).encoded) == .server(request))
        }
        let answer = ServerAnswer(
            ticket: 9,
            found: true,
            connected: true,
            delivered: 2,
            queued: 1,
            entries: [.init(name: "alice", meta: Array(#"{"a":1}"#.utf8)), .init(name: "lobby", count: 3)]
        )
        #expect(BridgePayload(BridgePayload.serverAnswer(answer).encoded) == .serverAnswer(answer))
        // Trailing bytes, unknown operations and flags do not decode.
        #expect(BridgePayload(BridgePayload.serverAnswer(answer).encoded + [0]) == nil)
        #expect(BridgePayload([6, 9] + Array(repeating: 0, count: 13)) == nil)
        var flags = BridgePayload.serverAnswer(answer).encoded
        flags[9] = 4
        #expect(BridgePayload(flags) == nil)
    }

    @Test func acceptsWhatABridgeSends() {
        let toBob = request(.messagePeer, "bob", prefix: message(to: "bob"))
        #expect(validate(toBob, to: "bob") != nil)
        let tenant = request(.messagePeer, "acme/bob", prefix: message(to: "bob"))
        #expect(validate(tenant, to: "acme/bob") != nil)
        let room = request(.messageRoom, "acme/lobby", prefix: message(room: "lobby"))
        #expect(validate(room, to: local) != nil)
        #expect(validate(request(.kick, "bob"), to: "bob") != nil)
        #expect(validate(request(.session, "bob"), to: "bob") != nil)
        #expect(validate(request(.listRooms, nil), to: local) != nil)
        #expect(validate(request(.members, "lobby"), to: local) != nil)
        let answer = BridgePayload.serverAnswer(
            ServerAnswer(ticket: 7, found: true, entries: [.init(name: "alice", meta: Array(#"{"n":"A"}"#.utf8))])
        )
        #expect(validate(answer.encoded, to: local) != nil)
    }

    /// Only a node's own API peer sends server calls: not a peer, not another node's API peer, not this
    /// node's own name coming back; and only addressed.
    @Test func refusesAnyOtherSender() {
        let toBob = request(.messagePeer, "bob", prefix: message(to: "bob"))
        #expect(validate(toBob, from: "alice", to: "bob") == nil)
        #expect(validate(toBob, from: MeshBridge.apiPeer(of: here), origin: origin, to: "bob") == nil)
        #expect(validate(toBob, from: local, origin: here, to: "bob") == nil)
        #expect(validate(toBob, from: "@server", to: "bob") == nil)
        #expect(
            validator.validateServer(
                toBob,
                from: sender,
                origin: origin,
                to: "bob",
                addressed: false,
                localAPIPeer: local
            )
                == nil
        )
        // The peers' payload kinds are no server call, and the peers' path refuses server calls.
        let signal = BridgePayload.signal(
            .init(type: .message, ticket: 1, id: nil, room: nil, senderRooms: [], prefix: message(to: "bob"))
        )
        #expect(validate(signal.encoded, to: "bob") == nil)
        #expect(validator.validate(toBob, from: "alice", to: "bob", addressed: true) == nil)
        #expect(validator.validate(toBob, from: sender, to: "bob", addressed: true) == nil)
    }

    /// A hostile member cannot make a server call look as if a peer sent it, or reach another peer.
    @Test func refusesMessagesThatAreNotTheServers() {
        let forged: [(String, [UInt8])] = [
            ("from a peer", Array(#"{"type":"message","to":"bob","data":1,"from":"alice","seq":"#.utf8)),
            ("two froms", Array(#"{"type":"message","to":"bob","data":1,"from":"@server","from":"x","seq":"#.utf8)),
            ("no from", Array(#"{"type":"message","to":"bob","data":1,"seq":"#.utf8)),
            ("another type", Array(#"{"type":"offer","to":"bob","sdp":"v=0","from":"@server","seq":"#.utf8)),
            ("volatile", Array(#"{"type":"message","to":"bob","data":1,"volatile":true,"from":"@server","seq":"#.utf8)),
            ("an id", Array(#"{"type":"message","to":"bob","id":"i","data":1,"from":"@server","seq":"#.utf8)),
            ("another recipient", message(to: "carol")),
            ("a room", message(to: "bob", room: "lobby")),
            ("seq not last", Array(#"{"type":"message","to":"bob","data":1,"from":"@server","seq":1,"x":"#.utf8)),
            ("not json", Array("{\"type\":\"message\",\"to\":\"bob\",\"data\":}".utf8)),
        ]
        for (what, prefix) in forged {
            #expect(validate(request(.messagePeer, "bob", prefix: prefix), to: "bob") == nil, "\(what)")
        }
        // The request's name is the recipient; room calls go to this node's API peer, in the room named.
        #expect(validate(request(.messagePeer, "carol", prefix: message(to: "bob")), to: "bob") == nil)
        #expect(validate(request(.kick, "carol"), to: "bob") == nil)
        #expect(validate(request(.kick, "bob", prefix: [1]), to: "bob") == nil)
        #expect(validate(request(.messageRoom, "lobby", prefix: message(room: "lobby")), to: "bob") == nil)
        #expect(validate(request(.messageRoom, "lobby", prefix: message(room: "other")), to: local) == nil)
        #expect(validate(request(.messageRoom, "t/lobby", prefix: message(room: "t/lobby")), to: local) == nil)
        #expect(validate(request(.messageRoom, "lobby", prefix: message(to: "bob")), to: local) == nil)
        #expect(validate(request(.listRooms, "x"), to: local) == nil)
        #expect(validate(request(.members, "b@d"), to: local) == nil)
        #expect(validate(request(.kick, "bob", ticket: 0), to: "bob") == nil)
    }

    /// An answer's names and `meta` end up in an API response: only valid names and JSON objects.
    @Test func refusesAnswersThatCouldCorruptAnAPIResponse() {
        func answer(_ entries: [ServerAnswer.Entry], ticket: UInt64 = 7) -> [UInt8] {
            BridgePayload.serverAnswer(ServerAnswer(ticket: ticket, found: true, entries: entries)).encoded
        }
        #expect(validate(answer([.init(name: "a", meta: Array(#"{}],"x":{"#.utf8))]), to: local) == nil)
        #expect(validate(answer([.init(name: "a", meta: Array("[1]".utf8))]), to: local) == nil)
        #expect(validate(answer([.init(name: "a", meta: Array(#"{"a":1} {}"#.utf8))]), to: local) == nil)
        let big = #"{"a":""# + String(repeating: "x", count: 1100) + #""}"#
        #expect(validate(answer([.init(name: "a", meta: Array(big.utf8))]), to: local) == nil)
        #expect(validate(answer([.init(name: "a\"b")]), to: local) == nil)
        #expect(validate(answer([], ticket: 0), to: local) == nil)
        #expect(validate(answer([]), to: "bob") == nil)
    }
}
