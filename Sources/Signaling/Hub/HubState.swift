import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Identifies one WebSocket connection (a session may be served by several over its life).
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "c\(raw)" }
}

/// What the hub decided to do; the I/O layer carries it out.
public enum HubAction: Sendable {
    /// Write one text message to a connection.
    case send(ConnectionID, ByteBuffer)
    /// Write an `ack` (``ServerMessage/ack(id:queued:)``) to a connection. Kept as its fields, so the
    /// connection writes it straight into its outgoing frames: no buffer per acknowledged signal.
    case ack(ConnectionID, id: String?, queued: Bool)
    /// Close a connection with a close frame.
    case close(ConnectionID, CloseCode, reason: String)
}

/// How a connection wants to start.
public enum OpenRequest: Sendable {
    /// A new session. `peer` is the requested id (`?peer=`), `subject` the verified token's `sub`.
    case fresh(peer: String?, subject: String?, grant: RoomGrant)
    /// Resume an earlier session (`?resume=…&last=…`). `subject` is a verified token's `sub`, if any.
    case resume(token: String, last: UInt64, subject: String?)
}

/// The outcome of opening a connection.
public enum OpenOutcome: Sendable, Equatable {
    case opened(peer: String, resumed: Bool, gap: Bool, replayed: Int)
    case refused(CloseCode)
    /// The decision is being made elsewhere (a cluster hub asks Redis); its welcome or refusal arrives
    /// through the connection's outbox.
    case pending
}

/// Cumulative counters the state machine keeps; the hub exports them as metrics when scraped.
public struct HubCounters: Sendable, Equatable {
    /// Signals relayed, indexed like `SignalType.allCases`.
    public var signals = [Int](repeating: 0, count: SignalType.allCases.count)
    /// Errors answered, indexed like `ErrorCode.allCases`.
    public var errors = [Int](repeating: 0, count: ErrorCode.allCases.count)
    public var resumes = 0
    public var replayed = 0
    public var gaps = 0
    public var expired = 0
    public var queued = 0
    public var takeovers = 0
}

/// The hub's whole state and every decision it makes, with no I/O: sessions, peer ids, rooms, presence,
/// addressed relay, resume buffers and grace periods. Each event returns the actions to perform.
public struct HubState: Sendable {
    /// One entry of a resume buffer (48 bytes: it is kept for every sequenced message until confirmed).
    struct Buffered {
        var seq: UInt64
        /// The message as sent, or — when `awaitsSeq` — the prefix every recipient of a broadcast or
        /// presence event shares (ending in `"seq":`), completed again if it is replayed. Sharing it keeps
        /// one copy per event instead of one per recipient.
        var stored: ByteBuffer
        var awaitsSeq: Bool
        /// Whether it arrived while the session was away (so it is part of the bounded queue).
        var queued: Bool
        /// Set for a signal queued while its recipient was away: whom to tell if it expires.
        var queuedFrom: QueuedOriginBox?

        /// The message's length in bytes.
        var size: Int {
            awaitsSeq ? stored.readableBytes + decimalDigits(seq) + 1 : stored.readableBytes
        }

        /// The message as sent.
        var message: ByteBuffer {
            awaitsSeq ? ServerMessage.sequenced(stored, seq: seq) : stored
        }
    }

    struct QueuedOrigin {
        var sender: String
        var id: String?
        var type: SignalType
        /// The sender is on another node (PeerMesh): its `expired` goes out through ``takeRemoteExpiries()``.
        var remote = false
    }

    /// A queued signal from a sender on another node that its recipient never read.
    public struct RemoteExpiry: Sendable, Equatable {
        public var sender: String
        public var id: String?
        public var signal: SignalType
        public var recipient: String
    }

    /// A ``QueuedOrigin`` kept in a resume buffer entry, boxed so the entries of the (rarely away)
    /// sessions stay small.
    final class QueuedOriginBox: Sendable {
        let origin: QueuedOrigin
        init(_ origin: QueuedOrigin) { self.origin = origin }
    }

    /// The answer to a request, remembered by request id so a resend is answered again (not redone).
    enum Answer {
        /// An `ack`: two fields rather than its bytes.
        case ack(queued: Bool)
        /// Any other answer (an `error`, `left`).
        case message(ByteBuffer)

        func action(_ connection: ConnectionID, id: String?) -> HubAction {
            switch self {
            case .ack(let queued): return .ack(connection, id: id, queued: queued)
            case .message(let buffer): return .send(connection, buffer)
            }
        }
    }

