import Crypto
import NIOCore

/// Reads the first request of a connection for the WebSocket fast path (``WebSocketHandshakeHandler``):
/// a plain, well-formed RFC 6455 opening handshake on a WebSocket path is answered with `101` by the
/// fast path; anything else is `.fallBack`, and the bytes go to NIO's HTTP pipeline, which answers them
/// as it always has (plain HTTP, refusals, limits, malformed or unusual requests).
///
/// So the reader is strict: it takes only `GET <target> HTTP/1.1`, header lines of token names and
/// printable ASCII values, at most `maxHeaderCount` header lines and `maxHeaderBytes` bytes for the whole
/// head (the HTTP decoder's limits count less than that, so nothing it refuses is accepted here), exactly
/// one `Upgrade: websocket`, a `Connection` with the `upgrade` token, exactly one
/// `Sec-WebSocket-Version: 13`, exactly one `Sec-WebSocket-Key` of 16 base64-encoded bytes, no body, at most
/// one `Host`, `Origin` and `Authorization`, a WebSocket path and an origin the policy allows. For a
/// trusted proxy's connection (``readsForwardedFor``) it also keeps every `X-Forwarded-For` value.
struct WebSocketHandshakeReader {
    /// What the fast path may accept; the same settings the HTTP pipeline enforces.
    struct Rules: Sendable {
        var webSocketPaths: Set<String>
        var originPolicy: OriginPolicy
        var maxHeaderCount: Int
        var maxHeaderBytes: Int
    }

    enum Outcome {
        /// The head is not complete yet (and within the limits): wait for more bytes.
        case needMore
        /// Not for the fast path: give every byte received so far to the HTTP pipeline.
        case fallBack
        /// Answer `101` (``writeSwitchingProtocols(accept:into:)``) and serve `request`; the head is the
        /// first `headLength` bytes, what follows it is WebSocket frames.
        case upgrade(UpgradeRequest, accept: Insecure.SHA1Digest, headLength: Int)
    }

    private let rules: Rules
    /// Whether the request's `X-Forwarded-For` values go into ``UpgradeRequest/forwardedFor`` (only for
    /// a trusted proxy's connection: anyone else's header is ignored).
    private let readsForwardedFor: Bool
    /// Bytes already searched for the end of the head (so a head arriving in pieces is scanned once).
    private var scanned = 0

    init(rules: Rules, readsForwardedFor: Bool = false) {
        self.rules = rules
        self.readsForwardedFor = readsForwardedFor
    }

    /// Reads everything received so far (the same bytes again, plus what arrived since).
    mutating func read(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        // Only `GET /…` can be an upgrade: everything else falls back at its first bytes.
        let prefix: StaticString = "GET /"
        for index in 0..<min(bytes.count, prefix.utf8CodeUnitCount)
        where bytes[index] != prefix.utf8Start[index] {
            return .fallBack
        }
        guard let headLength = Self.headLength(bytes, from: scanned) else {
            scanned = max(0, bytes.count - 3)
            return bytes.count > rules.maxHeaderBytes ? .fallBack : .needMore
        }
        guard headLength <= rules.maxHeaderBytes,
            let head = Self.parse(
                UnsafeRawBufferPointer(rebasing: bytes[..<headLength]),
                rules: rules,
                readsForwardedFor: readsForwardedFor
            )
        else { return .fallBack }
        return .upgrade(head.request, accept: head.accept, headLength: headLength)
    }

    /// The `101` response, as NIO's upgrader writes it.
    static func writeSwitchingProtocols(accept: Insecure.SHA1Digest, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ")
        accept.withUnsafeBytes { Self.writeBase64($0, into: &buffer) }
        buffer.writeStaticString("\r\nConnection: upgrade\r\n\r\n")
    }

    /// The `Sec-WebSocket-Accept` digest of a key: SHA-1 of the key and RFC 6455's GUID.
    static func accept(key: UnsafeRawBufferPointer) -> Insecure.SHA1Digest {
        var hasher = Insecure.SHA1()
        hasher.update(bufferPointer: key)
        let guid: StaticString = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        hasher.update(bufferPointer: UnsafeRawBufferPointer(start: guid.utf8Start, count: guid.utf8CodeUnitCount))
        return hasher.finalize()
    }

    // MARK: Parsing

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")

