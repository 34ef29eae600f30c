import Crypto

/// "Peer P is (or is no longer) connected to node H": what a hosting node announces to the home nodes
/// of P. A room membership is the same record with a room subject: "peer P, hosted by H, is in room R",
/// stored on the home nodes of the room's key.
///
/// Canonical layout (what `NodeIdentity.sign` signs): `version:1 ‖ kind:UInt8 ‖ peer:string ‖
/// [room:string] ‖ host[32] ‖ sequence:UInt64 ‖ expiresAt:UInt64 ‖ present:UInt8`.
public struct LocationRecord: Hashable, Sendable {
    public enum Subject: Hashable, Sendable {
        /// Where a peer is connected.
        case peer(String)
        /// That a peer is a member of a room (and on which node).
        case roomMember(room: String, peer: String)

        /// The key whose home nodes store this subject.
        public var key: MeshKey {
            switch self {
            case .peer(let peer): MeshKey(peer: peer)
            case .roomMember(let room, _): MeshKey(room: room)
            }
        }

        public var peer: String {
            switch self {
            case .peer(let peer), .roomMember(_, let peer): peer
            }
        }
    }

    public var subject: Subject
    /// The node the peer is connected to; must be the signer.
    public var host: MeshKey
    /// Orders records about one subject from one host; a higher sequence replaces a lower one.
    public var sequence: UInt64
    /// Mesh-clock nanoseconds after which home nodes forget the record unless it was refreshed.
    public var expiresAt: UInt64
    /// False for "disconnected" / "left the room": a tombstone that answers lookups until it expires.
    public var present: Bool

    public init(subject: Subject, host: MeshKey, sequence: UInt64, expiresAt: UInt64, present: Bool) {
        self.subject = subject
        self.host = host
        self.sequence = sequence
        self.expiresAt = expiresAt
        self.present = present
    }

    public var canonicalBytes: [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        switch subject {
        case .peer(let peer):
            writer.write(UInt8(1))
            writer.write(string: peer)
        case .roomMember(let room, let peer):
            writer.write(UInt8(2))
            writer.write(string: peer)
            writer.write(string: room)
        }
        writer.write(raw: host.bytes)
        writer.write(sequence)
        writer.write(expiresAt)
        writer.write(UInt8(present ? 1 : 0))
        return writer.bytes
    }

    public init(canonicalBytes bytes: [UInt8]) throws(MeshDecodingError) {
        var reader = ByteReader(bytes)
        guard try reader.readByte() == 1 else { throw MeshDecodingError("unknown location record version") }
        let kind = try reader.readByte()
        let peer = try reader.readString()
        switch kind {
        case 1: subject = .peer(peer)
        case 2: subject = .roomMember(room: try reader.readString(), peer: peer)
        default: throw MeshDecodingError("unknown location record kind \(kind)")
        }
        host = MeshKey(bytes: try reader.read(count: 32))
        sequence = try reader.readUInt64()
        expiresAt = try reader.readUInt64()
        let present = try reader.readByte()
        guard present <= 1 else { throw MeshDecodingError("present flag must be 0 or 1") }
        self.present = present == 1
        guard reader.isAtEnd else { throw MeshDecodingError("trailing bytes after a location record") }
    }

    /// Signs the record as `identity`; the identity must be the host.
    public func signed(by identity: NodeIdentity) -> VerifiedLocation {
        precondition(identity.id == host, "a node signs only records of peers it hosts")
        return VerifiedLocation(record: self, signed: identity.sign(body: canonicalBytes))
    }
}

/// A location record whose signature was checked and whose signer is the host it names. The only ways
/// to get one are signing your own record or verifying someone else's, so holding one means "the host
/// itself said this".
public struct VerifiedLocation: Hashable, Sendable {
    public let record: LocationRecord
    public let signed: SignedRecord

    fileprivate init(record: LocationRecord, signed: SignedRecord) {
        self.record = record
        self.signed = signed
    }

    /// Verifies `signed`: a valid signature, a body that decodes, and a signer whose node id is the
    /// record's host. Anything else is refused with the reason.
    public init(verifying signed: SignedRecord) throws(MeshIdentityError) {
        guard signed.isValid else { throw MeshIdentityError("location record signature does not verify") }
        let record: LocationRecord
        do {
            record = try LocationRecord(canonicalBytes: signed.body)
        } catch {
            throw MeshIdentityError("location record does not decode: \(error)")
        }
        guard signed.signerID == record.host else {
            throw MeshIdentityError("location record signed by a node other than its host")
        }
        self.record = record
        self.signed = signed
    }
}

extension MeshKey {
    /// The key a room maps to: SHA-256 of `"room:" + name`, so rooms and peers never share a key.
    public init(room: String) {
        self.init(bytes: Array(SHA256.hash(data: Array("room:\(room)".utf8))))
    }
}
