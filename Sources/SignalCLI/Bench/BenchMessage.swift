/// The messages `signal bench` sends, and how it recognises what comes back.
///
/// Every measured message starts with `{"bt":"<16 hex digits>",` — the send time. Protocol v1 relays
/// unknown fields verbatim and in order (the hub copies the sender's bytes; a JSON.parse/stringify relay
/// keeps insertion order), so the recipient finds the send time at a fixed offset without parsing JSON.
enum BenchMessage {
    /// `{"bt":"`
    static let stampPrefix: [UInt8] = Array(#"{"bt":""#.utf8)
    /// Payload offset of the send time's digits.
    static let stampOffset = 7
    /// Payload offset of the type name in a stamped signal: `{"bt":"<16>","type":"`.
    static let typeOffset = 33
    /// Payload offset of the first byte of a candidate's value: `{"bt":"<16>","type":"candidate","candidate":`.
    static let candidateValueOffset = 56

    /// What a received text message is, decided from its first bytes.
    enum Kind: Equatable {
        /// A measured message; the value is its send time.
        case stamped(UInt64)
        case ack
        case error
        case welcome
        case joined
        case other
    }

    static func classify(_ payload: UnsafeRawBufferPointer) -> Kind {
        if payload.count >= stampOffset + 16, payload.starts(with: stampPrefix) {
            var value: UInt64 = 0
            for index in stampOffset..<(stampOffset + 16) {
                let byte = payload[index]
                let nibble: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = byte - UInt8(ascii: "a") + 10
                default: return .other
                }
                value = value << 4 | UInt64(nibble)
            }
            return .stamped(value)
        }
        if payload.starts(with: ackPrefix) { return .ack }
        if payload.starts(with: errorPrefix) { return .error }
        if payload.starts(with: welcomePrefix) { return .welcome }
        if payload.starts(with: joinedPrefix) { return .joined }
        return .other
    }

