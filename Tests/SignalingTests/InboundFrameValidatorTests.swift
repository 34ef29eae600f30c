import NIOCore
import NIOWebSocket
import Testing

@testable import Signaling

@Suite struct InboundFrameValidatorTests {
    /// Feeds frames and returns the verdicts.
    func run(
        _ frames: [(fin: Bool, opcode: WebSocketOpcode, payload: [UInt8])],
        masked: Bool = true,
        reservedBits: Bool = false,
        maxMessageBytes: Int = 1024,
        maxFragments: Int = 4
    ) -> [InboundFrameValidator.Verdict] {
        var validator = InboundFrameValidator(maxMessageBytes: maxMessageBytes, maxFragments: maxFragments)
        return frames.map { frame in
            frame.payload.withUnsafeBytes {
                validator.inspect(
                    fin: frame.fin,
                    opcode: frame.opcode,
                    reservedBits: reservedBits,
                    masked: masked,
                    payload: $0
                )
            }
        }
    }

    func code(_ verdict: InboundFrameValidator.Verdict) -> CloseCode? {
        if case .reject(let code, _) = verdict { return code }
        return nil
    }

    @Test func acceptsWholeAndFragmentedMessagesInterleavedWithControlFrames() {
        let verdicts = run([
            (true, .text, Array("hello".utf8)),
            (false, .text, Array("he".utf8)),
            (true, .ping, []),
            (false, .continuation, Array("l".utf8)),
            (true, .continuation, Array("lo".utf8)),
            (true, .binary, [0xFF, 0x00]),
            (true, .connectionClose, [0x03, 0xE8]),
        ])
        #expect(verdicts.allSatisfy { $0 == .accept })
    }

    @Test func unmaskedFramesAreAProtocolError() {
        #expect(code(run([(true, .text, [])], masked: false)[0]) == .protocolError)
    }

    @Test func reservedBitsAndOpcodesAreAProtocolError() {
        #expect(code(run([(true, .text, [])], reservedBits: true)[0]) == .protocolError)
        for raw: UInt8 in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let opcode = WebSocketOpcode(encodedWebSocketOpcode: raw)!
            #expect(code(run([(true, opcode, [])])[0]) == .protocolError)
        }
    }

    @Test func fragmentsOutOfOrderAreAProtocolError() {
        #expect(code(run([(true, .continuation, [])])[0]) == .protocolError)
        #expect(code(run([(false, .text, []), (true, .text, [])])[1]) == .protocolError)
        #expect(code(run([(false, .binary, []), (false, .binary, [])])[1]) == .protocolError)
    }

    @Test func sizeIsCheckedAcrossFragmentsBeforeTheyAreBuffered() {
        let chunk = [UInt8](repeating: 0x61, count: 600)
        let verdicts = run([(false, .text, chunk), (true, .continuation, chunk)])
        #expect(verdicts[0] == .accept)
        #expect(code(verdicts[1]) == .messageTooBig)
        #expect(code(run([(true, .binary, chunk + chunk)])[0]) == .messageTooBig)
        #expect(run([(true, .binary, [UInt8](repeating: 0, count: 1024))])[0] == .accept)
    }

    @Test func fragmentCountIsBounded() {
        let four: [(fin: Bool, opcode: WebSocketOpcode, payload: [UInt8])] = [
            (false, .text, [0x61]), (false, .continuation, [0x61]), (false, .continuation, [0x61]),
            (true, .continuation, [0x61]),
        ]
        #expect(run(four).allSatisfy { $0 == .accept })
        // The fourth fragment may only be the last one.
        var five = four
        five[3].fin = false
        five.append((true, .continuation, [0x61]))
        #expect(code(run(five)[3]) == .messageTooBig)
    }

    @Test func invalidUTF8FailsFastAndAcrossFragmentBoundaries() {
        // "κ" (CE BA) split across two fragments is fine.
        #expect(run([(false, .text, [0xCE]), (true, .continuation, [0xBA])]).allSatisfy { $0 == .accept })
        // An invalid byte in the second of three fragments fails before the third arrives.
        let verdicts = run([
            (false, .text, Array("ok".utf8)), (false, .continuation, [0xF4, 0x90]),
            (true, .continuation, [0x80, 0x80]),
        ])
        #expect(verdicts[0] == .accept)
        #expect(code(verdicts[1]) == .invalidPayload)
        #expect(verdicts[2] == .drop)
        // A message may not end inside a code point.
        #expect(code(run([(false, .text, [0x61]), (true, .continuation, [0xE2, 0x82])])[1]) == .invalidPayload)
        #expect(code(run([(true, .text, [0xC0, 0xAF])])[0]) == .invalidPayload)
        // Binary is not checked.
        #expect(run([(true, .binary, [0xFF])])[0] == .accept)
    }

    @Test func afterAViolationOnlyControlFramesPass() {
        let verdicts = run([
            (true, .text, [0xFF]),
            (true, .text, Array("later".utf8)),
            (true, .continuation, []),
            (true, .ping, []),
            (true, .connectionClose, []),
        ])
        #expect(code(verdicts[0]) == .invalidPayload)
        #expect(verdicts[1] == .drop)
        #expect(verdicts[2] == .drop)
        #expect(verdicts[3] == .accept)
        #expect(verdicts[4] == .accept)
    }
}

@Suite struct UTF8StreamValidatorTests {
    func valid(_ chunks: [[UInt8]]) -> Bool {
        var validator = UTF8StreamValidator()
        for chunk in chunks {
            guard chunk.withUnsafeBytes({ validator.consume($0) }) else { return false }
        }
        return validator.isAtBoundary
    }

    @Test func agreesWithTheStandardLibraryOnEveryTwoAndThreeByteSequence() {
        for a in 0x80...0xFF {
            for b in 0x00...0xFF {
                let bytes: [UInt8] = [UInt8(a), UInt8(b)]
                #expect(valid([bytes]) == (String(validating: bytes, as: UTF8.self) != nil))
            }
        }
        for a in [0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5] {
            for b in 0x70...0xC0 {
                for c in [0x7F, 0x80, 0xBF, 0xC0] {
                    let bytes: [UInt8] = [UInt8(a), UInt8(b), UInt8(c)]
                    #expect(valid([bytes]) == (String(validating: bytes, as: UTF8.self) != nil))
                }
            }
        }
    }

    @Test func everySplitOfAValidStringIsValid() {
        let text = Array("κόσμε — 𝄞 ascii then more ascii to reach the fast path €".utf8)
        for cut in 0...text.count {
            #expect(valid([Array(text[..<cut]), Array(text[cut...])]))
        }
        #expect(!valid([Array(text.dropLast())]))
    }

    @Test func rejectsSurrogatesOverlongsAndValuesPastTheLastCodePoint() {
        #expect(!valid([[0xED, 0xA0, 0x80]]))  // U+D800
        #expect(!valid([[0xE0, 0x80, 0xAF]]))  // overlong "/"
        #expect(!valid([[0xF4, 0x90, 0x80, 0x80]]))  // U+110000
        #expect(valid([[0xF4, 0x8F, 0xBF, 0xBF]]))  // U+10FFFF
        #expect(valid([[0xEF, 0xBF, 0xBF]]))  // U+FFFF
    }
}
