import NIOCore
import NIOHTTP1

/// Answers the plain HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, the demo page and the SDK.
final class HTTPRouter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: HTTPEndpoints
    private var answered = false

    init(endpoints: HTTPEndpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = Self.unwrapInboundIn(data), !answered else { return }
        answered = true
        let request = UpgradeRequest(head)
        guard head.method == .GET || head.method == .HEAD else {
            return HTTPResponder.text(context, .methodNotAllowed, "method not allowed")
        }
        let headOnly = head.method == .HEAD
        switch request.path {
        case "/healthz":
            HTTPResponder.text(context, .ok, "ok")
        case "/readyz":
            if endpoints.isReady() {
                HTTPResponder.text(context, .ok, "ready")
            } else {
                HTTPResponder.text(context, .serviceUnavailable, "not ready")
            }
        case "/metrics":
            let body = context.channel.allocator.buffer(bytes: endpoints.metrics())
            HTTPResponder.respond(
                context: context,
                status: .ok,
                contentType: "text/plain; version=0.0.4; charset=utf-8",
                body: body,
                headOnly: headOnly
            )
        case "/ws", "/echo":
            HTTPResponder.text(context, .upgradeRequired, "this endpoint speaks WebSocket only")
        default:
            guard let asset = endpoints.assets[request.path] else {
                return HTTPResponder.text(context, .notFound, "not found")
            }
            HTTPResponder.respond(
                context: context,
                status: .ok,
                contentType: asset.contentType,
                body: context.channel.allocator.buffer(bytes: asset.body),
                extraHeaders: asset.headers,
                headOnly: headOnly
            )
        }
    }
}

/// What the router serves, provided by the server.
struct HTTPEndpoints: Sendable {
    struct Asset: Sendable {
        var contentType: String
        var body: [UInt8]
        var headers: [(String, String)]
    }

    var assets: [String: Asset]
    var isReady: @Sendable () -> Bool
    var metrics: @Sendable () -> [UInt8]
}
