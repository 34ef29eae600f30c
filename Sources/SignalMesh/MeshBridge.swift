import CoreMetrics
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import PeerMesh
import Signaling

/// Puts a hub on the mesh: peers connected to this hub reach peers connected to any other node with the
/// unchanged v1 protocol, under the same routing rules (``RoutingPolicy``) as on one hub. Everything local
/// stays the in-memory hub's business; the bridge handles what is not local:
///
/// - a signal to a peer with no session here: this (the sender's) node checks the sender's side of the
///   policy (the room it names is one of the sender's), then hands the signal to the mesh with the room and,
///   when the shared-room rule needs them, the sender's rooms. The recipient's node checks the recipient's
///   side (in that room, or sharing one) with its own hub and answers. The sender's `ack` waits for that
///   answer, so a client sees what it would see on one hub: `ack` (`queued:true` for an away recipient), or
///   the refusal's `error` and no `ack`; no answer within ``answerTimeout`` (or no node hosting the peer):
///   `peer-unavailable`;
/// - a room message also goes to the room's home node, which fans it out to the members on other nodes;
///   each of their nodes gives it to its local members of that room only;
/// - presence crosses nodes: a join is announced to the room's members elsewhere (`peer-joined`), each
///   of their nodes answers with `peer-joined` for its own members (with their current `meta`), a change
///   of `meta` (`update`, or a re-join with another `meta`) sends `peer-updated`, and a leave or a
///   session's end sends `peer-left`;
/// - a volatile signal travels like any other; the recipient's node writes it without a `seq` to a
///   connected recipient only (an away one refuses it: ``Refusal/recipientAway(_:)``);
/// - whatever another node relays is validated (``RelayValidator``) before a client sees it; invalid
///   payloads are dropped and counted (`signal_mesh_invalid_payloads_total`);
/// - signals the mesh brings for local peers are sequenced and buffered by the hub like local ones;
/// - the server API acts on every node's sessions: calls cross the mesh from this node's API peer
///   (``apiPeer(of:)``) as ``ServerRequest``s and come back as ``ServerAnswer``s (MeshBridge+ServerAPI.swift).
public final class MeshBridge: SessionHub, MeshDelivery {
    struct Connection {
        var peer: String
        var outbox: Outbox
    }

    /// A signal sent into the mesh whose sender waits for the recipient's node to answer.
    struct Pending {
        var ticket: UInt64
        var connection: ConnectionID
        var peer: String
        var target: String
        var id: String?
        var key: SignalKey?
        var deadline: UInt64
    }

    struct State {
        var connections: [ConnectionID: Connection] = [:]
        var pending: [UInt64: Pending] = [:]
        var tickets: [SignalKey: UInt64] = [:]
        var nextTicket: UInt64 = 1
        /// Peers this node announced to the mesh, with the rooms it announced them in.
        var announced: [String: Set<String>] = [:]
        /// Each sender's requests that crossed the mesh, by request id (for resends after a resume).
        var requests: [String: RememberedRequests] = [:]
        /// Server API calls this node's API asked other nodes, by ticket, and their mesh signals.
        var apiCalls: [UInt64: APICall] = [:]
        var apiKeys: [SignalKey: (ticket: UInt64, target: String)] = [:]
        var invalidPayloads = 0
    }

    public let hub: Hub
    public let runtime: MeshRuntime
    /// How long a sender waits for the recipient's node to answer before it gets `peer-unavailable`.
    public let answerTimeout: Duration
    private let answerTimeoutNanos: UInt64
    let validator: RelayValidator
    let policy: RoutingPolicy
    /// This node's API peer (``apiPeer(of:)``): the mesh sender and recipient of server API calls.
    let apiPeer: String
    let state = NIOLockedValueBox(State())
    private let invalidCounter: Counter

