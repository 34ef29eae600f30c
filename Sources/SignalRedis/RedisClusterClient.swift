import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A Redis Cluster client: one ``RedisConnection`` per primary, each command sent to the primary of its
/// key's slot (``RedisClusterSlots/routingKey(of:)``), redirects followed.
///
/// ```swift
/// let cluster = try RedisClusterClient(
///     configuration: RedisClusterConfiguration(seeds: [RedisConfiguration(url: "redis://10.0.0.5:7000")]),
///     eventLoopGroup: group,
///     logger: logger
/// )
/// cluster.start()
/// let reply = try await cluster.run(script, keys: ["sig:{alice}:s", "sig:{alice}:b"], arguments: [])
/// ```
///
/// - **Slot map.** Read with `CLUSTER SHARDS` (`CLUSTER SLOTS` before Redis 7) from a connected primary or a
///   seed, at start, every ``RedisClusterConfiguration/refreshInterval``, and at once after a `MOVED`, a
///   lost connection, `CLUSTERDOWN` or `TRYAGAIN`. When a node stops being a primary its connection is
///   closed: commands still waiting for it (not sent) go to the slot's new primary.
/// - **Redirects.** `MOVED slot node`: the map is corrected for that slot and the command sent there.
///   `ASK slot node` (a slot being migrated): `ASKING` and the command are sent to that node, this once.
///   `TRYAGAIN`, `CLUSTERDOWN` (a failover in progress) and a command that could not be sent are retried
///   until the command's timeout. A command that was sent and lost with its connection is not retried (it
///   may have run): it throws ``RedisError/Code/connectionClosed`` as on one server.
/// - **Durability.** Each command is followed by `WAIT` for ``RedisClusterConfiguration/replicaAcknowledgements``
///   replicas, so a reply means the write survives a failover.
/// - **Order.** Commands for one slot submitted one after another (``submit(_:keys:arguments:timeout:)``)
///   go out on one connection in that order, as on one server, unless a redirect intervenes.
public final class RedisClusterClient: RedisClient {
    public let configuration: RedisClusterConfiguration

    private struct State {
        var map: RedisClusterSlotMap?
        var connections: [RedisClusterNode: RedisConnection] = [:]
        var closed = false
        var refreshWanted = false
        var refresher: Task<Void, Never>?
        var observers: [@Sendable () -> Void] = []
    }

    private let state = NIOLockedValueBox(State())
    /// Wakes the refresh loop (a refresh is wanted).
    private let doorbell = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let onStateChange: (@Sendable (Bool) -> Void)?
    private let onRoundTrip: (@Sendable (Duration) -> Void)?

    /// - Parameters:
    ///   - onStateChange: Called after every map refresh with ``isConnected``.
    ///   - onRoundTrip: Called with each request's round trip, on any node.
    /// - Throws: ``RedisError/Code/invalidArgument`` when the seeds' TLS configuration cannot be used.
    public init(
        configuration: RedisClusterConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        onStateChange: (@Sendable (Bool) -> Void)? = nil,
        onRoundTrip: (@Sendable (Duration) -> Void)? = nil
    ) throws(RedisError) {
        // Every node's connection uses the first seed's settings: check them once, here.
        _ = try RedisConnection(configuration: configuration.seeds[0], eventLoopGroup: eventLoopGroup, logger: logger)
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.onStateChange = onStateChange
        self.onRoundTrip = onRoundTrip
    }

    // MARK: Lifecycle

    /// Starts reading the slot map and connecting to the primaries, in the background.
    public func start() {
        let started = state.withLockedValue { state -> Bool in
            guard !state.closed, state.refresher == nil else { return false }
            state.refresher = Task { [self] in await self.refreshLoop() }
            return true
        }
        if started { logger.debug("Redis Cluster client starting", metadata: ["redis.seeds": "\(seedList)"]) }
    }

