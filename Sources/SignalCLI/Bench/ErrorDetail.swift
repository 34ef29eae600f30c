/// Why `errors` is not zero.
struct ErrorDetail: Encodable, Sendable {
    /// `error` messages the server sent.
    var errorMessages: Int
    /// Connections that never became ready.
    var connectFailed: Int
    /// Connections lost after they were ready.
    var closed: Int
    /// Measured messages that never arrived (after the drain); nil in a node's part, where it is not
    /// counted (a lost message's recipient is not known).
    var lost: Int?
    var firstError: String?

    enum CodingKeys: String, CodingKey {
        case errorMessages = "error_messages"
        case connectFailed = "connect_failed"
        case closed, lost
        case firstError = "first_error"
    }
}
