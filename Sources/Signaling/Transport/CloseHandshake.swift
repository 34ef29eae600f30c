import NIOCore

/// The RFC 6455 closing handshake (§5.5.1, §7) of one connection, as a value type: the
/// ``WebSocketHandler`` feeds it events and the time, and carries out the actions it returns.
///
/// - The client closes: its close frame is checked (§7.4: a 1-byte payload, a code that may not be
///   sent, or a reason that is not UTF-8 is a protocol error), answered, and the socket closed.
/// - The server closes (a policy close: rate 1008, size 1009, slow reader 1013, auth 4001, …, or a
///   protocol violation): it sends its close frame and from then on processes no message, but it keeps
///   **draining** the socket — reading and discarding whatever the client still sends — until the
///   client's close frame or ``closeTimeout``. A client that is still sending when the server closes
///   (a flooder, a client streaming an oversized message) thereby reads its last errors and the close
///   frame: closing a socket with unread data in it makes the kernel reset the connection (RFC 2525
///   §2.17), which throws away whatever the client had not read yet.
///   - While the inbound stream can still be parsed (``State/closing``), frames are read only to find
///     the client's close frame; data frames are dropped.
///   - After a framing error (e.g. a frame declaring more than the size limit) no frame boundary can be
///     found any more (``State/draining``): bytes are discarded unread, and the socket is closed once
///     the client has sent nothing for ``quietPeriod`` (it stopped sending, so closing resets nothing),
///     or at the close timeout.
///   At the close timeout (given to ``initiate(_:reason:inboundUsable:now:closeTimeout:)``; the server's
///   `closeTimeout` setting, 2 s) the socket is closed whatever the client is doing, so a client that
///   ignores the close costs at most that long of reading.
///
/// Times are uptime nanoseconds passed in by the caller. The timeout is not stored: one handshake per
/// connection stays as small as it was before it had deadlines.
struct CloseHandshake: Sendable {
    enum State: Equatable, Sendable {
        /// Messages flow both ways.
        case open
        /// The server sent a close frame; it reads frames only to find the client's.
        case closing
        /// The server sent a close frame and cannot parse the inbound stream any more: it discards what
        /// arrives until the client is quiet or the close timeout.
        case draining
        /// No more frames are read or written; the socket is closing.
        case closed
    }

    /// What to do after ``initiate(_:reason:inboundUsable:now:closeTimeout:)``.
    enum InitiateAction: Equatable, Sendable {
        /// Send this close frame; then keep reading and ask ``tick(now:)`` at ``nextCheck``.
        case send(code: CloseCode, reason: String)
        /// A close is already under way; nothing to send (``nextCheck`` may have moved).
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

    /// What to do when the time of ``nextCheck`` has come.
    enum TickAction: Equatable, Sendable {
        /// Close the socket now.
        case closeSocket
        /// Not yet: ask again at this time (uptime nanoseconds).
        case checkAgain(at: UInt64)
        /// Nothing to wait for (open or closed).
        case none
    }

    private(set) var state = State.open
    /// The code the server closed with, if it closed first.
    private(set) var serverCode: CloseCode?
    /// Whether the client sent a close frame (of any content) before the server did.
    private(set) var clientClosed = false
    /// The code in the client's close frame, if it had one.
    private(set) var clientCode: UInt16?
    /// When the socket is closed at the latest, once the server sent its close frame (uptime nanoseconds).
    private(set) var deadline: UInt64 = 0
    /// When bytes last arrived while draining (uptime nanoseconds).
    private(set) var lastInbound: UInt64 = 0

    /// While draining an unparsable stream: how long the client must have sent nothing before the socket
    /// is closed (it has stopped sending, so the close resets nothing). Longer than the pauses of a client
    /// that is still writing; short next to the close timeout, so a client that stopped is let go soon.
    static let quietPeriod: UInt64 = 250_000_000

    /// Close reasons are cut to fit a control frame (125 bytes, 2 of them the code) on a character boundary.
    static let maxReasonBytes = 123

    /// The server wants to close with `code`; it reads at most `closeTimeout` nanoseconds more. `inboundUsable`
    /// is false after a framing error: no frame can be read from the client any more. A framing error
    /// while closing turns closing into draining.
    mutating func initiate(
        _ code: CloseCode,
        reason: String,
        inboundUsable: Bool,
        now: UInt64,
        closeTimeout: UInt64
    ) -> InitiateAction {
        switch state {
        case .open:
            serverCode = code
            deadline = now + closeTimeout
            lastInbound = now
            state = inboundUsable ? .closing : .draining
            return .send(code: code, reason: Self.truncated(reason))
        case .closing:
            if !inboundUsable {
                state = .draining
                lastInbound = now
            }
            return .none
        case .draining, .closed:
            return .none
        }
    }

    /// When ``tick(now:)`` should next be asked; nil while there is nothing to wait for.
    var nextCheck: UInt64? {
        switch state {
        case .open, .closed: return nil
        case .closing: return deadline
        case .draining: return min(deadline, lastInbound + Self.quietPeriod)
        }
    }

    /// Bytes arrived from the client. Only their time matters, and only while draining.
    mutating func receivedBytes(now: UInt64) {
        guard case .draining = state else { return }
        lastInbound = now
    }

    /// The time of ``nextCheck`` has come (or passed).
    mutating func tick(now: UInt64) -> TickAction {
        switch state {
        case .open, .closed:
            return .none
        case .closing, .draining:
            guard let next = nextCheck, now < next else {
                state = .closed
                return .closeSocket
            }
            return .checkAgain(at: next)
        }
    }

    /// A close frame from the client, with its (unmasked) payload.
    mutating func receivedClose(_ payload: ByteBuffer) -> ReceiveAction {
        switch state {
        case .closed:
            return .ignore
        case .closing, .draining:
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
