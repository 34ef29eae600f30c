/// Appends big-endian integers and length-prefixed fields: the canonical byte layout of everything the
/// mesh signs or authenticates. Canonical means one value has exactly one encoding, so a signature over
/// the bytes is a signature over the value.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func write(_ value: UInt8) {
        bytes.append(value)
    }

    public mutating func write(_ value: UInt16) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    public mutating func write(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }

    public mutating func write(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// Raw bytes with no length prefix (fixed-size fields such as keys).
    public mutating func write(raw: some Sequence<UInt8>) {
        bytes.append(contentsOf: raw)
    }

    /// A UTF-8 string prefixed with its length as a UInt16.
    public mutating func write(string: String) {
        let utf8 = Array(string.utf8)
        precondition(utf8.count <= Int(UInt16.max), "string field longer than 65535 bytes")
        write(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Reads what `ByteWriter` wrote; every read is bounds-checked and throws `MeshDecodingError`.
public struct ByteReader: Sendable {
    private let bytes: [UInt8]
    private var index = 0

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    public var isAtEnd: Bool { index == bytes.count }

    public mutating func readByte() throws(MeshDecodingError) -> UInt8 {
        try read(count: 1)[0]
    }

    public mutating func readUInt16() throws(MeshDecodingError) -> UInt16 {
        let raw = try read(count: 2)
        return UInt16(raw[0]) << 8 | UInt16(raw[1])
    }

    public mutating func readUInt32() throws(MeshDecodingError) -> UInt32 {
        try read(count: 4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    public mutating func readUInt64() throws(MeshDecodingError) -> UInt64 {
        try read(count: 8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    public mutating func read(count: Int) throws(MeshDecodingError) -> [UInt8] {
        guard count >= 0, bytes.count - index >= count else { throw MeshDecodingError("truncated input") }
        defer { index += count }
        return Array(bytes[index..<index + count])
    }

    public mutating func readString() throws(MeshDecodingError) -> String {
        let length = Int(try readUInt16())
        let raw = try read(count: length)
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw MeshDecodingError("string field is not valid UTF-8")
        }
        return string
    }
}

/// Bytes that do not decode as the record or message they claim to be.
public struct MeshDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
