import Signaling
import Testing

@testable import SignalMesh

@Suite struct BridgePayloadTests {
    @Test func signalPresenceAndNoticeRoundTrip() {
        let payloads: [BridgePayload] = [
            .signal(type: .offer, id: "o1", prefix: Array("{\"type\":\"offer\",\"from\":\"a\",\"seq\":".utf8)),
            .signal(type: .message, id: nil, prefix: []),
            .presence(prefix: Array("{\"type\":\"peer-left\",\"room\":\"r\",\"peer\":\"a\",\"seq\":".utf8)),
            .notice(.expired, type: .bye, id: "b", recipient: "bob"),
        ]
        for payload in payloads {
            #expect(BridgePayload(payload.encoded) == payload)
        }
        #expect(BridgePayload([]) == nil)
        #expect(BridgePayload([9]) == nil)
    }
}
