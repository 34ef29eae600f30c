import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Reads a server's `/metrics` over HTTP/1.1 (with `tls`, over TLS): what `signal bench` and the mesh
/// harness sample while they run.
public enum MetricsFetcher {
    /// The body of `GET /metrics`, or nil when the server does not answer 200 within 3 s.
    public static func fetch(host: String, port: Int, tls: ClientTLS? = nil, group: any EventLoopGroup) async -> String?
    {
        let collector = ResponseCollector()
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(3))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try tls?.addHandler(to: channel.pipeline.syncOperations)
                        try channel.pipeline.syncOperations.addHandler(ResponseHandler(collector: collector))
                    }
                }
                .connect(host: host, port: port).get()
            let request = "GET /metrics HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n"
            try await channel.writeAndFlush(ByteBuffer(string: request)).get()
            let timeout = channel.eventLoop.scheduleTask(in: .seconds(3)) { channel.close(promise: nil) }
            try? await channel.closeFuture.get()
            timeout.cancel()
        } catch {
            return nil
        }
        let response = collector.text
        guard response.hasPrefix("HTTP/1.1 200"), let bodyStart = response.range(of: "\r\n\r\n") else { return nil }
        return String(response[bodyStart.upperBound...])
    }
}

private final class ResponseCollector: Sendable {
    private let bytes = NIOLockedValueBox<[UInt8]>([])
    func append(_ buffer: ByteBuffer) { bytes.withLockedValue { $0.append(contentsOf: buffer.readableBytesView) } }
    var text: String { String(decoding: bytes.withLockedValue { $0 }, as: UTF8.self) }
}

/// Collects an HTTP response; closes once the `Content-Length` body is in (or the server closes).
private final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let collector: ResponseCollector
    private var received: [UInt8] = []

    init(collector: ResponseCollector) {
        self.collector = collector
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        collector.append(buffer)
        received.append(contentsOf: buffer.readableBytesView)
        let text = String(decoding: received, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n") else { return }
        let head = text[..<headerEnd.lowerBound].lowercased()
        guard let lengthLine = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
            let length = Int(lengthLine.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        else { return }
        if text.utf8.distance(from: headerEnd.upperBound, to: text.endIndex) >= length {
            context.close(promise: nil)
        }
    }
}
