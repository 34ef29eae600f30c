import Testing

@testable import Signaling

/// A cluster node's decisions about its Redis, with the time injected: refresh, sweep after a reconnect,
/// and sending clients away during a partition.
@Suite struct ClusterNodeStateTests {
    static let second: UInt64 = 1_000_000_000
    /// Refresh every 2 s, sweep ticks every 1 s, clients sent away after 10 s without Redis.
    static let timing = ClusterNodeState.Timing(
        refreshInterval: 2 * second,
        sweepInterval: second,
        partitionTimeout: 10 * second
    )

    /// Ticks once a second from `from` (seconds) while `reachable`, returning each decision.
    func run(_ state: inout ClusterNodeState, from: UInt64, seconds: UInt64, reachable: Bool)
        -> [ClusterNodeState.Decision]
    {
        (from..<(from + seconds)).map { state.tick(now: $0 * Self.second, redisReachable: reachable) }
    }

    @Test func aReachableNodeRefreshesEveryIntervalAndSweepsOnceSettled() {
        var state = ClusterNodeState(timing: Self.timing)
        let decisions = run(&state, from: 100, seconds: 7, reachable: true)
        #expect(decisions.map(\.refresh) == [true, false, true, false, true, false, true])
        // Sweeping waits two refresh intervals and a sweep interval (5 s) after Redis is reachable.
        #expect(decisions.map(\.sweep) == [false, false, false, false, false, true, true])
        #expect(!decisions.contains { $0.sendClientsAway || $0.lostRedis })
    }

    @Test func losingRedisWarnsOnceAndSendsClientsAwayAfterThePartitionTimeout() {
        var state = ClusterNodeState(timing: Self.timing)
        _ = run(&state, from: 0, seconds: 10, reachable: true)
        let down = run(&state, from: 10, seconds: 12, reachable: false)
        #expect(down.map(\.lostRedis) == [true] + Array(repeating: false, count: 11))
        #expect(state.unreachableSince == 10 * Self.second)
        // Nothing is refreshed or swept without Redis; from 10 s on, every tick sends clients away.
        #expect(!down.contains { $0.refresh || $0.sweep })
        #expect(down.map(\.sendClientsAway) == Array(repeating: false, count: 10) + [true, true])
    }

    @Test func afterAnOutageTheNodeRefreshesAtOnceAndSweepsOnlyOnceEveryNodeHadTimeToReannounce() {
        var state = ClusterNodeState(timing: Self.timing)
        _ = run(&state, from: 0, seconds: 10, reachable: true)
        _ = run(&state, from: 10, seconds: 3, reachable: false)
        let back = run(&state, from: 13, seconds: 7, reachable: true)
        #expect(back.first?.refresh == true)
        #expect(back.map(\.sweep) == [false, false, false, false, false, true, true])
        #expect(state.unreachableSince == nil)
        #expect(state.reachableSince == 13 * Self.second)
    }

    @Test func aBlipShorterThanTheTimeoutSendsNobodyAwayAndRestartsTheClock() {
        var state = ClusterNodeState(timing: Self.timing)
        _ = run(&state, from: 0, seconds: 8, reachable: false)
        _ = run(&state, from: 8, seconds: 1, reachable: true)
        let again = run(&state, from: 9, seconds: 10, reachable: false)
        #expect(again.first?.lostRedis == true)
        #expect(!again.contains { $0.sendClientsAway })
    }

    @Test func withoutAPartitionTimeoutClientsAreNeverSentAway() {
        var timing = Self.timing
        timing.partitionTimeout = nil
        var state = ClusterNodeState(timing: timing)
        #expect(!run(&state, from: 0, seconds: 600, reachable: false).contains { $0.sendClientsAway })
    }
}
