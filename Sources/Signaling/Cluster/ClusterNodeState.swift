/// A cluster node's own decisions about its Redis, as a value with no I/O and the time injected: when to
/// re-announce its sessions, when sweeping expired sessions is safe, and when a node cut off from Redis
/// sends its clients away. ``ClusterHub`` asks it on every maintenance tick (``ClusterConfiguration/sweepInterval``).
///
/// - **Refresh.** While Redis is reachable the node re-announces its live sessions every
///   ``Timing/refreshInterval``, and at once when Redis comes back.
/// - **Sweep.** Sessions are swept only once Redis has been reachable for two refresh intervals and a
///   sweep interval: during an outage no node could re-announce its sessions, so their deadlines may
///   have passed; each node must have had time to re-announce before anyone ends them.
/// - **Partition.** While Redis is unreachable the node is not ready (`/readyz`); once that has lasted
///   ``Timing/partitionTimeout``, every tick sends the node's clients away (1001), so they reconnect,
///   through the load balancer, to a node that reaches Redis.
struct ClusterNodeState {
    struct Timing: Sendable, Equatable {
        var refreshInterval: UInt64
        var sweepInterval: UInt64
        /// `nil`: never send clients away.
        var partitionTimeout: UInt64?

        /// How long Redis must have been reachable before sessions are swept.
        var settle: UInt64 { 2 * refreshInterval + sweepInterval }
    }

    /// What one tick asks the node to do.
    struct Decision: Equatable {
        /// Re-announce every live session (deadline and key expiry).
        var refresh = false
        /// End sessions whose deadline passed.
        var sweep = false
        /// Close every open connection with 1001.
        var sendClientsAway = false
        /// Redis just became unreachable (worth one warning).
        var lostRedis = false
    }

    let timing: Timing
    /// Since when Redis has been unreachable (nanoseconds, a monotonic clock).
    private(set) var unreachableSince: UInt64?
    /// Since when Redis has been reachable.
    private(set) var reachableSince: UInt64?
    private var lastRefresh: UInt64?

    init(timing: Timing) {
        self.timing = timing
    }

    /// One maintenance tick at `now` (nanoseconds, monotonic), with Redis reachable or not.
    mutating func tick(now: UInt64, redisReachable: Bool) -> Decision {
        var decision = Decision()
        guard redisReachable else {
            reachableSince = nil
            lastRefresh = nil
            if let since = unreachableSince {
                if let timeout = timing.partitionTimeout, now &- since >= timeout { decision.sendClientsAway = true }
            } else {
                unreachableSince = now
                decision.lostRedis = true
            }
            return decision
        }
        unreachableSince = nil
        let since = reachableSince ?? now
        reachableSince = since
        if lastRefresh.map({ now &- $0 >= timing.refreshInterval }) ?? true {
            lastRefresh = now
            decision.refresh = true
        }
        decision.sweep = now &- since >= timing.settle
        return decision
    }
}
