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

    /// Gives a local session a message that arrived from another node. `prefix` ends in `"seq":` (as
    /// `ServerMessage.signalPrefix` and the presence builders make it); the session's next `seq` completes
    /// it. Returns false when `peer` has no session here.
    @discardableResult
    public func deliverRemote(to peer: String, prefix: ByteBuffer) -> Bool {
        var actions: [HubAction] = []
        let (found, wakes) = locked.withLockedValue { locked -> (Bool, Wakes) in
            guard locked.state.hasSession(peer) else { return (false, Wakes()) }
            _ = locked.state.deliver(to: peer, .prefix(prefix), origin: nil, actions: &actions)
            return (true, Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil))
        }
        wakes.wakeAll()
        return found
    }
}
