/// Every error the Redis client throws.
///
/// Match on ``code``; ``message`` says what happened and what to do about it. The codes tell a caller
/// whether a command may have run, which decides whether it is safe to retry:
///
/// | code | sent to Redis? | did it run? |
/// |---|---|---|
/// | ``Code/notConnected`` | no | no, safe to retry |
/// | ``Code/shutdown`` | no | no |
/// | ``Code/invalidArgument`` | no | no |
/// | ``Code/server`` | yes | Redis refused it (see ``serverErrorPrefix``) |
/// | ``Code/timeout`` | yes | unknown |
/// | ``Code/connectionClosed`` | yes | unknown |
/// | ``Code/protocolError`` | yes | unknown |
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. New codes may be added; `switch` with a `default`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case connectionClosed = "connection closed"
            case timeout = "timeout"
            case notConnected = "not connected"
            case server = "server error"
            case protocolError = "protocol error"
            case invalidURL = "invalid URL"
            case invalidArgument = "invalid argument"
            case shutdown = "shut down"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The connection closed after the command was written and before its reply arrived (the server
        /// went away, the network failed, or an earlier command on the same connection timed out).
        public static let connectionClosed = Code(.connectionClosed)
        /// The command was written but no reply arrived within its timeout. The connection is closed and
        /// re-established, because RESP matches replies by order and the late reply would be misread.
        public static let timeout = Code(.timeout)
        /// No connection to Redis was available within the command's timeout; the command was not sent.
        public static let notConnected = Code(.notConnected)
        /// Redis answered with an error reply (`WRONGTYPE …`, `NOSCRIPT …`, `WRONGPASS …`).
        public static let server = Code(.server)
        /// The server sent bytes that are not valid RESP, or a reply of an unexpected type.
        public static let protocolError = Code(.protocolError)
        /// A `redis://` URL could not be parsed.
        public static let invalidURL = Code(.invalidURL)
        /// A command was given arguments it cannot send (an empty command, an empty key list).
        public static let invalidArgument = Code(.invalidArgument)
        /// The connection was closed with `close()`; nothing more is sent.
        public static let shutdown = Code(.shutdown)

        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// A sentence for a person: what went wrong and, where it helps, what to do.
    public let message: String

    /// The underlying cause without what it means for a command (the I/O error, "closed by the
    /// server"), for messages about the connection itself.
    let cause: String?

    public init(_ code: Code, _ message: String) {
        self.init(code, message, cause: nil)
    }

    init(_ code: Code, _ message: String, cause: String?) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// For ``Code/server`` errors, the first word of the reply, which Redis uses as an error kind:
    /// `ERR`, `WRONGTYPE`, `NOSCRIPT`, `NOAUTH`, `WRONGPASS`, `LOADING`, `READONLY`, `MOVED`, ….
    public var serverErrorPrefix: String? {
        guard code == .server else { return nil }
        return message.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public var description: String { "Redis \(code): \(message)" }

    static func server(_ message: String) -> RedisError {
        RedisError(.server, message)
    }

    static func protocolError(_ message: String) -> RedisError {
        RedisError(.protocolError, message)
    }

    static func unexpectedReply(_ value: RESPValue, expected: String) -> RedisError {
        RedisError(.protocolError, "expected \(expected) in the reply, got \(value)")
    }
}
