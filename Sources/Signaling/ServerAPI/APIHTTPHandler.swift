import NIOCore
import NIOHTTP1

/// The server API's HTTP handler: reads one request (its body up to the limit, discarding the rest), asks
/// the ``APIRouter`` what to do, makes the backend call if one is needed, writes the JSON answer and
/// closes the connection. Bytes ↔ events only: every decision is the router's.
final class APIHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Most bytes of an oversized body read (and discarded) before the 413 goes out anyway.
    static let maxDiscardedBytes = 16 * 1024 * 1024

    private let listener: APIListener
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var tooLarge = false
    private var discarded = 0
    private var answered = false
    private var timeout: Scheduled<Void>?

    init(listener: APIListener) {
        self.listener = listener
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(in: listener.requestTimeout) {
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            let declared = head.headers.first(name: "Content-Length").flatMap(Int.init) ?? 0
            if declared > listener.maxBodyBytes { tooLarge = true }
        case .body(var chunk):
            if tooLarge || body.readableBytes + chunk.readableBytes > listener.maxBodyBytes {
                tooLarge = true
                body.clear()
                discarded += chunk.readableBytes
                if discarded > Self.maxDiscardedBytes { self.finish(context) }
            } else {
                body.writeBuffer(&chunk)
            }
        case .end:
            self.finish(context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !answered else { return context.close(promise: nil) }
        answered = true
        let status = (error as? HTTPParserError).map { $0 == .headerOverflow ? 431 : 400 } ?? 400
        Self.write(APIRouter.error(status, "bad_request", "unreadable HTTP request"), context: context)
    }

    private func finish(_ context: ChannelHandlerContext) {
        guard let head, !answered else { return }
        answered = true
        let request = APIRequest(
            method: head.method.rawValue,
            uri: head.uri,
            authorization: head.headers.first(name: "Authorization"),
            body: body,
            bodyTooLarge: tooLarge
        )
        switch listener.route(request) {
        case .respond(let response):
            Self.write(response, context: context)
        case .call(let call, let tenant):
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            Self.perform(call, tenant: tenant, on: listener.backend) { response in
                loop.execute { Self.write(response, context: bound.value) }
            }
        }
    }

    /// Makes the backend call off the event loop and hands its rendered answer to `reply`.
    static func perform(
        _ call: APICall,
        tenant: Tenant,
        on backend: any ServerAPIBackend,
        reply: @escaping @Sendable (APIResponse) -> Void
    ) {
        Task {
            let outcome = await backend.perform(call)
            reply(APIRouter.render(call, tenant: tenant, outcome: outcome))
        }
    }

    static func write(_ response: APIResponse, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(response.body.readableBytes))
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        for (name, value) in response.headers.sorted(by: { $0.key < $1.key }) { headers.add(name: name, value: value) }
        let head = HTTPResponseHead(
            version: .http1_1,
            status: HTTPResponseStatus(statusCode: response.status),
            headers: headers
        )
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }
}
