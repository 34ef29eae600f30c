import NIOWebSocket

/// The RFC 6455 rules for the frames a client sends, decided frame by frame before fragments are
/// aggregated. A value type: ``InboundFrameReader`` feeds it each frame and carries out the verdict, and it is
/// tested without sockets.
///
/// What it enforces, beyond what NIO's frame decoder checks (control frame length and fragmentation,
/// the frame size limit):
/// - client frames are masked (§5.1) — else 1002;
/// - no reserved bits without a negotiated extension (§5.2) and no reserved opcodes — else 1002;
/// - fragments follow the rules of §5.4 (a continuation needs a message to continue, a new message
///   may not start before the previous one ended) — else 1002;
/// - a message is at most `maxMessageBytes` long and arrives in at most `maxFragments` frames — else
///   1009, decided as the fragments arrive so nothing beyond the limit is ever buffered;
/// - text is valid UTF-8, checked fragment by fragment so an invalid message fails fast (§8.1), also
///   when a code point is split across fragments — else 1007.
///
/// After a violation the connection is being failed: data frames are dropped (nothing more is
/// buffered or delivered) and only control frames pass, so the client's close frame still completes
/// the closing handshake.
struct InboundFrameValidator: Sendable {
    enum Verdict: Equatable, Sendable {
        /// Pass the frame on.
        case accept
        /// Fail the connection with this close code.
        case reject(CloseCode, reason: String)
        /// Discard the frame: the connection is already failing.
        case drop
    }

    private enum Message {
        case none
        case text
        case binary
    }

    /// Largest message, in bytes, summed over its fragments.
    let maxMessageBytes: Int
    /// Most frames one message may arrive in.
    let maxFragments: Int

    private var message = Message.none
    private var fragments = 0
    private var bytes = 0
    private var utf8 = UTF8StreamValidator()
    /// Whether a violation was found; from then on only control frames are accepted.
    private(set) var failed = false

    init(maxMessageBytes: Int, maxFragments: Int) {
        self.maxMessageBytes = maxMessageBytes
        self.maxFragments = max(1, maxFragments)
    }

    /// Decides one frame. `payload` is the unmasked application data.
    mutating func inspect(
        fin: Bool,
        opcode: WebSocketOpcode,
        reservedBits: Bool,
        masked: Bool,
        payload: UnsafeRawBufferPointer
    ) -> Verdict {
        if failed {
            return opcode.isControlOpcode && isKnown(opcode) ? .accept : .drop
        }
        guard masked else { return fail(.protocolError, "client frames must be masked") }
        guard !reservedBits else { return fail(.protocolError, "reserved bits set without a negotiated extension") }
        switch opcode {
        case .connectionClose, .ping, .pong:
            return .accept
        case .text, .binary:
            guard case .none = message else {
                return fail(.protocolError, "a new message started before the previous one ended")
            }
            message = opcode == .text ? .text : .binary
            fragments = 0
            bytes = 0
            utf8 = UTF8StreamValidator()
            return fragment(fin: fin, payload: payload)
        case .continuation:
            guard case .none = message else { return fragment(fin: fin, payload: payload) }
            return fail(.protocolError, "continuation frame without a message to continue")
        default:
            return fail(.protocolError, "reserved opcode")
        }
    }

    private mutating func fragment(fin: Bool, payload: UnsafeRawBufferPointer) -> Verdict {
        fragments += 1
        bytes += payload.count
        guard bytes <= maxMessageBytes else {
            return fail(.messageTooBig, "message too big: the limit is \(maxMessageBytes) bytes")
        }
        guard fragments <= maxFragments, fin || fragments < maxFragments else {
            return fail(.messageTooBig, "message in too many fragments: the limit is \(maxFragments)")
        }
        if case .text = message {
            guard utf8.consume(payload), !fin || utf8.isAtBoundary else {
                return fail(.invalidPayload, "text message is not valid UTF-8")
            }
        }
        if fin { message = .none }
        return .accept
    }

    private mutating func fail(_ code: CloseCode, _ reason: String) -> Verdict {
        failed = true
        message = .none
        return .reject(code, reason: reason)
    }

    private func isKnown(_ opcode: WebSocketOpcode) -> Bool {
        opcode == .connectionClose || opcode == .ping || opcode == .pong
    }
}
