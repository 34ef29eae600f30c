import CoreMetrics
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import Signaling

/// A closed connection must leave nothing behind: its handler and outbox are freed once the hub lets go.
@Suite struct HandlerLifetimeTests {
    private static func makeHandler(hub: Hub, loop: EmbeddedEventLoop) -> WebSocketHandler {
        let settings = WebSocketSettings(
            heartbeatInterval: .seconds(25),
            heartbeatTimeout: .seconds(60),
            closeTimeout: .seconds(5),
            outboundQueueBytes: 1 << 20,
            maxMessageBytes: 65_536,
            maxFrameBytes: 65_536,
            maxFragments: 64,
            rateBurst: 100,
            ratePerSecond: 50,
            rateMaxStrikes: 10,
            decoder: MessageDecoder()
        )
        let metrics = HubMetrics(factory: NOOPMetricsHandler.instance)
        return WebSocketHandler(
            role: .session(hub: hub, request: .fresh(peer: nil, subject: nil, grant: .all), refusal: nil),
            shared: WebSocketShared(settings: settings, metrics: metrics, logger: Logger(label: "test")),
            sweep: HeartbeatSweep(eventLoop: loop, period: .seconds(5))
        )
    }

    @Test func aClosedSessionsHandlerAndOutboxAreFreed() throws {
        let metrics = HubMetrics(factory: NOOPMetricsHandler.instance)
        let hub = Hub(
            limits: HubLimits(),
            welcome: WelcomeTemplate(
                heartbeatInterval: 25,
                heartbeatTimeout: 60,
                iceServersJSON: "[]",
                limitsJSON: "{}"
            ),
            metrics: metrics
        )
        weak var released: WebSocketHandler?
        do {
            let channel = EmbeddedChannel()
            let handler = Self.makeHandler(hub: hub, loop: channel.embeddedEventLoop)
            released = handler
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            #expect(hub.snapshot().sessions == 1)
            _ = try channel.finish(acceptAlreadyClosed: true)
        }
        #expect(hub.snapshot().connections == 0)
        #expect(released == nil, "the handler of a closed connection is still referenced (a cycle through its outbox)")
    }
}
