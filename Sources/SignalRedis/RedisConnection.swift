import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A Redis client connection on SwiftNIO: pipelined commands, per-command timeouts, and automatic
/// reconnection with backoff. ``RedisSubscriber`` is its pub/sub counterpart.
///
/// ## Using it
///
/// ```swift
/// let redis = try RedisConnection(
///     configuration: try RedisConfiguration(url: "redis://:secret@127.0.0.1:6379/0"),
///     eventLoopGroup: group,
///     logger: logger,
///     onStateChange: { state in readiness.setRedisUp(state.isConnected) },
///     onRoundTrip: { latency in redisRoundTrip.record(duration: latency) }   // a swift-metrics Timer
/// )
/// redis.start()                      // or run it as a `Service` in a `ServiceGroup`
/// try await redis.set("peer:{alice}", to: nodeID, expiration: .seconds(30), condition: .ifNotExists)
/// let owner = try await redis.get("peer:{alice}", as: String.self)
/// let reply = try await redis.send("HINCRBY", "room:{lobby}", "count", 1)   // any command
/// await redis.close()
/// ```
///
/// ## One connection, many commands
///
/// A `RedisConnection` is one TCP connection (re-established when lost) shared by every task: any
/// number of commands may be in flight at once, their replies are matched in order, and commands
/// submitted together go out in one write (the flush happens once per event-loop turn), so callers
/// need no pool. ``pipeline(_:timeout:)`` sends a batch in one write and returns every reply, server
/// errors included, in place.
///
/// It talks to one server. Against Redis Cluster it does not follow `MOVED`/`ASK` redirects (they
/// arrive as ``RedisError/Code/server`` errors); keys that must be used together need one hash tag.
///
/// Blocking commands (`BLPOP`, `XREAD BLOCK`, `WAIT`) hold up every command behind them: give them a
/// connection of their own and a per-call `timeout` longer than the blocking time.
///
/// ## Timeouts
///
/// Every command has a deadline: ``RedisConfiguration/commandTimeout`` or the call's `timeout`. It
/// covers waiting for a connection and waiting for the reply. A command with no reply by its deadline
/// throws ``RedisError/Code/timeout`` and the connection is closed and re-established, because the late
/// reply would otherwise be taken for the next command's; the other commands in flight on it throw
/// ``RedisError/Code/connectionClosed``. Cancelling the calling task does not withdraw a command that
/// was submitted; it completes or times out.
///
/// ## When Redis is unreachable
///
/// The connection reconnects by itself, forever, until ``close()``: the first attempt after a loss is
/// immediate, then the delay grows exponentially with jitter up to ``RedisBackoff/maximum``
/// (``RedisConfiguration/reconnectBackoff``). Each attempt connects and runs the handshake — `AUTH` when
/// there is a password, `SELECT` when the database is not 0, `CLIENT SETNAME` when there is a client
/// name, then `PING` — and only a complete handshake counts as connected. An idle connection is checked
/// with `PING` every ``RedisConfiguration/healthCheckInterval``, so a half-open connection is noticed.
///
/// Commands issued while disconnected wait for the connection (up to
/// ``RedisConfiguration/maxQueuedWhileDisconnected`` of them) and are sent once it is back; if it is not
/// back by their deadline they throw ``RedisError/Code/notConnected``, which means they were not sent
/// and may be retried. Commands that were in flight when the connection dropped throw
/// ``RedisError/Code/connectionClosed``: they may or may not have run. ``RedisError`` documents which
/// codes are safe to retry.
///
/// ## State and metrics
///
/// ``state`` (``RedisConnectionState``) and ``isConnected`` can be read from any thread at any time — a
/// readiness probe reports not-ready while `isConnected` is false. `onStateChange` is called on every
/// change (on the event loop; keep it short). ``reconnects`` counts connections re-established after a
/// loss. `onRoundTrip` is called with the time from writing each request to reading its last reply.
///
/// ## Errors
///
/// Every command throws ``RedisError`` only. An error reply from Redis throws
/// ``RedisError/Code/server`` with Redis's message (``RedisError/serverErrorPrefix`` gives `WRONGTYPE`,
/// `NOSCRIPT`, …).
///
/// ## Concurrency
///
/// `RedisConnection` is `Sendable`; its state lives on one event loop of the group it was given, and
/// methods may be called from any task or thread.
public final class RedisConnection: Sendable, Service {
    /// The configuration this connection was created with.
    public let configuration: RedisConfiguration
    /// The event loop that runs this connection.
    public let eventLoop: any EventLoop

