import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

/// TLS for mesh links (`--mesh-tls-cert`, `--mesh-tls-key`, `--mesh-ca`). With a CA both ends present
/// certificates and verify the other's against it (mutual TLS); without one, links are encrypted and the
/// mesh handshake alone authenticates them. Host names are not checked: nodes are addressed by IP and
/// port, and the handshake binds each link to a node key.
public struct MeshTLS: Sendable {
    public var certificatePath: String
    public var keyPath: String
    public var caPath: String?

    public init(certificatePath: String, keyPath: String, caPath: String?) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.caPath = caPath
    }

    func contexts() throws -> (server: NIOSSLContext, client: NIOSSLContext) {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem))
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = chain
        client.privateKey = key
        server.minimumTLSVersion = .tlsv12
        client.minimumTLSVersion = .tlsv12
        if let caPath {
            let roots = NIOSSLTrustRoots.certificates(try NIOSSLCertificate.fromPEMFile(caPath))
            server.trustRoots = roots
            server.certificateVerification = .noHostnameVerification
            client.trustRoots = roots
            client.certificateVerification = .noHostnameVerification
        } else {
            client.certificateVerification = .none
        }
        return (try NIOSSLContext(configuration: server), try NIOSSLContext(configuration: client))
    }
}

/// Node-to-node links over TCP (optionally TLS): 4-byte length-prefixed frames, opened by the
/// ``LinkHandshake`` (mesh secret + node key), then ``MeshWire`` messages. One link per pair of nodes is
/// enough; if both dialled at once, either is used. Messages for a node without a link wait (bounded)
/// while it is dialled; a link that cannot be opened, or closes, is reported so membership suspects the
/// node at once.
///
/// Strangers: until a link has authenticated it reads frames of at most ``LinkFrame/maxEncodedSize``
/// bytes, must finish within `limits.handshakeTimeout`, and counts against `limits.maxUnauthenticatedLinks`
/// (in all) and `maxUnauthenticatedLinksPerIP`: beyond either, an accepted connection is closed at once.
/// Refusals are counted in `signal_mesh_links_refused_total{reason}` and logged at a bounded rate.
/// Members: a node that sends invalid data is disconnected (`disconnect(_:reason:)`) and refused for
/// `limits.banDuration`.
public final class MeshTransport: Sendable {
    struct Handlers: Sendable {
        var message: @Sendable (MeshKey, MeshMessage) -> Void = { _, _ in }
        var linkDown: @Sendable (MeshKey) -> Void = { _ in }
        var address: @Sendable (MeshKey) -> String? = { _ in nil }
    }

    struct State {
        var links: [MeshKey: [any Channel]] = [:]
        var waiting: [MeshKey: [MeshMessage]] = [:]
        var listener: (any Channel)?
        var closed = false
        var sentBytes = 0
        var receivedBytes = 0
        /// Accepted links still in their handshake: in all and by remote IP.
        var unauthenticated = 0
        var unauthenticatedByIP: [String: Int] = [:]
        /// Nodes disconnected for invalid data, until when.
        var banned: [MeshKey: NIODeadline] = [:]
        var refusalLog: LogBudget
    }

    /// Why a link was refused or dropped (the `reason` label of the metrics).
    enum Refusal: String, CaseIterable {
        /// Too many links in their handshake, in all or from this IP.
        case capacity
        case perIP = "per_ip"
        /// A frame longer than a handshake frame before authentication.
        case frameTooLarge = "frame_too_large"
        /// A handshake that did not prove the mesh secret and node key (or was not one).
        case handshake
        case timeout
        /// A node disconnected for invalid data tried again within its ban.
        case banned
    }

    /// Messages kept per node while its link is being opened.
    static let maxWaiting = 1024

    let authenticator: LinkAuthenticator
    let group: any EventLoopGroup
    let logger: Logger
    let limits: MeshLinkLimits
    private let tls: (server: NIOSSLContext, client: NIOSSLContext)?
    let metrics: MeshMetrics?
    private let handlers = NIOLockedValueBox(Handlers())
    private let state: NIOLockedValueBox<State>

    public init(
        identity: NodeIdentity,
        secret: MeshSecret,
        tls: MeshTLS?,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: MeshMetrics? = nil,
        limits: MeshLinkLimits = MeshLinkLimits()
    ) throws {
        self.authenticator = LinkAuthenticator(secret: secret, identity: identity)
        self.group = group
        self.logger = logger
        self.tls = try tls?.contexts()
        self.metrics = metrics
        self.limits = limits
        self.state = NIOLockedValueBox(
            State(refusalLog: LogBudget(limit: limits.logsPerInterval, interval: limits.logInterval))
        )
    }

