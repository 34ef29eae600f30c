import NIOCore

/// Command arguments written as RESP bulk strings as they are added, to be sent as one
/// ``RESPEncodable`` among a command's arguments (it counts as ``count`` of them): for a command of
/// hundreds of arguments built on a hot path (a batch of deliveries in one script call), where an array
/// of `any RESPEncodable` would box, retain and dispatch on every one. Each argument is written with one
/// access to the buffer: its length header, its bytes and the `\r\n` after them.
///
/// ```swift
/// var argv = RESPArguments()
/// argv.append("bob")
/// argv.append(42)
/// try await redis.run(script, keys: [key], arguments: [argv])  // ARGV: "bob", "42"
/// ```
public struct RESPArguments: RESPEncodable, Sendable {
    /// The arguments, as RESP bulk strings.
    public private(set) var bytes: ByteBuffer
    /// How many there are.
    public private(set) var count = 0

    /// `capacity`: bytes to reserve, for all the arguments to be added with their headers.
    public init(capacity: Int = 256) {
        bytes = ByteBufferAllocator().buffer(capacity: capacity)
    }

    public var respArgumentCount: Int { count }

    public func writeRESPBulkString(into buffer: inout ByteBuffer) {
        buffer.writeImmutableBuffer(bytes)
    }

    /// Adds `text`'s UTF-8.
    public mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Adds `buffer`'s readable bytes.
    public mutating func append(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { append($0) }
    }

    /// Adds `number` in decimal.
    public mutating func append(_ number: Int) {
        RESPEncoder.withDecimal(number) { append($0) }
    }

    /// Adds `first`, `second` and `third` joined as one argument (a key made of a prefix, an id and a
    /// suffix, without making it a `String` first).
    public mutating func append(concatenating first: String, _ second: String, _ third: String) {
        var (first, second, third) = (first, second, third)
        first.withUTF8 { a in
            second.withUTF8 { b in
                third.withUTF8 { c in
                    write(UnsafeRawBufferPointer(a), UnsafeRawBufferPointer(b), UnsafeRawBufferPointer(c))
                }
            }
        }
    }

    /// Adds the bytes `source` points to: the header, the bytes and `\r\n` in one write.
    public mutating func append(_ source: UnsafeRawBufferPointer) {
        write(source, UnsafeRawBufferPointer(start: nil, count: 0), UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// Adds the bytes `first`, `second` and `third` point to, one after another, as one argument: the
    /// header, the bytes and `\r\n` in one write.
    private mutating func write(
        _ first: UnsafeRawBufferPointer,
        _ second: UnsafeRawBufferPointer,
        _ third: UnsafeRawBufferPointer
    ) {
        count += 1
        let length = first.count + second.count + third.count
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: length + 24) { out in
            var at = 0
            out[at] = UInt8(ascii: "$")
            at += 1
            RESPEncoder.withDecimal(length) { digits in
                out.baseAddress!.advanced(by: at).copyMemory(from: digits.baseAddress!, byteCount: digits.count)
                at += digits.count
            }
            out[at] = UInt8(ascii: "\r")
            out[at + 1] = UInt8(ascii: "\n")
            at += 2
            func copy(_ part: UnsafeRawBufferPointer) {
                guard part.count > 0 else { return }
                out.baseAddress!.advanced(by: at).copyMemory(from: part.baseAddress!, byteCount: part.count)
                at += part.count
            }
            copy(first)
            copy(second)
            copy(third)
            out[at] = UInt8(ascii: "\r")
            out[at + 1] = UInt8(ascii: "\n")
            return at + 2
        }
    }

    /// Adds every argument of `other` after these.
    public mutating func append(contentsOf other: RESPArguments) {
        count += other.count
        bytes.writeImmutableBuffer(other.bytes)
    }
}
