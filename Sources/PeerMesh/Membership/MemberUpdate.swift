/// What a node knows about one member: the unit SWIM disseminates.
public struct MemberUpdate: Hashable, Sendable {
    public enum Status: UInt8, Sendable {
        case alive = 0
        case suspect = 1
        case dead = 2
        /// Left gracefully; treated like dead.
        case left = 3
    }

    public var node: MeshKey
    /// Where the node listens for mesh links (host:port for sockets, an opaque name in simulation).
    public var address: String
    /// Only the node itself raises its incarnation, to refute a suspicion.
    public var incarnation: UInt32
    public var status: Status

    public init(node: MeshKey, address: String, incarnation: UInt32, status: Status) {
        self.node = node
        self.address = address
        self.incarnation = incarnation
        self.status = status
    }

    /// Bytes on the wire: id[32] ‖ incarnation:UInt32 ‖ status:UInt8 ‖ address:string.
    public var wireSize: Int { 32 + 4 + 1 + 2 + address.utf8.count }
}
