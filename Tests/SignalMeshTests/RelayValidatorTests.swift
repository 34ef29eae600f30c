import Signaling
import Testing

@testable import SignalMesh

/// What a node accepts from another before a client sees it.
@Suite struct RelayValidatorTests {
    let validator = RelayValidator(maxSenderRooms: 16)

    func signal(
        _ json: String,
        type: SignalType = .offer,
        ticket: UInt64 = 1,
        id: String? = nil,
        room: String? = nil,
        senderRooms: [String] = []
    ) -> [UInt8] {
        BridgePayload.signal(
            .init(type: type, ticket: ticket, id: id, room: room, senderRooms: senderRooms, prefix: Array(json.utf8))
        ).encoded
    }

    func presence(_ json: String) -> [UInt8] { BridgePayload.presence(prefix: Array(json.utf8)).encoded }

    @Test func acceptsWhatABridgeSends() {
        let offer = signal(#"{"type":"offer","to":"bob","sdp":"v=0","id":"o1","from":"alice","seq":"#, id: "o1")
        #expect(validator.validate(offer, from: "alice", to: "bob", addressed: true) != nil)
        let scoped = signal(
            #"{"type":"candidate","to":"bob","room":"x","candidate":null,"from":"alice","seq":"#,
            type: .candidate,
            room: "x"
        )
        #expect(validator.validate(scoped, from: "alice", to: "bob", addressed: true) != nil)
        let broadcast = signal(
            #"{"type":"message","room":"x","data":{"n":1},"from":"alice","seq":"#,
            type: .message,
            ticket: 0,
            room: "x"
        )
        #expect(validator.validate(broadcast, from: "alice", to: "bob", addressed: false) != nil)
        let joined = presence(#"{"type":"peer-joined","room":"x","peer":"alice","meta":{"n":"a"},"seq":"#)
        #expect(
            validator.validate(joined, from: "alice", to: "bob", addressed: false)
                == .presence(
                    room: "x",
                    joined: true,
                    prefix: Array(#"{"type":"peer-joined","room":"x","peer":"alice","meta":{"n":"a"},"seq":"#.utf8)
                )
        )
        let left = presence(#"{"type":"peer-left","room":"x","peer":"alice","seq":"#)
        #expect(validator.validate(left, from: "alice", to: "bob", addressed: false) != nil)
        let answer = BridgePayload.answer(
            .init(outcome: .delivered, type: .offer, ticket: 3, id: nil, recipient: "bob")
        )
        #expect(validator.validate(answer.encoded, from: "bob", to: "alice", addressed: true) != nil)
    }

    /// A volatile signal is marked as such (from its own `"volatile":true`), so the recipient's node writes
    /// it without a `seq`; `peer-updated` is a presence event like `peer-left` (room-wide only).
    @Test func marksVolatileSignalsAndAcceptsPeerUpdated() {
        let typing = signal(
            #"{"type":"message","to":"bob","data":1,"volatile":true,"from":"alice","seq":"#,
            type: .message
        )
        guard case .signal(let relayed) = validator.validate(typing, from: "alice", to: "bob", addressed: true) else {
            Issue.record("a volatile signal refused")
            return
        }
        #expect(relayed.volatile)
        let plain = signal(#"{"type":"message","to":"bob","data":1,"from":"alice","seq":"#, type: .message)
        guard case .signal(let normal) = validator.validate(plain, from: "alice", to: "bob", addressed: true) else {
            Issue.record("a signal refused")
            return
        }
        #expect(!normal.volatile)
        let updated = presence(#"{"type":"peer-updated","room":"x","peer":"alice","meta":{"n":2},"seq":"#)
        #expect(
            validator.validate(updated, from: "alice", to: "bob", addressed: false)
                == .presence(
                    room: "x",
                    joined: false,
                    prefix: Array(#"{"type":"peer-updated","room":"x","peer":"alice","meta":{"n":2},"seq":"#.utf8)
                )
        )
        #expect(validator.validate(updated, from: "alice", to: "bob", addressed: true) == nil)
        #expect(validator.validate(updated, from: "mallory", to: "bob", addressed: false) == nil)
        let noMeta = presence(#"{"type":"peer-updated","room":"x","peer":"alice","seq":"#)
        #expect(validator.validate(noMeta, from: "alice", to: "bob", addressed: false) == nil)
    }

    @Test(arguments: [
        // from is not the mesh's sender
        #"{"type":"offer","to":"bob","sdp":"v=0","from":"carol","seq":"#,
        // no from, or two of them
        #"{"type":"offer","to":"bob","sdp":"v=0","seq":"#,
        #"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","from":"alice","seq":"#,
        // seq not last, or set already
        #"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":1,"x":"#,
        #"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":1}{"a":"#,
        // addressed to someone else, or not a valid signal
        #"{"type":"offer","to":"dave","sdp":"v=0","from":"alice","seq":"#,
        #"{"type":"offer","to":"bob","from":"alice","seq":"#,
        #"{"type":"welcome","to":"bob","from":"alice","seq":"#,
        #"{"type":"answer","to":"bob","sdp":"v=0","from":"alice","seq":"#,
        // not JSON
        #"{"type":"offer","to":"bob","sdp":"v=0,"from":"alice","seq":"#,
        "",
    ])
    func refusesAForgedOrMalformedSignal(_ json: String) {
        #expect(validator.validate(signal(json), from: "alice", to: "bob", addressed: true) == nil)
    }

    @Test func refusesSignalFieldsThatDisagreeWithTheMessage() {
        let json = #"{"type":"offer","to":"bob","room":"x","sdp":"v=0","id":"o1","from":"alice","seq":"#
        #expect(validator.validate(signal(json, id: "o1", room: "x"), from: "alice", to: "bob", addressed: true) != nil)
        #expect(validator.validate(signal(json, id: "o2", room: "x"), from: "alice", to: "bob", addressed: true) == nil)
        #expect(validator.validate(signal(json, id: "o1", room: "y"), from: "alice", to: "bob", addressed: true) == nil)
        #expect(validator.validate(signal(json, id: "o1"), from: "alice", to: "bob", addressed: true) == nil)
        #expect(
            validator.validate(signal(json, ticket: 0, id: "o1", room: "x"), from: "alice", to: "bob", addressed: true)
                == nil
        )
        // A room leg must not be addressed to anyone.
        #expect(
            validator.validate(signal(json, ticket: 0, id: "o1", room: "x"), from: "alice", to: "bob", addressed: false)
                == nil
        )
        let tooMany = (0..<17).map { "r\($0)" }
        let shared = #"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":"#
        #expect(
            validator.validate(signal(shared, senderRooms: tooMany), from: "alice", to: "bob", addressed: true) == nil
        )
        #expect(
            validator.validate(signal(shared, senderRooms: ["bad room"]), from: "alice", to: "bob", addressed: true)
                == nil
        )
    }

    @Test(arguments: [
        #"{"type":"peer-joined","room":"x","peer":"carol","meta":null,"seq":"#,
        #"{"type":"peer-joined","room":"x","peer":"alice","seq":"#,
        #"{"type":"peer-joined","room":"x","peer":"alice","meta":null,"data":"x","seq":"#,
        #"{"type":"peer-joined","room":"x","peer":"alice","meta":"hi","seq":"#,
        #"{"type":"peer-left","room":"no room!","peer":"alice","seq":"#,
        #"{"type":"error","room":"x","peer":"alice","seq":"#,
        #"{"type":"offer","to":"bob","sdp":"v=0","from":"alice","seq":"#,
    ])
    func refusesForgedPresence(_ json: String) {
        #expect(validator.validate(presence(json), from: "alice", to: "bob", addressed: false) == nil)
    }

    @Test func refusesAnAnswerFromSomeoneElse() {
        let answer = BridgePayload.answer(
            .init(outcome: .delivered, type: .offer, ticket: 3, id: nil, recipient: "bob")
        )
        #expect(validator.validate(answer.encoded, from: "carol", to: "alice", addressed: true) == nil)
        #expect(validator.validate(answer.encoded, from: "bob", to: "alice", addressed: false) == nil)
        let noTicket = BridgePayload.answer(.init(outcome: .queued, type: .offer, ticket: 0, id: nil, recipient: "bob"))
        #expect(validator.validate(noTicket.encoded, from: "bob", to: "alice", addressed: true) == nil)
    }
}