    /// One session. A class, so the sessions table holds 24-byte entries (key and reference) rather than
    /// whole sessions: a table sits at up to 2.7 buckets per entry after it grows (2.6 at 100,000
    /// sessions), and every bucket of an inline table would take a session's size. Only `HubState` holds
    /// sessions, under its owner's lock (hence `@unchecked Sendable`); a copy of a `HubState` would share
    /// them, so a `HubState` is never copied.
    final class Session: @unchecked Sendable {
        let peer: String
        var token: SessionToken
        var connection: ConnectionID?
        var rooms: [String] = []
        var grant: RoomGrant
        var nextSeq: UInt64 = 1
        var buffer = ResumeRing<Buffered>()
        var bufferBytes = 0
        /// What only some sessions need (a detached one, one that sent requests with ids), created on first
        /// use: kept out of line, it keeps every session 56 bytes smaller.
        fileprivate var rare: Rare? = nil

        init(peer: String, token: SessionToken, connection: ConnectionID?, grant: RoomGrant) {
            self.peer = peer
            self.token = token
            self.connection = connection
            self.grant = grant
        }

        /// The fields of ``Session`` most sessions never set (only its session refers to it).
        fileprivate final class Rare {
            var resumeState = ResumeState()
            var answers: [(id: String, answer: Answer)] = []
            var answersStart = 0
            var previousAnswers: [String: Answer] = [:]
            var previousOrder: [String] = []
        }

        /// What a session keeps for being away and resuming, beyond its buffer.
        struct ResumeState: Equatable {
            /// When a detached session ends (uptime nanoseconds).
            var detachedUntil: UInt64 = 0
            /// Entries that arrived while away; the queue bound applies to these only, so messages the
            /// client was sent but has not confirmed never make a signal to it bounce.
            var queuedCount = 0
            var queuedBytes = 0
            /// Highest seq dropped from the buffer before the client confirmed it.
            var droppedThrough: UInt64 = 0
        }

        private func rareForWriting() -> Rare {
            if let rare { return rare }
            let created = Rare()
            rare = created
            return created
        }

        /// Kept in `rare`: all zero until set, and setting all zero on a session without `rare` creates
        /// nothing.
        var resumeState: ResumeState {
            get { rare?.resumeState ?? ResumeState() }
            set { if rare != nil || newValue != ResumeState() { rareForWriting().resumeState = newValue } }
        }

        /// The answer given to request `id` on an earlier connection of this session.
        func previousAnswer(for id: String) -> Answer? {
            guard let rare, !rare.previousAnswers.isEmpty else { return nil }
            return rare.previousAnswers[id]
        }

        /// Moves the current connection's answers to the previous ones, keeping the newest `limit`.
        func archiveAnswers(limit: Int) {
            guard let rare else { return }
            for offset in rare.answers.indices {
                let (id, reply) = rare.answers[(rare.answersStart + offset) % rare.answers.count]
                if rare.previousAnswers.updateValue(reply, forKey: id) == nil { rare.previousOrder.append(id) }
            }
            rare.answers = []
            rare.answersStart = 0
            if rare.previousOrder.count > limit {
                for id in rare.previousOrder.prefix(rare.previousOrder.count - limit) { rare.previousAnswers[id] = nil }
                rare.previousOrder.removeFirst(rare.previousOrder.count - limit)
            }
        }

        /// Remembers the answer to request `id` on the current connection (a ring of at most `limit`, oldest
        /// at `answersStart` once full, so remembering one is O(1)), forgetting the oldest past `limit`.
        func remember(_ answer: Answer, for id: String, limit: Int) {
            let rare = rareForWriting()
            if rare.answers.count < limit {
                rare.answers.append((id, answer))
            } else {
                rare.answers[rare.answersStart] = (id, answer)
                rare.answersStart = (rare.answersStart + 1) % limit
            }
        }

        var lastSeq: UInt64 { nextSeq - 1 }
    }

    /// A sequenced message before its `seq` is known.
    enum Sequenced {
        /// A prefix ending in `"seq":`, shared by every recipient (presence, broadcasts, notices).
        case prefix(ByteBuffer)
        /// An addressed signal: its members and sender, completed in one buffer.
        case signal(members: ByteBuffer, from: String)

