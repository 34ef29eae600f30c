import NIOCore

/// The hub's whole state and every decision it makes, with no I/O: sessions, peer ids, rooms, presence,
/// addressed relay, resume buffers and grace periods. Each event returns the actions to perform.
public struct HubState: Sendable {
    public let limits: HubLimits
    /// The protocol's rules, shared with the cluster and the mesh.
    public let policy: RoutingPolicy
    public internal(set) var counters = HubCounters()
    var sessions: [String: Session] = [:]
    var connections: [ConnectionID: String] = [:]
    var rooms: [String: [Member]] = [:]
    /// Rooms per named tenant (``Tenant``), kept only when ``HubLimits/maxRoomsPerTenant`` is set.
    var tenantRooms: [Tenant: Int] = [:]
    var detached: Set<String> = []
    /// The sessions waiting to resume, oldest first (so also in the order their grace periods end).
    /// Entries of sessions that resumed or ended since are skipped when reached, and dropped when they
    /// outnumber the live ones.
    var detachQueue = CircularBuffer<(peer: String, until: UInt64)>()
    /// Sessions waiting to resume per address they last connected from, and their queue (as above).
    var detachedByClient: [String: Int] = [:]
    var detachQueueByClient: [String: CircularBuffer<(peer: String, until: UInt64)>] = [:]
    /// Sessions resumed whose new connection's `welcome` has not been written yet, with the secret it
    /// resumed with. Until then, that secret stays good for another resume: a resume cut off before its
    /// `welcome` (and the new token) went out can be retried instead of losing the session. Once the
    /// welcome is written (``welcomeWritten(_:)``), the token has been used: it resumes exactly once.
    var unconfirmedResumes: [String: SessionToken] = [:]
    var bufferedBytes = 0
    var remoteExpiries: [RemoteExpiry] = []
    var randomness = RandomCharacters()
    /// Whether sessions starting and ending, joins, leaves and emptied rooms are recorded as ``HubEvent``s
    /// (for webhooks; off by default, so a hub without them keeps no events).
    public var recordsEvents = false
    /// The events recorded since the last ``takeEvents()``, in the order they happened.
    public internal(set) var events: [HubEvent] = []

    public init(limits: HubLimits = HubLimits()) {
        self.limits = limits
        self.policy = RoutingPolicy(limits: limits)
    }

    // MARK: Inspection

    public var sessionCount: Int { sessions.count }
    public var connectedCount: Int { connections.count }
    public var roomCount: Int { rooms.count }
    public var totalBufferedBytes: Int { bufferedBytes }
    public func peer(of connection: ConnectionID) -> String? { connections[connection] }
    public func members(of room: String) -> [String] { rooms[room]?.map(\.peer) ?? [] }
    public func hasSession(_ peer: String) -> Bool { sessions[peer] != nil }
    public func resumeToken(of peer: String) -> String? { sessions[peer].map { $0.token.wireForm(peer: peer) } }
    public func bufferedCount(of peer: String) -> Int { sessions[peer]?.buffer.count ?? 0 }

    // MARK: Events

