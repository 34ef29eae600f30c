import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// A hub whose sessions, rooms and resume buffers live in Redis, shared by every node of a cluster, so a
/// peer on node A signals a peer on node B as if they shared a node, and a client that drops from A can
/// resume on B. Docs/scaling.md explains the design, the keys, the guarantees and the failure behaviour.
///
/// Every sequenced message (signal, room message, presence event, `expired` notice) is given its `seq`
/// and kept in the recipient's buffer by one script on the recipient's keys (``ClusterScripts/deliver``),
/// which also publishes it to the node holding the recipient's connection. That single step is what makes
/// delivery exactly-once and in order per sender, and resume possible anywhere.
///
/// The node keeps only its connections, each a ``ClusterConnectionState`` (its session, the highest `seq`
/// written, its bounded queue of requests), and its own view of Redis (``ClusterNodeState``). Everything
/// that waits for Redis runs under ``run()`` (`ClusterHub+Backend.swift`): the node channel, maintenance,
/// and one child task per connection that carries out its requests in the order they were read.
///
/// The code is split by concern: `+Backend` (the run loop), `+Connection` (a connection's task and what
/// goes to its outbox), `+Sessions` (open, resume, close), `+Requests` (join, leave, signals), `+Delivery`
/// (the deliver script and what its replies ask for), `+Channel` (the node channel),
/// `+Maintenance` (refresh, sweep, partition), `+Metrics`.
public final class ClusterHub: SessionHub {
    /// A connection the node serves. A class, so that reading one of its fields from ``State/locals`` (once
    /// or more per signal) copies one reference, not the whole connection state. Only touched under the
    /// hub's state lock.
    final class Local: @unchecked Sendable {
        var connection: ClusterConnectionState
        let outbox: Outbox
        /// Wakes the connection's task (a request queued, the socket closed).
        let doorbell: AsyncStream<Void>.Continuation

        init(connection: ClusterConnectionState, outbox: Outbox, doorbell: AsyncStream<Void>.Continuation) {
            self.connection = connection
            self.outbox = outbox
            self.doorbell = doorbell
        }
    }

    /// A connection whose task ``run()`` is to start.
    struct NewConnection: Sendable {
        var id: ConnectionID
        var request: OpenRequest
        var doorbell: AsyncStream<Void>
    }

    /// Work that ``run()`` starts as a child task.
    enum Job: Sendable {
        /// Serve a new connection (``serve(_:)``).
        case serve(NewConnection)
        /// Send `expired` notices for signals a pipelined delivery pushed out of `recipient`'s buffer.
        case notifyExpired([ExpiredOrigin], recipient: String)
    }

    struct State {
        var locals: [ConnectionID: Local] = [:]
        var nextConnection: UInt64 = 1
        var node: ClusterNodeState
        var counters = HubCounters()
        var exported = HubCounters()
        var crossNode = 0
        var exportedCrossNode = 0
        /// Connections whose socket closed and whose session is not yet detached or ended (``run()``
        /// waits for them, briefly, before it closes Redis).
        var closingSessions = 0
        /// Connections due fresh TURN credentials (only with ``WelcomeTemplate/turn``), checked at each
        /// maintenance tick.
        var iceRefresh: IceRefreshSchedule?
        /// Redis Cluster: the peer whose sharded channel each connection listens on, and how many of the
        /// node's connections listen on each peer's channel.
        var listening: [ConnectionID: String] = [:]
        var listeners: [String: Int] = [:]
        /// Where this node's events go (``setEventSink(_:)``).
        var eventSink: HubEventSink?
        /// When this node last looked for rooms counted against a full tenant with nobody in them, and
        /// where its walk through the tenant's rooms goes on (``reserve(_:for:)``).
        var tenantRoomChecks = TenantRoomChecks(interval: ClusterHub.tenantRoomCheckInterval)
    }

