import Foundation
import NIOCore
import Testing

@testable import Signaling

@Suite struct MessageDecoderTests {
    let decoder = MessageDecoder()

    func decode(_ text: String) -> Result<ClientMessage, ProtocolError> {
        decoder.decode(ByteBuffer(string: text))
    }

    func error(_ text: String) -> ProtocolError? {
        if case .failure(let error) = decode(text) { return error }
        return nil
    }

    @Test func decodesAnOfferAndStripsServerOwnedFields() throws {
        let message = try decode(
            #"{"type":"offer","to":"bob","sdp":"v=0","from":"mallory","seq":99,"sid":"call-1","id":"r1"}"#
        ).get()
        #expect(message.id == "r1")
        guard case .signal(let envelope) = message.request else {
            Issue.record("not a signal")
            return
        }
        #expect(envelope.type == .offer)
        #expect(envelope.to == "bob")
        let relayed = ServerMessage.sequenced(ServerMessage.signalPrefix(envelope, from: "alice"), seq: 7)
        #expect(
            String(buffer: relayed)
                == #"{"type":"offer","to":"bob","sdp":"v=0","sid":"call-1","id":"r1","from":"alice","seq":7}"#
        )
    }

    @Test func decodesVolatileSignalsAndRelaysThemWithoutSeq() throws {
        let message = try decode(#"{"type":"message","room":"r","data":{"x":1},"volatile":true,"seq":3,"id":"v"}"#)
            .get()
        guard case .signal(let envelope) = message.request else {
            Issue.record("not a signal")
            return
        }
        #expect(envelope.volatile && envelope.room == "r")
        #expect(
            String(buffer: ServerMessage.volatileRelayed(envelope.members, from: "alice"))
                == #"{"type":"message","room":"r","data":{"x":1},"volatile":true,"id":"v","from":"alice"}"#
        )
        // The same bytes when it crossed a mesh as a prefix.
        let prefix = ServerMessage.signalPrefix(envelope, from: "alice")
        #expect(ServerMessage.unsequenced(prefix) == ServerMessage.volatileRelayed(envelope.members, from: "alice"))
        #expect(ServerMessage.unsequenced(ByteBuffer(string: "{}")) == nil)
        for text in [#"{"type":"bye","to":"b","volatile":false}"#, #"{"type":"bye","to":"b"}"#] {
            guard case .signal(let plain) = try decode(text).get().request else {
                Issue.record("not a signal")
                return
            }
            #expect(!plain.volatile, "\(text)")
        }
        #expect(
            error(#"{"type":"bye","to":"b","volatile":1,"id":"x"}"#)
                == ProtocolError(.badMessage, "'volatile' must be true or false", requestID: "x")
        )
        #expect(error(#"{"type":"bye","to":"b","volatile":"true"}"#)?.code == .badMessage)
    }

    @Test func decodesUpdatesWithTheirMeta() throws {
        let message = try decode(#"{"type":"update","room":"r","meta":{"typing":true},"id":"u"}"#).get()
        guard case .update(let room, let meta) = message.request else {
            Issue.record("not an update")
            return
        }
        #expect(room == "r" && String(buffer: meta) == #"{"typing":true}"# && message.id == "u")
        #expect(
            error(#"{"type":"update","room":"r","id":"u"}"#)
                == ProtocolError(.badMessage, "'update' needs a 'meta' object", requestID: "u")
        )
        #expect(error(#"{"type":"update","room":"r","meta":null}"#)?.code == .badMessage)
        #expect(error(#"{"type":"update","room":"r","meta":[1]}"#)?.code == .badMessage)
        #expect(error(#"{"type":"update","meta":{}}"#)?.code == .badMessage)
        let big = String(repeating: "m", count: 1100)
        #expect(error(#"{"type":"update","room":"r","meta":{"n":"\#(big)"}}"#)?.code == .tooLarge)
    }

    @Test func validatesEachSignalSchema() {
        #expect(error(#"{"type":"offer","to":"bob"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"answer","to":"bob","sdp":5}"#)?.code == .badMessage)
        #expect(error(#"{"type":"offer","to":7,"sdp":"x"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"offer","to":"bad id","sdp":"x"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"candidate","to":"bob"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"candidate","to":"bob","candidate":""}"#)?.code == .badMessage)
        #expect(error(#"{"type":"candidate","to":"bob","candidate":{"sdpMid":"0"}}"#)?.code == .badMessage)
        #expect(
            error(#"{"type":"candidate","to":"bob","candidate":{"candidate":"c","sdpMLineIndex":-1}}"#)?.code
                == .badMessage
        )
        #expect(error(#"{"type":"message","to":"bob"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"message","data":1}"#)?.code == .badMessage)
        #expect(error(#"{"type":"bye"}"#)?.code == .badMessage)
        #expect(
            error(#"{"type":"zap","id":"z"}"#)
                == ProtocolError(.unknownType, "unknown message type \"zap\"", requestID: "z")
        )
        #expect(error(#"{"to":"bob"}"#)?.code == .badMessage)
        #expect(error(#"{"type":1}"#)?.code == .badMessage)
        #expect(error("not json")?.code == .badMessage)
        #expect(error(#"{"type":"ping","id":5}"#)?.code == .badMessage)
        #expect(error(#"{"type":"ping","id":"\#(String(repeating: "x", count: 65))"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"offer","to":"bob","sdp":"x","from":"a","from":"b"}"#)?.code == .badMessage)
    }

    @Test func acceptsValidSignals() throws {
        for text in [
            #"{"type":"candidate","to":"bob","candidate":null}"#,
            #"{"type":"candidate","to":"bob","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}}"#,
            #"{"type":"bye","to":"bob","room":"r"}"#,
            #"{"type":"message","room":"r","data":{"chat":"hi"}}"#,
            #"{"type":"message","to":"bob","data":null}"#,
        ] {
            _ = try decode(text).get()
        }
    }

    @Test func validatesRoomsAndMeta() throws {
        #expect(error(#"{"type":"join"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"join","room":""}"#)?.code == .badMessage)
        #expect(error(#"{"type":"join","room":"\#(String(repeating: "r", count: 65))"}"#)?.code == .badMessage)
        #expect(error(#"{"type":"join","room":"r","meta":"x"}"#)?.code == .badMessage)
        let big = #"{"type":"join","room":"r","meta":{"n":"\#(String(repeating: "x", count: 1100))"}}"#
        #expect(error(big)?.code == .tooLarge)
        guard
            case .join(let room, let meta) = try decode(#"{"type":"join","room":"r.1~_-","meta":{"name":"A"}}"#).get()
                .request
        else {
            Issue.record("not a join")
            return
        }
        #expect(room == "r.1~_-")
        #expect(meta.map { String(buffer: $0) } == #"{"name":"A"}"#)
    }

    @Test func decodesReceived() throws {
        guard case .received(let seq) = try decode(#"{"type":"received","seq":42}"#).get().request else {
            Issue.record("not received")
            return
        }
        #expect(seq == 42)
        #expect(error(#"{"type":"received","seq":-1}"#)?.code == .badMessage)
        #expect(error(#"{"type":"received","seq":1.5}"#)?.code == .badMessage)
    }

    @Test func decodesAuth() throws {
        guard case .auth(let token) = try decode(#"{"type":"auth","token":"a.b.c","id":"x"}"#).get().request else {
            Issue.record("not auth")
            return
        }
        #expect(token == "a.b.c")
        #expect(error(#"{"type":"auth"}"#)?.message == "missing 'token'")
        #expect(error(#"{"type":"auth","token":7}"#)?.message == "'token' must be a string")
        #expect(error(#"{"type":"auth","token":""}"#)?.code == .badMessage)
        let long = String(repeating: "t", count: MessageDecoder.maxTokenBytes + 1)
        #expect(error(#"{"type":"auth","token":"\#(long)","id":"l"}"#)?.requestID == "l")
    }
}

@Suite struct AckEncodingTests {
    @Test(arguments: [nil, "o1", "12345678", "a \"quoted\" \\ id\n", "é-ü"], [false, true])
    func anAckWrittenIntoAFrameHasItsDeclaredLength(_ id: String?, _ queued: Bool) throws {
        let ack = ServerMessage.ack(id: id, queued: queued)
        #expect(ack.readableBytes == ServerMessage.ackLength(id: id, queued: queued))
        let decoded = try JSONSerialization.jsonObject(with: Data(ack.readableBytesView)) as? [String: Any]
        #expect(decoded?["type"] as? String == "ack")
        #expect(decoded?["id"] as? String == id)
        #expect((decoded?["queued"] as? Bool ?? false) == queued)
    }
}