    /// - Parameters:
    ///   - hub: the in-memory hub of this node's local sessions.
    ///   - runtime: this node's mesh runtime, not started yet (``run()`` starts it); the bridge becomes its
    ///     delivery.
    ///   - metricsFactory: where `signal_mesh_invalid_payloads_total` is created (default: the global one).
    ///   - answerTimeout: how long a sender's `ack` waits for the recipient's node.
    public init(
        hub: Hub,
        runtime: MeshRuntime,
        metricsFactory: (any MetricsFactory)? = nil,
        answerTimeout: Duration = .seconds(5)
    ) {
        self.hub = hub
        self.runtime = runtime
        self.answerTimeout = answerTimeout
        let (seconds, attoseconds) = answerTimeout.components
        self.answerTimeoutNanos = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
        self.policy = hub.policy
        self.apiPeer = Self.apiPeer(of: runtime.id)
        self.validator = RelayValidator(maxSenderRooms: policy.limits.maxRoomsPerPeer)
        self.invalidCounter = Counter(
            label: "signal_mesh_invalid_payloads_total",
            factory: metricsFactory ?? MetricsSystem.factory
        )
        runtime.setDelivery(self)
    }

    /// Payloads from other nodes dropped as invalid since start.
    public var invalidPayloads: Int { state.withLockedValue { $0.invalidPayloads } }

    // MARK: Running

