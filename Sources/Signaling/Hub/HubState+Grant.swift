extension HubState {
    /// A session's token was replaced (a fresh token sent in band, or a resume with a new token): from now
    /// on `grant` decides which rooms it may join, and it leaves every room `grant` does not allow — the
    /// other members get `peer-left`, its own connection (if any) a `left` without `id` per room. The relay
    /// path is not involved: only the session's grant and its rooms change. Returns the rooms left, in the
    /// order they were joined.
    @discardableResult
    public mutating func replaceGrant(of peer: String, with grant: RoomGrant, actions: inout [HubAction]) -> [String] {
        guard let session = sessions[peer] else { return [] }
        session.grant = grant
        let revoked = session.rooms.filter { !grant.allows($0) }
        guard !revoked.isEmpty else { return [] }
        session.rooms.removeAll { !grant.allows($0) }
        for room in revoked {
            self.removeMember(peer, from: room, actions: &actions)
            if let connection = session.connection {
                actions.append(.send(connection, ServerMessage.left(room: room, id: nil)))
            }
        }
        return revoked
    }
}