    private let core: NIOLoopBoundBox<RedisConnectionCore>
    private let status: NIOLockedValueBox<RedisStatus>
    private let allocator = ByteBufferAllocator()

    /// Creates a connection; nothing happens until ``start()``, ``run()`` or the first command.
    ///
    /// - Parameters:
    ///   - configuration: Where Redis is, credentials, timeouts and limits.
    ///   - eventLoopGroup: The connection uses one event loop of this group.
    ///   - logger: Connects, losses and reconnects are logged at `.info`, attempts at `.debug`.
    ///   - onStateChange: Called on the event loop whenever ``state`` changes.
    ///   - onRoundTrip: Called on the event loop with each request's round-trip time (a ``pipeline(_:timeout:)``
    ///     batch counts as one request).
    /// - Throws: ``RedisError/Code/invalidArgument`` when the TLS configuration cannot be used.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        onStateChange: (@Sendable (RedisConnectionState) -> Void)? = nil,
        onRoundTrip: (@Sendable (Duration) -> Void)? = nil
    ) throws(RedisError) {
        self.configuration = configuration
        let loop = eventLoopGroup.next()
        eventLoop = loop
        let status = NIOLockedValueBox(RedisStatus())
        self.status = status
        let core = try RedisConnectionCore(
            loop: loop,
            configuration: configuration,
            logger: logger,
            status: status,
            onStateChange: onStateChange,
            onRoundTrip: onRoundTrip
        )
        self.core = NIOLoopBoundBox.makeBoxSendingValue(core, eventLoop: loop)
    }

    // MARK: - Lifecycle

    /// Starts connecting in the background. Returns at once; use ``waitUntilConnected(timeout:)`` to wait.
    public func start() {
        onLoop { $0.start() }
    }

    /// Runs as a `Service`: connects, and closes on graceful shutdown or cancellation.
    public func run() async throws {
        start()
        try? await gracefulShutdown()
        await close()
    }

    /// Closes the connection and stops reconnecting. Commands waiting for a connection throw
    /// ``RedisError/Code/shutdown``; commands in flight throw ``RedisError/Code/connectionClosed``.
    public func close() async {
        let core = self.core
        try? await eventLoop.flatSubmit { core.value.shutdown() }.get()
    }

    /// Waits until the connection is up (starting it if needed). Throws ``RedisError/Code/notConnected``
    /// with the last connection error after `timeout`.
    public func waitUntilConnected(timeout: Duration) async throws(RedisError) {
        let promise = eventLoop.makePromise(of: Void.self)
        let amount = TimeAmount(timeout)
        onLoop { $0.waitUntilConnected(timeout: amount, promise: promise) }
        try await Self.result(of: promise.futureResult)
    }

    /// The connection's state now.
    public var state: RedisConnectionState {
        status.withLockedValue { $0.state }
    }

    /// True while a connection is up and its handshake done; false while connecting, reconnecting or closed.
    public var isConnected: Bool {
        state.isConnected
    }

    /// How many times the connection was re-established after being lost.
    public var reconnects: Int {
        status.withLockedValue { $0.reconnects }
    }

    // MARK: - Commands

    /// Sends one command and returns its reply. An error reply throws ``RedisError/Code/server``.
    ///
    /// ```swift
    /// let count = try await redis.send(["SCARD", "room:{lobby}:peers"]).int
    /// ```
    ///
    /// - Parameters:
    ///   - arguments: The command name and its arguments, e.g. `["SET", key, value, "PX", 500]`.
    ///   - timeout: Overrides ``RedisConfiguration/commandTimeout`` for this command.
    @discardableResult
    public func send(_ arguments: [any RESPEncodable], timeout: Duration? = nil) async throws(RedisError) -> RESPValue {
        guard !arguments.isEmpty else { throw RedisError(.invalidArgument, "a Redis command needs a name") }
        var bytes = allocator.buffer(capacity: 64)
        RESPEncoder().encodeCommand(arguments, into: &bytes)
        let promise = eventLoop.makePromise(of: RESPValue.self)
        submit(bytes: bytes, replies: 1, responder: .one(promise), timeout: timeout)
        let reply = try await Self.result(of: promise.futureResult)
        if let message = reply.errorMessage { throw RedisError.server(message) }
        return reply
    }

    /// Queues one command at once and returns a future of its reply (an error reply fails it with
    /// ``RedisError/Code/server``). Commands submitted one after another go out in that order.
    public func submit(_ arguments: [any RESPEncodable], timeout: Duration? = nil) -> EventLoopFuture<RESPValue> {
        guard !arguments.isEmpty else {
            return eventLoop.makeFailedFuture(RedisError(.invalidArgument, "a Redis command needs a name"))
        }
        var bytes = allocator.buffer(capacity: 64)
        RESPEncoder().encodeCommand(arguments, into: &bytes)
        let promise = eventLoop.makePromise(of: RESPValue.self)
        submit(bytes: bytes, replies: 1, responder: .one(promise), timeout: timeout)
        return promise.futureResult.flatMapThrowing { reply in
            if let message = reply.errorMessage { throw RedisError.server(message) }
            return reply
        }
    }

    /// Sends one command and returns its reply: `try await redis.send("INCR", key)`.
    @discardableResult
    public func send(_ arguments: any RESPEncodable..., timeout: Duration? = nil) async throws(RedisError) -> RESPValue
    {
        try await send(arguments, timeout: timeout)
    }

    /// Sends several commands in one write and returns one result per command, in order. A server error
    /// reply is a `.failure` in its place; the other commands still run. Throws when the batch as a
    /// whole failed (not sent, timed out, connection lost). This is not a transaction: other clients'
    /// commands may run in between (use `MULTI`…`EXEC` inside the batch, or a script, for atomicity).
    public func pipeline(
        _ commands: [[any RESPEncodable]],
        timeout: Duration? = nil
    ) async throws(RedisError) -> [Result<RESPValue, RedisError>] {
        guard !commands.isEmpty else { return [] }
        guard !commands.contains(where: \.isEmpty) else {
            throw RedisError(.invalidArgument, "every command in a Redis pipeline needs a name")
        }
        var bytes = allocator.buffer(capacity: 32 * commands.count)
        let encoder = RESPEncoder()
        for command in commands {
            encoder.encodeCommand(command, into: &bytes)
        }
        let promise = eventLoop.makePromise(of: [RESPValue].self)
        submit(bytes: bytes, replies: commands.count, responder: .many(promise), timeout: timeout)
        let replies = try await Self.result(of: promise.futureResult)
        return replies.map { reply in
            if let message = reply.errorMessage { return .failure(.server(message)) }
            return .success(reply)
        }
    }

    // MARK: - Plumbing

    private func submit(bytes: ByteBuffer, replies: Int, responder: RedisRequest.Responder, timeout: Duration?) {
        let amount = TimeAmount(timeout ?? configuration.commandTimeout)
        let request = RedisRequest(
            bytes: bytes,
            replies: replies,
            responder: responder,
            deadline: .now() + amount,
            timeout: amount
        )
        onLoop { $0.submit(request) }
    }

    private func onLoop(_ body: @escaping @Sendable (RedisConnectionCore) -> Void) {
        let core = self.core
        if eventLoop.inEventLoop {
            body(core.value)
        } else {
            eventLoop.execute { body(core.value) }
        }
    }

    static func result<Value: Sendable>(of future: EventLoopFuture<Value>) async throws(RedisError) -> Value {
        do {
            return try await future.get()
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.connectionClosed, "the Redis request failed: \(error)")
        }
    }
}

/// Where a ``RedisConnection`` or ``RedisSubscriber`` stands.
public enum RedisConnectionState: Sendable, Hashable, CustomStringConvertible {
    /// Not started.
    case idle
    /// The first connection is being established.
    case connecting
    /// Connected and handshake done: commands go straight to Redis.
    case connected
    /// Not connected; attempt number `attempt` is running or waiting for its backoff delay. `lastError`
    /// says why the previous attempt (or the lost connection) failed. A connection that never got
    /// through its first attempt is also in this state.
    case reconnecting(attempt: Int, lastError: RedisError)
    /// Closed with `close()`.
    case closed

    /// True only in ``connected``.
    public var isConnected: Bool {
        if case .connected = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .idle: return "idle"
        case .connecting: return "connecting"
        case .connected: return "connected"
        case .reconnecting(let attempt, let error): return "reconnecting (attempt \(attempt)): \(error.message)"
        case .closed: return "closed"
        }
    }
}
