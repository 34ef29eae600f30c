import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The WebSocket upgrade: NIO's ``NIOWebSocketServerUpgrader`` checks the request and builds the 101
/// response, but the pipeline after the upgrade is ours. NIO's own `upgrade` would add its frame
/// decoder and its `WebSocketFrameEncoder` (which cannot be removed again); ``WebSocketHandler`` reads
/// and writes frames itself, so `upgradePipelineHandler` adds everything.
struct WebSocketUpgrader: HTTPServerProtocolUpgrader {
    private let checks: NIOWebSocketServerUpgrader
    private let upgradePipelineHandler: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<Void>

    /// - Parameters:
    ///   - maxFrameSize: the largest frame NIO's checks accept.
    ///   - shouldUpgrade: extra response headers for a request to upgrade, or nil to refuse it.
    ///   - upgradePipelineHandler: adds the handlers after the frame decoder.
    init(
        maxFrameSize: Int,
        shouldUpgrade: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>,
        upgradePipelineHandler: @escaping @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<Void>
    ) {
        self.checks = NIOWebSocketServerUpgrader(
            maxFrameSize: maxFrameSize,
            automaticErrorHandling: false,
            shouldUpgrade: shouldUpgrade,
            upgradePipelineHandler: { channel, _ in channel.eventLoop.makeSucceededVoidFuture() }
        )
        self.upgradePipelineHandler = upgradePipelineHandler
    }

    var supportedProtocol: String { checks.supportedProtocol }

    var requiredUpgradeHeaders: [String] { checks.requiredUpgradeHeaders }

    func buildUpgradeResponse(
        channel: any Channel,
        upgradeRequest: HTTPRequestHead,
        initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        checks.buildUpgradeResponse(
            channel: channel,
            upgradeRequest: upgradeRequest,
            initialResponseHeaders: initialResponseHeaders
        )
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        self.upgradePipelineHandler(context.channel, upgradeRequest)
    }
}
