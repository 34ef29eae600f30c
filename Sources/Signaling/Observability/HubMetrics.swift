import CoreMetrics
import Metrics

/// The hub's metrics, created from an injected factory (the CLI passes a Prometheus registry's).
public final class HubMetrics: Sendable {
    let connections: Gauge
    let sessions: Gauge
    let detachedSessions: Gauge
    let rooms: Gauge
    let bufferedBytes: Gauge
    let connectionsOpened: Counter
    let connectionsRefused: Counter
    let signalsRelayed: [SignalType: Counter]
    let errors: [ErrorCode: Counter]
    let closes: [UInt16: Counter]
    let bytesIn: Counter
    let bytesOut: Counter
    let messagesIn: Counter
    let resumes: Counter
    let replayed: Counter
    let gaps: Counter
    let expired: Counter
    let queued: Counter
    let takeovers: Counter
    let detachedEvicted: Counter

    public init(factory: any MetricsFactory) {
        connections = Gauge(label: "signal_connections", factory: factory)
        sessions = Gauge(label: "signal_sessions", factory: factory)
        detachedSessions = Gauge(label: "signal_sessions_detached", factory: factory)
        rooms = Gauge(label: "signal_rooms", factory: factory)
        bufferedBytes = Gauge(label: "signal_resume_buffer_bytes", factory: factory)
        connectionsOpened = Counter(label: "signal_connections_opened_total", factory: factory)
        connectionsRefused = Counter(label: "signal_connections_refused_total", factory: factory)
        signalsRelayed = Dictionary(
            uniqueKeysWithValues: SignalType.allCases.map {
                (
                    $0,
                    Counter(
                        label: "signal_signals_relayed_total",
                        dimensions: [("type", $0.rawValue)],
                        factory: factory
                    )
                )
            }
        )
        errors = Dictionary(
            uniqueKeysWithValues: ErrorCode.allCases.map {
                ($0, Counter(label: "signal_errors_total", dimensions: [("code", $0.rawValue)], factory: factory))
            }
        )
        let closeCodes: [UInt16] = [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1013, 4001, 4002, 4009]
        closes = Dictionary(
            uniqueKeysWithValues: closeCodes.map {
                ($0, Counter(label: "signal_closes_total", dimensions: [("code", String($0))], factory: factory))
            }
        )
        bytesIn = Counter(label: "signal_bytes_in_total", factory: factory)
        bytesOut = Counter(label: "signal_bytes_out_total", factory: factory)
        messagesIn = Counter(label: "signal_messages_in_total", factory: factory)
        resumes = Counter(label: "signal_resumes_total", factory: factory)
        replayed = Counter(label: "signal_replayed_messages_total", factory: factory)
        gaps = Counter(label: "signal_resume_gaps_total", factory: factory)
        expired = Counter(label: "signal_expired_signals_total", factory: factory)
        queued = Counter(label: "signal_queued_signals_total", factory: factory)
        takeovers = Counter(label: "signal_session_takeovers_total", factory: factory)
        detachedEvicted = Counter(label: "signal_detached_sessions_evicted_total", factory: factory)
    }

    /// Increments the counters by what the state machine counted since `previous`.
    func record(_ counters: HubCounters, since previous: HubCounters) {
        func add(_ counter: Counter, _ now: Int, _ before: Int) {
            if now > before { counter.increment(by: now - before) }
        }
        add(resumes, counters.resumes, previous.resumes)
        add(replayed, counters.replayed, previous.replayed)
        add(gaps, counters.gaps, previous.gaps)
        add(expired, counters.expired, previous.expired)
        add(queued, counters.queued, previous.queued)
        add(takeovers, counters.takeovers, previous.takeovers)
        add(detachedEvicted, counters.detachedEvicted, previous.detachedEvicted)
        for (index, type) in SignalType.allCases.enumerated() {
            add(signalsRelayed[type]!, counters.signals[index], previous.signals[index])
        }
        for (index, code) in ErrorCode.allCases.enumerated() {
            add(errors[code]!, counters.errors[index], previous.errors[index])
        }
    }

    func recordClose(_ code: UInt16) {
        closes[code]?.increment()
    }
}

/// A cluster node's own metrics: cross-node traffic and its Redis connection.
public final class ClusterMetrics: Sendable {
    /// Signals whose recipient was connected to another node.
    let crossNodeSignals: Counter
    /// Time from writing a Redis request to reading its reply.
    let redisRoundTrip: Timer
    /// Times the node's Redis subscription was re-established after a loss.
    let redisReconnects: Counter
    /// 1 while the node reaches Redis (both connections up), else 0.
    let redisUp: Gauge

    public init(factory: any MetricsFactory) {
        crossNodeSignals = Counter(label: "signal_cluster_cross_node_signals_total", factory: factory)
        redisRoundTrip = Timer(label: "signal_redis_round_trip_seconds", factory: factory)
        redisReconnects = Counter(label: "signal_redis_reconnects_total", factory: factory)
        redisUp = Gauge(label: "signal_redis_up", factory: factory)
    }
}