    private static let ackPrefix: [UInt8] = Array(#"{"type":"ack""#.utf8)
    private static let errorPrefix: [UInt8] = Array(#"{"type":"error""#.utf8)
    private static let welcomePrefix: [UInt8] = Array(#"{"type":"welcome""#.utf8)
    private static let joinedPrefix: [UInt8] = Array(#"{"type":"joined""#.utf8)

    /// The value of the first `"name":"…"` string member (no escapes expected: peer ids are plain).
    static func stringMember(_ name: String, in payload: UnsafeRawBufferPointer) -> String? {
        guard let start = offset(after: Array("\"\(name)\":\"".utf8), in: payload, last: false) else { return nil }
        var end = start
        while end < payload.count, payload[end] != UInt8(ascii: "\"") { end += 1 }
        guard end < payload.count else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: payload[start..<end]), as: UTF8.self)
    }

    /// The offset just past the first (or, with `last`, the last) occurrence of `needle` in `payload`.
    private static func offset(after needle: [UInt8], in payload: UnsafeRawBufferPointer, last: Bool) -> Int? {
        guard payload.count >= needle.count else { return nil }
        let starts = 0...(payload.count - needle.count)
        let matches = { (index: Int) in needle.indices.allSatisfy { payload[index + $0] == needle[$0] } }
        let found = last ? starts.reversed().first(where: matches) : starts.first(where: matches)
        return found.map { $0 + needle.count }
    }

    // MARK: Builders

    /// An addressed signal of `size` bytes (at least its fixed part): offer/answer carry an SDP-like
    /// `sdp`, candidates a candidate object (`end` makes it the `null` end-of-candidates).
    static func signal(_ type: SignalKind, to peer: String, size: Int, end: Bool = false) -> FrameTemplate {
        padded(size: size) { builder, padding in
            builder.raw(#"{"bt":""#)
            builder.stamp()
            builder.raw(#"","type":""#)
            builder.raw(type.rawValue)
            builder.raw(#"","#)
            switch type {
            case .offer, .answer:
                builder.raw(#""sdp":"v=0\r\n"#)
                builder.sdpPadding(padding)
                builder.raw(#"""#)
            case .candidate:
                if end {
                    builder.raw(#""candidate":null"#)
                } else {
                    builder.raw(#""candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"#)
                    builder.letters(padding)
                    builder.raw(#"","sdpMid":"0","sdpMLineIndex":0}"#)
                }
            case .message:
                builder.raw(#""data":""#)
                builder.letters(padding)
                builder.raw(#"""#)
            }
            builder.raw(#","to":""#)
            builder.raw(peer)
            builder.raw(#"","id":""#)
            builder.id()
            builder.raw(#""}"#)
        }
    }

    /// A room broadcast (`message` with `room` and no `to`).
    static func broadcast(room: String, size: Int) -> FrameTemplate {
        padded(size: size) { builder, padding in
            builder.raw(#"{"bt":""#)
            builder.stamp()
            builder.raw(#"","type":"message","room":""#)
            builder.raw(room)
            builder.raw(#"","id":""#)
            builder.id()
            builder.raw(#"","data":""#)
            builder.letters(padding)
            builder.raw(#""}"#)
        }
    }

    /// A message for an echo server: the send time and padding.
    static func echo(size: Int) -> FrameTemplate {
        padded(size: size) { builder, padding in
            builder.raw(#"{"bt":""#)
            builder.stamp()
            builder.raw(#"","d":""#)
            builder.letters(padding)
            builder.raw(#""}"#)
        }
    }

    /// `received`: the highest `seq` processed, as the SDK reports it (each second).
    static func received(seq: UInt64) -> FrameTemplate {
        FrameTemplate(payload: Array(#"{"type":"received","seq":\#(seq)}"#.utf8))
    }

    /// The value of the last `"seq":<digits>` member of a message (the hub puts `seq` last), or nil.
    static func lastSeq(in payload: UnsafeRawBufferPointer) -> UInt64? {
        guard var end = offset(after: Array(#""seq":"#.utf8), in: payload, last: true) else { return nil }
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        guard end < payload.count, digits.contains(payload[end]) else { return nil }
        var value: UInt64 = 0
        while end < payload.count, digits.contains(payload[end]) {
            value = value * 10 + UInt64(payload[end] - UInt8(ascii: "0"))
            end += 1
        }
        return value
    }

    static func join(room: String) -> FrameTemplate {
        FrameTemplate(payload: Array(#"{"type":"join","room":"\#(room)","id":"j"}"#.utf8))
    }

    static func leave(room: String) -> FrameTemplate {
        FrameTemplate(payload: Array(#"{"type":"leave","room":"\#(room)","id":"l"}"#.utf8))
    }

    /// Whether a message is `peer-joined` (true), `peer-left` (false) or neither (nil), from its first bytes.
    static func presence(_ payload: UnsafeRawBufferPointer) -> Bool? {
        if payload.starts(with: peerJoinedPrefix) { return true }
        if payload.starts(with: peerLeftPrefix) { return false }
        return nil
    }

    private static let peerJoinedPrefix: [UInt8] = Array(#"{"type":"peer-joined""#.utf8)
    private static let peerLeftPrefix: [UInt8] = Array(#"{"type":"peer-left""#.utf8)

    /// The signal types the relay scenario uses.
    enum SignalKind: String {
        case offer, answer, candidate, message
    }

    private static func padded(size: Int, _ build: (inout Builder, Int) -> Void) -> FrameTemplate {
        var probe = Builder()
        build(&probe, 0)
        var builder = Builder()
        build(&builder, max(0, size - probe.bytes.count))
        return FrameTemplate(payload: builder.bytes, stampOffset: builder.stampOffset, idOffset: builder.idOffset)
    }

    struct Builder {
        var bytes: [UInt8] = []
        var stampOffset: Int?
        var idOffset: Int?

        mutating func raw(_ text: String) { bytes.append(contentsOf: text.utf8) }

        mutating func stamp() {
            stampOffset = bytes.count
            bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: 16))
        }

        mutating func id() {
            idOffset = bytes.count
            bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: 8))
        }

        mutating func letters(_ count: Int) {
            for index in 0..<count { bytes.append(UInt8(ascii: "a") + UInt8(index % 26)) }
        }

        /// SDP-like text: lines of 62 characters, each ended by an escaped `\r\n`-style `\n`.
        mutating func sdpPadding(_ count: Int) {
            var left = count
            while left > 0 {
                if left >= 64 {
                    letters(62)
                    raw(#"\n"#)
                    left -= 64
                } else {
                    letters(left)
                    left = 0
                }
            }
        }
    }
}
