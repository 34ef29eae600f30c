import NIOCore

/// What the server API (``APIRouter``) asks of a backend: publish a server message to a peer or a room,
/// list rooms, read a room's members and a peer's session, and end a session. The in-memory ``Hub``, the
/// Redis-backed ``ClusterHub`` and the mesh bridge each implement it over their own state, so an API call
/// behaves the same whichever backend serves it (on a cluster, whichever node it reaches).
///
/// Names are *qualified* (``Tenant/qualify(_:)``): the router qualifies what it reads from a path with its
/// key's tenant before it asks, and shows what comes back through ``Tenant/display(_:)``.
public protocol ServerAPIBackend: AnyObject, Sendable {
    /// Gives `peer`'s session a server message (`prefix` ends in `"seq":`, as ``ServerMessage/serverMessagePrefix(data:to:room:)``
    /// builds it), sequenced and kept for resume like a presence event (never refused with `queue-full`).
    /// Nil when `peer` has no session.
    func publish(_ prefix: ByteBuffer, toPeer peer: String) async throws(APIBackendError) -> APIPublishCount?
    /// Gives every member of `room` the server message. Nil when the room does not exist (no members).
    func publish(_ prefix: ByteBuffer, toRoom room: String) async throws(APIBackendError) -> APIPublishCount?
    /// Every room that has members, with its member count (qualified names; the router keeps its tenant's).
    func listRooms() async throws(APIBackendError) -> [APIRoomSummary]
    /// A room's members with their `meta`; nil when the room does not exist.
    func members(ofRoom room: String) async throws(APIBackendError) -> [APIRoomMember]?
    /// `peer`'s session; nil when it has none.
    func session(ofPeer peer: String) async throws(APIBackendError) -> APIPeerSession?
    /// Ends `peer`'s session at once: its connection (wherever it is) is closed with ``CloseCode/kicked``,
    /// its rooms see `peer-left`, and its resume token no longer resumes. False when it had no session.
    func kick(_ peer: String) async throws(APIBackendError) -> Bool
}

/// Why a backend could not answer an API call.
public enum APIBackendError: Error, Sendable, Equatable {
    /// The backend cannot decide now (a cluster node cannot reach Redis): 503, retry.
    case unavailable
}

/// How many recipients a published server message reached: written to a connection, or kept for a session
/// that is away (its client gets it when it resumes).
public struct APIPublishCount: Sendable, Equatable {
    public var delivered: Int
    public var queued: Int

    public init(delivered: Int = 0, queued: Int = 0) {
        self.delivered = delivered
        self.queued = queued
    }

    public static func + (lhs: Self, rhs: Self) -> Self {
        Self(delivered: lhs.delivered + rhs.delivered, queued: lhs.queued + rhs.queued)
    }
}

/// One room in ``ServerAPIBackend/listRooms()``.
public struct APIRoomSummary: Sendable, Equatable {
    public var room: String
    public var members: Int

    public init(room: String, members: Int) {
        self.room = room
        self.members = members
    }
}

/// One member of a room: its peer id and the `meta` it joined with (raw JSON; nil for none).
public struct APIRoomMember: Sendable, Equatable {
    public var peer: String
    public var meta: ByteBuffer?

    public init(peer: String, meta: ByteBuffer?) {
        self.peer = peer
        self.meta = meta
    }
}

/// A peer's session as the API shows it.
public struct APIPeerSession: Sendable, Equatable {
    public var peer: String
    /// Whether a connection holds it now (false: it waits for its client to resume).
    public var connected: Bool
    /// Its rooms, in the order it joined them.
    public var rooms: [String]
    /// The cluster node holding its connection (or that last held it); nil on one node and on the mesh.
    public var node: String?

    public init(peer: String, connected: Bool, rooms: [String], node: String? = nil) {
        self.peer = peer
        self.connected = connected
        self.rooms = rooms
        self.node = node
    }
}

/// The reserved sender of server messages.
extension ServerMessage {
    /// `from` of every message the server API publishes. `@` is outside the peer id charset
    /// (`[A-Za-z0-9._~-]`), so no client can take this id or forge a message from it.
    public static let serverSender = "@server"

    /// A server message's relayed form up to its `seq`: `{"type":"message"` then `"to"` (a message for one
    /// peer) or `"room"` (for a room), the app's `data` as given, `"from":"@server","seq":`. `to` and `room`
    /// are the names the recipient knows (``Tenant/display(_:)``).
    public static func serverMessagePrefix(data: ByteBuffer, to peer: String? = nil, room: String? = nil)
        -> ByteBuffer
    {
        var buffer = ByteBufferAllocator().buffer(capacity: data.readableBytes + 128)
        buffer.writeStaticString("{\"type\":\"message\"")
        if let peer {
            buffer.writeStaticString(",\"to\":")
            buffer.writeJSONString(peer)
        }
        if let room {
            buffer.writeStaticString(",\"room\":")
            buffer.writeJSONString(room)
        }
        buffer.writeStaticString(",\"data\":")
        buffer.writeImmutableBuffer(data)
        buffer.writeStaticString(",\"from\":")
        buffer.writeJSONString(serverSender)
        buffer.writeStaticString(",\"seq\":")
        return buffer
    }
}

extension ServerAPIBackend {
    /// Makes `call` on this backend.
    public func perform(_ call: APICall) async -> Result<APIOutcome, APIBackendError> {
        do throws(APIBackendError) {
            switch call {
            case .publishToPeer(let peer, let prefix):
                return .success(.published(try await publish(prefix, toPeer: peer)))
            case .publishToRoom(let room, let prefix):
                return .success(.published(try await publish(prefix, toRoom: room)))
            case .listRooms: return .success(.rooms(try await listRooms()))
            case .room(let room): return .success(.members(try await members(ofRoom: room)))
            case .session(let peer): return .success(.session(try await session(ofPeer: peer)))
            case .kick(let peer): return .success(.kicked(try await kick(peer)))
            }
        } catch {
            return .failure(error)
        }
    }
}
