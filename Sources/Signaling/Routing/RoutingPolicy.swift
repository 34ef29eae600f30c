import NIOCore

/// Every protocol rule about who may do what, as one pure value with no I/O: the single hub
/// (``HubState``), the cluster (``ClusterHub`` with the state its scripts return) and the mesh bridge
/// (on the recipient's node, for signals from other nodes) all ask it, so the three backends cannot drift
/// apart. Each question returns a typed decision; a refusal is a ``Refusal``, which alone knows the wire
/// error code and text.
///
/// The rules, by the contract (Docs/protocol.md):
/// - **Identity**: `?peer=` must be owned by the token's `sub` when a token is given; an id in use is
///   refused (`id-taken`, 4009) unless the client's token owns it, which takes the older session over.
/// - **Resume**: a token resumes once, by the peer it names (and owns, with auth on).
/// - **Rooms**: the token's `rooms` grant, at most ``HubLimits/maxRoomsPerPeer`` rooms per peer and
///   ``HubLimits/maxPeersPerRoom`` peers per room; joining a room again changes nothing but `meta`, and
///   when it changes `meta` the others are told (`peer-updated`), as for an `update`, which only a member
///   may send.
/// - **Signals**: the sender must be in the room it names; the recipient must exist, be in that room, or,
///   with ``HubLimits/requireSharedRoom`` and no room named, share a room with the sender. The sender's
///   node checks what it knows (the sender's rooms); the recipient's node checks the rest.
/// - **Queues**: a signal for an away session is refused past the session's queue bound or the global one.
/// - **Volatile signals** reach only a recipient connected now; an away one refuses them, a broadcast
///   skips it.
public struct RoutingPolicy: Sendable {
    public var limits: HubLimits

    public init(limits: HubLimits) {
        self.limits = limits
    }

    // MARK: Sessions

    /// How a fresh session's peer id is chosen.
    public enum Identity: Sendable, Equatable {
        /// This id (requested, or the token's `sub`).
        case id(String)
        /// A random id: the client asked for none and has no token.
        case random
        case refuse(Refusal)
    }

    /// The id of a fresh session, from `?peer=` and the verified token's `sub` (``PeerIdentity``).
    public func identity(requested: String?, subject: String?) -> Identity {
        switch PeerIdentity.choose(requested: requested, subject: subject) {
        case .id(let id): return .id(id)
        case .random: return .random
        case .forbidden(let requested): return .refuse(.peerIDNotAllowed(requested))
        }
    }

    /// What happens when a fresh session's id already has a session.
    public enum Collision: Sendable, Equatable {
        /// The token's owner takes the id over: the older session ends (its connection closes with 4009).
        case takeOver
        /// Draw another random id (the client asked for none).
        case drawAgain
        case refuse(Refusal)
    }

    /// A fresh session asks for `peer`, which is in use. `requested` is `?peer=`, `subject` the token's `sub`.
    public func collision(peer: String, requested: String?, subject: String?) -> Collision {
        if subject != nil { return .takeOver }
        if requested == nil { return .drawAgain }
        return .refuse(.idTaken(peer))
    }

    /// Whether a resume may proceed. `known` is whether a session exists for the token's peer and the
    /// token's secret is its current one (or the one it resumed with, while that resume's `welcome` has
    /// not been written: the retry window of Docs/protocol.md). `subject` is a verified token's `sub`.
    public func resume(peer: String?, known: Bool, subject: String?) -> Refusal? {
        guard let peer, known, PeerIdentity.owns(subject, peer) else { return .sessionNotResumable }
        return nil
    }

    // MARK: Rooms

    /// What a `join` does.
    public enum Join: Sendable, Equatable {
        /// A first join: the member is added and the others get `peer-joined`.
        case join
        /// Already a member: only its `meta` changes, and no limit applies. The others are told (`peer-updated`)
        /// when the new `meta` differs from the stored one (``rejoinUpdates(previous:meta:)``).
        case rejoin
        case refuse(Refusal)
    }

