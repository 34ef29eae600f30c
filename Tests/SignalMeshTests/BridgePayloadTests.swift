import Signaling
import Testing

@testable import SignalMesh

@Suite struct BridgePayloadTests {
    static let prefix = Array("{\"type\":\"offer\",\"to\":\"bob\",\"sdp\":\"v=0\",\"from\":\"alice\",\"seq\":".utf8)

    @Test(arguments: [
        BridgePayload.signal(
            .init(type: .offer, ticket: 7, id: "o1", room: "x", senderRooms: ["x", "y"], prefix: prefix)
        ),
        .signal(.init(type: .message, ticket: 0, id: nil, room: nil, senderRooms: [], prefix: [])),
        .presence(prefix: Array("{\"type\":\"peer-left\",\"room\":\"r\",\"peer\":\"a\",\"seq\":".utf8)),
        .answer(.init(outcome: .delivered, type: .offer, ticket: 1, id: "o1", recipient: "bob")),
        .answer(.init(outcome: .queued, type: .answer, ticket: 2, id: nil, recipient: "bob")),
        .answer(.init(outcome: .expired, type: .bye, ticket: 0, id: "b", recipient: "bob")),
        .answer(.init(outcome: .refused(.peerUnavailable("bob")), type: .offer, ticket: 3, id: nil, recipient: "bob")),
        .answer(.init(outcome: .refused(.queueFull("bob")), type: .offer, ticket: 3, id: nil, recipient: "bob")),
        .answer(.init(outcome: .refused(.noSharedRoom("bob")), type: .offer, ticket: 3, id: "m", recipient: "bob")),
        .answer(.init(outcome: .refused(.recipientAway("bob")), type: .message, ticket: 4, id: "v", recipient: "bob")),
        .answer(
            .init(
                outcome: .refused(.recipientNotInRoom(peer: "bob", room: "x")),
                type: .candidate,
                ticket: 4,
                id: "c",
                recipient: "bob"
            )
        ),
    ])
    func roundTrips(_ payload: BridgePayload) {
        #expect(BridgePayload(payload.encoded) == payload)
    }

    @Test func refusalsTheRecipientCannotGiveTravelAsUnavailable() {
        let answer = BridgePayload.answer(
            .init(outcome: .refused(.idTaken("bob")), type: .offer, ticket: 1, id: nil, recipient: "bob")
        )
        guard case .answer(let decoded)? = BridgePayload(answer.encoded) else {
            Issue.record("did not decode")
            return
        }
        #expect(decoded.outcome == .refused(.unavailable))
    }

    @Test func malformedPayloadsDoNotDecode() {
        let signal = BridgePayload.signal(
            .init(type: .offer, ticket: 7, id: "o1", room: nil, senderRooms: ["x"], prefix: Self.prefix)
        ).encoded
        #expect(BridgePayload([]) == nil)
        #expect(BridgePayload([9]) == nil)
        #expect(BridgePayload([1, 0, 0]) == nil)  // the first layout's signal
        #expect(BridgePayload(Array(signal.dropLast())) == nil)  // truncated
        #expect(BridgePayload(signal + [0]) == nil)  // bytes left over
        var badType = signal
        badType[1] = 200
        #expect(BridgePayload(badType) == nil)
        var badFlag = signal
        badFlag[10] = 2  // the id's presence flag
        #expect(BridgePayload(badFlag) == nil)
    }
}