    /// Runs the node's background work until the task is cancelled: starts the mesh node (binds, joins
    /// through the seeds), ticks the hub, and sweeps four times a second (senders whose answer is overdue
    /// get `peer-unavailable`, sessions that ended here leave the mesh, expired signals from other nodes are
    /// reported back); then leaves the mesh. The server that takes the bridge as its backend runs it.
    public func run() async throws {
        try await runtime.start()
        self.hostAPIPeer()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.hub.run() }
            group.addTask {
                while !Task.isCancelled {
                    do {
                        try await Task.sleep(for: .milliseconds(250))
                    } catch {
                        return
                    }
                    self.sweep()
                }
            }
        }
        await runtime.stop()
    }

    /// One sweep (``run()`` calls it four times a second).
    func sweep(now: UInt64 = NIODeadline.now().uptimeNanoseconds) {
        let (overdue, peers) = state.withLockedValue { state -> ([Pending], [String]) in
            let overdue = state.pending.filter { $0.value.deadline <= now }
            for (ticket, pending) in overdue {
                state.pending[ticket] = nil
                if let key = pending.key { state.tickets[key] = nil }
            }
            return (Array(overdue.values), Array(state.announced.keys))
        }
        for pending in overdue {
            self.answer(pending, Refusal.peerUnavailable(pending.target).errorMessage(id: pending.id))
        }
        self.sweepAPICalls(now: now)
        // Sessions that ended here: the rooms they were in get `peer-left`; then the senders of signals
        // queued for them and never read get `expired` (in that order, as on one hub: Docs/protocol.md);
        // then they leave the mesh (a node relays only for the peers it hosts, so not before). The expiries
        // are taken first: their sessions have ended by then, so their `peer-left` is among those sent.
        let expiries = hub.takeRemoteExpiries()
        let ended = peers.filter { self.announceLeftIfEnded($0) }
        for expiry in expiries {
            let answer = BridgePayload.Answer(
                outcome: .expired,
                type: expiry.signal,
                ticket: 0,
                id: expiry.id,
                recipient: expiry.recipient
            )
            runtime.send(
                from: expiry.recipient,
                to: .peer(expiry.sender),
                payload: BridgePayload.answer(answer).encoded
            )
        }
        for peer in ended { runtime.disconnect(peer: peer) }
    }

    // MARK: SessionHub

    public func makeConnectionID() -> ConnectionID { hub.makeConnectionID() }

    public func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        let outcome = hub.open(connection, outbox: outbox, request: request)
        if case .opened(let peer, let resumed, _, _) = outcome {
            let (isNew, leftRooms) = state.withLockedValue { state -> (Bool, Set<String>) in
                state.connections[connection] = Connection(peer: peer, outbox: outbox)
                guard let rooms = state.announced[peer] else {
                    state.announced[peer] = []
                    return (true, [])
                }
                if resumed { return (false, []) }
                // A fresh session for a peer announced here: the older session was taken over by its token's
                // owner (or ended, not swept yet). It left its rooms; the other nodes' members learn it now,
                // before anything the new session does.
                state.announced[peer] = []
                state.requests[peer] = nil
                return (false, rooms)
            }
            for room in leftRooms.sorted() {
                self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), from: peer, to: .room(room))
                runtime.leave(peer: peer, room: room)
            }
            if isNew { runtime.connect(peer: peer) }
        }
        return outcome
    }

    public func receive(_ connection: ConnectionID, _ message: ClientMessage) {
        guard let local = state.withLockedValue({ $0.connections[connection] }) else {
            return hub.receive(connection, message)
        }
        let peer = local.peer
        switch message.request {
        case .signal(let envelope):
            if let target = envelope.to, target != peer, !hub.hasSession(target) {
                return self.sendRemote(envelope, to: target, from: peer, id: message.id, connection: connection)
            }
            hub.receive(connection, message)
            // A room message: the hub gave it to the members here (and checked the sender is one).
            if envelope.to == nil, let room = envelope.room, hub.isMember(peer, of: room) {
                let signal = BridgePayload.Signal(
                    type: envelope.type,
                    ticket: 0,
                    id: message.id,
                    room: room,
                    senderRooms: [],
                    prefix: Array(buffer: ServerMessage.signalPrefix(envelope, from: peer))
                )
                runtime.send(from: peer, to: .room(room), payload: BridgePayload.signal(signal).encoded)
            }
        case .join(let room, let meta):
            let before = hub.meta(of: peer, in: room)
            hub.receive(connection, message)
            guard let after = hub.meta(of: peer, in: room) else { return }
            let isNew = state.withLockedValue { $0.announced[peer]?.insert(room).inserted ?? false }
            if isNew {
                runtime.join(peer: peer, room: room)
                let presence = ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta)
                self.announce(presence, from: peer, to: .room(room))
            } else if let before, policy.rejoinUpdates(previous: before, meta: after) {
                // A re-join with another meta: the hub told the members here; the other nodes' hear it too.
                self.announce(
                    ServerMessage.peerUpdatedPrefix(room: room, peer: peer, meta: after),
                    from: peer,
                    to: .room(room)
                )
            }
        case .update(let room, let meta):
            hub.receive(connection, message)
            let announced = state.withLockedValue { $0.announced[peer]?.contains(room) ?? false }
            if announced, hub.isMember(peer, of: room) {
                self.announce(
                    ServerMessage.peerUpdatedPrefix(room: room, peer: peer, meta: meta),
                    from: peer,
                    to: .room(room)
                )
            }
        case .leave(let room):
            hub.receive(connection, message)
            if !hub.isMember(peer, of: room) { self.leaveMesh(peer, rooms: [room]) }
        case .grant:
            // The new grant may leave rooms; the other nodes' members learn it as for a `leave`.
            hub.receive(connection, message)
            let announced = state.withLockedValue { $0.announced[peer] ?? [] }
            let revoked = announced.filter { !hub.isMember(peer, of: $0) }.sorted()
            if !revoked.isEmpty { self.leaveMesh(peer, rooms: revoked) }
        default:
            hub.receive(connection, message)
        }
    }

    public func closed(_ connection: ConnectionID, keepSession: Bool) {
        hub.closed(connection, keepSession: keepSession)
        let peer = state.withLockedValue { $0.connections.removeValue(forKey: connection)?.peer }
        if let peer { self.forgetIfEnded(peer) }
    }

    // MARK: The sender's node

    /// A signal for a peer with no session here: the sender's side of the policy, then into the mesh; the
    /// sender's answer waits for the recipient's node.
    private func sendRemote(
        _ envelope: SignalEnvelope,
        to target: String,
        from peer: String,
        id: String?,
        connection: ConnectionID
    ) {
        if let id, self.answerAgain(id, from: peer, on: connection) { return }
        let candidates = state.withLockedValue { $0.announced[peer] ?? [] }
        let senderRooms = hub.rooms(of: peer, among: candidates.sorted()) ?? []
        if let refusal = policy.send(room: envelope.room, senderRooms: senderRooms) {
            return self.reply(connection, refusal.errorMessage(id: id))
        }
        let needsRooms = policy.needsSenderRooms(room: envelope.room, to: target, from: peer)
        let deadline = NIODeadline.now().uptimeNanoseconds + answerTimeoutNanos
        let ticket = state.withLockedValue { state -> UInt64 in
            defer { state.nextTicket += 1 }
            if let id {
                state.requests[peer, default: RememberedRequests(limit: policy.limits.rememberedRequests)]
                    .sent(id, ticket: state.nextTicket, on: connection)
            }
            state.pending[state.nextTicket] = Pending(
                ticket: state.nextTicket,
                connection: connection,
                peer: peer,
                target: target,
                id: id,
                key: nil,
                deadline: deadline
            )
            return state.nextTicket
        }
        let signal = BridgePayload.Signal(
            type: envelope.type,
            ticket: ticket,
            id: id,
            room: envelope.room,
            senderRooms: needsRooms ? Array(senderRooms.prefix(policy.limits.maxRoomsPerPeer)) : [],
            prefix: Array(buffer: ServerMessage.signalPrefix(envelope, from: peer))
        )
        let sent = runtime.send(from: peer, to: .peer(target), payload: BridgePayload.signal(signal).encoded) { key in
            state.withLockedValue { state in
                guard state.pending[ticket] != nil else { return }
                state.pending[ticket]!.key = key
                state.tickets[key] = ticket
            }
        }
        if sent == nil, let pending = self.takePending(ticket) {
            self.answer(pending, Refusal.unavailable.errorMessage(id: id))
        }
    }

    /// Removes a pending signal (nil when it was answered or timed out already).
    func takePending(_ ticket: UInt64, peer: String? = nil, target: String? = nil) -> Pending? {
        state.withLockedValue { state in
            guard let pending = state.pending[ticket], peer.map({ $0 == pending.peer }) ?? true,
                target.map({ $0 == pending.target }) ?? true
            else { return nil }
            state.pending[ticket] = nil
            if let key = pending.key { state.tickets[key] = nil }
            return pending
        }
    }

    /// Gives the sender of a pending signal its answer: on the connection it sent from, or on the one its
    /// session continues on after a resume.
    func answer(_ pending: Pending, _ message: ByteBuffer) {
        let outbox = state.withLockedValue { state in
            if let id = pending.id { state.requests[pending.peer]?.answered(id, ticket: pending.ticket, with: message) }
            return state.connections[pending.connection]?.outbox
                ?? state.connections.values.first { $0.peer == pending.peer }?.outbox
        }
        if let outbox, outbox.append(.text(message)) { outbox.wakeOwner() }
    }

    /// A request resent on a later connection of its session (after a resume): answered again, or left to
    /// the answer still on its way (which now goes to this connection). False: a new request.
    private func answerAgain(_ id: String, from peer: String, on connection: ConnectionID) -> Bool {
        let earlier: RememberedRequests.Record? = state.withLockedValue { state in
            guard let record = state.requests[peer]?.earlier(id, on: connection) else { return nil }
            if case .inFlight(let ticket) = record.entry {
                state.pending[ticket]?.connection = connection
                state.requests[peer]!.moved(id, to: connection)
            }
            return record
        }
        guard let earlier else { return false }
        if case .answered(let message) = earlier.entry { self.reply(connection, message) }
        return true
    }

    private func reply(_ connection: ConnectionID, _ message: ByteBuffer) {
        guard let outbox = state.withLockedValue({ $0.connections[connection]?.outbox }) else { return }
        if outbox.append(.text(message)) { outbox.wakeOwner() }
    }

    // MARK: Presence

    /// A peer whose session ended here leaves the mesh (after `peer-left` in each of its rooms).
    func forgetIfEnded(_ peer: String) {
        if self.announceLeftIfEnded(peer) { runtime.disconnect(peer: peer) }
    }

    /// If `peer`'s session ended here and the bridge had announced it: sends `peer-left` in each of its
    /// rooms, forgets it and returns true (the caller then disconnects it from the mesh).
    private func announceLeftIfEnded(_ peer: String) -> Bool {
        guard !hub.hasSession(peer) else { return false }
        let rooms: Set<String>? = state.withLockedValue { state in
            state.requests[peer] = nil
            return state.announced.removeValue(forKey: peer)
        }
        guard let rooms else { return false }
        for room in rooms.sorted() {
            self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), from: peer, to: .room(room))
        }
        return true
    }

    private func leaveMesh(_ peer: String, rooms: [String]) {
        for room in rooms {
            let removed = state.withLockedValue { $0.announced[peer]?.remove(room) != nil }
            guard removed else { continue }
            self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), from: peer, to: .room(room))
            runtime.leave(peer: peer, room: room)
        }
    }

    /// Sends a presence event (`peer-joined`, `peer-updated`, `peer-left`) through the mesh.
    func announce(_ prefix: ByteBuffer, from peer: String, to target: MeshSignal.Target) {
        runtime.send(from: peer, to: target, payload: BridgePayload.presence(prefix: Array(buffer: prefix)).encoded)
    }

    func countInvalid() {
        state.withLockedValue { $0.invalidPayloads += 1 }
        invalidCounter.increment()
    }
}
