/// What routing needs to know about the rest of the node at the moment of a decision: the live member
/// list, which members are suspected, this node's directory as a home node, and the peers it hosts.
/// Built by `MeshNode` from its other state machines; routing only reads it.
public struct RoutingView: Sendable {
    public var me: MeshKey
    /// Live members in key order, this node included.
    public var live: [MeshKey]
    public var liveSet: Set<MeshKey>
    public var suspects: Set<MeshKey>
    public var directory: HomeDirectory
    public var localPeers: Set<String>
    public var replicas: Int

    /// Home nodes of `key`: unsuspected ones first, each group closest first.
    func homes(of key: MeshKey) -> [MeshKey] {
        let homes = Ownership.closest(to: key, among: live, replicas: replicas)
        return homes.filter { !suspects.contains($0) } + homes.filter { suspects.contains($0) }
    }

    func isUsable(_ node: MeshKey) -> Bool {
        liveSet.contains(node)
    }
}
