/// A per-connection token bucket with a strike count: each message takes a token; a message with no
/// token left is refused (`rate-limited`) and counts a strike; too many strikes in a row close the
/// connection (1008). Time is passed in, so it is tested without clocks.
public struct RateLimiter: Sendable {
    public enum Decision: Equatable, Sendable {
        case allow
        case refuse
        case disconnect
    }

    /// The limits, shared by every connection of a server (kept apart from the per-connection state so
    /// each connection stores only its counters).
    public struct Policy: Sendable {
        /// Tokens the bucket holds when full (the burst a client may send at once).
        public var burst: Double
        /// Tokens added per second (the sustained rate).
        public var ratePerSecond: Double
        /// Refused messages tolerated before the connection is closed. The count starts over once a
        /// client has gone a whole second without being refused.
        public var maxStrikes: Int

        public init(burst: Int, ratePerSecond: Int, maxStrikes: Int) {
            self.burst = Double(burst)
            self.ratePerSecond = Double(ratePerSecond)
            self.maxStrikes = maxStrikes
        }
    }

    private var tokens: Double
    private var lastRefill: UInt64
    private var strikes = 0
    private var lastRefusal: UInt64 = 0

    /// A full bucket.
    public init(policy: Policy, now: UInt64) {
        self.tokens = policy.burst
        self.lastRefill = now
    }

    public mutating func take(now: UInt64, policy: Policy) -> Decision {
        if now > lastRefill {
            tokens = min(policy.burst, tokens + Double(now - lastRefill) / 1e9 * policy.ratePerSecond)
            lastRefill = now
        }
        if tokens >= 1 {
            tokens -= 1
            if strikes > 0 && now - lastRefusal > 1_000_000_000 { strikes = 0 }
            return .allow
        }
        strikes += 1
        lastRefusal = now
        return strikes > policy.maxStrikes ? .disconnect : .refuse
    }
}