    /// Decides a `join` of `room` by a peer with `grant`, already in `rooms`, into a room of `roomSize`
    /// members (`isMember`: whether the peer is one of them). `tenantRooms`: the rooms the room's tenant
    /// has (``Tenant``), asked only when the join would open a new room of a named tenant.
    public func join(
        room: String,
        grant: RoomGrant,
        isMember: Bool,
        roomsHeld: Int,
        roomSize: Int,
        tenantRooms: () -> Int = { 0 }
    ) -> Join {
        guard grant.allows(room) else { return .refuse(.roomNotGranted(room)) }
        if isMember { return .rejoin }
        guard roomsHeld < limits.maxRoomsPerPeer else { return .refuse(.tooManyRooms(limit: limits.maxRoomsPerPeer)) }
        guard roomSize < limits.maxPeersPerRoom else {
            return .refuse(.roomFull(room, limit: limits.maxPeersPerRoom))
        }
        if roomSize == 0, limits.maxRoomsPerTenant != .max, tenantRooms() >= limits.maxRoomsPerTenant,
            !Tenant.of(room).isDefault
        {
            return .refuse(.tenantRoomsFull(limit: limits.maxRoomsPerTenant))
        }
        return .join
    }

    /// Decides a `leave`.
    public func leave(room: String, isMember: Bool) -> Refusal? {
        isMember ? nil : .notInRoom(room)
    }

    /// Decides an `update` of one's `meta` in `room`: only a member may (the others then get `peer-updated`,
    /// whatever the new `meta` is).
    public func update(room: String, isMember: Bool) -> Refusal? {
        isMember ? nil : .notInRoom(room)
    }

    /// Whether a re-join (``Join/rejoin``) that brings `meta` changes the member's stored `previous` one, and
    /// so is announced as `peer-updated`. Compared as sent, byte for byte; no `meta` counts as `{}`, so a
    /// resent `join` (the same `meta`, or none twice) tells nobody anything.
    public func rejoinUpdates(previous: ByteBuffer?, meta: ByteBuffer?) -> Bool {
        let empty = ByteBuffer(string: "{}")
        return (previous ?? empty) != (meta ?? empty)
    }

    // MARK: Signals

    /// The sender's side of a signal (or room message): the room it names, if any, must be one of the
    /// sender's. Checked where the sender's session is.
    @inlinable
    public func send(room: String?, senderRooms: [String]) -> Refusal? {
        if let room, !senderRooms.contains(room) { return .senderNotInRoom(room) }
        return nil
    }

    /// The recipient's side of an addressed signal, checked where the recipient's session is.
    /// - Parameters:
    ///   - recipientRooms: the recipient's rooms, or nil when it has no session.
    ///   - senderRooms: the sender's rooms (only read with ``HubLimits/requireSharedRoom`` and no `room`).
    @inlinable
    public func deliver(
        to recipient: String,
        from sender: String,
        room: String?,
        recipientRooms: [String]?,
        senderRooms: [String]
    ) -> Refusal? {
        guard let recipientRooms else { return .peerUnavailable(recipient) }
        if let room {
            return recipientRooms.contains(room) ? nil : .recipientNotInRoom(peer: recipient, room: room)
        }
        if limits.requireSharedRoom && recipient != sender && !recipientRooms.contains(where: senderRooms.contains) {
            return .noSharedRoom(recipient)
        }
        return nil
    }

    /// The last step for a **volatile** signal that passed ``deliver(to:from:room:recipientRooms:senderRooms:)``:
    /// it is written only to a recipient connected now (`connected`); an away recipient refuses it
    /// (``Refusal/recipientAway(_:)``), since volatile messages are never queued or buffered.
    @inlinable
    public func deliverVolatile(to recipient: String, connected: Bool) -> Refusal? {
        connected ? nil : .recipientAway(recipient)
    }

    /// Whether the sender's rooms must travel with a signal to the recipient's node (only they decide
    /// ``deliver(to:from:room:recipientRooms:senderRooms:)`` there).
    @inlinable
    public func needsSenderRooms(room: String?, to recipient: String, from sender: String) -> Bool {
        limits.requireSharedRoom && room == nil && recipient != sender
    }

    /// Whether a signal of `size` bytes may be queued for an away recipient that holds `queuedCount`
    /// messages / `queuedBytes` bytes queued while away, with `globalBytes` held by every resume buffer.
    @inlinable
    public func mayQueue(size: Int, queuedCount: Int, queuedBytes: Int, globalBytes: Int) -> Bool {
        queuedCount < limits.resumeBufferMessages && queuedBytes + size <= limits.resumeBufferBytes
            && globalBytes + size <= limits.globalBufferBytes
    }
}
