import NIOCore

/// What the server API asks of the in-memory hub (``ServerAPIBackend``): server messages, listings, a
/// session's state, and ending a session from outside. Pure, like the rest of ``HubState``.
extension HubState {
    /// Gives `peer`'s session a server message (a prefix ending in `"seq":`), sequenced and buffered like a
    /// presence event: written when connected, queued when away (pushing out the oldest entries past the
    /// bound, never refused). Nil when `peer` has no session.
    public mutating func publish(_ prefix: ByteBuffer, toPeer peer: String, actions: inout [HubAction])
        -> APIPublishCount?
    {
        guard let index = sessions.index(forKey: peer) else { return nil }
        switch self.deliver(at: index, .prefix(prefix), origin: nil, actions: &actions) {
        case .delivered: return APIPublishCount(delivered: 1)
        case .queued, .queueFull: return APIPublishCount(queued: 1)
        }
    }

    /// Gives every member of `room` the server message; nil when the room has no members.
    public mutating func publish(_ prefix: ByteBuffer, toRoom room: String, actions: inout [HubAction])
        -> APIPublishCount?
    {
        guard let members = rooms[room] else { return nil }
        var count = APIPublishCount()
        for member in members {
            switch self.deliver(to: member.peer, .prefix(prefix), origin: nil, actions: &actions) {
            case .delivered: count.delivered += 1
            case .queued, .queueFull: count.queued += 1
            }
        }
        return count
    }

    /// Every room with its member count, by name.
    public func roomSummaries() -> [APIRoomSummary] {
        rooms.map { APIRoomSummary(room: $0.key, members: $0.value.count) }.sorted { $0.room < $1.room }
    }

    /// A room's members in the order they joined, with their `meta`; nil when it does not exist.
    public func roomMembers(_ room: String) -> [APIRoomMember]? {
        rooms[room]?.map { APIRoomMember(peer: $0.peer, meta: $0.meta) }
    }

    /// `peer`'s session: connected or waiting to resume, and its rooms.
    public func sessionInfo(_ peer: String) -> APIPeerSession? {
        guard let session = sessions[peer] else { return nil }
        return APIPeerSession(peer: peer, connected: session.connection != nil, rooms: session.rooms)
    }

    /// Ends `peer`'s session from outside (the server API): its connection is closed with
    /// ``CloseCode/kicked`` and forgotten (its later close changes nothing), the session ends as on a client
    /// close (its rooms get `peer-left`, senders of still-queued signals `expired`), so its token no longer
    /// resumes. False when it had no session.
    public mutating func kick(_ peer: String, actions: inout [HubAction]) -> Bool {
        guard let session = sessions[peer] else { return false }
        if let connection = session.connection {
            actions.append(.close(connection, .kicked, reason: "kicked"))
        }
        self.endSession(peer, reason: .kicked, actions: &actions)
        return true
    }
}
