import Logging
import NIOCore

/// What a WebSocket connection serves.
enum WebSocketRole {
    /// `/echo`: every message is sent back (conformance testing).
    case echo
    /// `/ws`: a signaling session. `refusal` closes the connection right after the upgrade (e.g. 4001
    /// for a bad token) so a browser learns why, which a refused upgrade cannot tell it.
    case session(hub: any SessionHub, request: OpenRequest, refusal: Refusal?)
}

/// Connection settings, taken from ``ServerConfiguration``.
struct WebSocketSettings: Sendable {
    var heartbeatInterval: TimeAmount
    var heartbeatTimeout: TimeAmount
    var closeTimeout: TimeAmount
    var outboundQueueBytes: Int
    var maxMessageBytes: Int
    /// Largest frame accepted (a larger declared length closes with 1009 before anything is buffered).
    var maxFrameBytes: Int
    /// Most frames one message may arrive in.
    var maxFragments: Int
    var rateBurst: Int
    var ratePerSecond: Int
    var rateMaxStrikes: Int
    var decoder: MessageDecoder
}

/// What every connection of one kind (`/ws` or `/echo`) shares: one object per server instead of a copy
/// of the settings, the metrics and the logger in every connection's handler.
final class WebSocketShared: Sendable {
    let settings: WebSocketSettings
    let metrics: HubMetrics
    /// Per-connection metadata is passed at each log call (``WebSocketHandler``'s `logMetadata`) rather
    /// than stored, which would copy the logger's metadata for every connection.
    let logger: Logger
    let ratePolicy: RateLimiter.Policy

    init(settings: WebSocketSettings, metrics: HubMetrics, logger: Logger) {
        self.settings = settings
        self.ratePolicy = RateLimiter.Policy(
            burst: settings.rateBurst,
            ratePerSecond: settings.ratePerSecond,
            maxStrikes: settings.rateMaxStrikes
        )
        self.metrics = metrics
        self.logger = logger
    }
}
