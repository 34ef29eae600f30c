import JWTKit
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOWebSocket
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
    private let logger: Logger
    private let registry: PrometheusCollectorRegistry
    private let metrics: HubMetrics
    private let verifier: TokenVerifier?
    private let group: any EventLoopGroup
    /// Whether the server made ``group`` (and shuts it down when it stops).
    private let ownsGroup: Bool
    private let phase = NIOLockedValueBox(Phase.idle)
    private let limiter: ConnectionLimiter
    /// Sessions per tenant (`--max-sessions-per-tenant`) and the per-tenant metrics.
    private let tenants: TenantAccounting
    private let endpoints: HTTPEndpoints
    private let tls: TLSContextStore?
    /// What every `/ws` connection's handler shares (settings, metrics, logger), and every `/echo` one's.
    private let sessionShared: WebSocketShared
    private let echoShared: WebSocketShared
    /// The heartbeat sweep of each event loop, by `ObjectIdentifier` of the loop.
    private let sweeps: [ObjectIdentifier: NIOLoopBoundBox<HeartbeatSweep>]
    /// What the WebSocket fast path accepts (the same paths, origins and header limits as the HTTP pipeline).
    private let handshakeRules: WebSocketHandshakeReader.Rules
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

    // MARK: Pipeline

    private func initializeConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
        // An admitted connection's slot is held by its handshake handler, which hands it on (see
        // ``ConnectionLimiter``). A trusted proxy's connection is counted in the total only until its
        // upgrade request names its client.
        let key = limiter.key(for: channel)
        let admitted = limiter.acquire(key)
        if !admitted {
            metrics.connectionsRefused.increment()
        }
        return channel.eventLoop.makeCompletedFuture {
            // Set here, synchronously: NIO's child channel options are applied one future at a time.
            if let options = channel.syncOptions {
                try options.setOption(.socketOption(.tcp_nodelay), value: 1)
                try options.setOption(.maxMessagesPerRead, value: 16)
                // NIO keeps each connection's last receive buffer for the next read. Most connections are
                // idle or read small messages, so start at 256 B (NIO's default is 2 KiB); the buffer still
                // doubles for connections whose reads fill it.
                try options.setOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
                )
            }
            if let tls = self.tls {
                try channel.pipeline.syncOperations.addHandler(TLSSniffer(store: tls))
            }
            let deadline = NIODeadline.now() + .milliseconds(Int64(self.configuration.handshakeTimeout * 1000))
            if admitted {
                // Upgrades are answered by one small handler; everything else gets the HTTP pipeline.
                try channel.pipeline.syncOperations.addHandler(
                    WebSocketHandshakeHandler(
                        host: self,
                        rules: self.handshakeRules,
                        deadline: deadline,
                        limiter: self.limiter,
                        proxied: key == .proxy
                    )
                )
            } else {
                try self.addHTTPHandlers(channel, overCapacity: true, deadline: deadline)
            }
        }
    }

    func addHTTPHandlers(_ channel: any Channel, overCapacity: Bool, deadline: NIODeadline) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = configuration.maxHeaderCount
        limits.maxHeaderListSize = configuration.maxHeaderBytes
        limits.maxHeaderFieldSize = configuration.maxHeaderBytes
        let decoder = ByteToMessageHandler(
            HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits)
        )
        let encoder = HTTPResponseEncoder()
        let paths = handshakeRules.webSocketPaths
        let proxied = limiter.isTrustedProxy(channel)
        let gatekeeper = HTTPGatekeeper(
            originPolicy: handshakeRules.originPolicy,
            webSocketPaths: paths,
            deadline: deadline,
            overCapacity: overCapacity,
            forwardedClients: proxied && !overCapacity ? self : nil
        )
        let router = HTTPRouter(endpoints: endpoints)
        // One frame never exceeds one message. NIO's decoder refuses a larger declared length (1009)
        // before buffering any of it, and traps on a limit above UInt32.max, so clamp the flag's value.
        let maxFrameSize = max(
            configuration.maxMessageBytes,
            configuration.echo ? configuration.echoMaxMessageBytes : 0
        )
        let upgrader = WebSocketUpgrader(
            maxFrameSize: min(maxFrameSize, Int(UInt32.max)),
            shouldUpgrade: { channel, head in
                let path = UpgradeRequest(head).path
                return channel.eventLoop.makeSucceededFuture(paths.contains(path) ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { [self] channel, head in
                do {
                    var request = UpgradeRequest(head)
                    if proxied {
                        // The gatekeeper counted the client this request names; it is the same one again.
                        request.client = self.forwardedClient(channel, head.headers["X-Forwarded-For"], log: false)
                    }
                    // This connection's slot is released by its close future (see `WebSocketHandshakeHandler`).
                    return try self.upgrade(channel, request, connectionSlot: nil)
                        ?? channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        )
        let upgradeHandler = HTTPServerUpgradeHandler(
            upgraders: [upgrader],
            httpEncoder: encoder,
            extraHTTPHandlers: [decoder, gatekeeper, router],
            upgradeCompletionHandler: { _ in }
        )
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(decoder)
        try sync.addHandler(encoder)
        try sync.addHandler(gatekeeper)
        try sync.addHandler(upgradeHandler)
        try sync.addHandler(router)
    }

    func admitForwardedClient(_ channel: any Channel, forwardedFor: [String]) -> String? {
        let client = self.forwardedClient(channel, forwardedFor, log: true)
        guard limiter.acquireClient(client, for: channel) else {
            metrics.connectionsRefused.increment()
            logger.debug(
                "connection refused: its client is at the per-IP cap",
                metadata: [
                    "client.address": "\(client)",
                    "proxy.address": "\(ConnectionLimiter.clientAddress(of: channel))",
                ]
            )
            return nil
        }
        return client
    }

    /// The client a trusted proxy's request names in `X-Forwarded-For` (``TrustedProxies``), as it is
    /// counted and logged; the proxy's own address when the header is absent or malformed (logged at
    /// debug when `log` is set).
    private func forwardedClient(_ channel: any Channel, _ forwardedFor: [String], log: Bool) -> String {
        let proxy = { ConnectionLimiter.clientAddress(of: channel) }
        switch limiter.trustedProxies.client(forwardedFor: forwardedFor) {
        case .forwarded(let address):
            return address.description
        case .absent:
            if log {
                logger.debug(
                    "a trusted proxy's request has no X-Forwarded-For: counting it under the proxy's address",
                    metadata: ["proxy.address": "\(proxy())"]
                )
            }
            return proxy()
        case .malformed(let element):
            if log {
                logger.debug(
                    "a trusted proxy's X-Forwarded-For is not a list of IP addresses: counting the request under the proxy's address",
                    metadata: ["proxy.address": "\(proxy())", "forwarded.element": "\(element)"]
                )
            }
            return proxy()
        }
    }

    func upgrade(
        _ channel: any Channel,
        _ request: UpgradeRequest,
        connectionSlot: ConnectionLimiter?
    ) throws -> EventLoopFuture<Void>? {
        if request.path == "/echo" {
            try self.addWebSocketHandlers(channel, role: .echo, echo: true, connectionSlot: connectionSlot)
            return nil
        }
        let backend: any SessionHub = self.backend
        @Sendable func session(_ open: OpenRequest?, refusal: Refusal?, hub: (any SessionHub)? = nil) throws {
            let role = WebSocketRole.session(
                hub: hub ?? backend,
                request: open ?? .fresh(peer: nil, subject: nil, grant: .all),
                refusal: refusal
            )
            try self.addWebSocketHandlers(channel, role: role, echo: false, connectionSlot: connectionSlot)
        }
        let requestedPeer = request.query["peer"]
        if let requestedPeer, !Identifier.isValid(requestedPeer) {
            try session(
                nil,
                refusal: .invalidPeerID
            )
            return nil
        }
        // The address the connection caps count this client under, for the detached-per-IP cap too.
        let client = request.client ?? channel.remoteAddress.flatMap(IPAddress.init)?.description
        func openRequest(subject: String?, grant: RoomGrant) -> OpenRequest {
            if let resume = request.query["resume"] {
                let last = request.query["last"].flatMap { UInt64($0) } ?? 0
                return .resume(token: resume, last: last, subject: subject, client: client)
            }
            return .fresh(peer: requestedPeer, subject: subject, grant: grant, client: client)
        }
        guard let verifier else {
            try session(openRequest(subject: nil, grant: .all), refusal: nil)
            return nil
        }
        guard let token = request.token else {
            try session(nil, refusal: .tokenRequired)
            return nil
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let tenants = self.tenants
        let tenantLimit = configuration.maxSessionsPerTenant ?? configuration.maxConnections
        Task {
            let open: OpenRequest?
            let refusal: Refusal?
            var hub: (any SessionHub)? = nil
            do throws(TokenRejection) {
                let claims = try await verifier.verify(token)
                // The token's tenant namespaces the session's peer id, subject and rooms.
                let request = openRequest(subject: claims.sub.value, grant: claims.roomGrant)
                    .qualified(by: claims.namespace)
                guard let slot = tenants.acquire(claims.namespace) else {
                    promise.completeWith(
                        channel.eventLoop.submit { try session(nil, refusal: .tenantFull(limit: tenantLimit)) }
                    )
                    return
                }
                open = request
                refusal = nil
                // The session lasts as long as its token (or a fresh one sent in band); a resume continues
                // under the new token's claims.
                var resumes = false
                if case .resume = request { resumes = true }
                hub = AuthenticatedSession(
                    backend,
                    verifier: verifier,
                    claims: claims,
                    resumes: resumes,
                    eventLoop: channel.eventLoop,
                    tenant: (tenants, slot)
                )
            } catch let rejection {
                open = nil
                refusal = .tokenRejected(rejection.reason)
            }
            // Pipeline changes happen on the channel's event loop.
            let sessionHub = hub
            promise.completeWith(channel.eventLoop.submit { try session(open, refusal: refusal, hub: sessionHub) })
        }
        return promise.futureResult
    }

    private func addWebSocketHandlers(
        _ channel: any Channel,
        role: WebSocketRole,
        echo: Bool,
        connectionSlot: ConnectionLimiter?
    ) throws {
        let sync = channel.pipeline.syncOperations
        // One handler reads frames (deciding each one: masking, reserved bits and opcodes,
        // fragmentation, size and fragment count, UTF-8 as fragments arrive), serves the connection and
        // writes frames.
        let sweep = sweeps[ObjectIdentifier(channel.eventLoop)]!.value
        try sync.addHandler(
            WebSocketHandler(
                role: role,
                shared: echo ? echoShared : sessionShared,
                sweep: sweep,
                connectionSlot: connectionSlot
            )
        )
    }
}

extension SignalServer: WebSocketHandshakeHost {}
