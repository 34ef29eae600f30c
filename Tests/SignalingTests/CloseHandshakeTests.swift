import NIOCore
import Testing

@testable import Signaling

@Suite struct CloseHandshakeTests {
    func payload(_ code: UInt16?, _ reason: [UInt8] = []) -> ByteBuffer {
        var buffer = ByteBuffer()
        if let code { buffer.writeInteger(code) }
        buffer.writeBytes(reason)
        return buffer
    }

    @Test func serverCloseWaitsForTheClientsCloseFrame() {
        var handshake = CloseHandshake()
        #expect(handshake.initiate(.tryAgainLater, reason: "slow", inboundUsable: true) == .send(code: .tryAgainLater, reason: "slow", awaitReply: true))
        #expect(handshake.state == .closing)
        // A second close (e.g. an error while closing) does nothing.
        #expect(handshake.initiate(.protocolError, reason: "x", inboundUsable: true) == .none)
        #expect(handshake.receivedClose(payload(1000)) == .closeSocket)
        #expect(handshake.state == .closed)
        #expect(handshake.serverCode == .tryAgainLater)
        #expect(!handshake.clientClosed)
    }

    @Test func aClientThatKeepsSendingAfterTheCloseFrameIsCutOff() {
        var handshake = CloseHandshake(maxFramesWhileClosing: 3)
        let whileOpen = handshake.receivedFrameWhileClosing()
        #expect(!whileOpen)  // not counted while open
        _ = handshake.initiate(.policyViolation, reason: "flood", inboundUsable: true)
        var verdicts: [Bool] = []
        for _ in 0..<4 { verdicts.append(handshake.receivedFrameWhileClosing()) }
        #expect(verdicts == [false, false, false, true])
        #expect(handshake.state == .closed)
        #expect(handshake.receivedClose(payload(1000)) == .ignore)
    }

    @Test func aBrokenInboundStreamClosesRightAfterTheCloseFrame() {
        var handshake = CloseHandshake()
        #expect(handshake.initiate(.messageTooBig, reason: "big", inboundUsable: false) == .send(code: .messageTooBig, reason: "big", awaitReply: false))
        #expect(handshake.state == .closed)
        #expect(handshake.receivedClose(payload(1000)) == .ignore)
    }

    @Test func clientCloseIsEchoedWhenValid() {
        var handshake = CloseHandshake()
        #expect(handshake.receivedClose(payload(1001, Array("bye".utf8))) == .reply(code: 1001))
        #expect(handshake.clientClosed && handshake.clientCode == 1001)
        #expect(handshake.initiate(.normal, reason: "", inboundUsable: true) == .none)

        var empty = CloseHandshake()
        #expect(empty.receivedClose(payload(nil)) == .reply(code: nil))
        #expect(empty.clientClosed && empty.clientCode == nil)
    }

    @Test(arguments: [0, 999, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2999, 5000, 65535] as [UInt16])
    func invalidCloseCodesAreAProtocolError(_ code: UInt16) {
        var handshake = CloseHandshake()
        #expect(handshake.receivedClose(payload(code)) == .reply(code: 1002))
    }

    @Test func malformedClosePayloadsAreAnswered() {
        var oneByte = CloseHandshake()
        #expect(oneByte.receivedClose(ByteBuffer(bytes: [0x03])) == .reply(code: 1002))
        var badReason = CloseHandshake()
        #expect(badReason.receivedClose(payload(1000, [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xED, 0xA0, 0x80])) == .reply(code: 1007))
        var goodReason = CloseHandshake()
        #expect(goodReason.receivedClose(payload(4000, Array("κόσμε".utf8))) == .reply(code: 4000))
    }

    @Test func reasonsAreCutOnACharacterBoundaryToFitAControlFrame() {
        let long = String(repeating: "é", count: 100)  // 200 bytes
        let cut = CloseHandshake.truncated(long)
        #expect(cut.utf8.count <= CloseHandshake.maxReasonBytes)
        #expect(cut.utf8.count == 122)
        #expect(CloseHandshake.truncated("short") == "short")
    }
}
