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
    }

    /// Messages kept per node while its link is being opened.
    static let maxWaiting = 1024

    let authenticator: LinkAuthenticator
    let group: any EventLoopGroup
    let logger: Logger
    private let tls: (server: NIOSSLContext, client: NIOSSLContext)?
    private let metrics: MeshMetrics?
    private let handlers = NIOLockedValueBox(Handlers())
    private let state = NIOLockedValueBox(State())

    public init(
        identity: NodeIdentity,
        secret: MeshSecret,
        tls: MeshTLS?,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: MeshMetrics? = nil
    ) throws {
        self.authenticator = LinkAuthenticator(secret: secret, identity: identity)
        self.group = group
        self.logger = logger
        self.tls = try tls?.contexts()
        self.metrics = metrics
    }

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
                    try self.configure(channel, role: .responder, established: nil)
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
                    try self.configure(channel, role: .initiator, established: established)
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
        established: EventLoopPromise<MeshKey>?
    ) throws {
        let sync = channel.pipeline.syncOperations
        if let tls {
            if role == .responder {
                try sync.addHandler(NIOSSLServerHandler(context: tls.server))
            } else {
                try sync.addHandler(try NIOSSLClientHandler(context: tls.client, serverHostname: nil))
            }
        }
        try sync.addHandler(ByteToMessageHandler(MeshFrameDecoder()))
        try sync.addHandler(LengthFieldPrepender(lengthFieldBitLength: .fourBytes))
        try sync.addHandler(MeshLinkHandler(transport: self, role: role, established: established))
    }

    func write(_ message: MeshMessage, on channel: any Channel) {
        let bytes = MeshWire.encode(message)
        state.withLockedValue { $0.sentBytes += bytes.count + 4 }
        metrics?.sent(message, bytes: bytes.count + 4)
        channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
    }

    func linkUp(_ node: MeshKey, _ channel: any Channel) {
        let waiting: [MeshMessage] = state.withLockedValue { state in
            state.links[node, default: []].append(channel)
            return state.waiting.removeValue(forKey: node) ?? []
        }
        logger.debug("mesh link up", metadata: ["node": "\(node)"])
        for message in waiting { self.write(message, on: channel) }
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

/// Splits a byte stream into frames of a 4-byte big-endian length and that many bytes.
struct MeshFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    struct FrameTooLarge: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= MeshWire.maxFrameBytes else { throw FrameTooLarge() }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// Runs a link's handshake, then turns frames into mesh messages for the transport.
final class MeshLinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let transport: MeshTransport
    private let role: LinkAuthenticator.Role
    private var handshake: LinkHandshake
    private var hello: [UInt8]?
    private var established: EventLoopPromise<MeshKey>?
    private var peer: MeshKey?
    private var timeout: Scheduled<Void>?

    init(transport: MeshTransport, role: LinkAuthenticator.Role, established: EventLoopPromise<MeshKey>?) {
        self.transport = transport
        self.role = role
        self.established = established
        if role == .initiator {
            let (handshake, hello) = LinkHandshake.initiator(transport.authenticator)
            self.handshake = handshake
            self.hello = hello
        } else {
            self.handshake = LinkHandshake.responder(transport.authenticator)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        timeout = context.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
        if let hello {
            context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: hello)), promise: nil)
            self.hello = nil
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        if let peer {
            do {
                transport.received(try MeshWire.decode(bytes), from: peer, bytes: bytes.count)
            } catch {
                transport.logger.warning(
                    "unreadable mesh message; closing the link",
                    metadata: ["node": "\(peer)", "error": "\(error)"]
                )
                context.close(promise: nil)
            }
            return
        }
        switch handshake.receive(bytes) {
        case .send(let frame):
            context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
        case .established(let node, let frame):
            timeout?.cancel()
            if let frame {
                context.writeAndFlush(
                    Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)),
                    promise: nil
                )
            }
            peer = node
            transport.linkUp(node, context.channel)
            established?.succeed(node)
            established = nil
        case .failed(let reason):
            transport.logger.warning(
                "mesh link refused",
                metadata: ["reason": "\(reason)", "remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"]
            )
            established?.fail(MeshIdentityError(reason))
            established = nil
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        established?.fail(MeshIdentityError("the link closed before it was authenticated"))
        established = nil
        if let peer { transport.linkClosed(peer, context.channel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
