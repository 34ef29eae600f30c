import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A Redis pub/sub connection: subscribes to channels and patterns and delivers their messages on
/// ``events``, re-subscribing by itself after every reconnect. Publish with ``RedisConnection/publish(_:to:)``
/// (a subscribed connection can send nothing but (un)subscribe commands and `PING`).
///
/// ```swift
/// let subscriber = try RedisSubscriber(configuration: configuration, eventLoopGroup: group, logger: logger)
/// try await subscriber.subscribe(["node:{b}"])
/// for await event in subscriber.events {
///     switch event {
///     case .message(let message): route(message.payload)
///     case .disconnected: markRemoteStateStale()
///     case .reconnected: resyncFromRedis()
///     }
/// }
/// ```
///
/// Delivery is Redis pub/sub's: at most once, in publish order per publisher connection, and nothing is
/// kept while the subscriber is disconnected — ``RedisPubSubEvent/disconnected(_:)`` and
/// ``RedisPubSubEvent/reconnected`` bracket every gap, in order with the messages. ``events`` buffers
/// without limit, so consume it promptly (Redis itself disconnects a subscriber that falls too far behind,
/// per its `client-output-buffer-limit pubsub`, which shows up here as a gap).
///
/// Reconnection, backoff, health checks, ``state`` and timeouts work as for ``RedisConnection``.
public final class RedisSubscriber: Sendable, Service {
    /// Messages and connection gaps, in order. There is one stream per subscriber, for one consumer; it
    /// finishes after ``close()``.
    public let events: AsyncStream<RedisPubSubEvent>
    /// The configuration this subscriber was created with.
    public let configuration: RedisConfiguration
    /// The event loop that runs this subscriber.
    public let eventLoop: any EventLoop

    private let core: NIOLoopBoundBox<RedisSubscriberCore>
    private let status: NIOLockedValueBox<RedisStatus>

