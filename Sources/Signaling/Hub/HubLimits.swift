/// Bounds the hub's state machine enforces. Every default is at least as generous as the protocol's
/// "limits a client can count on" and small enough that 100,000 idle sessions fit in memory.
public struct HubLimits: Sendable {
    /// Rooms one peer may be in at once (`too-many-rooms` beyond). The contract promises at least 16.
    public var maxRoomsPerPeer: Int = 16
    /// Peers in one room (`room-full` beyond). Also bounds how far one broadcast can amplify.
    public var maxPeersPerRoom: Int = 256
    /// Rooms one tenant (``Tenant``, a token's `tenant` claim) may have at once (`tenant-full` for a join
    /// that would open one more; `--max-rooms-per-tenant`). Unbounded by default; the default tenant is
    /// never bounded by it.
    public var maxRoomsPerTenant: Int = .max
    /// Sequenced messages kept per session for resume (the oldest are dropped beyond, creating a gap).
    public var resumeBufferMessages: Int = 256
    /// Bytes kept per session for resume.
    public var resumeBufferBytes: Int = 256 * 1024
    /// Bytes all resume buffers may hold together; a global budget so many idle sessions cannot
    /// exhaust the server. Beyond it the oldest entries of the session being written are dropped.
    public var globalBufferBytes: Int = 256 * 1024 * 1024
    /// How long a dropped session waits for its client to resume, in nanoseconds (default 30 s).
    public var resumeGraceNanos: UInt64 = 30_000_000_000
    /// Request ids (with their answers) remembered per session, so a request resent after a resume is
    /// answered again without being delivered twice. At least the rate burst, so a full burst in flight
    /// at a drop is covered.
    public var rememberedRequests: Int = 256
    /// Sessions that may wait to resume at once (their socket dropped, within their grace period). At the
    /// bound the oldest waiting session ends (its peers get `peer-left`, as when a grace period ends) to
    /// make room for the newest. A server sets it from its connection cap (`--max-detached-sessions`,
    /// default `--max-connections`), so dropped sockets cannot hold more sessions than live ones could.
    public var maxDetachedSessions: Int = 100_000
    /// Sessions waiting to resume whose last connection came from one address; the oldest of that
    /// address ends beyond (`--max-detached-per-ip`, default `--max-connections-per-ip`).
    public var maxDetachedPerClient: Int = 1_000
    /// Whether a peer may signal only peers it shares a room with (on by default when auth is on).
    public var requireSharedRoom: Bool = false

    public init() {}
}

/// Which rooms a session may join: all of them, or those a token's `rooms` claim lists (`*` = all).
public enum RoomGrant: Sendable, Equatable {
    case all
    case only(Set<String>)

    public init(claim: [String]?) {
        guard let claim, !claim.contains("*") else {
            self = .all
            return
        }
        self = .only(Set(claim))
    }

    public func allows(_ room: String) -> Bool {
        switch self {
        case .all: return true
        case .only(let rooms): return rooms.contains(room)
        }
    }
}