    /// A connection finished its upgrade and asks for a session. The first action for `connection`
    /// is always the `welcome` (rendered by `welcome`) followed by any replay.
    public mutating func open(
        _ connection: ConnectionID,
        _ request: OpenRequest,
        now: UInt64,
        welcome: (_ peer: String, _ token: String, _ resumed: Bool, _ gap: Bool) -> ByteBuffer,
        actions: inout [HubAction]
    ) -> OpenOutcome {
        switch request {
        case .fresh(let requested, let subject, let grant, let client):
            var peer: String
            switch policy.identity(requested: requested, subject: subject) {
            case .id(let id):
                peer = id
            case .random:
                peer = self.randomPeerID()
            case .refuse(let refusal):
                return self.refuse(connection, refusal, actions: &actions)
            }
            if sessions[peer] != nil {
                switch policy.collision(peer: peer, requested: requested, subject: subject) {
                case .takeOver:
                    // The token's owner takes its id over; the older session ends.
                    counters.takeovers += 1
                    if let old = sessions[peer]?.connection {
                        actions.append(.close(old, .idTaken, reason: "session taken over"))
                    }
                    self.endSession(peer, reason: .closed, actions: &actions)
                case .drawAgain:
                    peer = self.randomPeerID()
                case .refuse(let refusal):
                    return self.refuse(connection, refusal, actions: &actions)
                }
            }
            let token = SessionToken.random(using: &randomness.source)
            let session = Session(peer: peer, token: token, connection: connection, grant: grant)
            session.client = client
            sessions[peer] = session
            connections[connection] = peer
            self.record(.sessionStarted(peer: peer))
            actions.append(.send(connection, welcome(peer, token.wireForm(peer: peer), false, false)))
            return .opened(peer: peer, resumed: false, gap: false, replayed: 0)

        case .resume(let oldToken, let last, let subject, let client):
            // The token names its session's peer, so no table of tokens is kept (one less entry per session).
            let parsed = SessionToken.parseWireForm(oldToken)
            let session = parsed.flatMap { sessions[$0.peer] }
            let known =
                parsed.map { parsed in
                    session?.token.matches(parsed.secret) == true
                        || unconfirmedResumes[parsed.peer]?.matches(parsed.secret) == true
                } ?? false
            if let refusal = policy.resume(peer: parsed?.peer, known: known, subject: subject) {
                return self.refuse(connection, refusal, actions: &actions)
            }
            guard let (peer, secret) = parsed, let session else {
                return self.refuse(connection, .sessionNotResumable, actions: &actions)
            }
            if let old = session.connection {
                connections[old] = nil
                actions.append(.close(old, .idTaken, reason: "session resumed elsewhere"))
            } else {
                self.undetach(session)
            }
            session.client = client
            unconfirmedResumes[peer] = secret
            let token = SessionToken.random(using: &randomness.source)
            session.token = token
            session.connection = connection
            session.archiveAnswers(limit: limits.rememberedRequests)
            connections[connection] = peer
            let gap = last < session.resumeState.droppedThrough || last > session.lastSeq
            actions.append(.send(connection, welcome(peer, token.wireForm(peer: peer), true, gap)))
            var replayed = 0
            for index in session.buffer.indices {
                // Everything after `last`; with an impossible `last` (beyond our seq) at least what was
                // queued while away, so no queued signal is left behind.
                let entry = session.buffer[index]
                guard entry.seq > last || (last > session.lastSeq && entry.queued) else { continue }
                actions.append(.send(connection, entry.message))
                replayed += 1
            }
            for index in session.buffer.indices where session.buffer[index].queued {
                session.buffer[index].queued = false
                session.buffer[index].queuedFrom = nil
            }
            session.resumeState.queuedCount = 0
            session.resumeState.queuedBytes = 0
            counters.resumes += 1
            counters.replayed += replayed
            if gap { counters.gaps += 1 }
            return .opened(peer: peer, resumed: true, gap: gap, replayed: replayed)
        }
    }

    /// A connection's socket is gone. `keepSession` is true for drops without a close frame and the
    /// server's own 1001/1011/1013 closes: the session then waits `resumeGrace` for its client.
    public mutating func closed(_ connection: ConnectionID, keepSession: Bool, now: UInt64, actions: inout [HubAction])
    {
        guard let peer = connections.removeValue(forKey: connection) else { return }
        guard sessions[peer]?.connection == connection else { return }
        if keepSession && limits.resumeGraceNanos > 0 && limits.maxDetachedSessions > 0 {
            // At the bound, the oldest session waiting to resume ends (as if its grace period were over:
            // its rooms get `peer-left`, senders of signals queued for it `expired`) to make room.
            // The same per address, so one address cannot push everyone else's sessions out.
            let client = sessions[peer]!.client
            if let client, limits.maxDetachedPerClient > 0 {
                while detachedByClient[client, default: 0] >= limits.maxDetachedPerClient,
                    let oldest = self.popOldestDetached(of: client)
                {
                    counters.detachedEvicted += 1
                    self.endSession(oldest, reason: .expired, actions: &actions)
                }
            }
            while detached.count >= limits.maxDetachedSessions, let oldest = self.popOldestDetached() {
                counters.detachedEvicted += 1
                self.endSession(oldest, reason: .expired, actions: &actions)
            }
            let until = now + limits.resumeGraceNanos
            sessions[peer]!.connection = nil
            sessions[peer]!.resumeState.detachedUntil = until
            detached.insert(peer)
            detachQueue.append((peer, until))
            if detachQueue.count > 2 * detached.count + 64 { self.compactDetachQueue() }
            if let client {
                detachedByClient[client, default: 0] += 1
                detachQueueByClient[client, default: CircularBuffer()].append((peer, until))
            }
        } else {
            self.endSession(peer, reason: .closed, actions: &actions)
        }
    }

