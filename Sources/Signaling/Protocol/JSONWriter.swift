import NIOCore

extension ByteBuffer {
    /// Writes `value` as a JSON string literal, escaping what RFC 8259 requires.
    @discardableResult
    public mutating func writeJSONString(_ value: String) -> Int {
        let start = self.writerIndex
        self.writeInteger(UInt8(ascii: "\""))
        var needsEscaping = false
        for byte in value.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            needsEscaping = true
            break
        }
        if !needsEscaping {
            self.writeString(value)
        } else {
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\""): self.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): self.writeStaticString("\\\\")
                case 0x0A: self.writeStaticString("\\n")
                case 0x0D: self.writeStaticString("\\r")
                case 0x09: self.writeStaticString("\\t")
                case 0x00..<0x20:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    self.writeStaticString("\\u00")
                    self.writeInteger(hex[Int(byte >> 4)])
                    self.writeInteger(hex[Int(byte & 0xF)])
                default: self.writeInteger(byte)
                }
            }
        }
        self.writeInteger(UInt8(ascii: "\""))
        return self.writerIndex - start
    }

    /// Writes a peer id or room name as its tenant's clients see it (``Tenant/display(_:)``: without a
    /// tenant prefix) as a JSON string. Every name the hub sends a client goes through here, so a
    /// tenant's qualified names (`acme/alice`) never leave the hub; a default-tenant name is written as is.
    @discardableResult
    public mutating func writeJSONName(_ name: String) -> Int {
        guard let slash = name.utf8.firstIndex(of: UInt8(ascii: "/")) else { return writeJSONString(name) }
        return writeJSONString(String(name[name.index(after: slash)...]))
    }

    /// The number of bytes ``writeJSONName(_:)`` writes for `name`.
    public static func jsonNameLength(_ name: String) -> Int {
        guard let slash = name.utf8.firstIndex(of: UInt8(ascii: "/")) else { return jsonStringLength(name) }
        return jsonStringLength(String(name[name.index(after: slash)...]))
    }

    /// The number of bytes ``writeJSONString(_:)`` writes for `value`, quotes included.
    public static func jsonStringLength(_ value: String) -> Int {
        var length = 2
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x0A, 0x0D, 0x09: length += 2
            case 0x00..<0x20: length += 6
            default: length += 1
            }
        }
        return length
    }

    /// Writes an unsigned integer in decimal.
    public mutating func writeDecimal(_ value: UInt64) {
        if value < 10 {
            self.writeInteger(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { raw in
            while v > 0 {
                raw[19 - count] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                count += 1
            }
            self.writeBytes(UnsafeRawBufferPointer(rebasing: raw[(20 - count)...]))
        }
    }
}