    /// The length of the head up to and including its empty line, if it is all there.
    static func headLength(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var index = max(0, start)
        while index <= bytes.count - 4 {
            if bytes[index + 3] != lf {
                // No `\r\n\r\n` can end at index + 3; the next one can start at index + 1 at the earliest.
                index += 1
                continue
            }
            if bytes[index] == cr && bytes[index + 1] == lf && bytes[index + 2] == cr { return index + 4 }
            index += 1
        }
        return nil
    }

    private struct Head {
        var request: UpgradeRequest
        var accept: Insecure.SHA1Digest
    }

    /// The headers the fast path looks at.
    private enum Field {
        case host, origin, authorization, upgrade, connection, key, version, body, forwardedFor, other
    }

    private static func parse(_ head: UnsafeRawBufferPointer, rules: Rules, readsForwardedFor: Bool) -> Head? {
        // Request line: `GET <target> HTTP/1.1`.
        guard let requestLineEnd = lineEnd(head, from: 0) else { return nil }
        let version: StaticString = " HTTP/1.1"
        let targetEnd = requestLineEnd - version.utf8CodeUnitCount
        guard targetEnd > 4, matches(head, at: targetEnd, version) else { return nil }
        for index in 4..<targetEnd where !(0x21...0x7E).contains(head[index]) { return nil }

        var host: Range<Int>?
        var origin: Range<Int>?
        var authorization: Range<Int>?
        var upgrade: Range<Int>?
        var key: Range<Int>?
        var keyVersion: Range<Int>?
        var connectionUpgrade = false
        var forwardedFor: [String] = []
        var count = 0
        var position = requestLineEnd + 2
        while true {
            guard let end = lineEnd(head, from: position) else { return nil }
            if end == position { break }
            count += 1
            guard count <= rules.maxHeaderCount, let value = headerLine(head, position..<end) else { return nil }
            // A field that may appear once falls back to the HTTP pipeline when repeated.
            func once(_ slot: inout Range<Int>?) -> Bool {
                guard slot == nil else { return false }
                slot = value.range
                return true
            }
            switch field(head, position..<value.colon, readsForwardedFor: readsForwardedFor) {
            case .host: guard once(&host) else { return nil }
            case .origin: guard once(&origin) else { return nil }
            case .authorization: guard once(&authorization) else { return nil }
            case .upgrade: guard once(&upgrade) else { return nil }
            case .key: guard once(&key) else { return nil }
            case .version: guard once(&keyVersion) else { return nil }
            case .connection:
                connectionUpgrade = connectionUpgrade || hasUpgradeToken(head, value.range)
            case .body:
                return nil
            case .forwardedFor:
                forwardedFor.append(string(head, value.range))
            case .other:
                break
            }
            position = end + 2
        }
        guard let upgrade, equalsLowercased(head, upgrade, "websocket"), connectionUpgrade,
            let keyVersion, matches(head, keyVersion, "13"),
            let key, isValidKey(head, key)
        else { return nil }

        var request = UpgradeRequest(
            uri: string(head, 4..<targetEnd),
            origin: origin.map { string(head, $0) },
            host: host.map { string(head, $0) },
            authorization: authorization.map { string(head, $0) }
        )
        request.forwardedFor = forwardedFor
        guard rules.webSocketPaths.contains(request.path),
            rules.originPolicy.allows(origin: request.origin, host: request.host)
        else { return nil }
        return Head(request: request, accept: accept(key: UnsafeRawBufferPointer(rebasing: head[key])))
    }

    /// Where the line starting at `start` ends (its `\r`), if it ends with `\r\n` and holds no other
    /// `\r` or `\n`.
    private static func lineEnd(_ head: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index < head.count {
            let byte = head[index]
            if byte == cr { return index + 1 < head.count && head[index + 1] == lf ? index : nil }
            if byte == lf { return nil }
            index += 1
        }
        return nil
    }

    /// `name: value` with a token name and printable ASCII (or tab) in the value, which is returned
    /// without its surrounding spaces and tabs.
    private static func headerLine(
        _ head: UnsafeRawBufferPointer,
        _ line: Range<Int>
    ) -> (colon: Int, range: Range<Int>)? {
        var colon = line.lowerBound
        while colon < line.upperBound, isTokenCharacter(head[colon]) { colon += 1 }
        guard colon > line.lowerBound, colon < line.upperBound, head[colon] == UInt8(ascii: ":") else { return nil }
        var start = colon + 1
        var end = line.upperBound
        for index in start..<end where !isValueCharacter(head[index]) { return nil }
        while start < end, isSpace(head[start]) { start += 1 }
        while end > start, isSpace(head[end - 1]) { end -= 1 }
        return (colon, start..<end)
    }