    /// Closes every connection; commands waiting fail.
    public func close() async {
        let (refresher, connections) = state.withLockedValue { state in
            state.closed = true
            defer {
                state.connections = [:]
                state.refresher = nil
            }
            return (state.refresher, Array(state.connections.values))
        }
        refresher?.cancel()
        doorbell.continuation.finish()
        for connection in connections { await connection.close() }
    }

    /// The slot map as last read; nil before the first answer.
    public var slotMap: RedisClusterSlotMap? { state.withLockedValue { $0.map } }

    /// True while the slot map covers every slot and every primary's connection is up.
    public var isConnected: Bool {
        state.withLockedValue { state in
            guard let map = state.map, map.coversEverySlot else { return false }
            return map.primaries.allSatisfy { state.connections[$0]?.isConnected == true }
        }
    }

    public var stateDescription: String {
        state.withLockedValue { state in
            guard let map = state.map else { return "no slot map yet (seeds \(seedList))" }
            let primaries = map.primaries.sorted { $0.description < $1.description }.map { node in
                "\(node) \(state.connections[node]?.state.description ?? "not connected")"
            }
            return "primaries: " + primaries.joined(separator: ", ")
        }
    }

    /// Calls `body` after every change of the slot map (from any thread).
    public func observeSlotMap(_ body: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.observers.append(body) }
    }

    /// Asks for the slot map to be read again now.
    public func requestRefresh() {
        state.withLockedValue { $0.refreshWanted = true }
        doorbell.continuation.yield()
    }

    // MARK: Commands

    @discardableResult
    public func send(_ arguments: [any RESPEncodable], timeout: Duration? = nil) async throws(RedisError) -> RESPValue {
        guard !arguments.isEmpty else { throw RedisError(.invalidArgument, "a Redis command needs a name") }
        let slot = RedisClusterSlots.routingKey(of: arguments).map { RedisClusterSlots.slot(of: $0) }
        return try await execute(arguments, slot: slot, timeout: timeout)
    }

    @discardableResult
    public func run(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [any RESPEncodable] = [],
        timeout: Duration? = nil
    ) async throws(RedisError) -> RESPValue {
        let slot = keys.first.map { RedisClusterSlots.slot(of: $0) }
        do throws(RedisError) {
            return try await execute(
                RedisConnection.scriptCall("EVALSHA", script.sha1, keys, arguments),
                slot: slot,
                timeout: timeout
            )
        } catch {
            guard error.serverErrorPrefix == "NOSCRIPT" else { throw error }
            return try await execute(
                RedisConnection.scriptCall("EVAL", script.source, keys, arguments),
                slot: slot,
                timeout: timeout
            )
        }
    }

    /// `SCAN` on every primary, all at once: on the primary of each shard's first slot
    /// (``RedisClusterSlotMap/firstSlots``), so a scan goes on with its cursor on the new primary after a
    /// failover (a replica promoted has the same keys). Keys whose slot moves to another shard during the
    /// scan (resharding) may be missed.
    public func scan(matching pattern: String, count: Int, limit: Int, timeout: Duration?) async throws(RedisError)
        -> [String]
    {
        let slots = try await firstSlots(timeout: timeout)
        let shards = await withTaskGroup(of: Result<[String], RedisError>.self) { group in
            for slot in slots {
                group.addTask { () async -> Result<[String], RedisError> in
                    var found = RedisScan.Found(limit: limit)
                    do throws(RedisError) {
                        try await RedisScan.collect(pattern: pattern, count: count, into: &found) {
                            command async throws(RedisError) -> RESPValue in
                            try await self.execute(command, slot: slot, timeout: timeout, acknowledged: false)
                        }
                        return .success(found.keys)
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var all: [Result<[String], RedisError>] = []
            for await shard in group { all.append(shard) }
            return all
        }
        var found = RedisScan.Found(limit: limit)
        for shard in shards {
            for key in try shard.get() { found.add(key) }
        }
        return found.keys
    }

    /// ``RedisClusterSlotMap/firstSlots`` once the slot map is known, waiting for it up to the timeout.
    private func firstSlots(timeout: Duration?) async throws(RedisError) -> [Int] {
        let deadline = ContinuousClock.now + (timeout ?? configuration.commandTimeout)
        while true {
            if let map = slotMap, map.coversEverySlot { return map.firstSlots }
            guard ContinuousClock.now < deadline else {
                throw RedisError(.notConnected, "no Redis Cluster slot map covering every slot (seeds \(seedList))")
            }
            requestRefresh()
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Queues the script on its slot's primary at once (so scripts submitted one after another run in that
    /// order); a redirect, an unknown script or a command not sent is then retried like
    /// ``run(_:keys:arguments:timeout:)``.
    public func submit(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [any RESPEncodable] = [],
        timeout: Duration? = nil
    ) -> EventLoopFuture<RESPValue> {
        let slot = keys.first.map { RedisClusterSlots.slot(of: $0) }
        guard let (node, acks) = route(slot: slot) else {
            return retried(script, keys: keys, arguments: arguments, timeout: timeout, on: eventLoopGroup.next())
        }
        let connection = self.connection(for: node)
        let first = connection.submit(
            RedisConnection.scriptCall("EVALSHA", script.sha1, keys, arguments),
            timeout: timeout
        )
        let reply: EventLoopFuture<RESPValue>
        if acks > 0 {
            let wait = connection.submit(["WAIT", acks, waitMillis(timeout)], timeout: timeout)
            reply = first.and(wait).flatMapThrowing { reply, acknowledged in
                try Self.check(acknowledged, wanted: acks, node: node)
                return reply
            }
        } else {
            reply = first
        }
        return reply.flatMapError { error in
            guard let error = error as? RedisError, Self.retryable(error) || error.serverErrorPrefix == "NOSCRIPT"
            else {
                return connection.eventLoop.makeFailedFuture(error)
            }
            self.noteFailure(error)
            return self.retried(script, keys: keys, arguments: arguments, timeout: timeout, on: connection.eventLoop)
        }
    }

    private func retried(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RESPEncodable],
        timeout: Duration?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        Task {
            do throws(RedisError) {
                promise.succeed(try await self.run(script, keys: keys, arguments: arguments, timeout: timeout))
            } catch {
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    /// Sends `command` to the primary of `slot` (any primary when nil), following redirects and retrying
    /// what was not sent, until the timeout. With `acknowledged` (a write), followed by `WAIT`.
    private func execute(
        _ command: [any RESPEncodable],
        slot: Int?,
        timeout: Duration?,
        acknowledged: Bool = true
    ) async throws(RedisError) -> RESPValue {
        let budget = timeout ?? configuration.commandTimeout
        let clock = ContinuousClock()
        let deadline = clock.now + budget
        var asking: RedisClusterNode?
        var redirects = 0
        var lastError: RedisError?
        while true {
            let remaining = deadline - clock.now
            guard remaining > .zero else {
                throw lastError
                    ?? RedisError(
                        .notConnected,
                        "no Redis Cluster primary serves slot \(slot.map(String.init) ?? "-") (seeds \(seedList))"
                    )
            }
            let node: RedisClusterNode
            var acks = 0
            if let asking {
                node = asking
            } else if let (primary, wanted) = route(slot: slot) {
                node = primary
                acks = acknowledged ? wanted : 0
            } else {
                requestRefresh()
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            let connection = self.connection(for: node)
            var commands: [[any RESPEncodable]] = []
            if asking != nil { commands.append(["ASKING"]) }
            commands.append(command)
            if acks > 0 { commands.append(["WAIT", acks, waitMillis(remaining)]) }
            let replies: [Result<RESPValue, RedisError>]
            do throws(RedisError) {
                replies = try await connection.pipeline(commands, timeout: remaining)
            } catch {
                noteFailure(error)
                guard Self.retryable(error) else { throw error }
                lastError = error
                asking = nil
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            switch replies[asking == nil ? 0 : 1] {
            case .success(let reply):
                if acks > 0, case .success(let acknowledged) = replies[replies.count - 1] {
                    try Self.check(acknowledged, wanted: acks, node: node)
                }
                return reply
            case .failure(let error):
                asking = nil
                if let redirect = RedisClusterRedirect(error.message, defaultHost: node.host) {
                    redirects += 1
                    guard redirects <= configuration.maxRedirects else { throw error }
                    switch redirect {
                    case .moved(let movedSlot, let target):
                        moved(slot: movedSlot, to: target)
                    case .ask(_, let target):
                        asking = target
                    }
                    continue
                }
                guard Self.retryable(error) else { throw error }
                noteFailure(error)
                lastError = error
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    // MARK: Routing

    /// The primary that serves `key`'s slot now (`host:port`), by the slot map; nil without one.
    public func shard(of key: String) -> String? {
        route(slot: RedisClusterSlots.slot(of: key)).map { $0.0.description }
    }

    /// The primary for `slot` (any primary when nil) and how many replica acknowledgements to wait for.
    private func route(slot: Int?) -> (RedisClusterNode, Int)? {
        state.withLockedValue { state in
            guard let map = state.map else { return nil }
            let shard = slot.flatMap { map.shard(forSlot: $0) } ?? (slot == nil ? map.shards.first : nil)
            guard let shard else { return nil }
            return (shard.primary, min(configuration.replicaAcknowledgements, shard.onlineReplicas))
        }
    }

    private func connection(for node: RedisClusterNode) -> RedisConnection {
        let (connection, created) = state.withLockedValue { state -> (RedisConnection, Bool) in
            if let existing = state.connections[node] { return (existing, false) }
            // `init` checked the seed's configuration; every node's differs only in its address.
            let connection = try! RedisConnection(
                configuration: configuration.configuration(for: node),
                eventLoopGroup: eventLoopGroup,
                logger: logger,
                onRoundTrip: onRoundTrip
            )
            if !state.closed { state.connections[node] = connection }
            return (connection, true)
        }
        if created { connection.start() }
        return connection
    }

    private func moved(slot: Int, to node: RedisClusterNode) {
        let observers = state.withLockedValue { state -> [@Sendable () -> Void] in
            state.refreshWanted = true
            guard state.map?.primary(forSlot: slot) != node else { return [] }
            state.map?.move(slot: slot, to: node)
            return state.observers
        }
        doorbell.continuation.yield()
        logger.debug("Redis Cluster slot moved", metadata: ["redis.slot": "\(slot)", "redis.node": "\(node)"])
        for observer in observers { observer() }
    }

    private func noteFailure(_ error: RedisError) {
        if error.code != .server || ["TRYAGAIN", "CLUSTERDOWN", "MOVED"].contains(error.serverErrorPrefix ?? "") {
            requestRefresh()
        }
    }

    /// Safe to send again: it was not sent, or the cluster refused it for now.
    private static func retryable(_ error: RedisError) -> Bool {
        switch error.code {
        case .notConnected, .shutdown: return true
        case .server:
            return ["MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN"].contains(
                error.serverErrorPrefix ?? ""
            )
        default: return false
        }
    }

    private static func check(_ acknowledged: RESPValue, wanted: Int, node: RedisClusterNode) throws(RedisError) {
        guard let count = acknowledged.int, count >= wanted else {
            throw RedisError(
                .timeout,
                "Redis Cluster primary \(node) ran the command but \(wanted) replica(s) did not acknowledge it in time; "
                    + "it may be lost if the primary fails now"
            )
        }
    }

    private func waitMillis(_ timeout: Duration?) -> Int {
        let budget = timeout ?? configuration.commandTimeout
        return max(1, Int(RedisBackoff.nanoseconds(budget) / 2_000_000))
    }

    // MARK: Slot map

    private func refreshLoop() async {
        var bell = doorbell.stream.makeAsyncIterator()
        while !Task.isCancelled {
            state.withLockedValue { $0.refreshWanted = false }
            await refresh()
            // At most one refresh per 50 ms, however many commands ask for one (a failover makes many ask).
            try? await Task.sleep(for: .milliseconds(50))
            if state.withLockedValue({ $0.refreshWanted }) { continue }
            await RedisShardedSubscriber.wait(
                &bell,
                ring: doorbell.continuation,
                timeout: configuration.refreshInterval - .milliseconds(50)
            )
        }
    }

    /// Reads the slot map from a connected primary, else from the seeds and every known node.
    func refresh() async {
        let (connected, known) = state.withLockedValue { state in
            (
                state.connections.filter { $0.value.isConnected }.map(\.key),
                state.map.map { map in map.shards.flatMap { [$0.primary] + $0.replicas } } ?? []
            )
        }
        var candidates: [RedisClusterNode] = []
        for node in connected + configuration.seedNodes + known where !candidates.contains(node) {
            candidates.append(node)
        }
        for node in candidates {
            if Task.isCancelled { return }
            if let map = await readMap(from: node) {
                apply(map)
                onStateChange?(isConnected)
                return
            }
        }
        onStateChange?(false)
        logger.debug("no Redis Cluster node answered for the slot map", metadata: ["redis.seeds": "\(seedList)"])
    }

    private func readMap(from node: RedisClusterNode) async -> RedisClusterSlotMap? {
        if let existing = state.withLockedValue({ $0.connections[node] }), existing.isConnected {
            return await readMap(from: node, on: existing)
        }
        var configuration = configuration.configuration(for: node)
        configuration.connectTimeout = .milliseconds(500)
        configuration.scripts = []  // it only reads the map
        guard
            let probe = try? RedisConnection(
                configuration: configuration,
                eventLoopGroup: eventLoopGroup,
                logger: logger
            )
        else { return nil }
        probe.start()
        let map = await readMap(from: node, on: probe)
        await probe.close()
        return map
    }

    private func readMap(from node: RedisClusterNode, on connection: RedisConnection) async -> RedisClusterSlotMap? {
        let timeout = Duration.milliseconds(800)
        do throws(RedisError) {
            let reply = try await connection.send(["CLUSTER", "SHARDS"], timeout: timeout)
            return RedisClusterSlotMap(
                clusterShards: reply,
                tls: configuration.seeds[0].tls != nil,
                defaultHost: node.host
            )
        } catch {
            guard error.code == .server else {
                logger.debug("slot map not read", metadata: ["redis.node": "\(node)", "error": "\(error)"])
                return nil
            }
            // Before Redis 7: CLUSTER SLOTS.
            guard let reply = try? await connection.send(["CLUSTER", "SLOTS"], timeout: timeout) else { return nil }
            return RedisClusterSlotMap(clusterSlots: reply, defaultHost: node.host)
        }
    }

    private func apply(_ map: RedisClusterSlotMap) {
        let (changed, stale, observers) = state.withLockedValue {
            state -> (Bool, [RedisConnection], [@Sendable () -> Void]) in
            guard !state.closed else { return (false, [], []) }
            let changed = state.map != map
            state.map = map
            let primaries = map.primaries
            var stale: [RedisConnection] = []
            for (node, connection) in state.connections where !primaries.contains(node) {
                stale.append(connection)
                state.connections[node] = nil
            }
            return (changed, stale, changed ? state.observers : [])
        }
        if changed {
            logger.info(
                "Redis Cluster slot map",
                metadata: ["redis.primaries": "\(map.primaries.map(\.description).sorted())"]
            )
        }
        for primary in map.primaries { _ = connection(for: primary) }
        // A former primary's connection gets no new commands. Closed now when it is down, so the commands
        // waiting for it fail as not sent and are retried at once; when it is up (a manual failover: the node
        // is a replica now), after a command timeout, so that the replies in flight on it still arrive
        // (closing it would turn commands that ran into `connectionClosed`).
        let drain = configuration.commandTimeout
        for connection in stale {
            Task {
                if connection.isConnected { try? await Task.sleep(for: drain) }
                await connection.close()
            }
        }
        for observer in observers { observer() }
    }

    private var seedList: String { configuration.seedNodes.map(\.description).joined(separator: ",") }
}
