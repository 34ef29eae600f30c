import NIOCore

/// Encodes RESP: commands as clients send them, and any ``RESPValue`` (for tests and for tools that
/// play the server side). A pure value type with no state.
public struct RESPEncoder: Sendable {
    public init() {}

    /// Writes one command: an array of bulk strings, the only form Redis accepts from clients
    /// (`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n`).
    public func encodeCommand(_ arguments: [any RESPEncodable], into buffer: inout ByteBuffer) {
        var count = 0
        for argument in arguments { count += argument.respArgumentCount }
        Self.writeHeader(UInt8(ascii: "*"), count, into: &buffer)
        for argument in arguments {
            argument.writeRESPBulkString(into: &buffer)
        }
    }

    /// Writes `value` in RESP2 where RESP2 has the type, and in RESP3 for the types only RESP3 has.
    /// ``RESPValue/null`` is written as the RESP2 null bulk string `$-1`.
    public func encode(_ value: RESPValue, into buffer: inout ByteBuffer) {
        switch value {
        case .simpleString(let line):
            writeLine(UInt8(ascii: "+"), line, into: &buffer)
        case .error(let line):
            writeLine(UInt8(ascii: "-"), line, into: &buffer)
        case .integer(let value):
            Self.writeHeader(UInt8(ascii: ":"), value, into: &buffer)
        case .bulkString(let bytes):
            bytes.writeRESPBulkString(into: &buffer)
        case .null:
            buffer.writeStaticString("$-1\r\n")
        case .array(let values):
            writeAggregate(UInt8(ascii: "*"), values, into: &buffer)
        case .set(let values):
            writeAggregate(UInt8(ascii: "~"), values, into: &buffer)
        case .push(let values):
            writeAggregate(UInt8(ascii: ">"), values, into: &buffer)
        case .map(let pairs):
            Self.writeHeader(UInt8(ascii: "%"), pairs.count, into: &buffer)
            for (key, value) in pairs {
                encode(key, into: &buffer)
                encode(value, into: &buffer)
            }
        case .double(let value):
            buffer.writeInteger(UInt8(ascii: ","))
            if value.isNaN {
                buffer.writeStaticString("nan")
            } else if value.isInfinite {
                buffer.writeStaticString(value < 0 ? "-inf" : "inf")
            } else {
                buffer.writeString(String(value))
            }
            buffer.writeStaticString("\r\n")
        case .boolean(let value):
            buffer.writeStaticString(value ? "#t\r\n" : "#f\r\n")
        case .bigNumber(let digits):
            writeLine(UInt8(ascii: "("), digits, into: &buffer)
        }
    }

    private func writeLine(_ type: UInt8, _ line: ByteBuffer, into buffer: inout ByteBuffer) {
        buffer.writeInteger(type)
        buffer.writeImmutableBuffer(line)
        buffer.writeStaticString("\r\n")
    }

    private func writeAggregate(_ type: UInt8, _ values: [RESPValue], into buffer: inout ByteBuffer) {
        Self.writeHeader(type, values.count, into: &buffer)
        for value in values {
            encode(value, into: &buffer)
        }
    }

    /// Writes `<type><decimal>\r\n`.
    static func writeHeader(_ type: UInt8, _ number: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(type)
        writeDecimal(number, into: &buffer)
        buffer.writeStaticString("\r\n")
    }

    /// `number` in decimal ASCII, written straight into `buffer` (no `String` in between: every argument
    /// of a command has a length header).
    static func writeDecimal(_ number: Int, into buffer: inout ByteBuffer) {
        if number >= 0, number < 10 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: number) &+ UInt8(ascii: "0"))
            return
        }
        withDecimal(number) { digits in _ = buffer.writeBytes(digits) }
    }

    /// Calls `body` with `number`'s decimal ASCII digits (a leading `-` when negative), on the stack.
    static func withDecimal<Result>(_ number: Int, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        var magnitude = number.magnitude
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 21) { digits in
            var start = 21
            repeat {
                start -= 1
                digits[start] = UInt8(truncatingIfNeeded: magnitude % 10) &+ UInt8(ascii: "0")
                magnitude /= 10
            } while magnitude > 0
            if number < 0 {
                start -= 1
                digits[start] = UInt8(ascii: "-")
            }
            return body(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(digits)[start..<21]))
        }
    }
}
