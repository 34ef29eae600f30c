import NIOCore

/// One value of the Redis serialization protocol (RESP2, plus the RESP3 types a server may send).
///
/// RESP2 has five types: simple strings, errors, integers, bulk strings and arrays (with a null bulk
/// string and a null array). RESP3 adds null, boolean, double, big number, verbatim string (decoded as a
/// bulk string without its `txt:` prefix), bulk error (decoded as ``error(_:)``), map, set and push.
/// ``RedisConnection`` and ``RedisSubscriber`` speak RESP2 (they never send `HELLO 3`); the decoder
/// reads RESP3 as well, so that it is complete.
///
/// Strings are kept as `ByteBuffer` slices: Redis strings are binary-safe and most replies are read
/// once and converted, so the decoder does not copy them. ``string``, ``int`` and ``array`` convert.
public enum RESPValue: Sendable, Hashable {
    /// `+OK\r\n`
    case simpleString(ByteBuffer)
    /// `-ERR message\r\n` (and RESP3 `!len\r\nmessage\r\n`). A reply, not a thrown error: a pipeline
    /// gets error replies in place; `RedisConnection.send` throws them.
    case error(ByteBuffer)
    /// `:42\r\n`
    case integer(Int)
    /// `$5\r\nhello\r\n`
    case bulkString(ByteBuffer)
    /// RESP2 null bulk string `$-1\r\n` and null array `*-1\r\n`, RESP3 `_\r\n`.
    case null
    /// `*2\r\n…`
    case array([RESPValue])
    /// RESP3 `,3.14\r\n`
    case double(Double)
    /// RESP3 `#t\r\n`
    case boolean(Bool)
    /// RESP3 `(3492890328409238509324850943850943825024385\r\n`, kept as its decimal digits.
    case bigNumber(ByteBuffer)
    /// RESP3 `%1\r\n…`
    case map([RESPValue: RESPValue])
    /// RESP3 `~2\r\n…`
    case set([RESPValue])
    /// RESP3 `>3\r\n…` (out-of-band data such as pub/sub messages).
    case push([RESPValue])
}

extension RESPValue {
    /// The value as text: simple and bulk strings as UTF-8, integers, doubles and big numbers in decimal.
    /// Nil for errors, null and aggregates.
    public var string: String? {
        switch self {
        case .simpleString(let buffer), .bulkString(let buffer), .bigNumber(let buffer):
            return String(buffer: buffer)
        case .integer(let value):
            return String(value)
        case .double(let value):
            return String(value)
        case .boolean(let value):
            return value ? "1" : "0"
        case .error, .null, .array, .map, .set, .push:
            return nil
        }
    }

    /// The bytes of a simple string, bulk string or big number.
    public var buffer: ByteBuffer? {
        switch self {
        case .simpleString(let buffer), .bulkString(let buffer), .bigNumber(let buffer):
            return buffer
        default:
            return nil
        }
    }

    /// An integer reply, or a string that holds a decimal integer (what `GET` returns for a counter).
    public var int: Int? {
        switch self {
        case .integer(let value):
            return value
        case .simpleString(let buffer), .bulkString(let buffer), .bigNumber(let buffer):
            return Int(String(buffer: buffer))
        case .boolean(let value):
            return value ? 1 : 0
        default:
            return nil
        }
    }

    /// The elements of an array, set or push; nil for everything else (including null).
    public var array: [RESPValue]? {
        switch self {
        case .array(let values), .set(let values), .push(let values):
            return values
        default:
            return nil
        }
    }

    /// True for every form of null.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The message of an error reply, e.g. `WRONGTYPE Operation against a key holding the wrong kind of value`.
    public var errorMessage: String? {
        if case .error(let buffer) = self { return String(buffer: buffer) }
        return nil
    }
}

extension RESPValue: CustomStringConvertible {
    /// A readable rendering for logs and test failures (not RESP).
    public var description: String {
        switch self {
        case .simpleString(let buffer): return String(buffer: buffer)
        case .error(let buffer): return "(error) " + String(buffer: buffer)
        case .integer(let value): return "(integer) \(value)"
        case .bulkString(let buffer): return "\"" + String(buffer: buffer) + "\""
        case .null: return "(nil)"
        case .array(let values): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .double(let value): return "(double) \(value)"
        case .boolean(let value): return "(boolean) \(value)"
        case .bigNumber(let buffer): return "(big number) " + String(buffer: buffer)
        case .map(let values):
            return "{" + values.map { "\($0.key.description): \($0.value.description)" }.joined(separator: ", ") + "}"
        case .set(let values): return "(set) [" + values.map(\.description).joined(separator: ", ") + "]"
        case .push(let values): return "(push) [" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
