import NIOCore

/// Decodes RESP2 and RESP3 values from bytes, one complete value at a time. A pure value type: no I/O,
/// tested on its own; ``RESPFrameDecoder`` runs it in a channel pipeline.
///
/// The decoder is resumable: when a large array arrives over many reads, the elements already complete
/// are kept in the decoder (and their bytes consumed), so no byte is parsed twice except the header of a
/// bulk string whose body has not fully arrived. Call ``decode(_:)`` until it returns nil, then again
/// when more bytes arrived.
///
/// After it throws, the stream is out of step and the decoder must not be used again; the connection
/// is closed.
public struct RESPDecoder: Sendable {
    /// Bounds on what a server may send, so that a broken or hostile peer cannot make the client
    /// allocate without limit. The defaults accept everything a stock Redis can produce.
    public struct Limits: Sendable, Hashable {
        /// Longest bulk string, in bytes. Redis refuses strings longer than its `proto-max-bulk-len`,
        /// 512 MiB by default, so it can never send a longer one.
        public var maxBulkLength: Int = 512 * 1024 * 1024
        /// Most elements announced by one array, set, push or map header (a map counts its pairs).
        /// Storage is reserved only as elements arrive, so a large announcement alone costs nothing.
        public var maxAggregateLength: Int = 1 << 28
        /// Deepest nesting of aggregates. Redis replies nest two or three levels (Lua scripts can nest
        /// more, up to Lua's own limit); 128 leaves room and bounds the decoder's stack.
        public var maxDepth: Int = 128
        /// Longest header or simple-string line (status, error, integer). Redis error messages are short;
        /// a line longer than this means the stream is not RESP.
        public var maxLineLength: Int = 1024 * 1024

        public init() {}
    }

    private enum AggregateKind: Sendable {
        case array, set, push, map, attribute
    }

    private struct Aggregate: Sendable {
        var kind: AggregateKind
        var remaining: Int
        var elements: [RESPValue]
    }

    private enum Token {
        case value(RESPValue)
        case aggregate(AggregateKind, count: Int)
    }

    /// The limits this decoder enforces.
    public let limits: Limits
    private var stack: [Aggregate] = []

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// True when no partly decoded aggregate is held (the decoder is between two values).
    public var isBetweenValues: Bool { stack.isEmpty }

    /// Decodes the next complete value from `buffer`, consuming its bytes. Returns nil when `buffer`
    /// does not hold a whole value yet; the bytes of finished elements of an unfinished aggregate are
    /// consumed and kept. Throws ``RedisError/Code/protocolError`` when the bytes are not RESP.
    public mutating func decode(_ buffer: inout ByteBuffer) throws(RedisError) -> RESPValue? {
        next: while true {
            guard let token = try readToken(&buffer) else { return nil }
            var value: RESPValue
            switch token {
            case .value(let scalar):
                value = scalar
            case .aggregate(let kind, let count):
                if count == 0 {
                    guard let empty = Self.build(kind, []) else { continue next }
                    value = empty
                } else {
                    guard stack.count < limits.maxDepth else {
                        throw .protocolError("RESP aggregates nested deeper than \(limits.maxDepth) levels")
                    }
                    let elements = kind == .map || kind == .attribute ? count * 2 : count
                    var aggregate = Aggregate(kind: kind, remaining: elements, elements: [])
                    aggregate.elements.reserveCapacity(min(elements, 1024))
                    stack.append(aggregate)
                    continue next
                }
            }
            while !stack.isEmpty {
                let top = stack.count - 1
                stack[top].elements.append(value)
                stack[top].remaining -= 1
                if stack[top].remaining > 0 { continue next }
                let finished = stack.removeLast()
                // A finished attribute annotates the value that follows it; it is dropped.
                guard let built = Self.build(finished.kind, finished.elements) else { continue next }
                value = built
            }
            return value
        }
    }

    private static func build(_ kind: AggregateKind, _ elements: [RESPValue]) -> RESPValue? {
        switch kind {
        case .array: return .array(elements)
        case .set: return .set(elements)
        case .push: return .push(elements)
        case .attribute: return nil
        case .map:
            var map: [RESPValue: RESPValue] = [:]
            map.reserveCapacity(elements.count / 2)
            var index = 0
            while index + 1 < elements.count {
                map[elements[index]] = elements[index + 1]
                index += 2
            }
            return .map(map)
        }
    }