        /// The length of the message without its `seq` digits and closing brace.
        var prefixLength: Int {
            switch self {
            case .prefix(let prefix): return prefix.readableBytes
            case .signal(let members, let from): return ServerMessage.signalPrefixLength(members, from: from)
            }
        }

        func complete(seq: UInt64) -> ByteBuffer {
            switch self {
            case .prefix(let prefix): return ServerMessage.sequenced(prefix, seq: seq)
            case .signal(let members, let from): return ServerMessage.relayed(members, from: from, seq: seq)
            }
        }
    }

    struct Member {
        var peer: String
        var meta: ByteBuffer?
    }

    enum Delivery {
        case delivered, queued, queueFull
    }

    public let limits: HubLimits
    /// The protocol's rules, shared with the cluster and the mesh.
    public let policy: RoutingPolicy
    public private(set) var counters = HubCounters()
    private var sessions: [String: Session] = [:]
    private var connections: [ConnectionID: String] = [:]
    private(set) var rooms: [String: [Member]] = [:]
    private var detached: Set<String> = []
    /// Sessions resumed whose new connection's `welcome` has not been written yet, with the secret it
    /// resumed with. Until then, that secret stays good for another resume: a resume cut off before its
    /// `welcome` (and the new token) went out can be retried instead of losing the session. Once the
    /// welcome is written (``welcomeWritten(_:)``), the token has been used: it resumes exactly once.
    private var unconfirmedResumes: [String: SessionToken] = [:]
    private var bufferedBytes = 0
    private var remoteExpiries: [RemoteExpiry] = []
    private var randomness = RandomCharacters()

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
        case .fresh(let requested, let subject, let grant):
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
                    self.endSession(peer, actions: &actions)
                case .drawAgain:
                    peer = self.randomPeerID()
                case .refuse(let refusal):
                    return self.refuse(connection, refusal, actions: &actions)
                }
            }
            let token = SessionToken.random(using: &randomness.source)
            sessions[peer] = Session(peer: peer, token: token, connection: connection, grant: grant)
            connections[connection] = peer
            actions.append(.send(connection, welcome(peer, token.wireForm(peer: peer), false, false)))
            return .opened(peer: peer, resumed: false, gap: false, replayed: 0)

        case .resume(let oldToken, let last, let subject):
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
                detached.remove(peer)
            }
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
        if keepSession && limits.resumeGraceNanos > 0 {
            sessions[peer]!.connection = nil
            sessions[peer]!.resumeState.detachedUntil = now + limits.resumeGraceNanos
            detached.insert(peer)
        } else {
            self.endSession(peer, actions: &actions)
        }
    }

    /// A resumed connection's `welcome` was written while it was still the session's connection: the
    /// token it resumed with no longer resumes (until then a resume cut off before its welcome may be
    /// retried with it).
    public mutating func welcomeWritten(_ connection: ConnectionID) {
        guard !unconfirmedResumes.isEmpty, let peer = connections[connection] else { return }
        unconfirmedResumes[peer] = nil
    }

    /// Time passed: ends the sessions whose grace period is over.
    public mutating func tick(now: UInt64, actions: inout [HubAction]) {
        guard !detached.isEmpty else { return }
        let expired = detached.filter { (sessions[$0]?.resumeState.detachedUntil ?? 0) <= now }
        for peer in expired {
            self.endSession(peer, actions: &actions)
        }
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
        case .join(let room, let meta):
            self.join(peer, connection: connection, room: room, meta: meta, id: message.id, actions: &actions)
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

    private mutating func join(
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
            roomSize: rooms[room]?.count ?? 0
        ) {
        case .refuse(let refusal):
            actions.append(.send(connection, self.errorReply(refusal, id: id)))
            return
        case .rejoin:
            // Joining twice is idempotent: the meta is updated in place, nobody else is told again.
            rooms[room]![index!].meta = Self.ownCopy(of: meta)
        case .join:
            let meta = Self.ownCopy(of: meta)
            let prefix = ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta)
            for member in rooms[room] ?? [] {
                _ = self.deliver(to: member.peer, .prefix(prefix), origin: nil, actions: &actions)
            }
            rooms[room, default: []].append(Member(peer: peer, meta: meta))
            sessions[peer]!.rooms.append(room)
        }
        let others = (rooms[room] ?? []).lazy.filter { $0.peer != peer }.map { (peer: $0.peer, meta: $0.meta) }
        actions.append(.send(connection, ServerMessage.joined(room: room, peers: Array(others), id: id)))
    }

    /// What the hub keeps from a message is copied out of the received frame at its own size, so a frame
    /// padded with ignored members is not held alive by what was kept from it.
    static func ownCopy(of bytes: ByteBuffer?) -> ByteBuffer? {
        guard let bytes else { return nil }
        return ByteBuffer(bytes: bytes.readableBytesView)
    }

    private mutating func leave(_ peer: String, room: String, id: String?, actions: inout [HubAction]) -> ByteBuffer {
        let index = sessions[peer]!.rooms.firstIndex(of: room)
        if let refusal = policy.leave(room: room, isMember: index != nil) { return self.errorReply(refusal, id: id) }
        guard let index else { return ServerMessage.left(room: room, id: id) }
        sessions[peer]!.rooms.remove(at: index)
        self.removeMember(peer, from: room, actions: &actions)
        return ServerMessage.left(room: room, id: id)
    }

    private mutating func removeMember(_ peer: String, from room: String, actions: inout [HubAction]) {
        guard var members = rooms[room] else { return }
        members.removeAll { $0.peer == peer }
        if members.isEmpty {
            rooms[room] = nil
            return
        }
        rooms[room] = members
        let prefix = ServerMessage.peerLeftPrefix(room: room, peer: peer)
        for member in members {
            _ = self.deliver(to: member.peer, .prefix(prefix), origin: nil, actions: &actions)
        }
    }

    // MARK: Relay

    /// Routes one signal and returns the reply for its sender (`ack` or `error`).
    private mutating func relay(
        _ envelope: SignalEnvelope,
        from peer: String,
        at senderIndex: Dictionary<String, Session>.Index,
        id: String?,
        actions: inout [HubAction]
    ) -> Answer {
        let senderRooms = self.session(at: senderIndex) { $0.rooms }
        if let refusal = policy.send(room: envelope.room, senderRooms: senderRooms) {
            return .message(self.errorReply(refusal, id: id))
        }
        guard let target = envelope.to else {
            // Room broadcast (`message` with `room` only): every other member.
            // A member that is away queues it (bounded; past the bound it misses it) and its expiry is
            // reported to the sender like an addressed signal's.
            let room = envelope.room!
            let prefix = ServerMessage.signalPrefix(envelope, from: peer)
            let origin = QueuedOrigin(sender: peer, id: id, type: envelope.type)
            var queued = false
            for member in rooms[room] ?? [] where member.peer != peer {
                if self.deliver(to: member.peer, .prefix(prefix), origin: origin, actions: &actions) == .queued {
                    queued = true
                }
            }
            counters.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1
            return .ack(queued: queued)
        }
        let targetIndex = sessions.index(forKey: target)
        let recipientRooms = targetIndex.map { sessions.values[$0].rooms }
        if let refusal = policy.deliver(
            to: target,
            from: peer,
            room: envelope.room,
            recipientRooms: recipientRooms,
            senderRooms: senderRooms
        ) {
            return .message(self.errorReply(refusal, id: id))
        }
        guard let targetIndex else { return .message(self.errorReply(.peerUnavailable(target), id: id)) }
        let origin = QueuedOrigin(sender: peer, id: id, type: envelope.type)
        let delivery = self.deliver(
            at: targetIndex,
            .signal(members: envelope.members, from: peer),
            origin: origin,
            actions: &actions
        )
        if delivery != .queueFull { counters.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1 }
        switch delivery {
        case .delivered: return .ack(queued: false)
        case .queued: return .ack(queued: true)
        case .queueFull:
            return .message(self.errorReply(.queueFull(target), id: id))
        }
    }

    /// Gives a sequenced message to a session: written to its socket when connected, queued when it is
    /// away, and kept in its resume buffer either way. While away, a signal (`origin` set) is refused
    /// past the queue bound; a presence event pushes the oldest entries out instead (a gap on resume).
    /// The `expired` notices owed to senders on other nodes since the last call (bounded).
    public mutating func takeRemoteExpiries() -> [RemoteExpiry] {
        defer { remoteExpiries = [] }
        return remoteExpiries
    }

    mutating func deliver(
        to peer: String,
        _ message: Sequenced,
        origin: QueuedOrigin?,
        actions: inout [HubAction]
    ) -> Delivery {
        guard let index = sessions.index(forKey: peer) else { return .queueFull }
        return self.deliver(at: index, message, origin: origin, actions: &actions)
    }

    /// Runs `body` on the session at `index` (found once by the caller, so the key is hashed once).
    @inline(__always)
    private mutating func session<Result>(
        at index: Dictionary<String, Session>.Index,
        _ body: (inout Session) -> Result
    ) -> Result {
        body(&sessions.values[index])
    }

    private mutating func deliver(
        at index: Dictionary<String, Session>.Index,
        _ message: Sequenced,
        origin: QueuedOrigin?,
        actions: inout [HubAction]
    ) -> Delivery {
        let limits = self.limits
        let size = message.prefixLength + 21
        let connection = self.session(at: index) { $0.connection }
        if connection == nil && origin != nil {
            let globalBytes = bufferedBytes
            let policy = self.policy
            let mayQueue = self.session(at: index) {
                policy.mayQueue(
                    size: size,
                    queuedCount: $0.resumeState.queuedCount,
                    queuedBytes: $0.resumeState.queuedBytes,
                    globalBytes: globalBytes
                )
            }
            if !mayQueue { return .queueFull }
        }
        let away = connection == nil
        let seq = self.session(at: index) { session in
            defer { session.nextSeq += 1 }
            return session.nextSeq
        }
        // A signal is kept as sent; a shared prefix is kept as it is and completed only for sending.
        let queuedFrom = away ? origin.map(QueuedOriginBox.init) : nil
        let entry: Buffered
        switch message {
        case .prefix(let prefix):
            entry = Buffered(seq: seq, stored: prefix, awaitsSeq: true, queued: away, queuedFrom: queuedFrom)
            if let connection { actions.append(.send(connection, ServerMessage.sequenced(prefix, seq: seq))) }
        case .signal:
            let bytes = message.complete(seq: seq)
            entry = Buffered(
                seq: seq,
                stored: bytes,
                awaitsSeq: false,
                queued: away,
                queuedFrom: queuedFrom
            )
            if let connection { actions.append(.send(connection, bytes)) }
        }
        let count = entry.size
        self.session(at: index) { session in
            session.buffer.append(entry)
            session.bufferBytes += count
            if away {
                session.resumeState.queuedCount += 1
                session.resumeState.queuedBytes += count
            }
        }
        bufferedBytes += count
        if away && origin != nil { counters.queued += 1 }
        while true {
            let overSession = self.session(at: index) { session -> Bool? in
                guard !session.buffer.isEmpty else { return nil }
                return away
                    ? session.resumeState.queuedCount > limits.resumeBufferMessages
                        || session.resumeState.queuedBytes > limits.resumeBufferBytes
                    : session.buffer.count > limits.resumeBufferMessages
                        || session.bufferBytes > limits.resumeBufferBytes
            }
            guard let overSession else { break }
            guard overSession || bufferedBytes > limits.globalBufferBytes else { break }
            self.dropOldest(at: index, actions: &actions)
        }
        return away ? .queued : .delivered
    }

    private mutating func dropOldest(at index: Dictionary<String, Session>.Index, actions: inout [HubAction]) {
        let (dropped, peer) = self.session(at: index) { session in
            let dropped = session.buffer.removeFirst()
            let bytes = dropped.size
            session.bufferBytes -= bytes
            session.resumeState.droppedThrough = max(session.resumeState.droppedThrough, dropped.seq)
            if dropped.queued {
                session.resumeState.queuedCount -= 1
                session.resumeState.queuedBytes -= bytes
            }
            return (dropped, dropped.queuedFrom == nil ? nil : session.peer)
        }
        bufferedBytes -= dropped.size
        if let origin = dropped.queuedFrom, let peer {
            self.notifyExpired(origin.origin, to: peer, actions: &actions)
        }
    }

    private mutating func trimBuffer(of peer: String, through seq: UInt64) {
        guard let session = sessions[peer] else { return }
        while let first = session.buffer.first, first.seq <= seq, !first.queued {
            session.buffer.removeFirst()
            session.bufferBytes -= first.size
            bufferedBytes -= first.size
        }
    }

    private mutating func notifyExpired(_ origin: QueuedOrigin, to recipient: String, actions: inout [HubAction]) {
        counters.expired += 1
        if origin.remote {
            if remoteExpiries.count < 65_536 {
                remoteExpiries.append(
                    RemoteExpiry(sender: origin.sender, id: origin.id, signal: origin.type, recipient: recipient)
                )
            }
            return
        }
        guard sessions[origin.sender] != nil else { return }
        let prefix = ServerMessage.expiredPrefix(id: origin.id, to: recipient, signal: origin.type)
        _ = self.deliver(to: origin.sender, .prefix(prefix), origin: nil, actions: &actions)
    }

    private mutating func errorReply(_ refusal: Refusal, id: String?) -> ByteBuffer {
        counters.errors[ErrorCode.allCases.firstIndex(of: refusal.code)!] += 1
        return refusal.errorMessage(id: id)
    }

    /// Refuses a connection's session: its `error` (when the contract sends one), then its close.
    private mutating func refuse(_ connection: ConnectionID, _ refusal: Refusal, actions: inout [HubAction])
        -> OpenOutcome
    {
        let close = refusal.close
        if close.sendsError { actions.append(.send(connection, self.errorReply(refusal, id: nil))) }
        actions.append(.close(connection, close.code, reason: refusal.message))
        return .refused(close.code)
    }

    // MARK: Session end

    private mutating func endSession(_ peer: String, actions: inout [HubAction]) {
        guard let session = sessions.removeValue(forKey: peer) else { return }
        detached.remove(peer)
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
    }

    // MARK: Randomness

    /// An unused random id (``PeerIdentity/randomID(using:)``): unguessable, so knowing an id never
    /// lets anyone act as it.
    private mutating func randomPeerID() -> String {
        while true {
            let candidate = PeerIdentity.randomID(using: &randomness)
            if sessions[candidate] == nil { return candidate }
        }
    }
}

