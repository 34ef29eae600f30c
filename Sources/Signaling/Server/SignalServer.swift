import JWTKit
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import Prometheus
import ServiceLifecycle
import UnixSignals

/// The signaling hub as a service: binds, serves HTTP and WebSocket, and on graceful shutdown stops
/// accepting, closes every client with 1001 and waits (up to the drain timeout) for them to go.
public final class SignalServer: Service, Sendable {
    private enum Phase {
        case idle
        case running(any Channel, ServerQuiescingHelper)
        case draining
        case stopped
    }

    public let configuration: ServerConfiguration
    /// Where sessions live and how they are routed (in memory, a Redis cluster, the mesh).
    public let backend: any SignalBackend
    let logger: Logger
    private let registry: PrometheusCollectorRegistry
    let metrics: HubMetrics
    let verifier: TokenVerifier?
    private let group: any EventLoopGroup
    /// Whether the server made ``group`` (and shuts it down when it stops).
    private let ownsGroup: Bool
    private let phase = NIOLockedValueBox(Phase.idle)
    let limiter: ConnectionLimiter
    /// Sessions per tenant (`--max-sessions-per-tenant`) and the per-tenant metrics.
    let tenants: TenantAccounting
    let endpoints: HTTPEndpoints
    let tls: TLSContextStore?
    /// What every `/ws` connection's handler shares (settings, metrics, logger), and every `/echo` one's.
    let sessionShared: WebSocketShared
    let echoShared: WebSocketShared
    /// The heartbeat sweep of each event loop, by `ObjectIdentifier` of the loop.
    let sweeps: [ObjectIdentifier: NIOLoopBoundBox<HeartbeatSweep>]
    /// What the WebSocket fast path accepts (the same paths, origins and header limits as the HTTP pipeline).
    let handshakeRules: WebSocketHandshakeReader.Rules
    /// The server API's listener (``ServerConfiguration/api``), started after the server's own port.
    private let api: APIListener?
    /// Sends the backend's events to the webhook receivers (``ServerConfiguration/webhooks``); run by ``run()``.
    private let webhooks: WebhookDispatcher?

