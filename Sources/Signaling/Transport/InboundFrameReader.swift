import NIOCore
import NIOWebSocket

/// Turns the bytes a client sends into WebSocket messages and control frames (RFC 6455 §5): parses
/// each frame header, unmasks the payload while copying it out of the read buffer, has
/// ``InboundFrameValidator`` decide every frame, and joins fragments into whole messages.
///
/// A value type with no I/O that ``WebSocketHandler`` feeds with each read. It replaces a chain of four
/// handlers (NIO's frame decoder, a guard, NIO's aggregator and the handler) and with it a frame value,
/// an unmasking copy and a pipeline hop per frame. It keeps no buffer between reads unless a frame or a
/// fragmented message is incomplete.
///
/// Framing errors are decided like NIO's `WebSocketFrameDecoder` decides them, in the same order: a
/// declared length over `maxFrameSize` (1009, before any of the payload is buffered), then a
/// fragmented control frame or a control frame over 125 bytes (1002). After one, nothing more is read.
struct InboundFrameReader {
    enum Event {
        /// A whole text or binary message, unmasked.
        case message(WebSocketOpcode, ByteBuffer)
        /// A close, ping or pong frame, unmasked.
        case control(WebSocketOpcode, ByteBuffer)
        /// The client broke the protocol. When `inboundUsable` is false no more events follow.
        case violation(WebSocketViolation)
        /// A data frame discarded because the connection is already failing.
        case dropped
    }

    private let maxFrameSize: Int
    private var validator: InboundFrameValidator
    /// Bytes read but not yet parsed (a partial frame).
    private var unparsed: ByteBuffer?
    /// The fragments of the current message so far.
    private var fragments: ByteBuffer?
    private var fragmentsOpcode = WebSocketOpcode.text
    /// Set after a framing error: the stream cannot be parsed any more.
    private var broken = false

    init(maxFrameSize: Int, maxMessageBytes: Int, maxFragments: Int) {
        self.maxFrameSize = maxFrameSize
        self.validator = InboundFrameValidator(maxMessageBytes: maxMessageBytes, maxFragments: maxFragments)
    }

    /// Adds the bytes of one read.
    mutating func append(_ bytes: ByteBuffer) {
        guard !broken else { return }
        if var unparsed = self.unparsed.take() {
            unparsed.writeImmutableBuffer(bytes)
            self.unparsed = unparsed
        } else {
            self.unparsed = bytes
        }
    }

    /// The next event from the bytes appended so far, or nil when more bytes are needed.
    mutating func next(allocator: ByteBufferAllocator) -> Event? {
        while !broken, var buffer = unparsed.take() {
            defer {
                // Whatever was not consumed waits for the next read; a fully read buffer is let go.
                if !broken && buffer.readableBytes > 0 {
                    if buffer.readerIndex > 0 && unparsedNeedsCompacting(buffer) { buffer.discardReadBytes() }
                    unparsed = buffer
                }
            }
            switch self.parseFrame(&buffer, allocator: allocator) {
            case .needMoreData:
                return nil
            case .event(let event):
                return event
            case .none:
                continue
            }
        }
        return nil
    }

    private enum Step {
        case needMoreData
        case event(Event)
        /// A fragment was added to the message; parse on.
        case none
    }

    /// A partial frame left at the end of a big buffer is moved to its front only when the buffer is
    /// mostly consumed, so a large message arriving in many reads is not copied over and over.
    private func unparsedNeedsCompacting(_ buffer: ByteBuffer) -> Bool {
        buffer.readerIndex > buffer.readableBytes
    }

