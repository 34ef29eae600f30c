/// How long to wait between reconnect attempts: exponential, capped, with random jitter so that many
/// nodes that lost the same Redis do not all reconnect in the same instant.
///
/// After a connection is lost the first attempt is immediate (the server may only have closed that one
/// connection). After the n-th failed attempt in a row the client waits
/// `min(maximum, initial × 2^(n-1))`, shortened by a random fraction of up to ``jitter``.
/// A successful handshake starts the count again.
public struct RedisBackoff: Sendable, Hashable {
    /// The delay after the first failed attempt. 50 ms: a restarting Redis is usually back within
    /// a few hundred milliseconds, and one connect per 50 ms costs nothing.
    public var initial: Duration
    /// The longest delay. 2 s: a Redis that comes back is used again within about 2 s, while a Redis
    /// that stays down sees one attempt per connection every 1–2 s.
    public var maximum: Duration
    /// The fraction of the delay that is random, 0...1. With 0.5 the delay lies in [d/2, d].
    public var jitter: Double

    public init(initial: Duration = .milliseconds(50), maximum: Duration = .seconds(2), jitter: Double = 0.5) {
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
    }

    /// The delay after `failures` failed attempts in a row (0 means none failed yet: no delay).
    /// `random` is a number in 0..<1; tests pass fixed values.
    public func delay(afterFailures failures: Int, random: Double = Double.random(in: 0..<1)) -> Duration {
        guard failures > 0 else { return .zero }
        let initialNanos = Self.nanoseconds(initial)
        let maximumNanos = Self.nanoseconds(maximum)
        let exponent = min(failures - 1, 62)
        let base = min(
            Double(maximumNanos),
            Double(initialNanos) * Double(sign: .plus, exponent: exponent, significand: 1)
        )
        let clampedJitter = min(max(jitter, 0), 1)
        let nanos = base * (1 - clampedJitter * min(max(random, 0), 1))
        return .nanoseconds(Int64(nanos))
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
