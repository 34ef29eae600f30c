import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// How a client checks a `wss://` server.
public struct ClientTLSOptions: Sendable, Equatable {
    /// PEM file of the CA to trust instead of the system trust store (a private CA).
    public var caFile: String?
    /// Skip certificate verification entirely. Never the default; callers should warn when it is set.
    public var insecure: Bool

    public init(caFile: String? = nil, insecure: Bool = false) {
        self.caFile = caFile
        self.insecure = insecure
    }

    func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        if let caFile {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        }
        if insecure {
            configuration.certificateVerification = .none
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// A small WebSocket client on SwiftNIO, used by `signal peer`, `signal bench` and the tests.
///
/// Incoming messages arrive on ``events``; ``send(_:)`` may be called from any thread.
public final class WebSocketClient: Sendable {
    /// Something that happened on the connection.
    public enum Event: Sendable, Equatable {
        case text(String)
        case binary([UInt8])
        /// The connection ended. `code` is the server's close code, or nil when it dropped without one.
        case closed(code: UInt16?, reason: String)
    }

    public let events: AsyncStream<Event>
    public let channel: any Channel
    private let state: NIOLockedValueBox<(closeCode: UInt16?, reason: String)>

    private init(
        channel: any Channel,
        events: AsyncStream<Event>,
        state: NIOLockedValueBox<(closeCode: UInt16?, reason: String)>
    ) {
        self.channel = channel
        self.events = events
        self.state = state
    }

    /// Connects and completes the upgrade. Throws ``WebSocketClientError/upgradeRefused(status:)`` when the
    /// server answers with anything but 101.
    public static func connect(
        to url: WebSocketURL,
        headers: [(String, String)] = [],
        group: any EventLoopGroup,
        maxFrameSize: Int = 1 << 20,
        localAddress: SocketAddress? = nil,
        tls: ClientTLSOptions = ClientTLSOptions(),
        configure: (@Sendable (any Channel) throws -> Void)? = nil
    ) async throws -> WebSocketClient {
        let clientTLS = url.secure ? try ClientTLS(options: tls, host: url.host) : nil
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .unbounded)
        let state = NIOLockedValueBox<(closeCode: UInt16?, reason: String)>((nil, ""))
        let eventLoop = group.next()
        let upgraded = eventLoop.makePromise(of: Void.self)
        let watcher = HandshakeWatcher(promise: upgraded)
        let upgrader = NIOWebSocketClientUpgrader(
            maxFrameSize: maxFrameSize,
            automaticErrorHandling: false
        ) { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                channel.pipeline.syncOperations.removeHandler(watcher).whenComplete { _ in }
                try channel.pipeline.syncOperations.addHandler(
                    ClientFrameHandler(continuation: continuation, state: state)
                )
                upgraded.succeed()
            }
        }
        var bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configure?(channel)
                    try clientTLS?.addHandler(to: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes,
                        withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                    )
                    try channel.pipeline.syncOperations.addHandler(watcher)
                }
            }
        if let localAddress {
            bootstrap = bootstrap.bind(to: localAddress)
        }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: url.host, port: url.port).get()
        } catch {
            upgraded.fail(error)  // never completed otherwise: a leaked promise (a crash in debug builds)
            throw error
        }
        channel.closeFuture.whenComplete { _ in
            upgraded.fail(WebSocketClientError.connectionClosed)
        }
        var requestHeaders = HTTPHeaders()
        requestHeaders.add(name: "Host", value: "\(url.host):\(url.port)")
        requestHeaders.add(contentsOf: headers)
        requestHeaders.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: url.target, headers: requestHeaders)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        do {
            try await upgraded.futureResult.get()
        } catch {
            try? await channel.close()
            throw error
        }
        return WebSocketClient(channel: channel, events: stream, state: state)
    }

    /// Convenience: parse `url` and connect.
    public static func connect(
        to url: String,
        headers: [(String, String)] = [],
        group: any EventLoopGroup
    ) async throws -> WebSocketClient {
        try await connect(to: try WebSocketURL(url), headers: headers, group: group)
    }

    /// Sends one text message.
    public func send(_ text: String) {
        self.send(frame: WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text)))
    }

    /// Sends a frame as is (tests use this for frames a well-behaved client never sends). The frame is
    /// masked with a random key unless `masked` is false.
    public func send(frame: WebSocketFrame, masked: Bool = true, flush: Bool = true) {
        var frame = frame
        if masked && frame.maskKey == nil {
            frame.maskKey = .random()
        }
        if flush {
            channel.writeAndFlush(frame, promise: nil)
        } else {
            channel.write(frame, promise: nil)
        }
    }

    /// Sends a close frame; the connection ends when the server answers.
    public func close(code: UInt16 = 1000, reason: String = "") {
        var data = ByteBuffer()
        data.writeInteger(code)
        data.writeString(reason)
        self.send(frame: WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
    }

    /// Drops the TCP connection without a close frame (what a network failure looks like to the server).
    public func abort() {
        channel.close(promise: nil)
    }

    /// Waits until the connection is closed; returns the server's close code, if it sent one.
    @discardableResult
    public func closed() async -> UInt16? {
        try? await channel.closeFuture.get()
        return state.withLockedValue { $0.closeCode }
    }
}

/// Fails the connect when the server answers the upgrade with a status other than 101.
private final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = Self.unwrapInboundIn(data) {
            promise.fail(WebSocketClientError.upgradeRefused(status: Int(head.status.code)))
            context.close(promise: nil)
        }
    }
}

/// Delivers frames as events, answers pings, completes the close handshake.
private final class ClientFrameHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let continuation: AsyncStream<WebSocketClient.Event>.Continuation
    private let state: NIOLockedValueBox<(closeCode: UInt16?, reason: String)>
    private var fragments: ByteBuffer?
    private var fragmentOpcode: WebSocketOpcode = .text
    private var sentClose = false

    init(
        continuation: AsyncStream<WebSocketClient.Event>.Continuation,
        state: NIOLockedValueBox<(closeCode: UInt16?, reason: String)>
    ) {
        self.continuation = continuation
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                deliver(frame.opcode, frame.data)
            } else {
                fragments = frame.data
                fragmentOpcode = frame.opcode
            }
        case .continuation:
            var data = frame.data
            fragments?.writeBuffer(&data)
            if frame.fin, let whole = fragments {
                fragments = nil
                deliver(fragmentOpcode, whole)
            }
        case .ping:
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.data)),
                promise: nil
            )
        case .connectionClose:
            var data = frame.data
            let code = data.readInteger(as: UInt16.self)
            let reason = data.readString(length: data.readableBytes) ?? ""
            state.withLockedValue { $0 = (code, reason) }
            if !sentClose {
                sentClose = true
                var reply = context.channel.allocator.buffer(capacity: 2)
                if let code { reply.writeInteger(code) }
                context.writeAndFlush(
                    Self.wrapOutboundOut(
                        WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: reply)
                    ),
                    promise: nil
                )
            }
            context.close(promise: nil)
        default:
            break
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if Self.unwrapOutboundIn(data).opcode == .connectionClose { sentClose = true }
        context.write(data, promise: promise)
    }

    private func deliver(_ opcode: WebSocketOpcode, _ data: ByteBuffer) {
        if opcode == .text {
            continuation.yield(.text(String(buffer: data)))
        } else {
            continuation.yield(.binary(Array(buffer: data)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let (code, reason) = state.withLockedValue { ($0.closeCode, $0.reason) }
        continuation.yield(.closed(code: code, reason: reason))
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
