import NIOCore

/// A value that can be a command argument. Redis takes every argument as a bulk string; numbers are
/// sent in decimal. `String`, `Substring`, `ByteBuffer`, `Int` and `Double` conform; ``RESPArguments`` is
/// several arguments written ahead.
///
/// ```swift
/// try await redis.send("SET", key, payload, "PX", 30_000)
/// ```
public protocol RESPEncodable: Sendable {
    /// Writes `self` as RESP bulk strings (one, but for ``RESPArguments``): `$<length>\r\n<bytes>\r\n`.
    func writeRESPBulkString(into buffer: inout ByteBuffer)
    /// How many command arguments ``writeRESPBulkString(into:)`` writes: 1, but for ``RESPArguments``.
    var respArgumentCount: Int { get }
}

extension RESPEncodable {
    public var respArgumentCount: Int { 1 }
}

extension String: RESPEncodable {
    public func writeRESPBulkString(into buffer: inout ByteBuffer) {
        RESPEncoder.writeHeader(UInt8(ascii: "$"), utf8.count, into: &buffer)
        buffer.writeString(self)
        buffer.writeStaticString("\r\n")
    }
}

extension Substring: RESPEncodable {
    public func writeRESPBulkString(into buffer: inout ByteBuffer) {
        RESPEncoder.writeHeader(UInt8(ascii: "$"), utf8.count, into: &buffer)
        buffer.writeSubstring(self)
        buffer.writeStaticString("\r\n")
    }
}

extension ByteBuffer: RESPEncodable {
    public func writeRESPBulkString(into buffer: inout ByteBuffer) {
        RESPEncoder.writeHeader(UInt8(ascii: "$"), readableBytes, into: &buffer)
        buffer.writeImmutableBuffer(self)
        buffer.writeStaticString("\r\n")
    }
}

extension Int: RESPEncodable {
    public func writeRESPBulkString(into buffer: inout ByteBuffer) {
        RESPEncoder.withDecimal(self) { digits in
            RESPEncoder.writeHeader(UInt8(ascii: "$"), digits.count, into: &buffer)
            buffer.writeBytes(digits)
        }
        buffer.writeStaticString("\r\n")
    }
}

extension Double: RESPEncodable {
    /// Finite values in Swift's shortest round-trip form, infinities as `inf`/`-inf` (as Redis spells
    /// them in `ZADD` and `INCRBYFLOAT`).
    public func writeRESPBulkString(into buffer: inout ByteBuffer) {
        let text = isInfinite ? (self < 0 ? "-inf" : "inf") : String(self)
        text.writeRESPBulkString(into: &buffer)
    }
}
