import Crypto

/// What a node knows about one member: the unit SWIM disseminates.
///
/// The member's own facts — its address, its incarnation, and whether it left — are the member's to
/// state: every update carries the member's Ed25519 signature over them (``MemberProof``), made by the
/// member itself when it joined, refuted a suspicion or left, and passed on unchanged by everyone else.
/// Any member may say another is `suspect` or `dead`, but only at an incarnation and address that member
/// signed. An update without a valid proof is refused, so a member cannot move another to an address of
/// its choosing, or raise its incarnation (to 0xFFFFFFFF, say) on its behalf.
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
    /// The node's signature over (node, address, incarnation, left); nil for an unsigned update, which
    /// members refuse.
    public var proof: MemberProof?

    public init(node: MeshKey, address: String, incarnation: UInt32, status: Status, proof: MemberProof? = nil) {
        self.node = node
        self.address = address
        self.incarnation = incarnation
        self.status = status
        self.proof = proof
    }

    /// An update about `identity`'s own node, signed by it.
    public init(signedBy identity: NodeIdentity, address: String, incarnation: UInt32, status: Status) {
        self.init(node: identity.id, address: address, incarnation: incarnation, status: status)
        proof = MemberProof(signing: self, with: identity)
    }

    /// Bytes on the wire: id[32] ‖ incarnation:UInt32 ‖ status:UInt8 ‖ address:string ‖ signed:UInt8 ‖
    /// [signer[32] ‖ signature[64]].
    public var wireSize: Int { 32 + 4 + 1 + 2 + address.utf8.count + 1 + (proof == nil ? 0 : 96) }

    /// True when `proof` is the node's own valid signature over this update's address, incarnation and
    /// left flag (the status `left` must be signed as such; any other status rides on an ordinary claim).
    public var isSigned: Bool {
        guard let proof else { return false }
        return proof.verifies(self)
    }

    /// The canonical bytes the node signs: `"peermesh/member/v1" ‖ node ‖ incarnation ‖ address ‖ left`.
    func claimBytes() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(raw: MemberProof.domain)
        writer.write(raw: node.bytes)
        writer.write(incarnation)
        writer.write(string: address)
        writer.write(UInt8(status == .left ? 1 : 0))
        return writer.bytes
    }
}

/// A member's Ed25519 signature over its own address and incarnation (see ``MemberUpdate``).
public struct MemberProof: Hashable, Sendable {
    /// The member's raw Ed25519 public key (32 bytes); its SHA-256 is the member's id.
    public let signer: [UInt8]
    /// 64 bytes.
    public let signature: [UInt8]

    static let domain = Array("peermesh/member/v1".utf8)

    public init(signer: [UInt8], signature: [UInt8]) {
        self.signer = signer
        self.signature = signature
    }

    init(signing update: MemberUpdate, with identity: NodeIdentity) {
        precondition(update.node == identity.id, "a node signs only its own member updates")
        signer = Array(identity.publicKey.rawRepresentation)
        signature = Array(try! identity.privateKey.signature(for: update.claimBytes()))
    }

    func verifies(_ update: MemberUpdate) -> Bool {
        guard signer.count == 32, signature.count == 64,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: signer),
            MeshKey(nodePublicKey: key) == update.node
        else { return false }
        return key.isValidSignature(signature, for: update.claimBytes())
    }
}
