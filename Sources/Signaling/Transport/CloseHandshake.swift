import NIOCore

/// The RFC 6455 closing handshake (§5.5.1, §7) of one connection, as a value type: the
/// ``WebSocketHandler`` feeds it events and carries out the actions it returns.
///
/// - The server closes: it sends a close frame, then waits for the client's (up to the close timeout)
///   before closing the socket — unless the inbound stream is broken (a framing error), when no close
///   frame can arrive any more and the socket is closed as soon as the close frame is written.
/// - The client closes: its close frame is checked (§7.4: a 1-byte payload, a code that may not be
///   sent, or a reason that is not UTF-8 is a protocol error), answered, and the socket closed.
/// - While the server waits for the client's close frame, a client that keeps streaming data frames
///   (a flooder that ignores the close) has ``maxFramesWhileClosing`` frames of slack for what was
///   already in flight; then the socket is closed, so decoding its stream costs no more CPU.
struct CloseHandshake: Sendable {
    enum State: Equatable, Sendable {
        /// Messages flow both ways.
        case open
        /// The server sent a close frame and waits for the client's.
        case closing
        /// No more frames are read or written; the socket is closing.
        case closed
    }

    /// What to do after ``initiate(_:reason:inboundUsable:)``.
    enum InitiateAction: Equatable, Sendable {
        /// Send this close frame; then wait for the client's close frame (with a timer) when
        /// `awaitReply`, else close the socket once it is written.
        case send(code: CloseCode, reason: String, awaitReply: Bool)
        /// A close is already under way.
        case none
    }

    /// What to do with a close frame from the client.
    enum ReceiveAction: Equatable, Sendable {
        /// Answer with a close frame carrying `code` (empty when nil) and close the socket once it is written.
        case reply(code: UInt16?)
        /// It answered ours: the handshake is complete, close the socket.
        case closeSocket
        /// Already closed.
        case ignore
    }

    private(set) var state = State.open
    /// The code the server closed with, if it closed first.
    private(set) var serverCode: CloseCode?
    /// Whether the client sent a close frame (of any content) before the server did.
    private(set) var clientClosed = false
    /// The code in the client's close frame, if it had one.
    private(set) var clientCode: UInt16?
    /// Frames other than close received since the server's close frame went out.
    private(set) var framesWhileClosing = 0

    /// Frames a client may still send after the server's close frame before the socket is closed
    /// without waiting any longer. Generous for frames that were in flight; small next to what a flood
    /// sends in the close timeout.
    let maxFramesWhileClosing: Int

    init(maxFramesWhileClosing: Int = 1000) {
        self.maxFramesWhileClosing = maxFramesWhileClosing
    }

    /// Close reasons are cut to fit a control frame (125 bytes, 2 of them the code) on a character boundary.
    static let maxReasonBytes = 123

    /// The server wants to close with `code`.
    mutating func initiate(_ code: CloseCode, reason: String, inboundUsable: Bool) -> InitiateAction {
        guard case .open = state else { return .none }
        serverCode = code
        state = inboundUsable ? .closing : .closed
        return .send(code: code, reason: Self.truncated(reason), awaitReply: inboundUsable)
    }

    /// A close frame from the client, with its (unmasked) payload.
    mutating func receivedClose(_ payload: ByteBuffer) -> ReceiveAction {
        switch state {
        case .closed:
            return .ignore
        case .closing:
            state = .closed
            return .closeSocket
        case .open:
            state = .closed
            clientClosed = true
            var payload = payload
            guard payload.readableBytes > 0 else { return .reply(code: nil) }
            guard let code = payload.readInteger(as: UInt16.self) else {
                return .reply(code: CloseCode.protocolError.rawValue)
            }
            clientCode = code
            guard Self.isValidCloseCode(code) else { return .reply(code: CloseCode.protocolError.rawValue) }
            guard payload.isValidUTF8 else { return .reply(code: CloseCode.invalidPayload.rawValue) }
            return .reply(code: code)
        }
    }

    /// A frame other than close arrived (or was dropped for a violation) after the server's close
    /// frame. Returns true when the socket should be closed now.
    mutating func receivedFrameWhileClosing() -> Bool {
        guard case .closing = state else { return false }
        framesWhileClosing += 1
        guard framesWhileClosing > maxFramesWhileClosing else { return false }
        state = .closed
        return true
    }

    /// The socket closed (for any reason).
    mutating func socketClosed() {
        state = .closed
    }

    /// Codes a peer may send (RFC 6455 §7.4.1 and the IANA registry; 1004–1006 and 1015 never go on the wire).
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: return true
        default: return false
        }
    }

    static func truncated(_ reason: String) -> String {
        guard reason.utf8.count > maxReasonBytes else { return reason }
        var result = ""
        var bytes = 0
        for scalar in reason.unicodeScalars {
            let width = String(scalar).utf8.count
            guard bytes + width <= maxReasonBytes else { break }
            result.unicodeScalars.append(scalar)
            bytes += width
        }
        return result
    }
}
