import NIOConcurrencyHelpers
import NIOCore
import PeerMesh
import ServiceLifecycle
import Signaling

/// Puts a hub on the mesh: peers connected to this hub reach peers connected to any other node with the
/// unchanged v1 protocol. Everything local stays the in-memory hub's business; the bridge handles what
/// is not local:
///
/// - a signal to a peer with no session here goes into the mesh; its sender gets `ack` when the mesh
///   took it (the entry node routes it directly or through a home node), or later an `error`
///   `peer-unavailable` with the request's `id` when no node hosts the peer (within about 2 s);
/// - a room message also goes to the room's home node, which fans it out to the members on other nodes;
/// - presence crosses nodes: a join is announced to the room's members elsewhere (`peer-joined`), each
///   of their nodes answers with `peer-joined` for its own members, and a leave or a session's end sends
///   `peer-left`;
/// - signals the mesh brings for local peers are sequenced and buffered by the hub like local ones.
public final class MeshBridge: SessionHub, MeshDelivery {
    struct Connection {
        var peer: String
        var outbox: Outbox
    }

    struct Pending {
        var connection: ConnectionID
        var id: String?
        var at: UInt64
    }

    struct State {
        var connections: [ConnectionID: Connection] = [:]
        var pending: [SignalKey: Pending] = [:]
        /// Peers this node announced to the mesh, with their rooms.
        var announced: [String: Set<String>] = [:]
    }

    public let hub: Hub
    public let runtime: MeshRuntime
    private let state = NIOLockedValueBox(State())

    public init(hub: Hub, runtime: MeshRuntime) {
        self.hub = hub
        self.runtime = runtime
    }

    // MARK: SessionHub

    public func makeConnectionID() -> ConnectionID { hub.makeConnectionID() }

