/// What one loop counted for the connections of one server (one `--url`): with several URLs the
/// summary shows these beside the totals, so a cluster's nodes can be compared.
struct BenchNodeStats: Sendable, Equatable {
    /// Connections to this server that became ready.
    var ready = 0
    /// Measured messages its connections sent.
    var sent = 0
    /// Measured deliveries its connections received.
    var received = 0
    /// `error` messages its connections received.
    var errorMessages = 0
    /// Its connections that never became ready.
    var connectFailed = 0
    /// Its connections lost after they were ready.
    var closed = 0

    var errors: Int { errorMessages + connectFailed + closed }

    mutating func merge(_ other: BenchNodeStats) {
        ready += other.ready
        sent += other.sent
        received += other.received
        errorMessages += other.errorMessages
        connectFailed += other.connectFailed
        closed += other.closed
    }
}
