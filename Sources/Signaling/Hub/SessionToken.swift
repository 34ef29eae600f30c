/// A resume token's secret: 128 random bits, kept as two integers (no heap allocation per session). On
/// the wire a token is `<peer id>.<32 lowercase hexadecimal digits>`: it names its session, so the hub
/// needs no table from tokens to sessions.
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
        return random(using: &generator)
    }

    /// A fresh token from `generator`, which must be cryptographically secure.
    static func random(using generator: inout some RandomNumberGenerator) -> SessionToken {
        SessionToken(high: generator.next(), low: generator.next())
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

    /// Whether `other` is this secret, compared without an early exit on the first differing word.
    func matches(_ other: SessionToken) -> Bool {
        (high ^ other.high) | (low ^ other.low) == 0
    }

    /// The token as sent in `welcome`: `<peer>.<secret>`.
    func wireForm(peer: String) -> String {
        peer + "." + description
    }

    /// Splits a token from the wire into its peer id and secret; nil when it has not that shape. Peer
    /// ids may contain dots, so the secret is what follows the last one.
    static func parseWireForm(_ token: String) -> (peer: String, secret: SessionToken)? {
        guard let dot = token.utf8.lastIndex(of: UInt8(ascii: ".")), dot > token.utf8.startIndex,
            let secret = SessionToken(String(token[token.index(after: dot)...]))
        else { return nil }
        return (String(token[..<dot]), secret)
    }
}
