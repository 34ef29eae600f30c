import NIOCore

/// A WebSocket protocol violation and the close code it earns.
struct WebSocketViolation: Error {
    var code: CloseCode
    var reason: String
    /// Whether frames can still be read after it. False after a framing error: the frame reader stops
    /// reading for good, so the client's close frame could never arrive and the server closes the
    /// socket right after sending its own (RFC 6455 §7.1.7, "Fail the WebSocket Connection").
    var inboundUsable: Bool = true

    /// The violation an error caught in the pipeline stands for; nil for I/O errors.
    init?(_ error: any Error) {
        guard let violation = error as? WebSocketViolation else { return nil }
        self = violation
    }

    init(code: CloseCode, reason: String, inboundUsable: Bool = true) {
        self.code = code
        self.reason = reason
        self.inboundUsable = inboundUsable
    }
}
