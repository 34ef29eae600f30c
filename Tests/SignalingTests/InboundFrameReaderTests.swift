import NIOCore
import NIOWebSocket
import Testing

@testable import Signaling

@Suite struct InboundFrameReaderTests {
    /// A small reader: frames up to 300 bytes, messages up to 1,000 bytes in at most 4 fragments.
    func makeReader() -> InboundFrameReader {
        InboundFrameReader(maxFrameSize: 300, maxMessageBytes: 1000, maxFragments: 4)
    }

    /// A client frame: masked with `key` (nil: unmasked), the length in the shortest or a given form.
    func frame(
        _ opcode: WebSocketOpcode,
        _ payload: [UInt8],
        fin: Bool = true,
        key: [UInt8]? = [0x37, 0xFA, 0x21, 0x3D],
        declaredLength: Int? = nil
    ) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | UInt8(webSocketOpcode: opcode)]
        let mask: UInt8 = key == nil ? 0 : 0x80
        let length = declaredLength ?? payload.count
        if length < 126 {
            bytes.append(mask | UInt8(length))
        } else if length <= 65535 {
            bytes.append(mask | 126)
            bytes += [UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            bytes.append(mask | 127)
            bytes += (0..<8).reversed().map { UInt8((length >> ($0 * 8)) & 0xFF) }
        }
        if let key {
            bytes += key
            bytes += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
        } else {
            bytes += payload
        }
        return bytes
    }

    /// Feeds `chunks` one read at a time and collects every event.
    func events(_ chunks: [[UInt8]], reader: inout InboundFrameReader) -> [InboundFrameReader.Event] {
        var events: [InboundFrameReader.Event] = []
        for chunk in chunks {
            reader.append(ByteBuffer(bytes: chunk))
            while let event = reader.next(allocator: ByteBufferAllocator()) { events.append(event) }
        }
        return events
    }

    func describe(_ event: InboundFrameReader.Event) -> String {
        switch event {
        case .message(let opcode, let payload), .control(let opcode, let payload):
            let name: String
            switch opcode {
            case .text: name = "text"
            case .binary: name = "binary"
            case .ping: name = "ping"
            case .pong: name = "pong"
            case .connectionClose: name = "close"
            default: name = "opcode \(opcode)"
            }
            return "\(name) \(String(decoding: payload.readableBytesView, as: UTF8.self))"
        case .violation(let violation):
            return "violation \(violation.code.rawValue) \(violation.inboundUsable)"
        case .dropped:
            return "dropped"
        }
    }

    @Test func unmasksWholeMessagesOfEveryLengthForm() {
        var reader = makeReader()
        let short = Array("hello".utf8)
        let medium = [UInt8](repeating: UInt8(ascii: "m"), count: 200)
        let all = events([frame(.text, short) + frame(.text, medium) + frame(.binary, [1, 2, 3])], reader: &reader)
        #expect(
            all.map(describe) == ["text hello", "text " + String(repeating: "m", count: 200), "binary \u{1}\u{2}\u{3}"]
        )
    }

    @Test func joinsFragmentsAroundControlFramesAndAcrossReads() {
        var reader = makeReader()
        let bytes =
            frame(.text, Array("he".utf8), fin: false) + frame(.ping, Array("p".utf8))
            + frame(.continuation, Array("ll".utf8), fin: false) + frame(.continuation, Array("o".utf8))
        // One byte per read: every partial header, mask and payload waits for more.
        let all = events(bytes.map { [$0] }, reader: &reader)
        #expect(all.map(describe) == ["ping p", "text hello"])
    }

    @Test func declaredLengthOverTheLimitIs1009BeforeThePayloadArrives() {
        var reader = makeReader()
        // Only the header of a 301-byte frame: the verdict needs none of the payload.
        let header = Array(frame(.text, [], declaredLength: 301).prefix(4))
        let all = events([header], reader: &reader)
        #expect(all.map(describe) == ["violation 1009 false"])
        // Nothing more is read after a framing error.
        #expect(events([frame(.text, Array("x".utf8))], reader: &reader).isEmpty)
    }

    @Test func fragmentedOrLongControlFramesAre1002() {
        var fragmented = makeReader()
        #expect(events([frame(.ping, [], fin: false)], reader: &fragmented).map(describe) == ["violation 1002 false"])
        var long = makeReader()
        let ping = frame(.ping, [UInt8](repeating: 0, count: 126))
        #expect(events([ping], reader: &long).map(describe) == ["violation 1002 false"])
    }

    @Test func validatorVerdictsKeepTheStreamReadable() {
        var reader = makeReader()
        let all = events(
            [
                frame(.text, Array("x".utf8), key: nil) + frame(.text, Array("y".utf8))
                    + frame(.connectionClose, [0x03, 0xE8])
            ],
            reader: &reader
        )
        // An unmasked frame fails the connection (1002); later data frames are dropped, a close still passes.
        #expect(all.map(describe) == ["violation 1002 true", "dropped", "close \u{3}\u{FFFD}"])
    }

    @Test func invalidUTF8SplitAcrossFragmentsIs1007() {
        var reader = makeReader()
        let all = events([frame(.text, [0xE2, 0x82], fin: false) + frame(.continuation, [0x41])], reader: &reader)
        #expect(all.map(describe) == ["violation 1007 true"])
    }
}