    /// A resumed connection's `welcome` was written while it was still the session's connection: the
    /// token it resumed with no longer resumes (until then a resume cut off before its welcome may be
    /// retried with it).
    public mutating func welcomeWritten(_ connection: ConnectionID) {
        guard !unconfirmedResumes.isEmpty, let peer = connections[connection] else { return }
        unconfirmedResumes[peer] = nil
    }

    /// Time passed: ends the sessions whose grace period is over (the oldest first; the queue is in
    /// the order their grace periods end).
    public mutating func tick(now: UInt64, actions: inout [HubAction]) {
        while let first = detachQueue.first, first.until <= now {
            detachQueue.removeFirst()
            if self.isDetached(first) { self.endSession(first.peer, reason: .expired, actions: &actions) }
        }
    }

    /// Whether a queue entry still stands for a session waiting to resume (not resumed or ended since).
    func isDetached(_ entry: (peer: String, until: UInt64)) -> Bool {
        guard let session = sessions[entry.peer], session.connection == nil else { return false }
        return session.resumeState.detachedUntil == entry.until
    }

    /// Takes the oldest session still waiting to resume off the queue.
    mutating func popOldestDetached() -> String? {
        while let first = detachQueue.popFirst() {
            if self.isDetached(first) { return first.peer }
        }
        return nil
    }

    /// Takes the oldest session of `client` still waiting to resume off that address's queue.
    mutating func popOldestDetached(of client: String) -> String? {
        while let first = detachQueueByClient[client]?.popFirst() {
            if self.isDetached(first) { return first.peer }
        }
        return nil
    }

    /// A session stops waiting to resume (it resumed or ended).
    mutating func undetach(_ session: Session) {
        guard detached.remove(session.peer) != nil, let client = session.client else { return }
        let left = detachedByClient[client, default: 1] - 1
        if left > 0 {
            detachedByClient[client] = left
        } else {
            detachedByClient[client] = nil
            detachQueueByClient[client] = nil
        }
    }

    mutating func compactDetachQueue() {
        var live = CircularBuffer<(peer: String, until: UInt64)>(initialCapacity: detached.count)
        for entry in detachQueue where self.isDetached(entry) { live.append(entry) }
        detachQueue = live
    }

    /// A validated request from a connected client.
    public mutating func receive(_ connection: ConnectionID, _ message: ClientMessage, actions: inout [HubAction]) {
        guard let peer = connections[connection] else { return }
        // The client read the welcome of its resume: the secret it resumed with is done.
        if !unconfirmedResumes.isEmpty { unconfirmedResumes[peer] = nil }
        switch message.request {
        case .ping:
            actions.append(.send(connection, ServerMessage.pong(id: message.id)))
        case .received(let seq):
            self.trimBuffer(of: peer, through: seq)
        case .auth:
            actions.append(.send(connection, Refusal.authNotEnabled.errorMessage(id: message.id)))
        case .grant(let grant):
            self.replaceGrant(of: peer, with: grant, actions: &actions)
        case .join(let room, let meta):
            self.join(peer, connection: connection, room: room, meta: meta, id: message.id, actions: &actions)
        case .update(let room, let meta):
            self.update(peer, connection: connection, room: room, meta: meta, id: message.id, actions: &actions)
        case .leave, .signal:
            // Requests that must not take effect twice: a resent id is answered from memory.
            guard let index = sessions.index(forKey: peer) else { return }
            if let id = message.id,
                let earlier = self.session(at: index, { $0.previousAnswer(for: id) })
            {
                actions.append(earlier.action(connection, id: id))
                return
            }
            let answer: Answer
            if case .signal(let envelope) = message.request {
                answer = self.relay(envelope, from: peer, at: index, id: message.id, actions: &actions)
            } else if case .leave(let room) = message.request {
                answer = .message(self.leave(peer, room: room, id: message.id, actions: &actions))
            } else {
                return
            }
            actions.append(answer.action(connection, id: message.id))
            if let id = message.id, limits.rememberedRequests > 0, let index = sessions.index(forKey: peer) {
                let limit = limits.rememberedRequests
                self.session(at: index) { $0.remember(answer, for: id, limit: limit) }
            }
        }
    }

