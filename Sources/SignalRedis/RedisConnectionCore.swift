import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// What a ``RedisConnection`` or ``RedisSubscriber`` shares with other threads: its state and counters.
struct RedisStatus: Sendable {
    var state: RedisConnectionState = .idle
    var reconnects = 0
}

/// One logical connection to Redis that survives the loss of its TCP connections: it connects, runs the
/// handshake (`AUTH`, `SELECT`, `CLIENT SETNAME`, `PING`), hands requests to the live channel, holds them
/// while there is none, reconnects with backoff, and sends a `PING` when the connection is idle.
///
/// All its state is confined to `loop`: the public types reach it through a `NIOLoopBoundBox`, and
/// every callback runs on `loop`. ``RedisSubscriberCore`` adds pub/sub by overriding the hooks at the end.
class RedisConnectionCore {
    enum Phase {
        /// `start()` not called yet.
        case idle
        /// A TCP connect or handshake is in progress.
        case connecting
        case connected(any Channel, RedisCommandHandler)
        /// Waiting before the next attempt.
        case backingOff(Scheduled<Void>)
        case shutdown
    }

    let loop: any EventLoop
    let configuration: RedisConfiguration
    let logger: Logger
    let status: NIOLockedValueBox<RedisStatus>
    private let sslContext: NIOSSLContext?
    private let onStateChange: (@Sendable (RedisConnectionState) -> Void)?
    let onRoundTrip: (@Sendable (Duration) -> Void)?
    let encoder = RESPEncoder()

    private(set) var phase = Phase.idle
    /// Failed attempts since the last successful handshake.
    private var failures = 0
    private var everConnected = false
    private(set) var lastError: RedisError?
    private var waiting = CircularBuffer<RedisRequest>()
    private var waitingTimer: Scheduled<Void>?
    private var waitingTimerDeadline: NIODeadline?
    private var connectedWaiters: [(promise: EventLoopPromise<Void>, timer: Scheduled<Void>)] = []
    private var flushScheduled = false
    private var healthCheck: Scheduled<Void>?

    init(
        loop: any EventLoop,
        configuration: RedisConfiguration,
        logger: Logger,
        status: NIOLockedValueBox<RedisStatus>,
        onStateChange: (@Sendable (RedisConnectionState) -> Void)?,
        onRoundTrip: (@Sendable (Duration) -> Void)?
    ) throws(RedisError) {
        self.loop = loop
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis.address"] = "\(configuration.url)"
        self.logger = logger
        self.status = status
        self.onStateChange = onStateChange
        self.onRoundTrip = onRoundTrip
        if var tls = configuration.tls {
            if let caFile = configuration.tlsCAFile {
                tls.trustRoots = .file(caFile)
            }
            do {
                sslContext = try NIOSSLContext(configuration: tls)
            } catch {
                let file = configuration.tlsCAFile.map { " (CA file \($0))" } ?? ""
                throw RedisError(.invalidArgument, "the TLS configuration for Redis is not usable\(file): \(error)")
            }
        } else {
            sslContext = nil
        }
    }

    // MARK: - Entry points (on `loop`)

    func start() {
        guard case .idle = phase else { return }
        connect()
    }

    func submit(_ request: RedisRequest) {
        switch phase {
        case .shutdown:
            request.responder.fail(Self.shutdownError)
        case .connected(let channel, _) where channel.isActive:
            channel.write(request, promise: nil)
            scheduleFlush()
        case .connected:
            // Closing; the request goes out on the next connection.
            enqueue(request)
        case .idle:
            enqueue(request)
            connect()
        case .connecting, .backingOff:
            enqueue(request)
        }
    }