/// Random base-62 characters for peer ids, drawn from the system's CSPRNG through a
/// ``BufferedSystemRandom`` (which the hub also takes its resume tokens from), without bias: a byte is
/// used only below 248 (4 × 62), as `byte % 62`.
struct RandomCharacters: Sendable {
    private static let alphabet: StaticString = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

    /// The random numbers behind the characters; the hub also takes its session tokens from it.
    var source: BufferedSystemRandom
    private var bits: UInt64 = 0
    private var bytesLeft = 0

    init(source: BufferedSystemRandom = BufferedSystemRandom()) {
        self.source = source
    }

    mutating func next() -> UInt8 {
        while true {
            if bytesLeft == 0 {
                bits = source.next()
                bytesLeft = 8
            }
            let byte = UInt8(truncatingIfNeeded: bits)
            bits >>= 8
            bytesLeft -= 1
            if byte < 248 {
                return Self.alphabet.utf8Start[Int(byte % 62)]
            }
        }
    }

    /// `count` random characters.
    mutating func string(count: Int) -> String {
        String(unsafeUninitializedCapacity: count) { bytes in
            for index in 0..<count { bytes[index] = self.next() }
            return count
        }
    }
}

/// The number of decimal digits of `value` (what `ByteBuffer.writeDecimal` writes).
func decimalDigits(_ value: UInt64) -> Int {
    var digits = 1
    var rest = value
    while rest >= 10 {
        rest /= 10
        digits += 1
    }
    return digits
}