    /// Creates a subscriber; it connects on ``start()``, ``run()`` or the first subscribe.
    ///
    /// - Parameters:
    ///   - configuration: Where Redis is, credentials, timeouts and limits (its ``RedisConfiguration/scripts``
    ///     are not loaded).
    ///   - eventLoopGroup: The subscriber uses one event loop of this group.
    ///   - logger: Connects, losses and reconnects are logged at `.info`, attempts at `.debug`.
    ///   - onStateChange: Called on the event loop whenever ``state`` changes.
    /// - Throws: ``RedisError/Code/invalidArgument`` when the TLS configuration cannot be used.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        onStateChange: (@Sendable (RedisConnectionState) -> Void)? = nil
    ) throws(RedisError) {
        // A subscriber runs no script: nothing to load on its connects.
        var configuration = configuration
        configuration.scripts = []
        self.configuration = configuration
        let loop = eventLoopGroup.next()
        eventLoop = loop
        let status = NIOLockedValueBox(RedisStatus())
        self.status = status
        let (events, continuation) = AsyncStream<RedisPubSubEvent>.makeStream(bufferingPolicy: .unbounded)
        self.events = events
        let core = try RedisSubscriberCore(
            loop: loop,
            configuration: configuration,
            logger: logger,
            status: status,
            onStateChange: onStateChange,
            continuation: continuation
        )
        self.core = NIOLoopBoundBox.makeBoxSendingValue(core, eventLoop: loop)
    }

    // MARK: - Subscriptions

    /// `SUBSCRIBE channel…`: returns when Redis has confirmed every channel. The channels stay
    /// subscribed across reconnects until ``unsubscribe(_:timeout:)``. If the confirmation does not come
    /// in time this throws, but the channels remain wanted and are subscribed once the connection allows;
    /// unsubscribe to give up.
    public func subscribe(_ channels: [String], timeout: Duration? = nil) async throws(RedisError) {
        try await change(channels, kind: .channel, subscribe: true, timeout: timeout)
    }

    /// `PSUBSCRIBE pattern…` (glob-style: `node:*`), like ``subscribe(_:timeout:)``. Messages carry the
    /// pattern that matched.
    public func psubscribe(_ patterns: [String], timeout: Duration? = nil) async throws(RedisError) {
        try await change(patterns, kind: .pattern, subscribe: true, timeout: timeout)
    }

    /// `UNSUBSCRIBE channel…`: returns when Redis has confirmed (at once when disconnected). Messages
    /// already on their way may still arrive.
    public func unsubscribe(_ channels: [String], timeout: Duration? = nil) async throws(RedisError) {
        try await change(channels, kind: .channel, subscribe: false, timeout: timeout)
    }

    /// `PUNSUBSCRIBE pattern…`, like ``unsubscribe(_:timeout:)``.
    public func punsubscribe(_ patterns: [String], timeout: Duration? = nil) async throws(RedisError) {
        try await change(patterns, kind: .pattern, subscribe: false, timeout: timeout)
    }

    /// `SSUBSCRIBE channel` for each channel (Redis 7 sharded pub/sub, published with `SPUBLISH`): like
    /// ``subscribe(_:timeout:)``, but the connection must be to the primary that serves each channel's slot
    /// (``RedisShardedSubscriber`` picks it). When the slot moves away the server drops the subscription and
    /// ``events`` says so with ``RedisPubSubEvent/unsubscribedByServer(channel:)``.
    public func ssubscribe(_ channels: [String], timeout: Duration? = nil) async throws(RedisError) {
        try await change(channels, kind: .shard, subscribe: true, timeout: timeout)
    }

    /// `SUNSUBSCRIBE channel` for each channel, like ``unsubscribe(_:timeout:)``.
    public func sunsubscribe(_ channels: [String], timeout: Duration? = nil) async throws(RedisError) {
        try await change(channels, kind: .shard, subscribe: false, timeout: timeout)
    }

    private func change(
        _ names: [String],
        kind: RedisSubscriberCore.Kind,
        subscribe: Bool,
        timeout: Duration?
    ) async throws(RedisError) {
        guard !names.isEmpty else {
            throw RedisError(.invalidArgument, "subscribe and unsubscribe need at least one channel or pattern")
        }
        let promise = eventLoop.makePromise(of: Void.self)
        let amount = TimeAmount(timeout ?? configuration.commandTimeout)
        let core = self.core
        let body: @Sendable () -> Void = {
            if subscribe {
                core.value.subscribe(names, kind: kind, timeout: amount, promise: promise)
            } else {
                core.value.unsubscribe(names, kind: kind, timeout: amount, promise: promise)
            }
        }
        if eventLoop.inEventLoop { body() } else { eventLoop.execute(body) }
        try await RedisConnection.result(of: promise.futureResult)
    }

    // MARK: - Lifecycle

    /// Starts connecting in the background (subscribing also starts it).
    public func start() {
        let core = self.core
        eventLoop.execute { core.value.start() }
    }

    /// Runs as a `Service`: connects, and closes on graceful shutdown or cancellation.
    public func run() async throws {
        start()
        try? await gracefulShutdown()
        await close()
    }

    /// Closes the connection, stops reconnecting and finishes ``events``.
    public func close() async {
        let core = self.core
        try? await eventLoop.flatSubmit { core.value.shutdown() }.get()
    }

    /// Waits until the connection is up (starting it if needed). Throws ``RedisError/Code/notConnected``
    /// after `timeout`.
    public func waitUntilConnected(timeout: Duration) async throws(RedisError) {
        let promise = eventLoop.makePromise(of: Void.self)
        let amount = TimeAmount(timeout)
        let core = self.core
        eventLoop.execute { core.value.waitUntilConnected(timeout: amount, promise: promise) }
        try await RedisConnection.result(of: promise.futureResult)
    }

    /// The connection's state now.
    public var state: RedisConnectionState {
        status.withLockedValue { $0.state }
    }

    /// True while connected with every subscription re-established.
    public var isConnected: Bool {
        state.isConnected
    }

    /// How many times the connection was re-established after being lost.
    public var reconnects: Int {
        status.withLockedValue { $0.reconnects }
    }
}
