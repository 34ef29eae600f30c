import Crypto

/// A 256-bit position in the mesh's key space. Node ids and peer keys live in the same space, so
/// "closest" is well defined: the XOR of two keys read as a big-endian number.
public struct MeshKey: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// 32 bytes, big-endian.
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32, "a mesh key is 32 bytes")
        self.bytes = bytes
    }

    /// The key a peer id maps to: SHA-256 of its UTF-8 bytes.
    public init(peer: String) {
        self.init(bytes: Array(SHA256.hash(data: Array(peer.utf8))))
    }

    /// A node's id: SHA-256 of its Ed25519 public key, so nobody can choose where its node lands.
    public init(nodePublicKey: Curve25519.Signing.PublicKey) {
        self.init(bytes: Array(SHA256.hash(data: nodePublicKey.rawRepresentation)))
    }

    /// XOR distance to `other`.
    public func distance(to other: MeshKey) -> MeshKey {
        MeshKey(bytes: zip(bytes, other.bytes).map { $0 ^ $1 })
    }

    public static func < (lhs: MeshKey, rhs: MeshKey) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    public var description: String {
        bytes.prefix(6).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// DHT-style ownership: the `replicas` live nodes closest to a key by XOR distance are its home nodes.
public enum Ownership {
    /// The home nodes of `key` among `nodes`, closest first. Deterministic for a given member list, so
    /// every node that agrees on membership agrees on ownership.
    public static func homeNodes(of key: MeshKey, among nodes: some Collection<MeshKey>, replicas: Int = 3) -> [MeshKey]
    {
        Array(nodes.sorted { $0.distance(to: key) < $1.distance(to: key) }.prefix(replicas))
    }
}

extension MeshKey {
    /// The first 8 bytes as a big-endian integer: orders XOR distances without allocating (ties, which
    /// need 64 equal leading bits, fall back to the full comparison).
    var prefix64: UInt64 {
        bytes.withUnsafeBufferPointer { buffer in
            var value: UInt64 = 0
            for index in 0..<8 { value = value << 8 | UInt64(buffer[index]) }
            return value
        }
    }
}

extension Ownership {
    /// Same result as `homeNodes(of:among:replicas:)`, in one pass without sorting the whole list; for
    /// nodes that recompute ownership of many keys whenever membership changes.
    public static func closest(to key: MeshKey, among nodes: [MeshKey], replicas: Int = 3) -> [MeshKey] {
        let target = key.prefix64
        var best: [(distance: UInt64, node: MeshKey)] = []
        best.reserveCapacity(replicas + 1)
        for node in nodes {
            let distance = node.prefix64 ^ target
            if best.count == replicas, let last = best.last, !closer(distance, node, than: last, to: key) { continue }
            var index = best.count
            while index > 0, closer(distance, node, than: best[index - 1], to: key) { index -= 1 }
            best.insert((distance, node), at: index)
            if best.count > replicas { best.removeLast() }
        }
        return best.map(\.node)
    }

    private static func closer(
        _ distance: UInt64,
        _ node: MeshKey,
        than other: (distance: UInt64, node: MeshKey),
        to key: MeshKey
    ) -> Bool {
        if distance != other.distance { return distance < other.distance }
        return node.distance(to: key) < other.node.distance(to: key)
    }
}
