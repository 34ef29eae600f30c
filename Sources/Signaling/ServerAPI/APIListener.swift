import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Where the server API listens and what it allows (`--api-listen`, `--api-key-file`, the rate flags).
public struct APIConfiguration: Sendable {
    /// Address and port of the API's own listener (`--api-listen HOST:PORT`), apart from the WebSocket
    /// port, so it can stay on a private interface.
    public var host: String
    public var port: Int
    /// Keys, body limit and rate limit.
    public var router: APIRouter.Configuration
    /// Time a connection has to send its whole request (slowloris defence).
    public var requestTimeout: TimeAmount = .seconds(10)

    public init(host: String, port: Int, keys: APIKeys) {
        self.host = host
        self.port = port
        self.router = APIRouter.Configuration(keys: keys)
    }
}

/// The server API's HTTP listener: binds its own port, serves each connection one request with an
/// ``APIHTTPHandler``, and routes through one ``APIRouter`` (its rate buckets behind a lock). The server
/// starts it after its own port and closes it when it drains.
public final class APIListener: Sendable {
    public let configuration: APIConfiguration
    let backend: any ServerAPIBackend
    private let router: NIOLockedValueBox<APIRouter>
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let logger: Logger
    private let maxHeaderCount: Int
    private let maxHeaderBytes: Int

    public init(
        configuration: APIConfiguration,
        backend: any ServerAPIBackend,
        logger: Logger,
        maxHeaderCount: Int = 100,
        maxHeaderBytes: Int = 16 * 1024
    ) {
        self.configuration = configuration
        self.backend = backend
        self.router = NIOLockedValueBox(APIRouter(configuration: configuration.router))
        self.logger = logger
        self.maxHeaderCount = maxHeaderCount
        self.maxHeaderBytes = maxHeaderBytes
    }

    var maxBodyBytes: Int { configuration.router.maxBodyBytes }
    var requestTimeout: TimeAmount { configuration.requestTimeout }

    func route(_ request: APIRequest) -> APIRouter.Decision {
        let now = NIODeadline.now().uptimeNanoseconds
        return router.withLockedValue { $0.route(request, now: now) }
    }

    /// Binds; returns the bound port.
    @discardableResult
    public func start(group: any EventLoopGroup) async throws -> Int {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = maxHeaderCount
        limits.maxHeaderListSize = maxHeaderBytes
        limits.maxHeaderFieldSize = maxHeaderBytes
        let decoderLimits = limits
        let bound = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        ByteToMessageHandler(
                            HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: decoderLimits)
                        )
                    )
                    try sync.addHandler(HTTPResponseEncoder())
                    try sync.addHandler(APIHTTPHandler(listener: self))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        channel.withLockedValue { $0 = bound }
        let port = bound.localAddress?.port ?? configuration.port
        logger.info(
            "server API listening",
            metadata: [
                "address": "\(configuration.host):\(port)", "api.keys": "\(configuration.router.keys.keys.count)",
            ]
        )
        return port
    }

    /// The bound port, once started.
    public var localPort: Int? { channel.withLockedValue { $0?.localAddress?.port } }

    /// Stops accepting (calls in progress finish).
    public func stop() async {
        let bound = channel.withLockedValue { channel in
            defer { channel = nil }
            return channel
        }
        try? await bound?.close()
    }
}