    private mutating func parseFrame(_ buffer: inout ByteBuffer, allocator: ByteBufferAllocator) -> Step {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return .needMoreData }
        var headerLength = 2
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let word = buffer.getInteger(at: start + 2, as: UInt16.self) else { return .needMoreData }
            length = Int(word)
            headerLength = 4
        } else if length == 127 {
            guard let word = buffer.getInteger(at: start + 2, as: UInt64.self) else { return .needMoreData }
            guard word <= UInt64(maxFrameSize) else { return self.framingError(.messageTooBig, "frame too big") }
            length = Int(word)
            headerLength = 10
        }
        let fin = first & 0x80 != 0
        let opcode = WebSocketOpcode(encodedWebSocketOpcode: first & 0x0F)!
        guard length <= maxFrameSize else { return self.framingError(.messageTooBig, "frame too big") }
        if opcode.isControlOpcode && (!fin || length > 125) {
            return self.framingError(.protocolError, "invalid frame")
        }
        let masked = second & 0x80 != 0
        var maskKey: UInt32 = 0
        if masked {
            guard let key = buffer.getInteger(at: start + headerLength, as: UInt32.self) else { return .needMoreData }
            maskKey = key
            headerLength += 4
        }
        guard buffer.readableBytes >= headerLength + length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: headerLength)

        // The payload, unmasked, goes to where it will be delivered from: the message being assembled,
        // or a buffer of its own.
        let continuesMessage = opcode == .continuation && fragments != nil
        var target: ByteBuffer
        if continuesMessage {
            target = fragments.take()!
        } else {
            target = allocator.buffer(capacity: length)
        }
        let payloadStart = target.writerIndex
        buffer.readWithUnsafeReadableBytes { source in
            target.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { destination in
                Self.unmask(
                    from: UnsafeRawBufferPointer(rebasing: source.prefix(length)),
                    to: destination,
                    key: masked ? maskKey : nil
                )
                return length
            }
            return length
        }
        let verdict = target.withUnsafeReadableBytes { bytes in
            validator.inspect(
                fin: fin,
                opcode: opcode,
                reservedBits: first & 0x70 != 0,
                masked: masked,
                payload: UnsafeRawBufferPointer(rebasing: bytes[(payloadStart - target.readerIndex)...])
            )
        }
        switch verdict {
        case .reject(let code, let reason):
            fragments = nil
            return .event(.violation(WebSocketViolation(code: code, reason: reason)))
        case .drop:
            return .event(.dropped)
        case .accept:
            break
        }
        if opcode.isControlOpcode {
            return .event(.control(opcode, target))
        }
        if fin {
            return .event(.message(continuesMessage ? fragmentsOpcode : opcode, target))
        }
        if !continuesMessage { fragmentsOpcode = opcode }
        fragments = target
        return .none
    }

    /// Stops reading for good and hands over the bytes appended but not parsed yet, which start at a
    /// frame boundary: once the server has sent its close frame, ``ClosingFrameScanner`` looks at the rest
    /// of the stream only for the client's close frame.
    mutating func takeUnparsed() -> ByteBuffer? {
        broken = true
        fragments = nil
        return unparsed.take()
    }

    private mutating func framingError(_ code: CloseCode, _ reason: String) -> Step {
        broken = true
        unparsed = nil
        fragments = nil
        return .event(.violation(WebSocketViolation(code: code, reason: reason, inboundUsable: false)))
    }

    /// Copies `source` to `destination`, XOR-ing it with the masking key (network byte order) eight
    /// bytes at a time.
    private static func unmask(
        from source: UnsafeRawBufferPointer,
        to destination: UnsafeMutableRawBufferPointer,
        key: UInt32?
    ) {
        let count = source.count
        guard let key, count > 0 else {
            if count > 0 { destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: count) }
            return
        }
        // The key's bytes in memory order, repeated: XOR-ing a native load with it masks byte i with key[i % 4].
        let keyBytes = key.bigEndian
        let word = UInt64(keyBytes) | UInt64(keyBytes) << 32
        var index = 0
        while index + 8 <= count {
            let value = source.loadUnaligned(fromByteOffset: index, as: UInt64.self) ^ word
            destination.storeBytes(of: value, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        withUnsafeBytes(of: keyBytes) { keyMemory in
            while index < count {
                destination[index] = source[index] ^ keyMemory[index & 3]
                index += 1
            }
        }
    }
}
