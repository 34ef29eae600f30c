/// Something a backend tells the app's backend about (as a webhook, ``WebhookEvent``): a session started
/// or ended, a peer joined or left a room, a room became empty. Names are qualified (``Tenant``).
public enum HubEvent: Sendable, Equatable {
    /// A fresh session opened (not a resume).
    case sessionStarted(peer: String)
    /// A session ended, and why.
    case sessionEnded(peer: String, reason: SessionEndReason)
    /// A peer entered a room (not a re-join).
    case peerJoined(peer: String, room: String)
    /// A peer left a room (by `leave`, a revoked grant, or its session's end).
    case peerLeft(peer: String, room: String)
    /// A room's last member left: the room no longer exists.
    case roomEmpty(room: String)

    /// The webhook's `type`.
    public var type: String {
        switch self {
        case .sessionStarted: return "session.started"
        case .sessionEnded: return "session.ended"
        case .peerJoined: return "peer.joined"
        case .peerLeft: return "peer.left"
        case .roomEmpty: return "room.empty"
        }
    }
}

/// Why a session ended (`session.ended`'s `reason`).
public enum SessionEndReason: String, Sendable, Equatable {
    /// Its client closed it, or the server closed it for a reason that ends a session (a policy close, a
    /// takeover by the token's owner).
    case closed
    /// It waited for a resume that did not come (its grace period ended, or too many were waiting).
    case expired
    /// The app's backend ended it (`DELETE /v1/peers/{peer}`).
    case kicked
}

/// Where a backend hands its events (under its own ordering: a backend calls it in the order the events
/// happened). ``WebhookDispatcher/enqueue(_:)`` is one.
public typealias HubEventSink = @Sendable ([HubEvent]) -> Void