    // MARK: Rooms

    mutating func join(
        _ peer: String,
        connection: ConnectionID,
        room: String,
        meta: ByteBuffer?,
        id: String?,
        actions: inout [HubAction]
    ) {
        let session = sessions[peer]!
        let index = rooms[room]?.firstIndex(where: { $0.peer == peer })
        switch policy.join(
            room: room,
            grant: session.grant,
            isMember: index != nil,
            roomsHeld: session.rooms.count,
            roomSize: rooms[room]?.count ?? 0,
            tenantRooms: { self.tenantRooms[Tenant.of(room), default: 0] }
        ) {
        case .refuse(let refusal):
            actions.append(.send(connection, self.errorReply(refusal, id: id)))
            return
        case .rejoin:
            // Joining twice changes nothing but the meta; a different meta is an update the others hear of.
            if policy.rejoinUpdates(previous: rooms[room]![index!].meta, meta: meta) {
                self.replaceMeta(of: peer, at: index!, in: room, with: meta, actions: &actions)
            }
        case .join:
            let meta = Self.ownCopy(of: meta)
            let prefix = ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta)
            for member in rooms[room] ?? [] {
                _ = self.deliver(to: member.peer, .prefix(prefix), origin: nil, actions: &actions)
            }
            if rooms[room] == nil, policy.limits.maxRoomsPerTenant != .max {
                let tenant = Tenant.of(room)
                if !tenant.isDefault { tenantRooms[tenant, default: 0] += 1 }
            }
            rooms[room, default: []].append(Member(peer: peer, meta: meta))
            sessions[peer]!.rooms.append(room)
            self.record(.peerJoined(peer: peer, room: room))
        }
        let others = (rooms[room] ?? []).lazy.filter { $0.peer != peer }.map { (peer: $0.peer, meta: $0.meta) }
        actions.append(.send(connection, ServerMessage.joined(room: room, peers: Array(others), id: id)))
    }

    /// `update`: a member's new `meta`; every other member gets `peer-updated` (before the sender's `updated`).
    mutating func update(
        _ peer: String,
        connection: ConnectionID,
        room: String,
        meta: ByteBuffer,
        id: String?,
        actions: inout [HubAction]
    ) {
        let index = rooms[room]?.firstIndex(where: { $0.peer == peer })
        if let refusal = policy.update(room: room, isMember: index != nil) {
            actions.append(.send(connection, self.errorReply(refusal, id: id)))
            return
        }
        self.replaceMeta(of: peer, at: index!, in: room, with: meta, actions: &actions)
        actions.append(.send(connection, ServerMessage.updated(room: room, id: id)))
    }

    /// Stores a member's new `meta` and tells the room's other members (`peer-updated`, sequenced).
    mutating func replaceMeta(
        of peer: String,
        at index: Int,
        in room: String,
        with meta: ByteBuffer?,
        actions: inout [HubAction]
    ) {
        let meta = Self.ownCopy(of: meta)
        rooms[room]![index].meta = meta
        let prefix = ServerMessage.peerUpdatedPrefix(room: room, peer: peer, meta: meta)
        for member in rooms[room]! where member.peer != peer {
            _ = self.deliver(to: member.peer, .prefix(prefix), origin: nil, actions: &actions)
        }
    }

    /// What the hub keeps from a message is copied out of the received frame at its own size, so a frame
    /// padded with ignored members is not held alive by what was kept from it.
    static func ownCopy(of bytes: ByteBuffer?) -> ByteBuffer? {
        guard let bytes else { return nil }
        return ByteBuffer(bytes: bytes.readableBytesView)
    }

    mutating func leave(_ peer: String, room: String, id: String?, actions: inout [HubAction]) -> ByteBuffer {
        let index = sessions[peer]!.rooms.firstIndex(of: room)
        if let refusal = policy.leave(room: room, isMember: index != nil) { return self.errorReply(refusal, id: id) }
        guard let index else { return ServerMessage.left(room: room, id: id) }
        sessions[peer]!.rooms.remove(at: index)
        self.removeMember(peer, from: room, actions: &actions)
        return ServerMessage.left(room: room, id: id)
    }

    mutating func removeMember(_ peer: String, from room: String, actions: inout [HubAction]) {
        guard var members = rooms[room] else { return }
        members.removeAll { $0.peer == peer }
        self.record(.peerLeft(peer: peer, room: room))
        if members.isEmpty {
            rooms[room] = nil
            if policy.limits.maxRoomsPerTenant != .max {
                let tenant = Tenant.of(room)
                if let count = tenantRooms[tenant] { tenantRooms[tenant] = count > 1 ? count - 1 : nil }
            }
            self.record(.roomEmpty(room: room))
            return
        }
        rooms[room] = members
        let prefix = ServerMessage.peerLeftPrefix(room: room, peer: peer)
        for member in members {
            _ = self.deliver(to: member.peer, .prefix(prefix), origin: nil, actions: &actions)
        }
    }

    mutating func errorReply(_ refusal: Refusal, id: String?) -> ByteBuffer {
        counters.errors[ErrorCode.allCases.firstIndex(of: refusal.code)!] += 1
        return refusal.errorMessage(id: id)
    }

    /// Refuses a connection's session: its `error` (when the contract sends one), then its close.
    mutating func refuse(_ connection: ConnectionID, _ refusal: Refusal, actions: inout [HubAction])
        -> OpenOutcome
    {
        let close = refusal.close
        if close.sendsError { actions.append(.send(connection, self.errorReply(refusal, id: nil))) }
        actions.append(.close(connection, close.code, reason: refusal.message))
        return .refused(close.code)
    }

    // MARK: Session end

    /// Ends `peer`'s session: it leaves its rooms (the others get `peer-left`), senders of signals still
    /// queued for it get `expired`; `reason` is what its `session.ended` event says.
    mutating func endSession(_ peer: String, reason: SessionEndReason, actions: inout [HubAction]) {
        guard let session = sessions.removeValue(forKey: peer) else { return }
        self.undetach(session)
        unconfirmedResumes[peer] = nil
        if let connection = session.connection { connections[connection] = nil }
        bufferedBytes -= session.bufferBytes
        for room in session.rooms {
            self.removeMember(peer, from: room, actions: &actions)
        }
        for entry in session.buffer {
            if let origin = entry.queuedFrom {
                self.notifyExpired(origin.origin, to: peer, actions: &actions)
            }
        }
        self.record(.sessionEnded(peer: peer, reason: reason))
    }

    // MARK: Events

    @inline(__always)
    mutating func record(_ event: HubEvent) {
        if recordsEvents { events.append(event) }
    }

    /// The events recorded since the last call.
    public mutating func takeEvents() -> [HubEvent] {
        defer { events = [] }
        return events
    }

    // MARK: Randomness

    /// An unused random id (``PeerIdentity/randomID(using:)``): unguessable, so knowing an id never
    /// lets anyone act as it.
    mutating func randomPeerID() -> String {
        while true {
            let candidate = PeerIdentity.randomID(using: &randomness)
            if sessions[candidate] == nil { return candidate }
        }
    }
}
