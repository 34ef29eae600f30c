import NIOCore
import NIOWebSocket

/// A WebSocket protocol violation and the close code it earns.
struct WebSocketViolation: Error {
    var code: CloseCode
    var reason: String
}

/// Enforces the RFC 6455 rules NIO's frame decoder leaves to the server, before fragments are
/// aggregated: client frames must be masked (§5.1), no reserved bits without a negotiated extension
/// (§5.2), no reserved opcodes.
final class FrameGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        if frame.maskKey == nil {
            context.fireErrorCaught(WebSocketViolation(code: .protocolError, reason: "client frames must be masked"))
            return
        }
        if frame.rsv1 || frame.rsv2 || frame.rsv3 {
            context.fireErrorCaught(WebSocketViolation(code: .protocolError, reason: "reserved bits set"))
            return
        }
        switch frame.opcode {
        case .continuation, .text, .binary, .connectionClose, .ping, .pong:
            context.fireChannelRead(data)
        default:
            context.fireErrorCaught(WebSocketViolation(code: .protocolError, reason: "reserved opcode"))
        }
    }
}