    public let configuration: ClusterConfiguration
    let limits: HubLimits
    /// The protocol's rules, shared with the single hub and the mesh; the scripts decide what needs the
    /// shared state (room size, the recipient's rooms) and their answers map onto its refusals.
    let policy: RoutingPolicy
    let connectionLimits: ClusterConnectionState.Limits
    let welcome: WelcomeTemplate
    let metrics: HubMetrics
    let clusterMetrics: ClusterMetrics
    let keys: ClusterKeys
    /// `ID#incarnation`: what sessions record as their node, and the name of this node's channel. A node
    /// restarted with the same id gets a new channel, so nothing meant for its previous run reaches it.
    let nodeName: String
    /// One Redis server, or a Redis Cluster (``ClusterConfiguration/redisCluster``): the scripts are the same.
    let redis: any RedisClient
    /// Pipelined signal deliveries, many to a script call (``ClusterScripts/deliverBatch``) on one Redis.
    let batcher: DeliveryBatcher
    let subscriber: ClusterSubscription
    /// For waits that must not end early when ``run()`` is cancelled.
    let eventLoop: any EventLoop
    let logger: Logger
    let state: NIOLockedValueBox<State>
    /// Jobs for ``run()``: new connections from ``open(_:outbox:request:)``, and notices decided where no
    /// task waits (a pipelined reply is read on an event loop).
    let jobs: (stream: AsyncStream<Job>, continuation: AsyncStream<Job>.Continuation)
    /// Addressed signals one connection may have waiting for Redis at once.
    static let maxPipelined = 64

    public init(
        configuration: ClusterConfiguration,
        limits: HubLimits,
        welcome: WelcomeTemplate,
        metrics: HubMetrics,
        clusterMetrics: ClusterMetrics,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) throws(RedisError) {
        self.configuration = configuration
        self.limits = limits
        self.policy = RoutingPolicy(limits: limits)
        self.connectionLimits = ClusterConnectionState.Limits(
            maxPendingRequests: max(Self.maxPipelined, configuration.maxPendingRequests),
            maxPendingBytes: max(1, configuration.maxPendingBytes),
            maxRefusals: max(0, configuration.maxPendingRefusals)
        )
        self.welcome = welcome
        self.metrics = metrics
        self.clusterMetrics = clusterMetrics
        var keys = ClusterKeys(prefix: configuration.keyPrefix)
        keys.sharded = configuration.redisCluster
        self.keys = keys
        self.nodeName = configuration.nodeID + "#" + Self.randomString(count: 8)
        self.logger = logger
        self.state = NIOLockedValueBox(
            State(
                node: ClusterNodeState(
                    timing: ClusterNodeState.Timing(
                        refreshInterval: Self.nanoseconds(configuration.refreshInterval),
                        sweepInterval: Self.nanoseconds(configuration.sweepInterval),
                        partitionTimeout: configuration.partitionTimeout.map(Self.nanoseconds)
                    )
                ),
                iceRefresh: welcome.turn.map { IceRefreshSchedule(periodNanos: $0.refreshNanos) }
            )
        )
        self.jobs = AsyncStream<Job>.makeStream()
        self.eventLoop = eventLoopGroup.next()
        var redisConfiguration = configuration.redis
        redisConfiguration.clientName = redisConfiguration.clientName ?? "signal-\(configuration.nodeID)"
        // Loaded on every connect (each primary of a Redis Cluster, a restarted Redis, a promoted replica).
        redisConfiguration.scripts = ClusterScripts.all
        if configuration.redisCluster {
            var seeds = [redisConfiguration]
            for var seed in configuration.redisSeeds {
                seed.clientName = redisConfiguration.clientName
                seed.commandTimeout = redisConfiguration.commandTimeout
                seeds.append(seed)
            }
            var clusterConfiguration = try RedisClusterConfiguration(seeds: seeds)
            clusterConfiguration.replicaAcknowledgements = max(0, configuration.replicaAcknowledgements)
            clusterConfiguration.refreshInterval = min(
                clusterConfiguration.refreshInterval,
                configuration.refreshInterval
            )
            let client = try RedisClusterClient(
                configuration: clusterConfiguration,
                eventLoopGroup: eventLoopGroup,
                logger: logger,
                onStateChange: { up in clusterMetrics.redisUp.record(up ? 1 : 0) },
                onRoundTrip: { latency in clusterMetrics.redisRoundTrip.recordNanoseconds(Self.nanoseconds(latency)) }
            )
            self.redis = client
            self.subscriber = .sharded(
                RedisShardedSubscriber(client: client, eventLoopGroup: eventLoopGroup, logger: logger)
            )
        } else {
            self.redis = try RedisConnection(
                configuration: redisConfiguration,
                eventLoopGroup: eventLoopGroup,
                logger: logger,
                onStateChange: { state in clusterMetrics.redisUp.record(state.isConnected ? 1 : 0) },
                onRoundTrip: { latency in clusterMetrics.redisRoundTrip.recordNanoseconds(Self.nanoseconds(latency)) }
            )
            self.subscriber = .single(
                try RedisSubscriber(configuration: redisConfiguration, eventLoopGroup: eventLoopGroup, logger: logger)
            )
        }
        self.batcher = DeliveryBatcher(
            redis: redis,
            eventLoop: eventLoop,
            keys: keys,
            maxMessages: limits.resumeBufferMessages,
            maxBytes: limits.resumeBufferBytes,
            sharded: configuration.redisCluster
        )
    }

