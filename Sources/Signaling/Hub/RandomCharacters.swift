/// Random base-62 characters for peer ids, drawn from the system's CSPRNG through a
/// ``BufferedSystemRandom`` (which the hub also takes its resume tokens from), without bias: a byte is
/// used only below 248 (4 × 62), as `byte % 62`.
struct RandomCharacters: Sendable {
    private static let alphabet: StaticString = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

    /// The random numbers behind the characters; the hub also takes its session tokens from it.
    var source: BufferedSystemRandom
    private var bits: UInt64 = 0
    private var bytesLeft = 0

    init(source: BufferedSystemRandom = BufferedSystemRandom()) {
        self.source = source
    }

    mutating func next() -> UInt8 {
        while true {
            if bytesLeft == 0 {
                bits = source.next()
                bytesLeft = 8
            }
            let byte = UInt8(truncatingIfNeeded: bits)
            bits >>= 8
            bytesLeft -= 1
            if byte < 248 {
                return Self.alphabet.utf8Start[Int(byte % 62)]
            }
        }
    }

    /// `count` random characters.
    mutating func string(count: Int) -> String {
        String(unsafeUninitializedCapacity: count) { bytes in
            for index in 0..<count { bytes[index] = self.next() }
            return count
        }
    }
}