    /// Accepted links still in their handshake.
    public var unauthenticatedLinks: Int { state.withLockedValue { $0.unauthenticated } }

    /// Where incoming messages and lost links go, and how to find a node's address.
    public func setHandlers(
        message: @escaping @Sendable (MeshKey, MeshMessage) -> Void,
        linkDown: @escaping @Sendable (MeshKey) -> Void,
        address: @escaping @Sendable (MeshKey) -> String?
    ) {
        handlers.withLockedValue { $0 = Handlers(message: message, linkDown: linkDown, address: address) }
    }

    /// Bytes written to and read from links so far (frames included).
    public var traffic: (sent: Int, received: Int) { state.withLockedValue { ($0.sentBytes, $0.receivedBytes) } }

    /// Accepts links on `host:port`; returns the bound port.
    public func listen(host: String, port: Int) async throws -> Int {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ip = Self.ip(of: channel)
                    if let refusal = self.admit(ip: ip) {
                        self.refused(refusal, remote: channel.remoteAddress)
                        throw MeshIdentityError("mesh link refused: \(refusal.rawValue)")
                    }
                    try self.configure(channel, role: .responder, established: nil, slot: ip)
                }
            }
            .bind(host: host, port: port)
            .get()
        state.withLockedValue { $0.listener = channel }
        return channel.localAddress?.port ?? port
    }

    /// Opens a link to `address` (`host:port`) and returns the id of the node there once authenticated.
    public func dial(_ address: String) -> EventLoopFuture<MeshKey> {
        let loop = group.next()
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return loop.makeFailedFuture(MeshIdentityError("a mesh address is HOST:PORT, not \"\(address)\""))
        }
        let host = String(address[..<colon])
        let established = loop.makePromise(of: MeshKey.self)
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(3))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try self.configure(channel, role: .initiator, established: established, slot: nil)
                }
            }
            .connect(host: host, port: port)
            .whenFailure { established.fail($0) }
        return established.futureResult
    }

    /// Sends a message to a node, opening a link first if there is none.
    public func send(_ message: MeshMessage, to node: MeshKey) {
        enum Plan {
            case write(any Channel)
            case dial
            case wait
            case drop
        }
        let plan: Plan = state.withLockedValue { state in
            if state.closed { return .drop }
            if let until = state.banned[node] {
                if until > .now() { return .drop }
                state.banned[node] = nil
            }
            if let channel = state.links[node]?.first { return .write(channel) }
            if state.waiting[node] != nil {
                if state.waiting[node]!.count < Self.maxWaiting { state.waiting[node]!.append(message) }
                return .wait
            }
            state.waiting[node] = [message]
            return .dial
        }
        switch plan {
        case .write(let channel):
            self.write(message, on: channel)
        case .wait, .drop:
            return
        case .dial:
            guard let address = handlers.withLockedValue({ $0.address })(node) else {
                self.failed(node)
                return
            }
            dial(address).whenComplete { result in
                switch result {
                case .success(let peer) where peer == node:
                    break  // linkUp flushed what waited
                case .success(let peer):
                    self.logger.warning(
                        "mesh address answered by another node",
                        metadata: ["expected": "\(node)", "got": "\(peer)"]
                    )
                    self.failed(node)
                case .failure(let error):
                    self.logger.debug("mesh dial failed", metadata: ["node": "\(node)", "error": "\(error)"])
                    self.failed(node)
                }
            }
        }
    }

    /// Closes the listener and every link.
    public func close() async {
        let channels: [any Channel] = state.withLockedValue { state in
            state.closed = true
            return (state.listener.map { [$0] } ?? []) + state.links.values.flatMap { $0 }
        }
        for channel in channels {
            try? await channel.close()
        }
    }

    // MARK: Links

    private func configure(
        _ channel: any Channel,
        role: LinkAuthenticator.Role,
        established: EventLoopPromise<MeshKey>?,
        slot: String?
    ) throws {
        let sync = channel.pipeline.syncOperations
        if let tls {
            if role == .responder {
                try sync.addHandler(NIOSSLServerHandler(context: tls.server))
            } else {
                try sync.addHandler(try NIOSSLClientHandler(context: tls.client, serverHostname: nil))
            }
        }
        let limit = FrameLimit()
        try sync.addHandler(ByteToMessageHandler(MeshFrameDecoder(limit: limit)))
        try sync.addHandler(LengthFieldPrepender(lengthFieldBitLength: .fourBytes))
        try sync.addHandler(
            MeshLinkHandler(transport: self, role: role, established: established, limit: limit, slot: slot)
        )
    }

    static func ip(of channel: any Channel) -> String {
        channel.remoteAddress?.ipAddress ?? "?"
    }

    /// Takes a handshake slot for a connection from `ip`, or says why not.
    func admit(ip: String) -> Refusal? {
        state.withLockedValue { state in
            guard state.unauthenticated < limits.maxUnauthenticatedLinks else { return .capacity }
            guard state.unauthenticatedByIP[ip, default: 0] < limits.maxUnauthenticatedLinksPerIP else {
                return .perIP
            }
            state.unauthenticated += 1
            state.unauthenticatedByIP[ip, default: 0] += 1
            return nil
        }
    }

    /// Gives back the handshake slot of a link that authenticated or closed.
    func release(ip: String) {
        state.withLockedValue { state in
            state.unauthenticated -= 1
            state.unauthenticatedByIP[ip, default: 1] -= 1
            if state.unauthenticatedByIP[ip] == 0 { state.unauthenticatedByIP[ip] = nil }
        }
    }

    /// Whether `node` is serving a ban for invalid data.
    func isBanned(_ node: MeshKey) -> Bool {
        state.withLockedValue { state in
            guard let until = state.banned[node] else { return false }
            if until > .now() { return true }
            state.banned[node] = nil
            return false
        }
    }

    /// Counts a refused link and logs it, at most `limits.logsPerInterval` lines per interval.
    func refused(_ refusal: Refusal, remote: SocketAddress?, detail: String? = nil) {
        metrics?.linkRefused(refusal.rawValue)
        let (log, suppressed) = state.withLockedValue { $0.refusalLog.take(now: .now()) }
        guard log else { return }
        var metadata: Logger.Metadata = [
            "reason": "\(refusal.rawValue)", "remote": "\(remote.map { "\($0)" } ?? "?")",
        ]
        if let detail { metadata["detail"] = "\(detail)" }
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        logger.warning("mesh link refused", metadata: metadata)
    }

    /// Closes every link to `node` because it sent invalid data, and refuses it for
    /// `limits.banDuration`. Counted in `signal_mesh_links_dropped_total{reason}`.
    public func disconnect(_ node: MeshKey, reason: String) {
        let channels: [any Channel] = state.withLockedValue { state in
            if state.banned.count >= 1024 {
                let now = NIODeadline.now()
                state.banned = state.banned.filter { $0.value > now }
            }
            if state.banned.count < 1024 { state.banned[node] = .now() + limits.banDuration }
            state.waiting[node] = nil
            return state.links[node] ?? []
        }
        metrics?.linkDropped(reason)
        let (log, suppressed) = state.withLockedValue { $0.refusalLog.take(now: .now()) }
        if log {
            var metadata: Logger.Metadata = ["node": "\(node)", "reason": "\(reason)"]
            if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
            logger.warning("mesh link dropped: the node sent invalid data", metadata: metadata)
        }
        for channel in channels { channel.close(promise: nil) }
    }

    func write(_ message: MeshMessage, on channel: any Channel) {
        let bytes = MeshWire.encode(message)
        state.withLockedValue { $0.sentBytes += bytes.count + 4 }
        metrics?.sent(message, bytes: bytes.count + 4)
        channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
    }

    func linkUp(_ node: MeshKey, _ channel: any Channel) -> Bool {
        if isBanned(node) {
            refused(.banned, remote: channel.remoteAddress, detail: "\(node)")
            return false
        }
        let waiting: [MeshMessage] = state.withLockedValue { state in
            state.links[node, default: []].append(channel)
            return state.waiting.removeValue(forKey: node) ?? []
        }
        logger.debug("mesh link up", metadata: ["node": "\(node)"])
        for message in waiting { self.write(message, on: channel) }
        return true
    }

    func linkClosed(_ node: MeshKey, _ channel: any Channel) {
        let last: Bool = state.withLockedValue { state in
            state.links[node]?.removeAll { $0 === channel }
            if state.links[node]?.isEmpty == true {
                state.links[node] = nil
                return !state.closed
            }
            return false
        }
        if last {
            logger.debug("mesh link down", metadata: ["node": "\(node)"])
            handlers.withLockedValue { $0.linkDown }(node)
        }
    }

    func received(_ message: MeshMessage, from node: MeshKey, bytes: Int) {
        state.withLockedValue { $0.receivedBytes += bytes + 4 }
        metrics?.received(message, bytes: bytes + 4)
        handlers.withLockedValue { $0.message }(node, message)
    }

    private func failed(_ node: MeshKey) {
        let report: Bool = state.withLockedValue { state in
            state.waiting[node] = nil
            return !state.closed
        }
        if report { handlers.withLockedValue { $0.linkDown }(node) }
    }
}