    // MARK: SessionHub

    public func makeConnectionID() -> ConnectionID {
        state.withLockedValue { state in
            defer { state.nextConnection += 1 }
            return ConnectionID(state.nextConnection)
        }
    }

    /// Registers the connection and hands its open to ``run()``, which serves the connection in a task
    /// of its own; the welcome (or the refusal) arrives through the outbox.
    public func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        let (doorbell, ring) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let local = Local(connection: ClusterConnectionState(limits: connectionLimits), outbox: outbox, doorbell: ring)
        state.withLockedValue { $0.locals[connection] = local }
        jobs.continuation.yield(.serve(NewConnection(id: connection, request: request, doorbell: doorbell)))
        return .pending
    }

    /// Queues the request for the connection's task, or refuses it at once when the connection's pending
    /// requests are at their bound (``ClusterConnectionState/admit(_:directSignals:)``). An addressed
    /// signal with nothing queued before it is handed to Redis at once, from the thread that read it.
    public func receive(_ connection: ConnectionID, _ message: ClientMessage) {
        if case .received(let seq) = message.request {
            return self.confirm(connection, seq)
        }
        let (admission, doorbell) = state.withLockedValue {
            state -> (ClusterConnectionState.Admission, AsyncStream<Void>.Continuation?) in
            guard let local = state.locals[connection] else { return (.ignore, nil) }
            return (local.connection.admit(message, directSignals: Self.maxPipelined), local.doorbell)
        }
        switch admission {
        case .direct(let cost):
            guard case .signal(let envelope) = message.request else { return }
            self.pipeline(envelope, id: message.id, cost: cost, on: connection)
        case .queued:
            doorbell?.yield()
        case .refuse:
            self.replyError(connection, .unavailable, id: message.id)
        case .close:
            logger.debug(
                "closing a connection that keeps sending while its requests wait for Redis",
                metadata: ["connection.id": "\(connection)"]
            )
            self.closeConnection(connection, .tryAgainLater, reason: Refusal.unavailable.message)
        case .ignore:
            break
        }
    }

    public func closed(_ connection: ConnectionID, keepSession: Bool) {
        let reachable = redis.isConnected
        let keep = keepSession && limits.resumeGraceNanos > 0
        let doorbell = state.withLockedValue { state -> AsyncStream<Void>.Continuation? in
            guard let local = state.locals[connection], local.connection.socketClosed == nil else { return nil }
            local.connection.socketDidClose(keepSession: keep, redisReachable: reachable)
            state.closingSessions += 1
            return local.doorbell
        }
        doorbell?.yield()
    }

    // MARK: Helpers

    /// Hands events to the sink (``setEventSink(_:)``), if any. The node reports what it carried out: the
    /// sessions it opened, the joins and leaves of its connections, the sessions it ended or swept.
    func emit(_ events: HubEvent...) {
        state.withLockedValue { state in state.eventSink?(events) }
    }

    /// How long a live session lasts without a refresh: the grace period plus one refresh interval.
    var liveMillis: Int {
        Int(limits.resumeGraceNanos / 1_000_000) + Int(Self.nanoseconds(configuration.refreshInterval) / 1_000_000)
    }

    /// Key expiry: a safety net far behind the deadlines, for keys nobody sweeps.
    var ttlMillis: Int { liveMillis * 2 + 60_000 }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    static func epochMillis() -> Int {
        Int(Date().timeIntervalSince1970 * 1000)
    }

    /// Random base-62 characters (the hub's ``RandomCharacters``, fetching just what one string needs).
    static func randomString(count: Int) -> String {
        var characters = RandomCharacters(source: BufferedSystemRandom(numbers: (count + 7) / 8 + 1))
        return characters.string(count: count)
    }

    static func randomPeerID() -> String {
        var characters = RandomCharacters(source: BufferedSystemRandom(numbers: 3))
        return PeerIdentity.randomID(using: &characters)
    }
}
