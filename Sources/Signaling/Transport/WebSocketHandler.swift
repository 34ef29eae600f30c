import CoreMetrics
import Logging
import NIOCore
import NIOWebSocket

/// What a WebSocket connection serves.
enum WebSocketRole {
    /// `/echo`: every message is sent back (conformance testing).
    case echo
    /// `/ws`: a signaling session. `refusal` closes the connection right after the upgrade (e.g. 4001
    /// for a bad token) so a browser learns why, which a refused upgrade cannot tell it.
    case session(hub: Hub, request: OpenRequest, refusal: (ErrorCode, CloseCode, String)?)
}

/// Per-connection settings, taken from ``ServerConfiguration``.
struct WebSocketSettings {
    var heartbeatInterval: TimeAmount
    var heartbeatTimeout: TimeAmount
    var closeTimeout: TimeAmount
    var outboundQueueBytes: Int
    var maxMessageBytes: Int
    var rateBurst: Int
    var ratePerSecond: Int
    var rateMaxStrikes: Int
    var decoder: MessageDecoder
}

/// Translates WebSocket frames to hub events and hub decisions back to frames, and owns the connection-
/// level protocol: UTF-8 validation, ping/pong, the close handshake, heartbeats, rate limiting and the
/// bounded outbound queue. Every decision about sessions and rooms is the hub's.
final class WebSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum State {
        case open
        /// The server sent a close frame and waits for the client's.
        case closing
        case closed
    }

    private let role: WebSocketRole
    private let settings: WebSocketSettings
    private let metrics: HubMetrics
    private var logger: Logger
    private var state = State.open
    private var clientSentClose = false
    private var clientCloseCode: UInt16?
    private var serverCloseCode: CloseCode?
    private var lastInbound = NIODeadline.now()
    private var heartbeat: RepeatedTask?
    private var closeTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var connection: ConnectionID?
    private var outbox: Outbox?
    private var rate: RateLimiter

    init(role: WebSocketRole, settings: WebSocketSettings, metrics: HubMetrics, logger: Logger) {
        self.role = role
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        self.rate = RateLimiter(
            burst: settings.rateBurst,
            ratePerSecond: settings.ratePerSecond,
            maxStrikes: settings.rateMaxStrikes,
            now: NIODeadline.now().uptimeNanoseconds
        )
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.lastInbound = .now()
        let interval = settings.heartbeatInterval
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.heartbeat = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            loopBound.value.heartbeatTick()
        }
        metrics.connectionsOpened.increment()

        guard case .session(let hub, let request, let refusal) = role else { return }
        let eventLoop = context.eventLoop
        let outbox = Outbox(limit: settings.outboundQueueBytes) {
            eventLoop.execute { loopBound.value.drainOutbox() }
        }
        self.outbox = outbox
        if let (errorCode, closeCode, reason) = refusal {
            metrics.errors[errorCode]?.increment()
            self.write(ServerMessage.error(errorCode, reason, id: nil))
            self.initiateClose(closeCode, reason: reason)
            return
        }
        let connection = hub.makeConnectionID()
        self.connection = connection
        self.logger[metadataKey: "connection.id"] = "\(connection)"
        let outcome = hub.open(connection, outbox: outbox, request: request)
        switch outcome {
        case .opened(let peer, let resumed, let gap, let replayed):
            self.logger[metadataKey: "peer.id"] = "\(peer)"
            logger.debug("session open", metadata: ["resumed": "\(resumed)", "gap": "\(gap)", "replayed": "\(replayed)"])
        case .refused(let code):
            logger.debug("session refused", metadata: ["close.code": "\(code.rawValue)"])
        }
        self.drainOutbox()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stopTimers()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stopTimers()
        self.state = .closed
        let keep: Bool
        if let code = serverCloseCode {
            keep = code.keepsSession
            metrics.recordClose(code.rawValue)
        } else if clientSentClose {
            keep = false
            metrics.recordClose(clientCloseCode ?? 1000)
        } else {
            keep = true
            metrics.recordClose(1006)
        }
        if case .session(let hub, _, _) = role, let connection {
            hub.closed(connection, keepSession: keep)
            logger.debug("connection closed", metadata: ["session.kept": "\(keep)"])
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.drainOutbox() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            self.initiateClose(.goingAway, reason: "server shutting down")
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case let violation as WebSocketViolation:
            self.initiateClose(violation.code, reason: violation.reason)
        case NIOWebSocketError.invalidFrameLength:
            self.initiateClose(.messageTooBig, reason: "message too big")
        case let aggregation as NIOWebSocketFrameAggregator.Error:
            switch aggregation {
            case .accumulatedFrameSizeIsTooLarge, .tooManyFragments:
                self.initiateClose(.messageTooBig, reason: "message too big")
            default:
                self.initiateClose(.protocolError, reason: "invalid fragmentation")
            }
        case is NIOWebSocketError:
            self.initiateClose(.protocolError, reason: "protocol error")
        default:
            // I/O errors: the connection is gone; the session waits for a resume.
            logger.debug("connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        self.lastInbound = .now()
        switch state {
        case .open: break
        case .closing:
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        case .closed: return
        }
        var payload = frame.data
        if let key = frame.maskKey { payload.webSocketUnmask(key) }
        switch frame.opcode {
        case .text:
            metrics.bytesIn.increment(by: payload.readableBytes)
            guard payload.readableBytes <= settings.maxMessageBytes else {
                self.initiateClose(.messageTooBig, reason: "message too big")
                return
            }
            guard payload.isValidUTF8 else {
                self.initiateClose(.invalidPayload, reason: "text message is not valid UTF-8")
                return
            }
            self.receivedText(payload)
        case .binary:
            if case .echo = role {
                self.writeFrame(WebSocketFrame(fin: true, opcode: .binary, data: payload), flush: true)
            } else {
                self.initiateClose(.unsupportedData, reason: "binary frames are not accepted")
            }
        case .ping:
            self.writeFrame(WebSocketFrame(fin: true, opcode: .pong, data: payload), flush: true)
        case .pong:
            break
        case .connectionClose:
            self.receivedClose(payload)
        default:
            self.initiateClose(.protocolError, reason: "unexpected frame")
        }
    }

    private func receivedText(_ text: ByteBuffer) {
        guard case .session(let hub, _, _) = role, let connection else {
            self.write(text)
            self.flush()
            return
        }
        metrics.messagesIn.increment()
        switch rate.take(now: NIODeadline.now().uptimeNanoseconds) {
        case .allow: break
        case .refuse:
            metrics.errors[.rateLimited]?.increment()
            self.write(ServerMessage.error(.rateLimited, "slow down: at most \(settings.ratePerSecond) messages/s", id: nil))
            self.flush()
            return
        case .disconnect:
            self.initiateClose(.policyViolation, reason: "rate limit exceeded")
            return
        }
        switch settings.decoder.decode(text) {
        case .success(let message):
            hub.receive(connection, message)
            self.drainOutbox()
        case .failure(let error):
            metrics.errors[error.code]?.increment()
            self.write(ServerMessage.error(error))
            self.flush()
        }
    }

    /// A close frame from the client: validate it, answer it, close the socket.
    private func receivedClose(_ payload: ByteBuffer) {
        clientSentClose = true
        var payload = payload
        var reply = CloseCode.normal.rawValue
        var replyEmpty = payload.readableBytes == 0
        if payload.readableBytes == 1 {
            reply = CloseCode.protocolError.rawValue
            replyEmpty = false
        } else if let code = payload.readInteger(as: UInt16.self) {
            clientCloseCode = code
            if !Self.isValidCloseCode(code) {
                reply = CloseCode.protocolError.rawValue
            } else if !payload.isValidUTF8 {
                reply = CloseCode.invalidPayload.rawValue
            } else {
                reply = code
            }
        }
        var data = context!.channel.allocator.buffer(capacity: 2)
        if !replyEmpty { data.writeInteger(reply) }
        self.state = .closed
        let context = self.context!
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
            .whenComplete { _ in loopBound.value.close(promise: nil) }
    }

    /// Codes a peer may send (RFC 6455 §7.4.1 and the IANA registry; 1004–1006 and 1015 never go on the wire).
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: return true
        default: return false
        }
    }

    /// Sends a close frame and waits (up to the close timeout) for the client's before closing the socket.
    func initiateClose(_ code: CloseCode, reason: String) {
        guard case .open = state, let context else { return }
        state = .closing
        serverCloseCode = code
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code.rawValue)
        data.writeString(String(reason.utf8.prefix(123)) ?? "")
        context.writeAndFlush(Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        closeTimer = context.eventLoop.scheduleTask(in: settings.closeTimeout) {
            loopBound.value.close(promise: nil)
        }
    }

    /// Writes what the hub queued for this connection.
    func drainOutbox() {
        guard let outbox, let context, case .open = state else { return }
        if outbox.isOverflowed {
            self.initiateClose(.tryAgainLater, reason: "slow consumer: outbound queue full")
            return
        }
        guard context.channel.isWritable else { return }
        let (items, overflowed) = outbox.take()
        if overflowed {
            self.initiateClose(.tryAgainLater, reason: "slow consumer: outbound queue full")
            return
        }
        for item in items {
            switch item {
            case .text(let buffer):
                self.write(buffer)
            case .close(let code, let reason):
                self.flush()
                self.initiateClose(code, reason: reason)
                return
            }
        }
        if !items.isEmpty { self.flush() }
    }

    private func heartbeatTick() {
        guard let context else { return }
        if NIODeadline.now() - lastInbound > settings.heartbeatTimeout {
            logger.debug("heartbeat timeout")
            context.close(promise: nil)  // a dead peer cannot take a close frame: treat as a drop
            return
        }
        self.writeFrame(WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0)), flush: true)
    }

    private func write(_ text: ByteBuffer) {
        metrics.bytesOut.increment(by: text.readableBytes)
        self.writeFrame(WebSocketFrame(fin: true, opcode: .text, data: text), flush: false)
    }

    private func flush() {
        context?.flush()
    }

    private func writeFrame(_ frame: WebSocketFrame, flush: Bool) {
        guard let context else { return }
        context.write(Self.wrapOutboundOut(frame), promise: nil)
        if flush { context.flush() }
    }

    private func stopTimers() {
        heartbeat?.cancel()
        heartbeat = nil
        closeTimer?.cancel()
        closeTimer = nil
    }
}
