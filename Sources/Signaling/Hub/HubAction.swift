import NIOCore

/// Identifies one WebSocket connection (a session may be served by several over its life).
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "c\(raw)" }
}

/// What the hub decided to do; the I/O layer carries it out.
public enum HubAction: Sendable {
    /// Write one text message to a connection.
    case send(ConnectionID, ByteBuffer)
    /// Write an `ack` (``ServerMessage/ack(id:queued:)``) to a connection. Kept as its fields, so the
    /// connection writes it straight into its outgoing frames: no buffer per acknowledged signal.
    case ack(ConnectionID, id: String?, queued: Bool)
    /// Close a connection with a close frame.
    case close(ConnectionID, CloseCode, reason: String)
}

/// How a connection wants to start.
public enum OpenRequest: Sendable {
    /// A new session. `peer` is the requested id (`?peer=`), `subject` the verified token's `sub`,
    /// `client` the address it connects from (limits per address).
    case fresh(peer: String?, subject: String?, grant: RoomGrant, client: String? = nil)
    /// Resume an earlier session (`?resume=…&last=…`). `subject` is a verified token's `sub`, if any.
    case resume(token: String, last: UInt64, subject: String?, client: String? = nil)
}

extension OpenRequest {
    /// The address the connection comes from (``ServerConfiguration/trustedProxies``), if known.
    var client: String? {
        switch self {
        case .fresh(_, _, _, let client), .resume(_, _, _, let client): client
        }
    }
}

/// The outcome of opening a connection.
public enum OpenOutcome: Sendable, Equatable {
    case opened(peer: String, resumed: Bool, gap: Bool, replayed: Int)
    case refused(CloseCode)
    /// The decision is being made elsewhere (a cluster hub asks Redis); its welcome or refusal arrives
    /// through the connection's outbox.
    case pending
}

/// Cumulative counters the state machine keeps; the hub exports them as metrics when scraped.
public struct HubCounters: Sendable, Equatable {
    /// Signals relayed, indexed like `SignalType.allCases`.
    public var signals = [Int](repeating: 0, count: SignalType.allCases.count)
    /// Errors answered, indexed like `ErrorCode.allCases`.
    public var errors = [Int](repeating: 0, count: ErrorCode.allCases.count)
    public var resumes = 0
    public var replayed = 0
    public var gaps = 0
    public var expired = 0
    public var queued = 0
    public var takeovers = 0
    /// Sessions waiting to resume that were ended early because too many were waiting.
    public var detachedEvicted = 0
}
