import NIOConcurrencyHelpers
import NIOCore

/// What a backend that brings signals from other nodes (PeerMesh) needs from the in-memory hub: whether a
/// peer is here, who is in a room, the routing policy, and a way to hand a local session a message from
/// elsewhere — checked by the policy on this (the recipient's) node, then sequenced and buffered like any
/// other.
extension Hub {
    /// Whether `peer` has a session on this hub (connected, or waiting out its resume grace period).
    public func hasSession(_ peer: String) -> Bool {
        locked.withLockedValue { $0.state.hasSession(peer) }
    }

    /// The members of `room` on this hub, with their `meta`.
    public func members(of room: String) -> [(peer: String, meta: ByteBuffer?)] {
        locked.withLockedValue { $0.state.rooms[room]?.map { ($0.peer, $0.meta) } ?? [] }
    }

    /// `peer`'s `meta` in `room` on this hub: nil when it is not a member there; `.some(nil)` for a member
    /// that gave none.
    public func meta(of peer: String, in room: String) -> ByteBuffer?? {
        locked.withLockedValue { locked in
            guard let member = locked.state.rooms[room]?.first(where: { $0.peer == peer }) else { return nil }
            return .some(member.meta)
        }
    }

    /// Whether `peer` is in `room` on this hub.
    public func isMember(_ peer: String, of room: String) -> Bool {
        locked.withLockedValue { $0.state.sessions[peer]?.rooms.contains(room) ?? false }
    }

    /// The rooms among `candidates` that `peer` is in, or nil when it has no session here. A caller that
    /// keeps its own record of the rooms a peer joined (the mesh bridge does) passes it, and gets it
    /// checked against the session's rooms.
    public func rooms(of peer: String, among candidates: some Sequence<String>) -> [String]? {
        locked.withLockedValue { locked in
            guard let rooms = locked.state.sessions[peer]?.rooms else { return nil }
            return candidates.filter(rooms.contains)
        }
    }

    /// The routing rules this hub applies (its limits, `requireSharedRoom`).
    public var policy: RoutingPolicy {
        locked.withLockedValue { $0.state.policy }
    }

    /// What the recipient's node checks before a message from another node reaches a local session.
    public enum RemoteCheck: Sendable, Equatable {
        /// Nothing but the session (an `expired` notice for the sender of a signal).
        case none
        /// The recipient must be in this room (a room broadcast's leg, a presence event).
        case member(of: String)
        /// An addressed signal: the recipient's side of ``RoutingPolicy/deliver(to:from:room:recipientRooms:senderRooms:)``
        /// (the recipient in the room it names or, with `requireSharedRoom`, sharing one of `senderRooms`).
        case signal(from: String, room: String?, senderRooms: [String])
    }

    /// What became of a message from another node.
    public enum RemoteDelivery: Sendable, Equatable {
        /// Written to the session's connection (and kept for resume).
        case delivered
        /// The session is away: kept for its resume.
        case queued
        /// Not given to the session: no session here (``Refusal/peerUnavailable(_:)``), its queue is full,
        /// or the routing policy refuses it.
        case refused(Refusal)
    }

    /// Gives a local session a message that arrived from another node, if `check` passes. `prefix` ends in
    /// `"seq":` (as `ServerMessage.signalPrefix` and the presence builders make it); the session's next
    /// `seq` completes it. With `origin` (a signal's sender, request id and type) a signal queued for an
    /// away session that is never read is reported by ``takeRemoteExpiries()``, and a full queue refuses it.
    /// The check and the delivery are one step under the hub's lock.
    ///
    /// A `volatile` signal (``SignalEnvelope/volatile``) is written without a `seq` to the session's
    /// connection and kept nowhere: refused with ``Refusal/recipientAway(_:)`` when the session is away.
    @discardableResult
    public func deliverRemote(
        to peer: String,
        prefix: ByteBuffer,
        origin: (sender: String, id: String?, type: SignalType)? = nil,
        check: RemoteCheck = .none,
        volatile: Bool = false
    ) -> RemoteDelivery {
        var actions: [HubAction] = []
        let queued = origin.map { HubState.QueuedOrigin(sender: $0.sender, id: $0.id, type: $0.type, remote: true) }
        let (result, wakes) = locked.withLockedValue { locked -> (RemoteDelivery, Wakes) in
            if let refusal = Self.refusal(of: check, for: peer, in: locked.state) {
                return (.refused(refusal), Wakes())
            }
            if volatile {
                guard let message = ServerMessage.unsequenced(prefix) else { return (.refused(.unavailable), Wakes()) }
                if let refusal = locked.state.deliverVolatile(message, to: peer, actions: &actions) {
                    return (.refused(refusal), Wakes())
                }
                return (.delivered, Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil))
            }
            let delivery = locked.state.deliver(to: peer, .prefix(prefix), origin: queued, actions: &actions)
            let result: RemoteDelivery
            switch delivery {
            case .delivered: result = .delivered
            case .queued: result = .queued
            case .queueFull: result = .refused(.queueFull(peer))
            }
            return (result, Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil))
        }
        wakes.wakeAll()
        return result
    }

    private static func refusal(of check: RemoteCheck, for peer: String, in state: HubState) -> Refusal? {
        guard let recipientRooms = state.sessions[peer]?.rooms else { return .peerUnavailable(peer) }
        switch check {
        case .none:
            return nil
        case .member(let room):
            return recipientRooms.contains(room) ? nil : .recipientNotInRoom(peer: peer, room: room)
        case .signal(let sender, let room, let senderRooms):
            return state.policy.deliver(
                to: peer,
                from: sender,
                room: room,
                recipientRooms: recipientRooms,
                senderRooms: senderRooms
            )
        }
    }

    /// The `expired` notices owed to senders on other nodes (queued signals whose recipient's session
    /// ended unread), for the backend to carry back.
    public func takeRemoteExpiries() -> [HubState.RemoteExpiry] {
        locked.withLockedValue { $0.state.takeRemoteExpiries() }
    }
}
