import Histogram

/// What one event loop of the generator counted. Loops count on their own (no locks on the hot path)
/// and the coordinator merges their copies.
struct BenchStats: Sendable {
    /// Measured messages sent (sent inside the measurement window).
    var sent = 0
    /// Deliveries those sends should cause (1 per signal; room size − 1 per broadcast).
    var expected = 0
    /// Measured deliveries received (their send time is inside the window).
    var received = 0
    /// `ack`s received (all of them, measured or not).
    var acks = 0
    /// `error` messages received.
    var errorMessages = 0
    /// Connections lost after they were ready (dropped, or closed by the server).
    var closed = 0
    /// Connections that never became ready (refused, failed upgrade, no `welcome`/`joined`).
    var connectFailed = 0
    /// Connections ready (upgraded, and for sessions: welcomed and joined).
    var ready = 0
    /// When the last connection became ready (monotonic nanoseconds).
    var lastReadyAt: UInt64 = 0
    /// The first error seen, for the summary.
    var firstError: String?
    /// Send-to-receive latency of measured deliveries, in nanoseconds.
    var latency = BenchStats.makeHistogram()
    /// Connect-to-ready time of each connection, in nanoseconds.
    var connectLatency = BenchStats.makeHistogram()
    /// The same counts per server (`--url`), indexed like `ConnectionPlan.targets`.
    var nodes: [BenchNodeStats] = []

    static func makeHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(
            lowestDiscernibleValue: 1,
            highestTrackableValue: 120_000_000_000,
            numberOfSignificantValueDigits: .three
        )
    }

    mutating func merge(_ other: BenchStats) {
        sent += other.sent
        expected += other.expected
        received += other.received
        acks += other.acks
        errorMessages += other.errorMessages
        closed += other.closed
        connectFailed += other.connectFailed
        ready += other.ready
        lastReadyAt = max(lastReadyAt, other.lastReadyAt)
        if firstError == nil { firstError = other.firstError }
        latency.add(other.latency)
        connectLatency.add(other.connectLatency)
        if nodes.count < other.nodes.count {
            nodes += Array(repeating: BenchNodeStats(), count: other.nodes.count - nodes.count)
        }
        for (index, node) in other.nodes.enumerated() { nodes[index].merge(node) }
    }

    /// Measured deliveries that never arrived.
    var lost: Int { max(0, expected - received) }
}