    public func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        let outcome = hub.open(connection, outbox: outbox, request: request)
        if case .opened(let peer, _, _, _) = outcome {
            let isNew: Bool = state.withLockedValue { state in
                state.connections[connection] = Connection(peer: peer, outbox: outbox)
                if state.announced[peer] != nil { return false }
                state.announced[peer] = []
                return true
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
                if let room = envelope.room, !hub.isMember(peer, of: room) {
                    return reply(
                        local.outbox,
                        ServerMessage.error(.notInRoom, "you are not in room \"\(room)\"", id: message.id)
                    )
                }
                let payload = ServerMessage.signalPrefix(envelope, from: peer)
                let now = NIODeadline.now().uptimeNanoseconds
                // The ack goes first: a `peer-unavailable` for this id may follow at once.
                reply(local.outbox, ServerMessage.ack(id: message.id, queued: false))
                let framed = BridgePayload.signal(type: envelope.type, id: message.id, prefix: Array(buffer: payload))
                    .encoded
                let sent = runtime.send(from: peer, to: .peer(target), payload: framed) { key in
                    state.withLockedValue { $0.pending[key] = Pending(connection: connection, id: message.id, at: now) }
                }
                if sent == nil {
                    reply(
                        local.outbox,
                        ServerMessage.error(.peerUnavailable, "the mesh node is not running yet", id: message.id)
                    )
                }
                return
            }
            hub.receive(connection, message)
            if envelope.to == nil, let room = envelope.room, hub.isMember(peer, of: room) {
                let prefix = Array(buffer: ServerMessage.signalPrefix(envelope, from: peer))
                runtime.send(
                    from: peer,
                    to: .room(room),
                    payload: BridgePayload.signal(type: envelope.type, id: message.id, prefix: prefix).encoded
                )
            }
        case .join(let room, let meta):
            hub.receive(connection, message)
            guard hub.isMember(peer, of: room) else { return }
            let isNew = state.withLockedValue { $0.announced[peer]?.insert(room).inserted ?? false }
            if isNew {
                runtime.join(peer: peer, room: room)
                let presence = ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta)
                self.announce(presence, from: peer, to: .room(room))
            }
        case .leave(let room):
            hub.receive(connection, message)
            if !hub.isMember(peer, of: room) { self.leaveMesh(peer, rooms: [room]) }
        default:
            hub.receive(connection, message)
        }
    }

    public func closed(_ connection: ConnectionID, keepSession: Bool) {
        hub.closed(connection, keepSession: keepSession)
        let peer = state.withLockedValue { $0.connections.removeValue(forKey: connection)?.peer }
        if let peer { self.forgetIfEnded(peer) }
    }

    /// Once a second: sessions that ended here (grace expired) leave the mesh, and signals the mesh
    /// never answered stop being tracked.
    public func sweep() {
        let now = NIODeadline.now().uptimeNanoseconds
        let peers = state.withLockedValue { state in
            state.pending = state.pending.filter { now - $0.value.at < 10_000_000_000 }
            return Array(state.announced.keys)
        }
        for peer in peers { self.forgetIfEnded(peer) }
        // Signals from other nodes queued for sessions that ended unread: their senders get `expired`.
        for expiry in hub.takeRemoteExpiries() {
            self.notify(.expired, to: expiry.sender, about: expiry.recipient, type: expiry.signal, id: expiry.id)
        }
    }

    private func forgetIfEnded(_ peer: String) {
        guard !hub.hasSession(peer) else { return }
        let rooms: Set<String>? = state.withLockedValue { $0.announced.removeValue(forKey: peer) }
        guard let rooms else { return }
        for room in rooms.sorted() {
            self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), from: peer, to: .room(room))
        }
        runtime.disconnect(peer: peer)
    }

    private func leaveMesh(_ peer: String, rooms: [String]) {
        for room in rooms {
            let removed = state.withLockedValue { $0.announced[peer]?.remove(room) != nil }
            guard removed else { continue }
            self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), from: peer, to: .room(room))
            runtime.leave(peer: peer, room: room)
        }
    }

    /// Sends a presence event (`peer-joined`, `peer-left`) through the mesh.
    private func announce(_ prefix: ByteBuffer, from peer: String, to target: MeshSignal.Target) {
        runtime.send(from: peer, to: target, payload: BridgePayload.presence(prefix: Array(buffer: prefix)).encoded)
    }

    private func reply(_ outbox: Outbox, _ message: ByteBuffer) {
        if outbox.append(.text(message)) { outbox.wakeOwner() }
    }

    // MARK: MeshDelivery

    private static let peerJoined = Array("{\"type\":\"peer-joined\",\"room\":\"".utf8)

    public func deliver(_ payload: [UInt8], from sender: String, to peer: String, addressed: Bool) {
        switch BridgePayload(payload) {
        case .signal(let type, let id, let prefix):
            let result = hub.deliverRemote(to: peer, prefix: ByteBuffer(bytes: prefix), origin: (sender, id, type))
            // A room leg that finds no member here needs no answer; an addressed signal does.
            guard addressed else { return }
            switch result {
            case .noSession: self.notify(.unavailable, to: sender, about: peer, type: type, id: id)
            case .queueFull: self.notify(.queueFull, to: sender, about: peer, type: type, id: id)
            case .delivered, .queued: break
            }
        case .presence(let prefix):
            hub.deliverRemote(to: peer, prefix: ByteBuffer(bytes: prefix))
            // A newcomer's announcement to the room (an answer to one comes addressed): tell it who is here.
            guard !addressed, prefix.starts(with: Self.peerJoined), let room = Self.room(in: prefix),
                !hub.hasSession(sender), hub.isMember(peer, of: room)
            else { return }
            let meta = hub.members(of: room).first { $0.peer == peer }?.meta
            let answer = ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta)
            // Marked as an answer by being addressed (`.peer`), so the newcomer's node does not answer back.
            self.announce(answer, from: peer, to: .peer(sender))
        case .notice(let notice, let type, let id, let recipient):
            // `peer` sent a signal to `recipient` on another node, and it was not delivered.
            switch notice {
            case .expired:
                hub.deliverRemote(to: peer, prefix: ServerMessage.expiredPrefix(id: id, to: recipient, signal: type))
            case .unavailable, .queueFull:
                let code: ErrorCode = notice == .unavailable ? .peerUnavailable : .queueFull
                let text =
                    notice == .unavailable
                    ? "peer \"\(recipient)\" is not connected" : "peer \"\(recipient)\" is away and its queue is full"
                let outboxes = state.withLockedValue { $0.connections.values.filter { $0.peer == peer }.map(\.outbox) }
                for outbox in outboxes { reply(outbox, ServerMessage.error(code, text, id: id)) }
            }
        case nil:
            return
        }
    }

    /// Reports back to `sender` (on another node) what became of its signal to local peer `recipient`.
    private func notify(
        _ notice: BridgePayload.Notice,
        to sender: String,
        about recipient: String,
        type: SignalType,
        id: String?
    ) {
        let payload = BridgePayload.notice(notice, type: type, id: id, recipient: recipient).encoded
        runtime.send(from: recipient, to: .peer(sender), payload: payload)
    }

    public func unavailable(_ key: SignalKey, peer: String) {
        guard let pending = state.withLockedValue({ $0.pending.removeValue(forKey: key) }),
            let outbox = state.withLockedValue({ $0.connections[pending.connection]?.outbox })
        else { return }
        reply(outbox, ServerMessage.error(.peerUnavailable, "no node of the mesh hosts that peer", id: pending.id))
    }

    /// The room name in a `peer-joined` prefix (room names need no JSON escaping).
    static func room(in payload: [UInt8]) -> String? {
        let start = peerJoined.count
        guard let end = payload[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: payload[start..<end], as: UTF8.self)
    }
}

/// The mesh node as a service: starts it (binds, joins through the seeds), sweeps the bridge once a
/// second, and leaves the mesh on shutdown.
public struct MeshService: Service {
    public let runtime: MeshRuntime
    public let bridge: MeshBridge

    public init(runtime: MeshRuntime, bridge: MeshBridge) {
        self.runtime = runtime
        self.bridge = bridge
    }

    public func run() async throws {
        try await runtime.start()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    bridge.sweep()
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        await runtime.stop()
    }
}
