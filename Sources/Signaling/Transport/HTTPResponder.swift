import NIOCore
import NIOHTTP1

/// Writes a whole HTTP response and, when `close` is set, closes the connection once it is sent.
enum HTTPResponder {
    static func respond(
        context: ChannelHandlerContext,
        status: HTTPResponseStatus,
        contentType: String = "text/plain; charset=utf-8",
        body: ByteBuffer? = nil,
        extraHeaders: [(String, String)] = [],
        headOnly: Bool = false
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        headers.add(name: "Connection", value: "close")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(contentsOf: extraHeaders)
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        if let body, !headOnly {
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
        }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }

    static func text(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        respond(context: context, status: status, body: context.channel.allocator.buffer(string: message + "\n"))
    }
}