    private static func field(_ head: UnsafeRawBufferPointer, _ name: Range<Int>, readsForwardedFor: Bool) -> Field {
        switch name.count {
        case 4 where equalsLowercased(head, name, "host"): .host
        case 6 where equalsLowercased(head, name, "origin"): .origin
        case 7 where equalsLowercased(head, name, "upgrade"): .upgrade
        case 10 where equalsLowercased(head, name, "connection"): .connection
        case 13 where equalsLowercased(head, name, "authorization"): .authorization
        case 14 where equalsLowercased(head, name, "content-length"): .body
        case 15 where readsForwardedFor && equalsLowercased(head, name, "x-forwarded-for"): .forwardedFor
        case 17 where equalsLowercased(head, name, "transfer-encoding"): .body
        case 17 where equalsLowercased(head, name, "sec-websocket-key"): .key
        case 21 where equalsLowercased(head, name, "sec-websocket-version"): .version
        default: .other
        }
    }

    /// Whether a `Connection` value lists the `upgrade` token.
    private static func hasUpgradeToken(_ head: UnsafeRawBufferPointer, _ value: Range<Int>) -> Bool {
        var start = value.lowerBound
        while start < value.upperBound {
            var end = start
            while end < value.upperBound, head[end] != UInt8(ascii: ",") { end += 1 }
            var tokenStart = start
            var tokenEnd = end
            while tokenStart < tokenEnd, isSpace(head[tokenStart]) { tokenStart += 1 }
            while tokenEnd > tokenStart, isSpace(head[tokenEnd - 1]) { tokenEnd -= 1 }
            if equalsLowercased(head, tokenStart..<tokenEnd, "upgrade") { return true }
            start = end + 1
        }
        return false
    }

    /// 22 base64 characters and `==`: 16 bytes, as RFC 6455 §4.1 requires.
    private static func isValidKey(_ head: UnsafeRawBufferPointer, _ key: Range<Int>) -> Bool {
        guard key.count == 24, head[key.upperBound - 1] == UInt8(ascii: "="),
            head[key.upperBound - 2] == UInt8(ascii: "=")
        else { return false }
        for index in key.lowerBound..<(key.upperBound - 2) where base64Value(head[index]) == nil { return false }
        // The last character carries 2 bits of the 16th byte; the other 4 must be zero.
        return base64Value(head[key.upperBound - 3])! & 0x0F == 0
    }

    private static func base64Value(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }

    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    private static func isValueCharacter(_ byte: UInt8) -> Bool {
        (0x20...0x7E).contains(byte) || byte == 0x09
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09
    }

    private static func matches(_ head: UnsafeRawBufferPointer, at start: Int, _ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard start >= 0, start + count <= head.count else { return false }
        for index in 0..<count where head[start + index] != literal.utf8Start[index] { return false }
        return true
    }

    private static func matches(_ head: UnsafeRawBufferPointer, _ range: Range<Int>, _ literal: StaticString) -> Bool {
        range.count == literal.utf8CodeUnitCount && matches(head, at: range.lowerBound, literal)
    }

    /// Case-insensitive comparison with a lowercase literal.
    private static func equalsLowercased(
        _ head: UnsafeRawBufferPointer,
        _ range: Range<Int>,
        _ literal: StaticString
    ) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        for index in 0..<range.count {
            var byte = head[range.lowerBound + index]
            if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { byte += 32 }
            if byte != literal.utf8Start[index] { return false }
        }
        return true
    }

    private static func string(_ head: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: head[range]), as: UTF8.self)
    }

    private static func writeBase64(_ bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        let table = alphabet.utf8Start
        var index = 0
        while index + 3 <= bytes.count {
            let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
            buffer.writeInteger(table[Int(value >> 18 & 63)])
            buffer.writeInteger(table[Int(value >> 12 & 63)])
            buffer.writeInteger(table[Int(value >> 6 & 63)])
            buffer.writeInteger(table[Int(value & 63)])
            index += 3
        }
        switch bytes.count - index {
        case 1:
            let value = UInt32(bytes[index]) << 16
            buffer.writeInteger(table[Int(value >> 18 & 63)])
            buffer.writeInteger(table[Int(value >> 12 & 63)])
            buffer.writeStaticString("==")
        case 2:
            let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8
            buffer.writeInteger(table[Int(value >> 18 & 63)])
            buffer.writeInteger(table[Int(value >> 12 & 63)])
            buffer.writeInteger(table[Int(value >> 6 & 63)])
            buffer.writeStaticString("=")
        default:
            break
        }
    }
}
