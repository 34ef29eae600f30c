import NIOCore

/// Why a request (or a connection's session) was refused: the one place where every routing refusal gets
/// its wire error code, its message text and, for a refused session, its close code.
///
/// The single hub, the cluster and the mesh all answer with these values, so a client sees the same
/// `error` for the same situation whichever backend serves it. A refusal carries only what its text
/// names (peer ids, room names, limits), never a message payload.
public enum Refusal: Sendable, Equatable, Error {
    /// `?peer=` names an id the token's `sub` does not own.
    case peerIDNotAllowed(String)
    /// The id belongs to a live session and the client holds no token that owns it.
    case idTaken(String)
    /// The resume token is unknown, already used, or its session ended.
    case sessionNotResumable
    /// The token's `rooms` claim does not include the room.
    case roomNotGranted(String)
    /// The peer is already in the most rooms a peer may be in.
    case tooManyRooms(limit: Int)
    /// The room already holds the most peers a room may hold.
    case roomFull(String, limit: Int)
    /// `leave` of a room the peer is not in.
    case notInRoom(String)
    /// A signal scoped to a room its sender is not in.
    case senderNotInRoom(String)
    /// A signal scoped to a room its recipient is not in.
    case recipientNotInRoom(peer: String, room: String)
    /// `--require-shared-room`: sender and recipient share no room.
    case noSharedRoom(String)
    /// No session has that id (on any node).
    case peerUnavailable(String)
    /// The recipient is away and its queue is at its bound.
    case queueFull(String)
    /// A volatile signal's recipient has a session but no connection now (it is away, waiting for a
    /// resume): volatile messages are never queued, so it was not delivered.
    case recipientAway(String)
    /// The backend cannot decide now (a cluster node cannot reach Redis, a mesh node not yet running).
    case unavailable
    /// Auth is on and the upgrade carried no token.
    case tokenRequired
    /// The token was not accepted; the reason says why (expired, bad signature, …), never the token.
    case tokenRejected(String)
    /// The session's token expired and no fresh one arrived in band: the session ends (4001).
    case tokenExpired
    /// An `auth` message's token is for another subject than the session's.
    case tokenSubjectChanged
    /// An `auth` message reached a server that checks no tokens.
    case authNotEnabled
    /// `?peer=` is not a valid peer id.
    case invalidPeerID
    /// Over the rate limit: the message was dropped.
    case rateLimited(perSecond: Int)
    /// The token's tenant already has the most sessions it may have on this server.
    case tenantFull(limit: Int)
    /// A join would open a room beyond the most rooms the tenant may have.
    case tenantRoomsFull(limit: Int)

    /// The protocol's error code.
    public var code: ErrorCode {
        switch self {
        case .peerIDNotAllowed, .roomNotGranted: return .forbidden
        case .idTaken: return .idTaken
        case .sessionNotResumable: return .unavailable
        case .tooManyRooms: return .tooManyRooms
        case .roomFull: return .roomFull
        case .notInRoom, .senderNotInRoom, .recipientNotInRoom, .noSharedRoom: return .notInRoom
        case .peerUnavailable, .recipientAway: return .peerUnavailable
        case .queueFull: return .queueFull
        case .unavailable: return .unavailable
        case .tokenRequired, .tokenRejected, .tokenExpired, .tokenSubjectChanged: return .unauthorized
        case .invalidPeerID, .authNotEnabled: return .badMessage
        case .rateLimited: return .rateLimited
        case .tenantFull, .tenantRoomsFull: return .tenantFull
        }
    }

    /// The human-readable `message` of the `error` (and the close reason of a refused session).
    public var message: String {
        switch self {
        case .peerIDNotAllowed(let peer): return "the token does not allow peer id \"\(Tenant.display(peer))\""
        case .idTaken(let peer): return "peer id \"\(Tenant.display(peer))\" is in use"
        case .sessionNotResumable: return "unknown or ended session"
        case .roomNotGranted(let room): return "the token does not grant room \"\(Tenant.display(room))\""
        case .tooManyRooms(let limit): return "a peer may be in at most \(limit) rooms"
        case .roomFull(let room, let limit): return "room \"\(Tenant.display(room))\" is full (\(limit) peers)"
        case .notInRoom(let room): return "not in room \"\(Tenant.display(room))\""
        case .senderNotInRoom(let room): return "you are not in room \"\(Tenant.display(room))\""
        case .recipientNotInRoom(let peer, let room):
            return "peer \"\(Tenant.display(peer))\" is not in room \"\(Tenant.display(room))\""
        case .noSharedRoom(let peer): return "you share no room with peer \"\(Tenant.display(peer))\""
        case .peerUnavailable(let peer): return "peer \"\(Tenant.display(peer))\" is not connected"
        case .queueFull(let peer): return "peer \"\(Tenant.display(peer))\" is away and its queue is full"
        case .recipientAway(let peer):
            return "peer \"\(Tenant.display(peer))\" is away; a volatile message is not kept for it"
        case .unavailable: return "the hub cannot decide this now; retry"
        case .tokenRequired: return "token required"
        case .tokenRejected(let reason): return reason
        case .tokenExpired: return "token expired"
        case .tokenSubjectChanged: return "the token is for another peer"
        case .authNotEnabled: return "this server does not check tokens"
        case .invalidPeerID: return "peer id must be 1-64 characters of [A-Za-z0-9._~-]"
        case .rateLimited(let perSecond): return "slow down: at most \(perSecond) messages/s"
        case .tenantFull(let limit): return "the tenant has the most sessions it may have here (\(limit))"
        case .tenantRoomsFull(let limit): return "the tenant has the most rooms it may have (\(limit))"
        }
    }

    /// For a refused session: the close code, and whether an `error` message precedes the close (a resume
    /// that fails is closed with 4002 and no `error`, per the contract).
    public var close: (code: CloseCode, sendsError: Bool) {
        switch self {
        case .peerIDNotAllowed: return (.unauthorized, true)
        case .idTaken: return (.idTaken, true)
        case .sessionNotResumable: return (.sessionNotResumable, false)
        case .unavailable: return (.tryAgainLater, false)
        case .tokenRequired, .tokenRejected, .tokenExpired, .tokenSubjectChanged: return (.unauthorized, true)
        default: return (.policyViolation, true)
        }
    }

    /// The `error` message for this refusal, answering request `id`.
    public func errorMessage(id: String?) -> ByteBuffer {
        ServerMessage.error(code, message, id: id)
    }
}
