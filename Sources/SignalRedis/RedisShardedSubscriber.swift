import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Sharded pub/sub (`SSUBSCRIBE`, Redis 7) across a Redis Cluster: each channel is subscribed on the
/// primary that serves its name's slot, through one ``RedisSubscriber`` per primary, and every message
/// arrives on one ``events`` stream.
///
/// Channels follow their slot. After the slot map changes (``RedisClusterClient/observeSlotMap(_:)``), after
/// the server drops a subscription because its slot moved (``RedisPubSubEvent/unsubscribedByServer(channel:)``),
/// and every ``RedisClusterConfiguration/refreshInterval``, every wanted channel not subscribed where its
/// slot lives is subscribed there. Gaps are bracketed as on one server: ``RedisPubSubEvent/disconnected(_:)``
/// when a subscriber connection is lost or before channels move, then, once every wanted channel is
/// subscribed where it lives and every subscriber is connected, one ``RedisPubSubEvent/reconnected``:
/// messages published in between may be missing and must be read from Redis. Subscribers of nodes that no
/// longer serve a wanted channel are closed.
public final class RedisShardedSubscriber: Sendable {
    /// Messages and gaps, in order per channel. One stream, for one consumer; it finishes after ``close()``.
    public let events: AsyncStream<RedisPubSubEvent>

    private struct State {
        var wanted: Set<String> = []
        var placed: [String: RedisClusterNode] = [:]
        var subscribers: [RedisClusterNode: RedisSubscriber] = [:]
        var rebalanceWanted = false
        /// A `.disconnected` was yielded and its `.reconnected` is due once every channel is subscribed
        /// where it lives and every subscriber is connected.
        var gapOpen = false
        var closed = false
        var worker: Task<Void, Never>?
        var pumps: [Task<Void, Never>] = []
    }

    private let client: RedisClusterClient
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let continuation: AsyncStream<RedisPubSubEvent>.Continuation
    private let state = NIOLockedValueBox(State())
    /// Wakes the worker (a rebalance is wanted, a subscriber is back).
    private let doorbell = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    /// Subscribes through `client`'s slot map; the subscriber connections use its configuration.
    public init(client: RedisClusterClient, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.client = client
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        (events, continuation) = AsyncStream<RedisPubSubEvent>.makeStream(bufferingPolicy: .unbounded)
    }

    /// Starts following the slot map.
    public func start() {
        let start = state.withLockedValue { state -> Bool in
            guard !state.closed, state.worker == nil else { return false }
            state.worker = Task { [self] in await self.work() }
            return true
        }
        if start { client.observeSlotMap { [weak self] in self?.wantRebalance() } }
    }

    /// Closes every subscriber and finishes ``events``.
    public func close() async {
        let (worker, pumps, subscribers) = state.withLockedValue { state in
            state.closed = true
            defer {
                state.subscribers = [:]
                state.pumps = []
            }
            return (state.worker, state.pumps, Array(state.subscribers.values))
        }
        worker?.cancel()
        doorbell.continuation.finish()
        for subscriber in subscribers { await subscriber.close() }
        for pump in pumps { await pump.value }
        continuation.finish()
    }

    /// True while every wanted channel is subscribed where its slot lives and every subscriber is connected.
    public var isConnected: Bool {
        state.withLockedValue { state in
            state.wanted.allSatisfy { state.placed[$0] != nil }
                && state.subscribers.values.allSatisfy { $0.isConnected || $0.state == .idle }
        }
    }

