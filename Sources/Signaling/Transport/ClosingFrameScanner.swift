import NIOCore

/// Finds the client's close frame in what it still sends after the server's close frame, and skips
/// everything else unread.
///
/// Once the server has sent its close frame (``CloseHandshake``), no message is processed any more, yet
/// the socket is drained until the client's close frame arrives, so that a client still sending (a
/// flooder, a client streaming a large message) is not reset before it has read the close. Running that
/// stream through ``InboundFrameReader`` would copy, unmask and validate every payload only to drop it;
/// this scanner reads frame headers only: a data, ping or pong frame's payload is skipped (across reads,
/// without buffering it), and only a close frame (at most 125 bytes) is unmasked and returned. It checks
/// nothing else — whatever the frames say, the connection is closing.
///
/// It starts at a frame boundary: ``WebSocketHandler`` hands it the bytes the reader had not parsed yet
/// (``InboundFrameReader/takeUnparsed()``), then every read. A class, created only when the server closes,
/// so an open connection pays one reference for it.
final class ClosingFrameScanner {
    enum Result: Equatable {
        /// No close frame yet; everything given so far has been consumed (or is a partial header kept).
        case needMore
        /// The client's close frame, with its unmasked payload.
        case close(ByteBuffer)
        /// A close frame longer than a control frame may be: no frame boundary can be trusted after it.
        case unreadable
    }

    /// The close frame's opcode (RFC 6455 §5.5.1).
    private static let closeOpcode: UInt8 = 0x8

    /// Payload bytes of the current (skipped) frame still to come.
    private(set) var skipping: UInt64 = 0
    /// An incomplete header or close frame from the end of the last read (at most 14 + 125 bytes).
    private var partial: ByteBuffer?

    /// Scans one read's bytes.
    func scan(_ bytes: ByteBuffer) -> Result {
        var buffer: ByteBuffer
        if var partial = self.partial.take() {
            partial.writeImmutableBuffer(bytes)
            buffer = partial
        } else {
            buffer = bytes
        }
        while true {
            if skipping > 0 {
                let skipped = Int(min(skipping, UInt64(buffer.readableBytes)))
                buffer.moveReaderIndex(forwardBy: skipped)
                skipping -= UInt64(skipped)
                if skipping > 0 { return .needMore }
            }
            guard buffer.readableBytes > 0 else { return .needMore }
            let start = buffer.readerIndex
            guard let first = buffer.getInteger(at: start, as: UInt8.self),
                let second = buffer.getInteger(at: start + 1, as: UInt8.self)
            else { return self.keep(buffer) }
            var headerLength = 2
            var length = UInt64(second & 0x7F)
            if length == 126 {
                guard let word = buffer.getInteger(at: start + 2, as: UInt16.self) else { return self.keep(buffer) }
                length = UInt64(word)
                headerLength = 4
            } else if length == 127 {
                guard let word = buffer.getInteger(at: start + 2, as: UInt64.self) else { return self.keep(buffer) }
                length = word
                headerLength = 10
            }
            var key: UInt32?
            if second & 0x80 != 0 {
                guard let mask = buffer.getInteger(at: start + headerLength, as: UInt32.self) else {
                    return self.keep(buffer)
                }
                key = mask
                headerLength += 4
            }
            guard first & 0x0F == Self.closeOpcode else {
                buffer.moveReaderIndex(forwardBy: headerLength)
                skipping = length
                continue
            }
            guard length <= 125 else { return .unreadable }
            guard buffer.readableBytes >= headerLength + Int(length) else { return self.keep(buffer) }
            buffer.moveReaderIndex(forwardBy: headerLength)
            var payload = ByteBuffer()
            payload.reserveCapacity(Int(length))
            for index in 0..<Int(length) {
                var byte = buffer.readInteger(as: UInt8.self)!
                if let key { byte ^= UInt8(truncatingIfNeeded: key >> (24 - 8 * UInt32(index & 3))) }
                payload.writeInteger(byte)
            }
            return .close(payload)
        }
    }

    /// Keeps the unparsed end of a read (a partial header or close frame) as a copy of its own, so the
    /// read's whole buffer is not held.
    private func keep(_ buffer: ByteBuffer) -> Result {
        partial = ByteBuffer(bytes: buffer.readableBytesView)
        return .needMore
    }
}
