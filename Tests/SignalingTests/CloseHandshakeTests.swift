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

    /// Times in uptime nanoseconds, as the handler passes them.
    static let second: UInt64 = 1_000_000_000
    static let millisecond: UInt64 = 1_000_000
    let t0: UInt64 = 1_000 * Self.second
    /// The server's default close timeout (`ServerConfiguration.closeTimeout`).
    let timeout: UInt64 = 2 * Self.second

    @Test func serverCloseWaitsForTheClientsCloseFrame() {
        var handshake = CloseHandshake()
        #expect(
            handshake.initiate(.tryAgainLater, reason: "slow", inboundUsable: true, now: t0, closeTimeout: timeout)
                == .send(code: .tryAgainLater, reason: "slow")
        )
        #expect(handshake.state == .closing)
        #expect(handshake.nextCheck == t0 + 2 * Self.second)
        // A second close (e.g. an error while closing) does nothing.
        #expect(
            handshake.initiate(.protocolError, reason: "x", inboundUsable: true, now: t0 + 1, closeTimeout: timeout)
                == .none
        )
        #expect(handshake.nextCheck == t0 + 2 * Self.second)
        #expect(handshake.receivedClose(payload(1000)) == .closeSocket)
        #expect(handshake.state == .closed)
        #expect(handshake.nextCheck == nil)
        #expect(handshake.tick(now: t0 + 3 * Self.second) == .none)
        #expect(handshake.serverCode == .tryAgainLater)
        #expect(!handshake.clientClosed)
    }

    @Test func aClientThatKeepsSendingIsDrainedUntilTheCloseTimeout() {
        // Data frames after the server's close frame are dropped by the handler; no number of them closes
        // the socket early (that would reset the connection under the client's unread errors and close
        // frame): only the client's close frame or the timeout does.
        var handshake = CloseHandshake()
        #expect(handshake.tick(now: t0) == .none)  // nothing to wait for while open
        _ = handshake.initiate(
            .policyViolation,
            reason: "rate limit exceeded",
            inboundUsable: true,
            now: t0,
            closeTimeout: timeout
        )
        for step in 1...19 {
            let now = t0 + UInt64(step) * 100 * Self.millisecond
            handshake.receivedBytes(now: now)  // the flood goes on; only draining counts it
            #expect(handshake.tick(now: now) == .checkAgain(at: t0 + 2 * Self.second))
        }
        #expect(handshake.state == .closing)
        #expect(handshake.tick(now: t0 + 2 * Self.second) == .closeSocket)
        #expect(handshake.state == .closed)
        #expect(handshake.receivedClose(payload(1000)) == .ignore)
    }

    @Test func aBrokenInboundStreamIsDrainedUntilTheClientIsQuiet() {
        var handshake = CloseHandshake()
        #expect(
            handshake.initiate(
                .messageTooBig,
                reason: "frame too big",
                inboundUsable: false,
                now: t0,
                closeTimeout: timeout
            ) == .send(code: .messageTooBig, reason: "frame too big")
        )
        #expect(handshake.state == .draining)
        #expect(handshake.nextCheck == t0 + 250 * Self.millisecond)
        // Still sending: the quiet period starts over with every read.
        handshake.receivedBytes(now: t0 + 100 * Self.millisecond)
        #expect(handshake.tick(now: t0 + 250 * Self.millisecond) == .checkAgain(at: t0 + 350 * Self.millisecond))
        // Quiet for the whole period: closed (nothing unread, so no reset).
        #expect(handshake.tick(now: t0 + 350 * Self.millisecond) == .closeSocket)
        #expect(handshake.state == .closed)
    }

    @Test func aBrokenStreamThatNeverGoesQuietIsClosedAtTheTimeout() {
        var handshake = CloseHandshake()
        _ = handshake.initiate(
            .messageTooBig,
            reason: "frame too big",
            inboundUsable: false,
            now: t0,
            closeTimeout: timeout
        )
        var now = t0
        var verdict = CloseHandshake.TickAction.none
        while now < t0 + 3 * Self.second {
            now += 100 * Self.millisecond
            handshake.receivedBytes(now: now)
            verdict = handshake.tick(now: now)
            if verdict == .closeSocket { break }
            #expect(verdict == .checkAgain(at: min(t0 + 2 * Self.second, now + 250 * Self.millisecond)))
        }
        #expect(verdict == .closeSocket)
        #expect(now == t0 + 2 * Self.second)
    }

    @Test func aFramingErrorWhileClosingTurnsClosingIntoDraining() {
        var handshake = CloseHandshake()
        _ = handshake.initiate(
            .policyViolation,
            reason: "rate limit exceeded",
            inboundUsable: true,
            now: t0,
            closeTimeout: timeout
        )
        let later = t0 + Self.second
        #expect(
            handshake.initiate(
                .protocolError,
                reason: "invalid frame",
                inboundUsable: false,
                now: later,
                closeTimeout: timeout
            ) == .none
        )
        #expect(handshake.state == .draining)
        #expect(handshake.serverCode == .policyViolation)  // the close frame that went out
        #expect(handshake.nextCheck == later + 250 * Self.millisecond)
        // The deadline stays the one of the close frame.
        handshake.receivedBytes(now: t0 + 1_900 * Self.millisecond)
        #expect(handshake.nextCheck == t0 + 2 * Self.second)
    }

    @Test func aClientCloseFrameEndsDraining() {
        var handshake = CloseHandshake()
        _ = handshake.initiate(.messageTooBig, reason: "big", inboundUsable: false, now: t0, closeTimeout: timeout)
        #expect(handshake.receivedClose(payload(1000)) == .closeSocket)
        #expect(handshake.state == .closed)
        handshake.receivedBytes(now: t0 + 1)
        #expect(handshake.tick(now: t0 + 3 * Self.second) == .none)
    }

    // ClosingFrameScanner: what the handler reads after its close frame.

    /// A client frame: FIN, `opcode`, masked with `key` (unmasked when nil); `declared` overrides the length.
    func frame(_ opcode: UInt8, _ payload: [UInt8], key: [UInt8]? = [1, 2, 3, 4], declared: UInt64? = nil) -> [UInt8] {
        let length = declared ?? UInt64(payload.count)
        var bytes: [UInt8] = [0x80 | opcode]
        let maskBit: UInt8 = key == nil ? 0 : 0x80
        if length < 126 {
            bytes.append(maskBit | UInt8(length))
        } else if length < 65536 {
            bytes.append(maskBit | 126)
            bytes += [UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8((length >> (8 * UInt64($0))) & 0xFF) }
        }
        guard let key else { return bytes + payload }
        return bytes + key + payload.enumerated().map { $0.element ^ key[$0.offset & 3] }
    }

    func closePayload(_ code: UInt16, _ reason: String) -> [UInt8] {
        [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
    }

    @Test func theScannerSkipsDataFramesAndReturnsTheUnmaskedCloseFrame() {
        let scanner = ClosingFrameScanner()
        let stream =
            frame(0x1, Array(#"{"type":"ping"}"#.utf8)) + frame(0x2, Array(repeating: 7, count: 300))
            + frame(0x1, Array(repeating: 0x41, count: 70_000)) + frame(0x9, [1, 2]) + frame(0x0, [], key: nil)
            + frame(0x8, closePayload(1000, "bye"), key: [0xA1, 0xB2, 0xC3, 0xD4])
        #expect(scanner.scan(ByteBuffer(bytes: stream)) == .close(ByteBuffer(bytes: closePayload(1000, "bye"))))
    }

    @Test func theScannerKeepsItsPlaceAcrossReadsOfAnyLength() {
        let stream =
            frame(0x1, Array(repeating: 0x41, count: 70_000)) + frame(0x1, Array(repeating: 0x42, count: 200))
            + frame(0x8, closePayload(1008, "ok"))
        for chunkSize in [1, 2, 3, 7, 13, 1000, 65_536] {
            let scanner = ClosingFrameScanner()
            var results: [ClosingFrameScanner.Result] = []
            var offset = 0
            while offset < stream.count {
                let end = min(offset + chunkSize, stream.count)
                results.append(scanner.scan(ByteBuffer(bytes: stream[offset..<end])))
                offset = end
            }
            #expect(results.last == .close(ByteBuffer(bytes: closePayload(1008, "ok"))), "chunks of \(chunkSize)")
            #expect(results.dropLast().allSatisfy { $0 == .needMore }, "chunks of \(chunkSize)")
        }
    }

    @Test func theScannerSkipsAHugeDeclaredLengthWithoutBufferingIt() {
        let scanner = ClosingFrameScanner()
        let header = frame(0x1, [], declared: 1 << 40)
        #expect(scanner.scan(ByteBuffer(bytes: header)) == .needMore)
        for _ in 0..<4 {
            #expect(scanner.scan(ByteBuffer(repeating: 0x78, count: 65_536)) == .needMore)
        }
        #expect(scanner.skipping == (1 << 40) - 4 * 65_536)
    }

    @Test func aCloseFrameLongerThanAControlFrameMakesTheStreamUnreadable() {
        let scanner = ClosingFrameScanner()
        #expect(scanner.scan(ByteBuffer(bytes: frame(0x8, Array(repeating: 0x41, count: 126)))) == .unreadable)
    }

    @Test func clientCloseIsEchoedWhenValid() {
        var handshake = CloseHandshake()
        #expect(handshake.receivedClose(payload(1001, Array("bye".utf8))) == .reply(code: 1001))
        #expect(handshake.clientClosed && handshake.clientCode == 1001)
        #expect(handshake.initiate(.normal, reason: "", inboundUsable: true, now: t0, closeTimeout: timeout) == .none)

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
        #expect(
            badReason.receivedClose(payload(1000, [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xED, 0xA0, 0x80]))
                == .reply(code: 1007)
        )
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
