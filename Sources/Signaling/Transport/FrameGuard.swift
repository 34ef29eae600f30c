import NIOCore
import NIOWebSocket

/// A WebSocket protocol violation and the close code it earns.
struct WebSocketViolation: Error {
    var code: CloseCode
    var reason: String
    /// Whether frames can still be read after it. False after a framing error: NIO's frame decoder
    /// stops decoding for good, so the client's close frame could never arrive and the server closes the
    /// socket right after sending its own (RFC 6455 §7.1.7, "Fail the WebSocket Connection").
    var inboundUsable: Bool = true

    /// The violation an error from the WebSocket pipeline stands for; nil for I/O errors.
    init?(_ error: any Error) {
        switch error {
        case let violation as WebSocketViolation:
            self = violation
        case NIOWebSocketError.invalidFrameLength:
            self.init(code: .messageTooBig, reason: "frame too big", inboundUsable: false)
        case is NIOWebSocketError:
            self.init(code: .protocolError, reason: "invalid frame", inboundUsable: false)
        case let aggregation as NIOWebSocketFrameAggregator.Error:
            // A backstop: FrameGuard enforces the same limits and rules first.
            switch aggregation {
            case .accumulatedFrameSizeIsTooLarge, .tooManyFragments:
                self.init(code: .messageTooBig, reason: "message too big")
            default:
                self.init(code: .protocolError, reason: "invalid fragmentation")
            }
        default:
            return nil
        }
    }

    init(code: CloseCode, reason: String, inboundUsable: Bool = true) {
        self.code = code
        self.reason = reason
        self.inboundUsable = inboundUsable
    }
}

/// Carries out ``InboundFrameValidator``'s verdicts between NIO's frame decoder and the fragment
/// aggregator: unmasks each frame (so nothing downstream unmasks again), passes valid frames on,
/// reports violations as ``WebSocketViolation`` errors and drops data frames once the connection is
/// failing.
final class FrameGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    /// Sent down the pipeline for every data frame dropped while the connection is failing, so the
    /// ``WebSocketHandler`` can count it against the client's slack for frames sent after a close.
    struct DroppedFrame {}

    private var validator: InboundFrameValidator

    init(maxMessageBytes: Int, maxFragments: Int) {
        self.validator = InboundFrameValidator(maxMessageBytes: maxMessageBytes, maxFragments: maxFragments)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = Self.unwrapInboundIn(data)
        let masked = frame.maskKey != nil
        if let key = frame.maskKey {
            frame.data.webSocketUnmask(key)
            frame.maskKey = nil
        }
        let verdict = frame.data.withUnsafeReadableBytes { payload in
            validator.inspect(
                fin: frame.fin,
                opcode: frame.opcode,
                reservedBits: frame.rsv1 || frame.rsv2 || frame.rsv3,
                masked: masked,
                payload: payload
            )
        }
        switch verdict {
        case .accept:
            context.fireChannelRead(Self.wrapInboundOut(frame))
        case .reject(let code, let reason):
            context.fireErrorCaught(WebSocketViolation(code: code, reason: reason))
        case .drop:
            context.fireUserInboundEventTriggered(DroppedFrame())
        }
    }
}
