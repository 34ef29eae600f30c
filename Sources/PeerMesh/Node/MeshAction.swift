/// What a mesh node asks its driver (socket transport or simulator) to do, or tells it.
public enum MeshAction: Hashable, Sendable {
    /// Send a message to another node.
    case send(to: MeshKey, MeshMessage)
    /// Hand a signal to a peer connected to this node.
    case deliver(peer: String, MeshSignal)
    /// Tell a peer connected to this node that its signal has no recipient (`peer-unavailable`).
    case unavailable(SignalKey, peer: String)
    /// The member list changed.
    case membership(MembershipEvent)
}
