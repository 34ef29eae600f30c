import NIOCore

/// A type a reply can be converted to, for the typed commands (`get(_:as:)`, `hgetall(_:as:)`).
/// `String`, `ByteBuffer`, `Int`, `Double`, `Bool` and ``RESPValue`` conform.
public protocol RESPDecodable: Sendable {
    /// Converts `value`, or returns nil when it is of a type that cannot represent `Self`.
    init?(resp value: RESPValue)
}

extension RESPValue: RESPDecodable {
    public init?(resp value: RESPValue) { self = value }
}

extension String: RESPDecodable {
    /// Simple and bulk strings (as UTF-8, with invalid bytes repaired), and numbers in decimal.
    public init?(resp value: RESPValue) {
        guard let string = value.string else { return nil }
        self = string
    }
}

extension ByteBuffer: RESPDecodable {
    public init?(resp value: RESPValue) {
        guard let buffer = value.buffer else { return nil }
        self = buffer
    }
}

extension Int: RESPDecodable {
    /// Integer replies, and strings holding a decimal integer.
    public init?(resp value: RESPValue) {
        guard let int = value.int else { return nil }
        self = int
    }
}

extension Double: RESPDecodable {
    /// RESP3 doubles, integers, and strings holding a number (what `INCRBYFLOAT` and `ZSCORE` return).
    public init?(resp value: RESPValue) {
        switch value {
        case .double(let double): self = double
        case .integer(let int): self = Double(int)
        default:
            guard let string = value.string, let double = Double(string) else { return nil }
            self = double
        }
    }
}

extension Bool: RESPDecodable {
    /// RESP3 booleans and integer replies (`1` is true, `0` false, as `EXPIRE` and `SISMEMBER` answer).
    public init?(resp value: RESPValue) {
        switch value {
        case .boolean(let bool): self = bool
        case .integer(let int): self = int != 0
        default: return nil
        }
    }
}