    // MARK: - Scalars and headers

    private static let cr: UInt8 = 0x0D
    private static let lf: UInt8 = 0x0A

    /// Reads one scalar value or aggregate header at the reader index, or returns nil (consuming
    /// nothing) when it is not complete.
    private func readToken(_ buffer: inout ByteBuffer) throws(RedisError) -> Token? {
        let start = buffer.readerIndex
        guard let (type, lineEnd, number) = try scanLine(buffer) else { return nil }
        let lineStart = start + 1
        let lineLength = lineEnd - lineStart
        let afterLine = lineEnd + 2

        switch type {
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "("):
            let line = buffer.getSlice(at: lineStart, length: lineLength)!
            buffer.moveReaderIndex(to: afterLine)
            if type == UInt8(ascii: "+") { return .value(.simpleString(line)) }
            if type == UInt8(ascii: "-") { return .value(.error(line)) }
            guard line.withUnsafeReadableBytes({ Self.parseInteger($0, allowBig: true) }) != nil else {
                throw .protocolError("RESP big number is not a decimal integer: \(String(buffer: line).prefix(64))")
            }
            return .value(.bigNumber(line))

        case UInt8(ascii: ":"):
            let value = try Self.integer(number, buffer, lineStart, lineLength, what: "integer")
            buffer.moveReaderIndex(to: afterLine)
            return .value(.integer(value))

        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            let length = try Self.integer(number, buffer, lineStart, lineLength, what: "bulk string length")
            if length == -1 && type == UInt8(ascii: "$") {
                buffer.moveReaderIndex(to: afterLine)
                return .value(.null)
            }
            guard length >= 0 else { throw .protocolError("RESP bulk string with negative length \(length)") }
            guard length <= limits.maxBulkLength else {
                throw .protocolError("RESP bulk string of \(length) bytes exceeds the limit of \(limits.maxBulkLength)")
            }
            guard buffer.writerIndex - afterLine >= length + 2 else { return nil }
            guard buffer.getInteger(at: afterLine + length, as: UInt8.self) == Self.cr,
                buffer.getInteger(at: afterLine + length + 1, as: UInt8.self) == Self.lf
            else {
                throw .protocolError("RESP bulk string of \(length) bytes is not followed by CRLF")
            }
            var body = buffer.getSlice(at: afterLine, length: length)!
            buffer.moveReaderIndex(to: afterLine + length + 2)
            switch type {
            case UInt8(ascii: "!"):
                return .value(.error(body))
            case UInt8(ascii: "="):
                // Verbatim string: a three-letter format, a colon, then the text.
                if length >= 4 && body.getInteger(at: body.readerIndex + 3, as: UInt8.self) == UInt8(ascii: ":") {
                    body.moveReaderIndex(forwardBy: 4)
                }
                return .value(.bulkString(body))
            default:
                return .value(.bulkString(body))
            }

        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let count = try Self.integer(number, buffer, lineStart, lineLength, what: "aggregate length")
            buffer.moveReaderIndex(to: afterLine)
            if count == -1 && type == UInt8(ascii: "*") { return .value(.null) }
            guard count >= 0 else { throw .protocolError("RESP aggregate with negative length \(count)") }
            guard count <= limits.maxAggregateLength else {
                throw .protocolError(
                    "RESP aggregate of \(count) elements exceeds the limit of \(limits.maxAggregateLength)"
                )
            }
            let kind: AggregateKind
            switch type {
            case UInt8(ascii: "*"): kind = .array
            case UInt8(ascii: "~"): kind = .set
            case UInt8(ascii: ">"): kind = .push
            case UInt8(ascii: "%"): kind = .map
            default: kind = .attribute
            }
            return .aggregate(kind, count: count)

        case UInt8(ascii: "_"):
            guard lineLength == 0 else { throw .protocolError("RESP null with trailing bytes") }
            buffer.moveReaderIndex(to: afterLine)
            return .value(.null)

        case UInt8(ascii: "#"):
            let flag = lineLength == 1 ? buffer.getInteger(at: lineStart, as: UInt8.self) : nil
            guard flag == UInt8(ascii: "t") || flag == UInt8(ascii: "f") else {
                throw .protocolError("RESP boolean is neither t nor f")
            }
            buffer.moveReaderIndex(to: afterLine)
            return .value(.boolean(flag == UInt8(ascii: "t")))

        case UInt8(ascii: ","):
            let text = buffer.getString(at: lineStart, length: lineLength) ?? ""
            guard let value = Double(text) else {
                throw .protocolError("RESP double is not a number: \(text.prefix(64))")
            }
            buffer.moveReaderIndex(to: afterLine)
            return .value(.double(value))

        default:
            throw .protocolError(
                "unexpected byte 0x\(String(type, radix: 16)) where a RESP value should start"
                    + " (is the server Redis, and is TLS configured on both sides or neither?)"
            )
        }
    }

    /// The type byte at the reader index, the absolute index of the CR that ends the line after it, and,
    /// for a type whose line is a decimal integer (a length, a count, an integer), that integer (nil when
    /// the line is not one: ``integer(_:_:_:what:)`` then says why); nil when the line is not complete
    /// yet. One pass over the bytes, with no slice made: every reply element has such a header.
    private func scanLine(_ buffer: ByteBuffer) throws(RedisError) -> (UInt8, Int, Int?)? {
        enum Scan {
            case found(UInt8, Int, Int?)
            case incomplete
            case tooLong
            case bareCR
        }
        // The line starts at offset 1; its CR can be at most at offset maxLineLength + 1.
        let scanLimit = limits.maxLineLength + 2
        let scan = buffer.withUnsafeReadableBytes { bytes -> Scan in
            guard let type = bytes.first else { return .incomplete }
            let end = min(bytes.count, scanLimit)
            var index = 1
            while index < end {
                if bytes[index] == Self.cr {
                    guard index + 1 < bytes.count else { return .incomplete }
                    guard bytes[index + 1] == Self.lf else { return .bareCR }
                    let number =
                        Self.hasIntegerLine(type)
                        ? Self.parseInteger(UnsafeRawBufferPointer(rebasing: bytes[1..<index]), allowBig: false) : nil
                    return .found(type, index, number)
                }
                index += 1
            }
            return bytes.count > scanLimit ? .tooLong : .incomplete
        }
        switch scan {
        case .found(let type, let offset, let number): return (type, buffer.readerIndex + offset, number)
        case .incomplete: return nil
        case .tooLong: throw .protocolError("RESP line longer than \(limits.maxLineLength) bytes")
        case .bareCR: throw .protocolError("CR not followed by LF in a RESP line")
        }
    }

    /// `parsed` (the line's integer, read while the line was scanned), or the error saying why the line is
    /// not one.
    private static func integer(
        _ parsed: Int?,
        _ buffer: ByteBuffer,
        _ start: Int,
        _ length: Int,
        what: String
    ) throws(RedisError) -> Int {
        if let parsed { return parsed }
        return try integer(buffer, start, length, what: what)
    }

    private static func integer(
        _ buffer: ByteBuffer,
        _ start: Int,
        _ length: Int,
        what: String
    ) throws(RedisError) -> Int {
        let line = buffer.getSlice(at: start, length: length)!
        guard let value = line.withUnsafeReadableBytes({ parseInteger($0, allowBig: false) }) else {
            throw .protocolError(
                "RESP \(what) is not a decimal integer: \(String(decoding: line.readableBytesView.prefix(64), as: UTF8.self))"
            )
        }
        return value
    }

    /// Types whose line is a decimal integer: integer, bulk string, blob error, verbatim string, and the
    /// aggregates' counts.
    private static func hasIntegerLine(_ type: UInt8) -> Bool {
        switch type {
        case UInt8(ascii: ":"), UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="), UInt8(ascii: "*"),
            UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            return true
        default:
            return false
        }
    }

    /// Parses an optionally signed decimal integer; nil when the bytes are not one. One that does not fit
    /// an `Int` is nil too, or, with `allowBig` (a RESP3 big number: only its digits are checked), 0.
    private static func parseInteger(_ bytes: UnsafeRawBufferPointer, allowBig: Bool) -> Int? {
        var index = 0
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            index = 1
        }
        guard index < bytes.count else { return nil }
        var value = 0
        var overflowed = false
        while index < bytes.count {
            let byte = bytes[index]
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            let digit = Int(byte &- UInt8(ascii: "0"))
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) =
                negative ? times10.subtractingReportingOverflow(digit) : times10.addingReportingOverflow(digit)
            if o1 || o2 {
                guard allowBig else { return nil }
                overflowed = true
            } else if !overflowed {
                value = next
            }
            index += 1
        }
        return overflowed ? 0 : value
    }
}
