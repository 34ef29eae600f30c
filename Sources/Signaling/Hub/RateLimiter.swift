/// A per-connection token bucket with a strike count: each message takes a token; a message with no
/// token left is refused (`rate-limited`) and counts a strike; too many strikes in a row close the
/// connection (1008). Time is passed in, so it is tested without clocks.
public struct RateLimiter: Sendable {
    public enum Decision: Equatable, Sendable {
        case allow
        case refuse
        case disconnect
    }

    /// Tokens the bucket holds when full (the burst a client may send at once).
    public let burst: Double
    /// Tokens added per second (the sustained rate).
    public let ratePerSecond: Double
    /// Refused messages tolerated before the connection is closed. The count starts over once a client
    /// has gone a whole second without being refused.
    public let maxStrikes: Int

    private var tokens: Double
    private var lastRefill: UInt64
    private var strikes = 0
    private var lastRefusal: UInt64 = 0

    public init(burst: Int, ratePerSecond: Int, maxStrikes: Int, now: UInt64) {
        self.burst = Double(burst)
        self.ratePerSecond = Double(ratePerSecond)
        self.maxStrikes = maxStrikes
        self.tokens = Double(burst)
        self.lastRefill = now
    }

    public mutating func take(now: UInt64) -> Decision {
        if now > lastRefill {
            tokens = min(burst, tokens + Double(now - lastRefill) / 1e9 * ratePerSecond)
            lastRefill = now
        }
        if tokens >= 1 {
            tokens -= 1
            if strikes > 0 && now - lastRefusal > 1_000_000_000 { strikes = 0 }
            return .allow
        }
        strikes += 1
        lastRefusal = now
        return strikes > maxStrikes ? .disconnect : .refuse
    }
}