    /// - Parameters:
    ///   - backend: where sessions live (``Hub`` in memory, ``ClusterHub``, or a mesh bridge); the server
    ///     runs it (``SignalBackend/run()``) for as long as ``run()`` runs.
    ///   - logger: for lifecycle and per-connection events.
    ///   - registry: the metrics registry the server's and the backend's metrics are created in, rendered
    ///     at `/metrics`.
    ///   - eventLoopGroup: the loops connections are served on; when nil, the server makes one of
    ///     ``ServerConfiguration/threads`` threads and shuts it down when it stops.
    public init(
        configuration: ServerConfiguration,
        backend: any SignalBackend,
        logger: Logger = Logger(label: "signal"),
        registry: PrometheusCollectorRegistry,
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) async throws(TLSSetupError) {
        self.configuration = configuration
        self.backend = backend
        self.tls = try configuration.tls.map { files throws(TLSSetupError) in try TLSContextStore(files: files) }
        self.logger = logger
        self.registry = registry
        let metrics = HubMetrics(factory: PrometheusMetricsFactory(registry: registry))
        self.metrics = metrics
        if configuration.authEnabled {
            self.verifier = await TokenVerifier(
                keys: (configuration.jwtSecret.map { [TokenKey.secret($0)] } ?? []) + configuration.jwtKeys,
                remote: configuration.jwtRemoteKeys,
                audiences: configuration.jwtAudiences,
                issuer: configuration.jwtIssuer,
                leeway: configuration.jwtLeeway
            )
        } else {
            self.verifier = nil
        }
        if let eventLoopGroup {
            self.group = eventLoopGroup
            self.ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
            self.ownsGroup = true
        }
        var sweeps: [ObjectIdentifier: NIOLoopBoundBox<HeartbeatSweep>] = [:]
        for loop in group.makeIterator() {
            sweeps[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeBoxSendingValue(
                HeartbeatSweep(eventLoop: loop, period: configuration.heartbeatCheckPeriod),
                eventLoop: loop
            )
        }
        self.sweeps = sweeps
        func shared(echo: Bool) -> WebSocketShared {
            WebSocketShared(
                settings: WebSocketSettings(
                    heartbeatInterval: .seconds(Int64(configuration.heartbeatInterval)),
                    heartbeatTimeout: .seconds(Int64(configuration.heartbeatTimeout)),
                    closeTimeout: .milliseconds(Int64(configuration.closeTimeout * 1000)),
                    outboundQueueBytes: configuration.outboundQueueBytes,
                    maxMessageBytes: echo ? configuration.echoMaxMessageBytes : configuration.maxMessageBytes,
                    maxFrameBytes: min(
                        max(configuration.maxMessageBytes, configuration.echo ? configuration.echoMaxMessageBytes : 0),
                        Int(UInt32.max)
                    ),
                    maxFragments: echo ? configuration.echoMaxFragments : configuration.maxFragments,
                    rateBurst: configuration.rateBurst,
                    ratePerSecond: configuration.ratePerSecond,
                    rateMaxStrikes: configuration.rateMaxStrikes,
                    decoder: MessageDecoder()
                ),
                metrics: metrics,
                logger: logger
            )
        }
        self.sessionShared = shared(echo: false)
        self.echoShared = shared(echo: true)
        self.handshakeRules = WebSocketHandshakeReader.Rules(
            webSocketPaths: configuration.echo ? ["/ws", "/echo"] : ["/ws"],
            originPolicy: OriginPolicy(allowedOrigins: configuration.allowedOrigins),
            maxHeaderCount: configuration.maxHeaderCount,
            maxHeaderBytes: configuration.maxHeaderBytes
        )
        self.limiter = ConnectionLimiter(
            maxTotal: configuration.maxConnections,
            maxPerIP: configuration.maxConnectionsPerIP,
            trustedProxies: TrustedProxies(configuration.trustedProxies)
        )
        self.tenants = TenantAccounting(
            maxSessionsPerTenant: configuration.maxSessionsPerTenant ?? configuration.maxConnections,
            maxLabels: configuration.metricsMaxTenants,
            factory: PrometheusMetricsFactory(registry: registry)
        )
        self.api = configuration.api.map {
            APIListener(
                configuration: $0,
                backend: backend,
                logger: logger,
                maxHeaderCount: configuration.maxHeaderCount,
                maxHeaderBytes: configuration.maxHeaderBytes
            )
        }
        if let webhooks = configuration.webhooks {
            let dispatcher = WebhookDispatcher(
                configuration: webhooks,
                metricsFactory: PrometheusMetricsFactory(registry: registry),
                logger: logger
            )
            backend.setEventSink { dispatcher.enqueue($0) }
            self.webhooks = dispatcher
        } else {
            self.webhooks = nil
        }
        let phase = self.phase
        self.endpoints = HTTPEndpoints(
            assets: WebAssets.load(from: configuration.webRoot),
            isReady: {
                let running = phase.withLockedValue {
                    if case .running = $0 { return true }
                    return false
                }
                return running && backend.isReady
            },
            metrics: {
                backend.exportMetrics()
                var bytes: [UInt8] = []
                registry.emit(into: &bytes)
                return bytes
            }
        )
    }

    /// Binds and starts serving; returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        let quiesce = ServerQuiescingHelper(group: group)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            // The connection's options are set in `initializeConnection`.
            .childChannelInitializer { [self] channel in
                self.initializeConnection(channel)
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        phase.withLockedValue { $0 = .running(channel, quiesce) }
        let port = channel.localAddress?.port ?? configuration.port
        if let api {
            do {
                try await api.start(group: group)
            } catch {
                await self.drain()
                throw error
            }
        }
        logger.info(
            "signal hub listening",
            metadata: [
                "address": "\(configuration.host):\(port)",
                "auth": "\(verifier != nil ? "jwt" : "none")",
                "tls": "\(tls != nil)",
                "echo": "\(configuration.echo)",
            ]
        )
        return port
    }

    /// Drains and stops: stop accepting, close clients with 1001, wait up to the drain timeout. The
    /// backend is not stopped here: ``run()`` stops it after this returns (a caller that used ``start()``
    /// stops the backend it runs itself).
    public func shutdown() async {
        // The quiescing helper must be gone before the event loops stop: its deinit completes a promise
        // on one of them. `drain()` holds the last reference and drops it when it returns.
        await drain()
        phase.withLockedValue { $0 = .stopped }
        if ownsGroup { try? await group.shutdownGracefully() }
        logger.info("signal hub stopped")
    }

    private func drain() async {
        let running: ServerQuiescingHelper? = phase.withLockedValue { phase in
            guard case .running(_, let quiesce) = phase else { return nil }
            phase = .draining
            return quiesce
        }
        await api?.stop()
        if let quiesce = running {
            logger.info("draining: closing clients with 1001", metadata: ["connections": "\(limiter.total)"])
            let drained = group.next().makePromise(of: Void.self)
            quiesce.initiateShutdown(promise: drained)
            let drainTimeout = UInt64(configuration.drainTimeout * 1e9)
            await withTaskGroup(of: Void.self) { waiters in
                waiters.addTask { try? await drained.futureResult.get() }
                waiters.addTask { try? await Task.sleep(nanoseconds: drainTimeout) }
                await waiters.next()
                waiters.cancelAll()
            }
        }
    }

    /// Runs as a swift-service-lifecycle `Service`: runs the backend (a child task), binds, serves until
    /// graceful shutdown (reloading TLS on SIGHUP), drains, then stops the backend. If the backend fails
    /// (a mesh port it cannot bind, say) or stops by itself, the server drains and `run()` throws, so the
    /// process does not go on serving without its backend.
    public func run() async throws {
        let backend = self.backend
        let failure: (any Error)? = try await withThrowingTaskGroup(of: (any Error)?.self) { group in
            group.addTask {
                do {
                    try await backend.run()
                    return Task.isCancelled ? nil : BackendStopped()
                } catch {
                    return Task.isCancelled ? nil : error
                }
            }
            do {
                try await start()
            } catch {
                group.cancelAll()
                throw error
            }
            if let webhooks {
                group.addTask {
                    await webhooks.run()
                    return nil
                }
            }
            if tls != nil {
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        self.reloadTLS()
                    }
                    return nil
                }
            }
            group.addTask {
                try? await gracefulShutdown()
                return nil
            }
            // Graceful shutdown, or the backend ending first.
            let first = try await group.next() ?? nil
            if let first {
                logger.error("the backend stopped; draining", metadata: ["error": "\(first)"])
            }
            await drain()
            group.cancelAll()
            while (try? await group.next()) != nil {}
            return first
        }
        await shutdown()
        if let failure { throw failure }
    }

    /// The backend's `run()` returned while the server was still serving.
    struct BackendStopped: Error, CustomStringConvertible {
        var description: String { "the backend stopped by itself" }
    }

    /// Re-reads the certificate and key (what SIGHUP does). New connections use them; live sessions keep
    /// theirs. On an error the old certificate stays in use.
    @discardableResult
    public func reloadTLS() -> Bool {
        guard let tls else { return false }
        do {
            try tls.reload()
            logger.info("TLS certificate reloaded", metadata: ["tls.certificate": "\(tls.files.certificatePath)"])
            return true
        } catch {
            logger.error("TLS reload failed; keeping the old certificate", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// The server API's bound port, once started (nil without `--api-listen`).
    public var apiPort: Int? { api?.localPort }

    /// Connections holding a slot of the connection caps (every accepted connection until it closes).
    var admittedConnections: Int { limiter.total }

    /// Connections counted per client address (a trusted proxy's from its upgrade on).
    var connectionsPerClient: [String: Int] { limiter.perClient }
}

extension SignalServer: WebSocketHandshakeHost {}
