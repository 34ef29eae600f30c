import NIOCore
import NIOWebSocket

/// Server-to-client WebSocket frames (RFC 6455 §5.2), written straight into a `ByteBuffer`: unmasked,
/// never fragmented. ``WebSocketHandler`` puts every frame of one drain into one buffer, which costs one
/// allocation and one pipeline write instead of a frame value, a header buffer and two writes per
/// message.
enum ServerFrameEncoding {
    /// Bytes of the header of a frame with `length` bytes of payload.
    static func headerLength(payload length: Int) -> Int {
        length < 126 ? 2 : length <= Int(UInt16.max) ? 4 : 10
    }

    /// Bytes of a whole frame with `length` bytes of payload.
    static func frameLength(payload length: Int) -> Int {
        headerLength(payload: length) + length
    }

    /// Writes the header of a final frame of `opcode` with `length` bytes of payload.
    static func writeHeader(_ opcode: WebSocketOpcode, payload length: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(0x80) | UInt8(webSocketOpcode: opcode))
        if length < 126 {
            buffer.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }

    /// Writes a whole final frame of `opcode` carrying `payload`.
    static func writeFrame(_ opcode: WebSocketOpcode, payload: ByteBuffer, to buffer: inout ByteBuffer) {
        writeHeader(opcode, payload: payload.readableBytes, to: &buffer)
        buffer.writeImmutableBuffer(payload)
    }
}