    /// Subscribes `channels` on the primaries of their slots; returns once they are, or throws
    /// ``RedisError/Code/notConnected`` after `timeout`. The channels stay wanted either way, and are
    /// subscribed as soon as their primary allows (then ``RedisPubSubEvent/reconnected`` comes).
    public func ssubscribe(_ channels: [String], timeout: Duration? = nil) async throws(RedisError) {
        state.withLockedValue { $0.wanted.formUnion(channels) }
        wantRebalance()
        let clock = ContinuousClock()
        let deadline = clock.now + (timeout ?? client.configuration.commandTimeout)
        while clock.now < deadline {
            if state.withLockedValue({ state in channels.allSatisfy { state.placed[$0] != nil } }) { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
        throw RedisError(
            .notConnected,
            "could not subscribe to \(channels.joined(separator: " ")) in the Redis Cluster"
        )
    }

    /// Unsubscribes `channels`.
    public func sunsubscribe(_ channels: [String]) async {
        let work = state.withLockedValue { state -> [(RedisSubscriber, String)] in
            state.wanted.subtract(channels)
            return channels.compactMap { channel in
                guard let node = state.placed.removeValue(forKey: channel), let subscriber = state.subscribers[node]
                else { return nil }
                return (subscriber, channel)
            }
        }
        for (subscriber, channel) in work {
            try? await subscriber.sunsubscribe([channel], timeout: .seconds(1))
        }
    }

    // MARK: Placement

    private func wantRebalance() {
        state.withLockedValue { $0.rebalanceWanted = true }
        doorbell.continuation.yield()
    }

    private func work() async {
        let clock = ContinuousClock()
        var next = clock.now
        var bell = doorbell.stream.makeAsyncIterator()
        while !Task.isCancelled {
            let due = state.withLockedValue { state -> Bool in
                defer { state.rebalanceWanted = false }
                return state.rebalanceWanted
            }
            if due || clock.now >= next {
                await rebalance()
                next = clock.now + client.configuration.refreshInterval
            }
            let (healed, waiting) = state.withLockedValue { state -> (Bool, Bool) in
                let healthy =
                    state.wanted.allSatisfy { state.placed[$0] != nil }
                    && state.subscribers.values.allSatisfy { $0.isConnected || $0.state == .idle }
                defer { if healthy { state.gapOpen = false } }
                return (healthy && state.gapOpen, !healthy)
            }
            if healed { continuation.yield(.reconnected) }
            // Until the doorbell rings or the next periodic rebalance; while something is not in place, a
            // subscriber reconnecting by itself is looked for every 50 ms.
            let timeout = waiting ? min(.milliseconds(50), next - clock.now) : next - clock.now
            await Self.wait(&bell, ring: doorbell.continuation, timeout: timeout)
        }
    }

    /// Waits until `ring` is rung or `timeout` passes.
    static func wait(
        _ bell: inout AsyncStream<Void>.Iterator,
        ring: AsyncStream<Void>.Continuation,
        timeout: Duration
    ) async {
        guard timeout > .zero else { return }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { ring.yield() }
        }
        _ = await bell.next()
        timer.cancel()
    }

    /// Subscribes every wanted channel where its slot lives now.
    private func rebalance() async {
        guard let map = client.slotMap else { return }
        let moves = state.withLockedValue { state -> [(String, RedisClusterNode?, RedisClusterNode)] in
            state.wanted.compactMap { channel in
                guard let target = map.primary(forSlot: RedisClusterSlots.slot(of: channel)) else { return nil }
                let current = state.placed[channel]
                return current == target ? nil : (channel, current, target)
            }
        }
        var failed = false
        if moves.contains(where: { $0.1 != nil }) {
            openGap(RedisError(.connectionClosed, "sharded channels are moving to their slots' new primaries"))
        }
        for (channel, current, target) in moves {
            if let current, let old = state.withLockedValue({ $0.subscribers[current] }) {
                try? await old.sunsubscribe([channel], timeout: .milliseconds(500))
                state.withLockedValue { _ = $0.placed.removeValue(forKey: channel) }
            }
            guard let subscriber = subscriber(for: target) else { return }
            do throws(RedisError) {
                try await subscriber.ssubscribe([channel], timeout: .seconds(1))
                let placed = state.withLockedValue { state -> Bool in
                    guard state.wanted.contains(channel) else { return false }
                    state.placed[channel] = target
                    return true
                }
                if !placed { try? await subscriber.sunsubscribe([channel], timeout: .milliseconds(500)) }
            } catch {
                failed = true
                try? await subscriber.sunsubscribe([channel], timeout: .milliseconds(500))
                client.requestRefresh()
            }
        }
        if failed { wantRebalance() }
        closeIdleSubscribers(primaries: map.primaries)
        if moves.contains(where: { $0.1 != nil }) {
            logger.info(
                "sharded channels moved to their slots' primaries",
                metadata: ["redis.channels": "\(moves.count)"]
            )
        }
    }

    /// Yields `.disconnected` unless a gap is already open.
    private func openGap(_ error: RedisError) {
        let open = state.withLockedValue { state -> Bool in
            defer { state.gapOpen = true }
            return !state.gapOpen
        }
        if open { continuation.yield(.disconnected(error)) }
    }

    private func subscriber(for node: RedisClusterNode) -> RedisSubscriber? {
        let (subscriber, created) = state.withLockedValue { state -> (RedisSubscriber?, Bool) in
            guard !state.closed else { return (nil, false) }
            if let existing = state.subscribers[node] { return (existing, false) }
            guard
                let subscriber = try? RedisSubscriber(
                    configuration: client.configuration.configuration(for: node),
                    eventLoopGroup: eventLoopGroup,
                    logger: logger
                )
            else { return (nil, false) }
            state.subscribers[node] = subscriber
            return (subscriber, true)
        }
        if created, let subscriber {
            let pump = Task { [self] in await self.pump(subscriber, node: node) }
            state.withLockedValue { $0.pumps.append(pump) }
        }
        return subscriber
    }

    private func pump(_ subscriber: RedisSubscriber, node: RedisClusterNode) async {
        for await event in subscriber.events {
            switch event {
            case .message:
                continuation.yield(event)
            case .disconnected(let error):
                client.requestRefresh()
                openGap(error)
            case .reconnected:
                wantRebalance()  // the worker says `.reconnected` once every channel is in place
            case .unsubscribedByServer(let channel):
                logger.debug("Redis dropped a sharded subscription", metadata: ["redis.channel": "\(channel)"])
                openGap(RedisError(.connectionClosed, "Redis dropped the subscription to \(channel): its slot moved"))
                state.withLockedValue { state in
                    if state.placed[channel] == node { state.placed[channel] = nil }
                }
                wantRebalance()
                client.requestRefresh()
            }
        }
    }

    /// Closes subscribers of nodes that hold no wanted channel and are not primaries any more.
    private func closeIdleSubscribers(primaries: Set<RedisClusterNode>) {
        let idle = state.withLockedValue { state -> [RedisSubscriber] in
            let used = Set(state.placed.values)
            var idle: [RedisSubscriber] = []
            for (node, subscriber) in state.subscribers where !used.contains(node) && !primaries.contains(node) {
                idle.append(subscriber)
                state.subscribers[node] = nil
            }
            return idle
        }
        for subscriber in idle { Task { await subscriber.close() } }
    }
}
