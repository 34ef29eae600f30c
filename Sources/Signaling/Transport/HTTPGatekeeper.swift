import NIOCore
import NIOHTTP1

/// Guards the HTTP phase of every connection, before any upgrade: the handshake timeout (slowloris),
/// header limits (431), connection caps (503), method and `Origin` checks on the WebSocket paths (405,
/// 403). Refused requests are answered here and never reach the upgrader. Removed on upgrade.
///
/// On a trusted proxy's connection (`forwardedClients`), a request for a WebSocket path is counted under
/// the client it names (`X-Forwarded-For`) before it goes on, once per connection; 503 at that client's
/// per-IP cap.
final class HTTPGatekeeper: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let originPolicy: OriginPolicy
    private let webSocketPaths: Set<String>
    private let deadline: NIODeadline
    private let overCapacity: Bool
    /// Counts a trusted proxy's client (nil: the connection is not a trusted proxy's).
    private let forwardedClients: (any WebSocketHandshakeHost)?
    private var timer: Scheduled<Void>?
    private var swallowing = false
    private var busy = false
    /// The connection's client has been counted (``forwardedClients``).
    private var clientCounted = false

    /// - Parameters:
    ///   - deadline: when the handshake timeout closes the connection.
    ///   - forwardedClients: for a trusted proxy's connection, what counts the client its request names.
    init(
        originPolicy: OriginPolicy,
        webSocketPaths: Set<String>,
        deadline: NIODeadline,
        overCapacity: Bool,
        forwardedClients: (any WebSocketHandshakeHost)? = nil
    ) {
        self.originPolicy = originPolicy
        self.webSocketPaths = webSocketPaths
        self.deadline = deadline
        self.overCapacity = overCapacity
        self.forwardedClients = forwardedClients
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            loopBound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        if swallowing { return }
        guard case .head(let head) = part else {
            context.fireChannelRead(data)
            return
        }
        busy = true
        if overCapacity {
            return refuse(context, .serviceUnavailable, Self.overCapacityMessage)
        }
        let request = UpgradeRequest(head)
        if webSocketPaths.contains(request.path) {
            guard head.method == .GET else {
                return refuse(context, .methodNotAllowed, "use GET with an Upgrade: websocket header")
            }
            guard originPolicy.allows(origin: request.origin, host: request.host) else {
                return refuse(context, .forbidden, "origin not allowed")
            }
            if let forwardedClients, !clientCounted {
                clientCounted = true
                let forwardedFor = head.headers["X-Forwarded-For"]
                guard forwardedClients.admitForwardedClient(context.channel, forwardedFor: forwardedFor) != nil else {
                    return refuse(context, .serviceUnavailable, Self.overCapacityMessage)
                }
            }
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !swallowing, context.channel.isActive else { return }
        swallowing = true
        switch parserError {
        case .headerOverflow:
            HTTPResponder.text(context, .requestHeaderFieldsTooLarge, "request headers too large")
        default:
            HTTPResponder.text(context, .badRequest, "malformed HTTP request")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, !busy {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private static let overCapacityMessage = "server is at its connection limit; retry later"

    private func refuse(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        swallowing = true
        HTTPResponder.text(context, status, message)
    }
}
