import PeerMesh

/// How a simulated link between two nodes behaves: one-way delay, jitter and loss. Each message on a
/// link is delayed by the link's delay plus a uniform jitter in `0..<jitter`, and lost with probability
/// `loss`, independently.
public struct LinkModel: Sendable {
    /// Mean one-way delay, nanoseconds.
    public var delay: UInt64
    /// Upper bound of the uniform extra delay, nanoseconds.
    public var jitter: UInt64
    /// Probability that one message is lost.
    public var loss: Double
    /// Per-link variation of the delay: each link's delay is `delay × (1 ± spread)`, fixed per link
    /// (0 = every link has the same delay).
    public var spread: Double

    public init(delay: UInt64, jitter: UInt64 = 0, loss: Double = 0, spread: Double = 0) {
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.spread = spread
    }

    /// The base delay of the link between nodes `a` and `b` (symmetric).
    func baseDelay(_ a: Int, _ b: Int) -> UInt64 {
        guard spread > 0 else { return delay }
        var mix = SeededRandom(seed: UInt64(min(a, b)) &* 0x1_0000_0001 &+ UInt64(max(a, b)))
        let factor = 1 - spread + 2 * spread * mix.nextUnit()
        return UInt64(Double(delay) * factor)
    }

    /// The delivery delay of one message, or nil when it is lost.
    func sample(_ a: Int, _ b: Int, using rng: inout SeededRandom) -> UInt64? {
        if loss > 0, rng.nextUnit() < loss { return nil }
        let extra = jitter > 0 ? rng.next() % jitter : 0
        return baseDelay(a, b) + extra
    }
}