    /// Succeeds once the connection is up (at once if it is), fails after `timeout` or on shutdown.
    func waitUntilConnected(timeout: TimeAmount, promise: EventLoopPromise<Void>) {
        switch phase {
        case .connected:
            promise.succeed()
            return
        case .shutdown:
            promise.fail(Self.shutdownError)
            return
        case .idle:
            connect()
        case .connecting, .backingOff:
            break
        }
        let timer = loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            connectedWaiters.removeAll { $0.promise.futureResult === promise.futureResult }
            promise.fail(notConnectedError(timeout: timeout))
        }
        connectedWaiters.append((promise, timer))
    }

    /// Stops for good: fails waiting requests with `shutdown`, closes the channel (failing requests in
    /// flight with `connectionClosed`) and reconnects no more.
    func shutdown() -> EventLoopFuture<Void> {
        let previous = phase
        guard !(previous.isShutdown) else { return loop.makeSucceededVoidFuture() }
        phase = .shutdown
        healthCheck?.cancel()
        waitingTimer?.cancel()
        while let request = waiting.popFirst() {
            request.responder.fail(Self.shutdownError)
        }
        for waiter in connectedWaiters {
            waiter.timer.cancel()
            waiter.promise.fail(Self.shutdownError)
        }
        connectedWaiters = []
        publish(.closed)
        didShutdown()
        switch previous {
        case .connected(let channel, _):
            logger.debug("closing the Redis connection")
            return channel.close().recover { _ in }
        case .backingOff(let task):
            task.cancel()
        case .idle, .connecting, .shutdown:
            break
        }
        return loop.makeSucceededVoidFuture()
    }

    // MARK: - Connecting

    private func connect() {
        phase = .connecting
        if everConnected || failures > 0 {
            publish(.reconnecting(attempt: failures + 1, lastError: lastError ?? lostError))
        } else {
            publish(.connecting)
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try bound.value.addHandlers(to: channel)
                }
            }
        bootstrap.connect(host: configuration.host, port: configuration.port).assumeIsolated().whenComplete {
            [self] result in
            switch result {
            case .success(let channel):
                handshake(channel)
            case .failure(let error):
                attemptFailed(
                    RedisError(.notConnected, "cannot connect to Redis at \(configuration.url): \(error)"),
                    channel: nil
                )
            }
        }
    }

    private func addHandlers(to channel: any Channel) throws {
        let operations = channel.pipeline.syncOperations
        if let sslContext {
            let serverName =
                configuration.tlsServerName ?? (Self.isIPAddress(configuration.host) ? nil : configuration.host)
            try operations.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
        }
        try operations.addHandler(ByteToMessageHandler(RESPFrameDecoder(limits: configuration.decoderLimits)))
        try operations.addHandler(
            RedisCommandHandler(
                address: configuration.url,
                lateReplyWait: TimeAmount(configuration.lateReplyWait),
                onRoundTrip: onRoundTrip,
                onPush: makePushHandler()
            )
        )
    }

    private func handshake(_ channel: any Channel) {
        guard case .connecting = phase else {
            channel.close(promise: nil)
            return
        }
        let handler: RedisCommandHandler
        do {
            handler = try channel.pipeline.syncOperations.handler(type: RedisCommandHandler.self)
        } catch {
            channel.close(promise: nil)
            attemptFailed(
                RedisError(.protocolError, "the Redis channel has no command handler: \(error)"),
                channel: nil
            )
            return
        }
        var bytes = channel.allocator.buffer(capacity: 256)
        var replies = 0
        if let password = configuration.password {
            let arguments: [any RESPEncodable] =
                configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
            encoder.encodeCommand(arguments, into: &bytes)
            replies += 1
        }
        if configuration.database != 0 {
            encoder.encodeCommand(["SELECT", configuration.database], into: &bytes)
            replies += 1
        }
        if let name = configuration.clientName {
            encoder.encodeCommand(["CLIENT", "SETNAME", name], into: &bytes)
            replies += 1
        }
        // Their replies are not checked: a script the server refuses is sent whole when it is first run.
        let loads = replies..<(replies + configuration.scripts.count)
        for script in configuration.scripts {
            encoder.encodeCommand(["SCRIPT", "LOAD", script.source], into: &bytes)
        }
        replies = loads.upperBound
        replies += handshakeCommands(into: &bytes)
        encoder.encodeCommand(["PING"], into: &bytes)
        replies += 1

        let timeout = TimeAmount(configuration.connectTimeout)
        let promise = loop.makePromise(of: [RESPValue].self)
        channel.writeAndFlush(
            RedisRequest(
                bytes: bytes,
                replies: replies,
                responder: .many(promise),
                deadline: loop.now + timeout,
                timeout: timeout
            ),
            promise: nil
        )
        promise.futureResult.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let values):
                let checked = values.indices.lazy.filter { !loads.contains($0) }.map { values[$0] }
                if let failed = checked.first(where: { $0.errorMessage != nil }) {
                    channel.close(promise: nil)
                    attemptFailed(
                        .server(
                            "Redis at \(configuration.url) refused the connection handshake: \(failed.errorMessage!)"
                        ),
                        channel: channel
                    )
                } else {
                    connected(channel, handler)
                }
            case .failure(let error):
                channel.close(promise: nil)
                attemptFailed(handshakeError(error), channel: channel)
            }
        }
    }

    private func handshakeError(_ error: any Error) -> RedisError {
        let prefix = "cannot complete the handshake with Redis at \(configuration.url): "
        guard let error = error as? RedisError else { return RedisError(.notConnected, prefix + "\(error)") }
        switch error.code {
        case .timeout:
            return RedisError(
                .notConnected,
                prefix + "no answer within \(Self.format(TimeAmount(configuration.connectTimeout)))"
            )
        case .connectionClosed:
            let hint = configuration.tls == nil ? " (if the server requires TLS, use rediss://)" : ""
            return RedisError(.notConnected, prefix + (error.cause ?? error.message) + hint)
        default:
            return RedisError(.notConnected, prefix + error.message)
        }
    }

    private func attemptFailed(_ error: RedisError, channel: (any Channel)?) {
        guard case .connecting = phase else { return }
        failures += 1
        lastError = error
        let delay = configuration.reconnectBackoff.delay(afterFailures: failures)
        logger.debug(
            "Redis connection attempt failed",
            metadata: [
                "redis.attempt": "\(failures)", "redis.error": "\(error.message)",
                "redis.retry_in_ms": "\(RedisBackoff.nanoseconds(delay) / 1_000_000)",
            ]
        )
        if failures == 1 && everConnected {
            logger.info(
                "cannot reconnect to Redis yet; retrying with backoff",
                metadata: ["redis.error": "\(error.message)"]
            )
        }
        publish(.reconnecting(attempt: failures + 1, lastError: error))
        let task = loop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) { [self] in
            guard case .backingOff = phase else { return }
            connect()
        }
        phase = .backingOff(task)
    }

    private func connected(_ channel: any Channel, _ handler: RedisCommandHandler) {
        guard case .connecting = phase else {
            channel.close(promise: nil)
            return
        }
        phase = .connected(channel, handler)
        let reconnected = everConnected
        everConnected = true
        failures = 0
        lastError = nil
        if reconnected {
            status.withLockedValue { $0.reconnects += 1 }
            logger.info("reconnected to Redis")
        } else {
            logger.info("connected to Redis")
        }
        publish(.connected)
        channel.closeFuture.assumeIsolated().whenComplete { [self] _ in
            channelClosed(channel)
        }
        didConnect(channel: channel, reconnected: reconnected)

        let now = loop.now
        while let request = waiting.popFirst() {
            if request.deadline <= now {
                request.responder.fail(notConnectedError(timeout: request.timeout))
            } else {
                channel.write(request, promise: nil)
            }
        }
        waitingTimer?.cancel()
        waitingTimer = nil
        waitingTimerDeadline = nil
        channel.flush()
        for waiter in connectedWaiters {
            waiter.timer.cancel()
            waiter.promise.succeed()
        }
        connectedWaiters = []
        scheduleHealthCheck()
    }

    private func channelClosed(_ channel: any Channel) {
        guard case .connected(let current, _) = phase, current === channel else { return }
        healthCheck?.cancel()
        healthCheck = nil
        let error = lostError
        lastError = error
        logger.info("lost the connection to Redis; reconnecting")
        didDisconnect(error)
        // The first attempt is immediate: often only this connection was closed.
        connect()
    }

    // MARK: - Requests without a connection

    private func enqueue(_ request: RedisRequest) {
        guard waiting.count < configuration.maxQueuedWhileDisconnected else {
            request.responder.fail(
                RedisError(
                    .notConnected,
                    "no connection to Redis at \(configuration.url) and \(waiting.count) commands already waiting "
                        + "for one (\(lastError?.message ?? "connecting")); the command was not sent"
                )
            )
            return
        }
        waiting.append(request)
        armWaitingTimer(request.deadline)
    }

    private func armWaitingTimer(_ deadline: NIODeadline) {
        if let waitingTimerDeadline, waitingTimerDeadline <= deadline { return }
        waitingTimer?.cancel()
        waitingTimerDeadline = deadline
        waitingTimer = loop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            waitingTimer = nil
            waitingTimerDeadline = nil
            expireWaiting()
        }
    }

    private func expireWaiting() {
        let now = loop.now
        var kept = CircularBuffer<RedisRequest>(initialCapacity: waiting.count)
        var earliest: NIODeadline?
        while let request = waiting.popFirst() {
            if request.deadline <= now {
                request.responder.fail(notConnectedError(timeout: request.timeout))
            } else {
                kept.append(request)
                earliest = min(earliest ?? request.deadline, request.deadline)
            }
        }
        waiting = kept
        if let earliest { armWaitingTimer(earliest) }
    }

    func notConnectedError(timeout: TimeAmount) -> RedisError {
        RedisError(
            .notConnected,
            "no connection to Redis at \(configuration.url) within \(Self.format(timeout))"
                + " (\(lastError?.message ?? "still connecting")); the command was not sent."
                + " The client keeps reconnecting in the background."
        )
    }

    // MARK: - Writing

    /// Writes `request` on the live channel without flushing; for subclasses that send several.
    func write(_ request: RedisRequest) {
        guard case .connected(let channel, _) = phase, channel.isActive else {
            request.responder.fail(notConnectedError(timeout: request.timeout))
            return
        }
        channel.write(request, promise: nil)
        scheduleFlush()
    }

    /// Flushes once, after every write already queued on the event loop has run, so that commands
    /// submitted together leave in one system call.
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.assumeIsolated().execute { [self] in
            flushScheduled = false
            if case .connected(let channel, _) = phase {
                channel.flush()
            }
        }
    }

    private func scheduleHealthCheck() {
        guard let interval = configuration.healthCheckInterval.map(TimeAmount.init) else { return }
        healthCheck = loop.assumeIsolated().scheduleTask(in: interval) { [self] in
            healthCheck = nil
            guard case .connected(let channel, let handler) = phase else { return }
            if handler.isIdle && handler.lastRead + interval <= loop.now {
                var bytes = channel.allocator.buffer(capacity: 14)
                encoder.encodeCommand(["PING"], into: &bytes)
                let timeout = TimeAmount(configuration.commandTimeout)
                channel.writeAndFlush(
                    RedisRequest(
                        bytes: bytes,
                        replies: 1,
                        responder: .discard,
                        deadline: loop.now + timeout,
                        timeout: timeout
                    ),
                    promise: nil
                )
            }
            scheduleHealthCheck()
        }
    }

    private func publish(_ state: RedisConnectionState) {
        let changed = status.withLockedValue { status in
            guard status.state != state else { return false }
            status.state = state
            return true
        }
        if changed { onStateChange?(state) }
    }

    // MARK: - Hooks for pub/sub

    /// Appends commands to the handshake, after `AUTH`/`SELECT` and before the final `PING`; returns
    /// how many replies (not pushes) they produce.
    func handshakeCommands(into buffer: inout ByteBuffer) -> Int { 0 }

    /// Returns the function that sees every value before it is matched to a request (see
    /// `RedisCommandHandler`).
    func makePushHandler() -> ((RESPValue, Bool) -> Bool)? { nil }

    /// The handshake succeeded; waiting requests are written right after this.
    func didConnect(channel: any Channel, reconnected: Bool) {}

    /// The live connection was lost; a reconnect starts right after this.
    func didDisconnect(_ error: RedisError) {}

    /// `shutdown()` was called.
    func didShutdown() {}

    // MARK: - Helpers

    static let shutdownError = RedisError(
        .shutdown,
        "the Redis client was closed with close(); create a new one to send more commands"
    )

    var lostError: RedisError {
        RedisError(.connectionClosed, "the connection to Redis at \(configuration.url) was lost")
    }

    static func format(_ amount: TimeAmount) -> String {
        let milliseconds = amount.nanoseconds / 1_000_000
        if milliseconds >= 1000 && milliseconds % 1000 == 0 { return "\(milliseconds / 1000) s" }
        return "\(milliseconds) ms"
    }

    private static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

extension RedisConnectionCore.Phase {
    var isShutdown: Bool {
        if case .shutdown = self { return true }
        return false
    }
}
