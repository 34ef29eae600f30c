/// A resume token: 128 random bits, kept as two integers (no heap allocation per session) and written
/// on the wire as 32 lowercase hexadecimal digits.
struct SessionToken: Hashable, Sendable, CustomStringConvertible {
    let high: UInt64
    let low: UInt64

    init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A fresh token from the system's CSPRNG.
    static func random() -> SessionToken {
        var generator = SystemRandomNumberGenerator()
        return SessionToken(high: generator.next(), low: generator.next())
    }

    /// Parses the wire form; nil for anything that is not exactly 32 lowercase hexadecimal digits.
    init?(_ text: String) {
        guard text.utf8.count == 32 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in text.utf8.enumerated() {
            let digit: UInt64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(byte &- UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt64(byte &- UInt8(ascii: "a") &+ 10)
            default: return nil
            }
            if index < 16 { high = high << 4 | digit } else { low = low << 4 | digit }
        }
        self.init(high: high, low: low)
    }

    var description: String {
        String(unsafeUninitializedCapacity: 32) { bytes in
            let digits: StaticString = "0123456789abcdef"
            for index in 0..<32 {
                let word = index < 16 ? high : low
                let shift = UInt64(60 - 4 * (index % 16))
                bytes[index] = digits.utf8Start[Int((word >> shift) & 0xF)]
            }
            return 32
        }
    }
}
