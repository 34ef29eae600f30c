import CoreMetrics
import NIOConcurrencyHelpers

/// Counters and the metrics exported from them.
extension ClusterHub {
    func count(_ change: (inout HubCounters) -> Void) {
        state.withLockedValue { change(&$0.counters) }
    }

    func count(crossNode: Int) {
        state.withLockedValue { $0.crossNode += crossNode }
    }

    /// Brings the metrics up to date (called before `/metrics` is rendered).
    public func exportMetrics() {
        let (connections, sessions, counters, previous, cross) = state.withLockedValue { state in
            defer {
                state.exported = state.counters
                state.exportedCrossNode = state.crossNode
            }
            return (
                state.locals.count, state.locals.values.filter { $0.connection.session != nil }.count, state.counters,
                state.exported, state.crossNode - state.exportedCrossNode
            )
        }
        metrics.connections.record(connections)
        metrics.sessions.record(sessions)
        metrics.record(counters, since: previous)
        if cross > 0 { clusterMetrics.crossNodeSignals.increment(by: cross) }
        clusterMetrics.redisUp.record(isReady ? 1 : 0)
    }

    /// Cumulative counters (for tests).
    public var counters: HubCounters { state.withLockedValue { $0.counters } }
    /// Signals whose recipient was on another node (for tests).
    public var crossNodeSignals: Int { state.withLockedValue { $0.crossNode } }
}
