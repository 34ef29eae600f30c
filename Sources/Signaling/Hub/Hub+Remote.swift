import NIOConcurrencyHelpers
import NIOCore

/// What a backend that brings signals from other nodes (PeerMesh) needs from the in-memory hub: whether a
/// peer is here, who is in a room, and a way to hand a local session a message from elsewhere, sequenced
/// and buffered like any other.
extension Hub {
    /// Whether `peer` has a session on this hub (connected, or waiting out its resume grace period).
    public func hasSession(_ peer: String) -> Bool {
        locked.withLockedValue { $0.state.hasSession(peer) }
    }

    /// The members of `room` on this hub, with their `meta`.
    public func members(of room: String) -> [(peer: String, meta: ByteBuffer?)] {
        locked.withLockedValue { $0.state.rooms[room]?.map { ($0.peer, $0.meta) } ?? [] }
    }

    /// Whether `peer` is in `room` on this hub.
    public func isMember(_ peer: String, of room: String) -> Bool {
        locked.withLockedValue { $0.state.rooms[room]?.contains { $0.peer == peer } ?? false }
    }

    /// What became of a message from another node.
    public enum RemoteDelivery: Sendable, Equatable {
        /// Written to the session's connection (and kept for resume).
        case delivered
        /// The session is away: kept for its resume.
        case queued
        /// The session is away and its queue is full.
        case queueFull
        /// No session here.
        case noSession
    }

    /// Gives a local session a message that arrived from another node. `prefix` ends in `"seq":` (as
    /// `ServerMessage.signalPrefix` and the presence builders make it); the session's next `seq` completes
    /// it. With `origin` (a signal's sender, request id and type) a signal queued for an away session
    /// that is never read is reported by ``takeRemoteExpiries()``, and a full queue refuses it.
    @discardableResult
    public func deliverRemote(
        to peer: String,
        prefix: ByteBuffer,
        origin: (sender: String, id: String?, type: SignalType)? = nil
    ) -> RemoteDelivery {
        var actions: [HubAction] = []
        let queued = origin.map { HubState.QueuedOrigin(sender: $0.sender, id: $0.id, type: $0.type, remote: true) }
        let (result, wakes) = locked.withLockedValue { locked -> (RemoteDelivery, Wakes) in
            guard locked.state.hasSession(peer) else { return (.noSession, Wakes()) }
            let delivery = locked.state.deliver(to: peer, .prefix(prefix), origin: queued, actions: &actions)
            let result: RemoteDelivery
            switch delivery {
            case .delivered: result = .delivered
            case .queued: result = .queued
            case .queueFull: result = .queueFull
            }
            return (result, Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil))
        }
        wakes.wakeAll()
        return result
    }

    /// The `expired` notices owed to senders on other nodes (queued signals whose recipient's session
    /// ended unread), for the backend to carry back.
    public func takeRemoteExpiries() -> [HubState.RemoteExpiry] {
        locked.withLockedValue { $0.state.takeRemoteExpiries() }
    }
}
