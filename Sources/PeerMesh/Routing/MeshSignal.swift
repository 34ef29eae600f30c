/// One signal crossing the mesh. Deduplicated by (`origin`, `id`): `origin` is the node the sending
/// peer is connected to, and `id` is unique among that node's signals.
public struct MeshSignal: Hashable, Sendable {
    public enum Target: Hashable, Sendable {
        /// One peer, wherever it is.
        case peer(String)
        /// Every member of a room but the sender (sent to the room's home node).
        case room(String)
        /// Several peers on the receiving node: one fan-out leg of a room broadcast.
        case peers([String])
    }

    public enum Route: UInt8, Hashable, Sendable {
        /// The receiver hosts the target peer(s).
        case direct = 0
        /// The receiver is a home node of the target's key and forwards.
        case viaHome = 1
    }

    public var origin: MeshKey
    public var id: UInt64
    public var from: String
    public var target: Target
    public var route: Route
    /// Inter-node hops taken so far, this one included once sent.
    public var hops: UInt8
    /// The v1 message bytes, relayed untouched.
    public var payload: [UInt8]
    /// The origin node's proof that `from` is its peer and that it sent this signal; every node that
    /// receives the signal checks it (``SignalCredential``). Nil only inside the entry node.
    public var credential: SignalCredential?

    public init(
        origin: MeshKey,
        id: UInt64,
        from: String,
        target: Target,
        route: Route,
        hops: UInt8,
        payload: [UInt8],
        credential: SignalCredential? = nil
    ) {
        self.origin = origin
        self.id = id
        self.from = from
        self.target = target
        self.route = route
        self.hops = hops
        self.payload = payload
        self.credential = credential
    }

    public var key: SignalKey { SignalKey(origin: origin, id: id) }

    /// True for a signal to one peer, false for a room broadcast or one of its legs.
    public var isAddressed: Bool {
        if case .peer = target { return true }
        return false
    }

    /// Bytes on the wire: origin[32] ‖ id:UInt64 ‖ from ‖ kind:1 ‖ target ‖ route:1 ‖ hops:1 ‖ length:UInt32 ‖ payload.
    public var wireSize: Int {
        let target: Int
        switch self.target {
        case .peer(let peer), .room(let peer): target = 2 + peer.utf8.count
        case .peers(let peers): target = peers.reduce(2) { $0 + 2 + $1.utf8.count }
        }
        return 32 + 8 + 2 + from.utf8.count + 1 + target + 1 + 1 + 4 + payload.count + 1
            + (credential.map { $0.sender.wireSize + 64 } ?? 0)
    }
}

/// The identity of a signal for deduplication and acks.
public struct SignalKey: Hashable, Sendable, Comparable {
    public var origin: MeshKey
    public var id: UInt64

    public init(origin: MeshKey, id: UInt64) {
        self.origin = origin
        self.id = id
    }

    public static func < (lhs: SignalKey, rhs: SignalKey) -> Bool {
        lhs.id != rhs.id ? lhs.id < rhs.id : lhs.origin < rhs.origin
    }
}
