#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Cryptographically secure random numbers from the system, fetched 256 bytes per system call (a session
/// takes four numbers: one `read` of `/dev/urandom` per eight sessions instead of four `getrandom`s per
/// session).
struct BufferedSystemRandom: RandomNumberGenerator, Sendable {
    /// Opened once per process; -1 where there is none (then the standard library's generator is used).
    private static let urandom: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    private var buffer: [UInt64]
    private var position: Int

    /// - Parameter numbers: how many numbers one system call fetches (a one-off use needs few).
    init(numbers: Int = 32) {
        buffer = [UInt64](repeating: 0, count: max(1, numbers))
        position = buffer.count
    }

    mutating func next() -> UInt64 {
        if position == buffer.count { self.refill() }
        defer { position += 1 }
        return buffer[position]
    }

    private mutating func refill() {
        buffer.withUnsafeMutableBytes { bytes in
            var filled = 0
            if Self.urandom >= 0 {
                while filled < bytes.count {
                    let count = read(Self.urandom, bytes.baseAddress! + filled, bytes.count - filled)
                    if count > 0 {
                        filled += count
                    } else if count == 0 || errno != EINTR {
                        break
                    }
                }
            }
            if filled < bytes.count {
                var system = SystemRandomNumberGenerator()
                for index in 0..<(bytes.count / 8) {
                    bytes.storeBytes(of: system.next(), toByteOffset: index * 8, as: UInt64.self)
                }
            }
        }
        position = 0
    }
}
