import Histogram

/// A progress sample of one loop: counters and the latency of what arrived since the previous sample.
struct BenchProgressSample: Sendable {
    var sent = 0
    var received = 0
    var ready = 0
    var failures = 0
    var errorMessages = 0
    var interval = BenchStats.makeHistogram()

    mutating func merge(_ other: BenchProgressSample) {
        sent += other.sent
        received += other.received
        ready += other.ready
        failures += other.failures
        errorMessages += other.errorMessages
        interval.add(other.interval)
    }
}