/// Cryptographically secure random numbers from the system, fetched 256 bytes per system call (a session
/// takes four numbers: one `read` of `/dev/urandom` per eight sessions instead of four `getrandom`s per
/// session).
struct BufferedSystemRandom: RandomNumberGenerator, Sendable {
    /// Opened once per process; -1 where there is none (then the standard library's generator is used).
    private static let urandom: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    private var buffer: [UInt64]
    private var position: Int

    /// - Parameter numbers: how many numbers one system call fetches (a one-off use needs few).
    init(numbers: Int = 32) {
        buffer = [UInt64](repeating: 0, count: max(1, numbers))
        position = buffer.count
    }

    mutating func next() -> UInt64 {
        if position == buffer.count { self.refill() }
        defer { position += 1 }
        return buffer[position]
    }

    private mutating func refill() {
        buffer.withUnsafeMutableBytes { bytes in
            var filled = 0
            if Self.urandom >= 0 {
                while filled < bytes.count {
                    let count = read(Self.urandom, bytes.baseAddress! + filled, bytes.count - filled)
                    if count > 0 {
                        filled += count
                    } else if count == 0 || errno != EINTR {
                        break
                    }
                }
            }
            if filled < bytes.count {
                var system = SystemRandomNumberGenerator()
                for index in 0..<(bytes.count / 8) {
                    bytes.storeBytes(of: system.next(), toByteOffset: index * 8, as: UInt64.self)
                }
            }
        }
        position = 0
    }
}
