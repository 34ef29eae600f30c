/// The messages SWIM membership exchanges. Every probe message carries piggybacked updates.
public enum MembershipMessage: Hashable, Sendable {
    /// Are you alive? `probe` is the sender's number for this probe.
    case ping(probe: UInt32, updates: [MemberUpdate])
    /// Please ping `target` for me and forward its ack (SWIM's ping-req).
    case pingRequest(probe: UInt32, target: MeshKey, updates: [MemberUpdate])
    /// The answer to `ping(probe)` (possibly forwarded by an indirect prober).
    case ack(probe: UInt32, updates: [MemberUpdate])
    /// A new node asks a seed to let it in; carries its own alive record.
    case join(MemberUpdate)
    /// The seed's answer: every member it knows.
    case joinReply(members: [MemberUpdate])
    /// Pending updates pushed to a few members.
    case gossip(updates: [MemberUpdate])
    /// A node that just joined introduces itself to one member; applied but not re-gossiped (the
    /// newcomer sends it to every member itself, and the seed gossips the join for anyone it missed).
    case announce(MemberUpdate)

    /// Bytes on the wire: type:1 ‖ fields ‖ count:UInt16 ‖ updates.
    public var wireSize: Int {
        switch self {
        case .ping(_, let updates), .ack(_, let updates): 1 + 4 + Self.size(of: updates)
        case .pingRequest(_, _, let updates): 1 + 4 + 32 + Self.size(of: updates)
        case .join(let update), .announce(let update): 1 + update.wireSize
        case .joinReply(let members): 1 + Self.size(of: members)
        case .gossip(let updates): 1 + Self.size(of: updates)
        }
    }

    private static func size(of updates: [MemberUpdate]) -> Int {
        updates.reduce(2) { $0 + $1.wireSize }
    }
}

/// What membership asks its driver to do, or tells it.
public enum MembershipAction: Hashable, Sendable {
    case send(to: MeshKey, MembershipMessage)
    case changed(MembershipEvent)
}

/// A change in the member list as this node sees it.
public enum MembershipEvent: Hashable, Sendable {
    /// A member this node did not count as live before (new, or back from dead).
    case joined(MeshKey)
    case suspected(MeshKey)
    /// A suspected member refuted the suspicion.
    case recovered(MeshKey)
    /// Declared dead (or left).
    case failed(MeshKey)
}
