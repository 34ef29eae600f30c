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
        case running(any Channel, ServerQuiescingHelper, RepeatedTask)
        case draining
        case stopped
    }

    public let configuration: ServerConfiguration
    /// The in-memory hub (single node). Unused when ``cluster`` is set.
    public let hub: Hub
    /// The Redis-backed hub when the server joins a cluster (``ServerConfiguration/cluster``).
    public let cluster: ClusterHub?
    /// A hub that wraps the in-memory one (PeerMesh's bridge), when one was given.
    public let wrapper: (any SessionHub)?
    private let logger: Logger
    private let registry: PrometheusCollectorRegistry
    private let metrics: HubMetrics
    private let verifier: TokenVerifier?
    private let group: MultiThreadedEventLoopGroup
    private let phase = NIOLockedValueBox(Phase.idle)
    private let limiter: ConnectionLimiter
    private let endpoints: HTTPEndpoints
    private let tls: TLSContextStore?
    /// What every `/ws` connection's handler shares (settings, metrics, logger), and every `/echo` one's.
    private let sessionShared: WebSocketShared
    private let echoShared: WebSocketShared
    /// The heartbeat sweep of each event loop, by `ObjectIdentifier` of the loop.
    private let sweeps: [ObjectIdentifier: NIOLoopBoundBox<HeartbeatSweep>]
    /// What the WebSocket fast path accepts (the same paths, origins and header limits as the HTTP pipeline).
    private let handshakeRules: WebSocketHandshakeReader.Rules

    /// - Parameter wrap: Builds the hub connections talk to around the in-memory ``hub`` (how PeerMesh
    ///   plugs in: it handles what is not local and passes the rest on). Not used with a cluster.
    public init(
        configuration: ServerConfiguration,
        logger: Logger = Logger(label: "signal"),
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        wrap: (@Sendable (Hub) -> any SessionHub)? = nil
    ) async throws(TLSSetupError) {
        self.configuration = configuration
        self.tls = try configuration.tls.map { files throws(TLSSetupError) in try TLSContextStore(files: files) }
        self.logger = logger
        self.registry = registry
        let metrics = HubMetrics(factory: PrometheusMetricsFactory(registry: registry))
        self.metrics = metrics
        self.hub = Hub(
            limits: configuration.effectiveLimits,
            welcome: WelcomeTemplate(
                heartbeatInterval: configuration.heartbeatInterval,
                heartbeatTimeout: configuration.heartbeatTimeout,
                iceServersJSON: configuration.iceServersJSON,
                limitsJSON: configuration.limitsJSON
            ),
            metrics: metrics
        )
        if let clusterConfiguration = configuration.cluster {
            do {
                self.cluster = try ClusterHub(
                    configuration: clusterConfiguration,
                    limits: configuration.effectiveLimits,
                    welcome: hub.welcome,
                    metrics: metrics,
                    clusterMetrics: ClusterMetrics(factory: PrometheusMetricsFactory(registry: registry)),
                    eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                    logger: logger
                )
            } catch {
                throw TLSSetupError(description: "cannot use the Redis configuration: \(error)")
            }
        } else {
            self.cluster = nil
        }
        self.wrapper = configuration.cluster == nil ? wrap?(hub) : nil
        if let secret = configuration.jwtSecret {
            self.verifier = await TokenVerifier(secret: secret)
        } else {
            self.verifier = nil
        }
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
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
            maxPerIP: configuration.maxConnectionsPerIP
        )
        let phase = self.phase
        let hub = self.hub
        let cluster = self.cluster
        self.endpoints = HTTPEndpoints(
            assets: WebAssets.load(from: configuration.webRoot),
            isReady: {
                let running = phase.withLockedValue {
                    if case .running = $0 { return true }
                    return false
                }
                return running && (cluster?.isReady ?? true)
            },
            metrics: {
                if let cluster { cluster.exportMetrics() } else { hub.exportMetrics() }
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
        cluster?.start()
        let hub = self.hub
        let tick = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { _ in
            hub.tick()
        }
        phase.withLockedValue { $0 = .running(channel, quiesce, tick) }
        let port = channel.localAddress?.port ?? configuration.port
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

    /// Drains and stops: stop accepting, close clients with 1001, wait up to the drain timeout.
    public func shutdown() async {
        // The quiescing helper must be gone before the event loops stop: its deinit completes a promise
        // on one of them. `drain()` holds the last reference and drops it when it returns.
        await drain()
        phase.withLockedValue { $0 = .stopped }
        await cluster?.shutdown()
        try? await group.shutdownGracefully()
        logger.info("signal hub stopped")
    }

    private func drain() async {
        let running: (ServerQuiescingHelper, RepeatedTask)? = phase.withLockedValue { phase in
            guard case .running(_, let quiesce, let tick) = phase else { return nil }
            phase = .draining
            return (quiesce, tick)
        }
        if let (quiesce, tick) = running {
            logger.info("draining: closing clients with 1001", metadata: ["connections": "\(limiter.total)"])
            tick.cancel()
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

    public func run() async throws {
        try await start()
        await withTaskGroup(of: Void.self) { group in
            if tls != nil {
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        self.reloadTLS()
                    }
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        await shutdown()
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

    /// Connections holding a slot of the connection caps (every accepted connection until it closes).
    var admittedConnections: Int { limiter.total }

    // MARK: Pipeline

    private func initializeConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
        // An admitted connection's slot is held by its handshake handler, which hands it on (see
        // ``ConnectionLimiter``).
        let admitted = limiter.acquire(for: channel)
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
                        limiter: self.limiter
                    )
                )
            } else {
                try self.addHTTPHandlers(channel, overCapacity: true, deadline: deadline)
            }
        }
    }

    func addHTTPHandlers(_ channel: any Channel, deadline: NIODeadline) throws {
        try self.addHTTPHandlers(channel, overCapacity: false, deadline: deadline)
    }

    private func addHTTPHandlers(_ channel: any Channel, overCapacity: Bool, deadline: NIODeadline) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = configuration.maxHeaderCount
        limits.maxHeaderListSize = configuration.maxHeaderBytes
        limits.maxHeaderFieldSize = configuration.maxHeaderBytes
        let decoder = ByteToMessageHandler(
            HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits)
        )
        let encoder = HTTPResponseEncoder()
        let paths = handshakeRules.webSocketPaths
        let gatekeeper = HTTPGatekeeper(
            originPolicy: handshakeRules.originPolicy,
            webSocketPaths: paths,
            deadline: deadline,
            overCapacity: overCapacity
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
                    // This connection's slot is released by its close future (see `WebSocketHandshakeHandler`).
                    return try self.upgrade(channel, UpgradeRequest(head), connectionSlot: nil)
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

    func upgrade(
        _ channel: any Channel,
        _ request: UpgradeRequest,
        connectionSlot: ConnectionLimiter?
    ) throws -> EventLoopFuture<Void>? {
        if request.path == "/echo" {
            try self.addWebSocketHandlers(channel, role: .echo, echo: true, connectionSlot: connectionSlot)
            return nil
        }
        let hub: any SessionHub = self.cluster ?? self.wrapper ?? self.hub
        @Sendable func session(_ open: OpenRequest?, refusal: (ErrorCode, CloseCode, String)?) throws {
            let role = WebSocketRole.session(
                hub: hub,
                request: open ?? .fresh(peer: nil, subject: nil, grant: .all),
                refusal: refusal
            )
            try self.addWebSocketHandlers(channel, role: role, echo: false, connectionSlot: connectionSlot)
        }
        let requestedPeer = request.query["peer"]
        if let requestedPeer, !Identifier.isValid(requestedPeer) {
            try session(
                nil,
                refusal: (.badMessage, .policyViolation, "peer id must be 1-64 characters of [A-Za-z0-9._~-]")
            )
            return nil
        }
        func openRequest(subject: String?, grant: RoomGrant) -> OpenRequest {
            if let resume = request.query["resume"] {
                let last = request.query["last"].flatMap { UInt64($0) } ?? 0
                return .resume(token: resume, last: last, subject: subject)
            }
            return .fresh(peer: requestedPeer, subject: subject, grant: grant)
        }
        guard let verifier else {
            try session(openRequest(subject: nil, grant: .all), refusal: nil)
            return nil
        }
        guard let token = request.token else {
            try session(nil, refusal: (.unauthorized, .unauthorized, "token required"))
            return nil
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        Task {
            let open: OpenRequest?
            let refusal: (ErrorCode, CloseCode, String)?
            do throws(TokenRejection) {
                let claims = try await verifier.verify(token)
                open = openRequest(subject: claims.sub.value, grant: RoomGrant(claim: claims.rooms))
                refusal = nil
            } catch let rejection {
                open = nil
                refusal = (.unauthorized, .unauthorized, rejection.reason)
            }
            // Pipeline changes happen on the channel's event loop.
            promise.completeWith(channel.eventLoop.submit { try session(open, refusal: refusal) })
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
