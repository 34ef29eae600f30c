import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A hub whose sessions, rooms and resume buffers live in Redis, shared by every node of a cluster, so a
/// peer on node A signals a peer on node B as if they shared a node, and a client that drops from A can
/// resume on B. Docs/scaling.md explains the design, the keys, the guarantees and the failure behaviour.
///
/// Every sequenced message (signal, room message, presence event, `expired` notice) is given its `seq`
/// and kept in the recipient's buffer by one script on the recipient's keys (``ClusterScripts/deliver``),
/// which also publishes it to the node holding the recipient's connection. That single step is what makes
/// delivery exactly-once and in order per sender, and resume possible anywhere.
///
/// The node keeps only its connections: which session each serves, the highest `seq` written to it, and
/// each connection's requests, handled one after another (in the order they were read).
public final class ClusterHub: SessionHub, Service {
    enum Work: Sendable {
        case open(OpenRequest)
        case receive(ClientMessage)
        case closed(keepSession: Bool)
    }

    struct Local {
        var outbox: Outbox
        var work: AsyncStream<Work>.Continuation
        var peer: String?
        var rooms: [String] = []
        var grant: RoomGrant = .all
        var isOpen = false
        /// Highest `seq` written to the connection (replay and live messages are written once each).
        var lastWritten: UInt64 = 0
        /// Messages published before the session's open or resume was complete.
        var held: [(seq: UInt64, bytes: ByteBuffer)] = []
        /// The session ended or moved elsewhere: this connection's close must not touch it.
        var detachedFromSession = false
    }

    struct State {
        var locals: [ConnectionID: Local] = [:]
        var nextConnection: UInt64 = 1
        var counters = HubCounters()
        var exported = HubCounters()
        var crossNode = 0
        var exportedCrossNode = 0
        var unreachableSince: UInt64?
        var lastRefresh: UInt64 = 0
        /// When the Redis connection came (back) up; sessions are swept only a while after, so that a
        /// Redis outage, during which no node could re-announce its sessions, ends none of them.
        var connectedSince: UInt64?
        var tasks: [Task<Void, Never>] = []
    }

    public let configuration: ClusterConfiguration
    let limits: HubLimits
    /// The protocol's rules, shared with the single hub and the mesh; the scripts decide what needs the
    /// shared state (room size, the recipient's rooms) and their answers map onto its refusals.
    let policy: RoutingPolicy
    let welcome: WelcomeTemplate
    let metrics: HubMetrics
    let clusterMetrics: ClusterMetrics
    let keys: ClusterKeys
    /// `ID#incarnation`: what sessions record as their node, and the name of this node's channel. A node
    /// restarted with the same id gets a new channel, so nothing meant for its previous run reaches it.
    let nodeName: String
    let redis: RedisConnection
    let subscriber: RedisSubscriber
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    /// Addressed signals one connection may have waiting for Redis at once.
    static let maxPipelined = 64

    public init(
        configuration: ClusterConfiguration,
        limits: HubLimits,
        welcome: WelcomeTemplate,
        metrics: HubMetrics,
        clusterMetrics: ClusterMetrics,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) throws(RedisError) {
        self.configuration = configuration
        self.limits = limits
        self.policy = RoutingPolicy(limits: limits)
        self.welcome = welcome
        self.metrics = metrics
        self.clusterMetrics = clusterMetrics
        self.keys = ClusterKeys(prefix: configuration.keyPrefix)
        self.nodeName = configuration.nodeID + "#" + Self.randomString(count: 8)
        self.logger = logger
        var redisConfiguration = configuration.redis
        redisConfiguration.clientName = redisConfiguration.clientName ?? "signal-\(configuration.nodeID)"
        self.redis = try RedisConnection(
            configuration: redisConfiguration,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            onStateChange: { state in clusterMetrics.redisUp.record(state.isConnected ? 1 : 0) },
            onRoundTrip: { latency in clusterMetrics.redisRoundTrip.recordNanoseconds(Self.nanoseconds(latency)) }
        )
        self.subscriber = try RedisSubscriber(
            configuration: redisConfiguration,
            eventLoopGroup: eventLoopGroup,
            logger: logger
        )
    }

    /// True while both Redis connections are up: `/readyz` reports not-ready otherwise.
    public var isReady: Bool { redis.isConnected && subscriber.isConnected }

    // MARK: Lifecycle

    /// Connects to Redis, subscribes to this node's channel and starts keeping sessions and deadlines up
    /// to date, in the background until ``shutdown()``.
    public func start() {
        redis.start()
        subscriber.start()
        let tasks = [
            Task { await self.consumeChannel() },
            Task { await self.maintain() },
            Task {
                // Retried until it succeeds: the subscription then survives reconnects by itself.
                while !Task.isCancelled {
                    do throws(RedisError) {
                        try await self.subscriber.subscribe([self.keys.channel(of: self.nodeName)])
                        return
                    } catch {
                        try? await Task.sleep(for: .milliseconds(500))
                    }
                }
            },
        ]
        state.withLockedValue { $0.tasks = tasks }
    }

    /// Stops the background work and closes both Redis connections.
    public func shutdown() async {
        let tasks = state.withLockedValue { state in
            defer { state.tasks = [] }
            return state.tasks
        }
        tasks.forEach { $0.cancel() }
        await subscriber.close()
        await redis.close()
    }

    /// Runs as a `Service`: ``start()``, then ``shutdown()`` on graceful shutdown or cancellation.
    public func run() async throws {
        start()
        try? await gracefulShutdown()
        await shutdown()
    }

    // MARK: SessionHub

    public func makeConnectionID() -> ConnectionID {
        state.withLockedValue { state in
            defer { state.nextConnection += 1 }
            return ConnectionID(state.nextConnection)
        }
    }

    public func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        let (stream, continuation) = AsyncStream<Work>.makeStream()
        state.withLockedValue { $0.locals[connection] = Local(outbox: outbox, work: continuation) }
        continuation.yield(.open(request))
        Task {
            // Addressed signals are pipelined: each one's script is queued on the Redis connection at
            // once, in order, and answered when its reply comes; anything else first waits for them.
            var inFlight = CircularBuffer<EventLoopFuture<Void>>()
            for await work in stream {
                if case .receive(let message) = work, case .signal(let envelope) = message.request, envelope.to != nil {
                    if inFlight.count >= Self.maxPipelined, let oldest = inFlight.popFirst() { try? await oldest.get() }
                    if let pending = self.relayPipelined(envelope, id: message.id, on: connection) {
                        inFlight.append(pending)
                    }
                    continue
                }
                while let pending = inFlight.popFirst() { try? await pending.get() }
                await self.handle(work, on: connection)
            }
        }
        return .pending
    }

    public func receive(_ connection: ConnectionID, _ message: ClientMessage) {
        state.withLockedValue { $0.locals[connection] }?.work.yield(.receive(message))
    }

    public func closed(_ connection: ConnectionID, keepSession: Bool) {
        guard let work = state.withLockedValue({ $0.locals[connection] })?.work else { return }
        work.yield(.closed(keepSession: keepSession))
        work.finish()
    }

    // MARK: Requests

    private func handle(_ work: Work, on connection: ConnectionID) async {
        switch work {
        case .open(let request):
            await self.open(connection, request)
        case .receive(let message):
            guard let (peer, rooms, grant) = self.session(of: connection) else { return }
            await self.receive(message, on: connection, peer: peer, rooms: rooms, grant: grant)
        case .closed(let keep):
            await self.close(connection, keepSession: keep)
        }
    }

    private func session(of connection: ConnectionID) -> (String, [String], RoomGrant)? {
        state.withLockedValue { state in
            guard let local = state.locals[connection], local.isOpen, !local.detachedFromSession, let peer = local.peer
            else {
                return nil
            }
            return (peer, local.rooms, local.grant)
        }
    }

    private func open(_ connection: ConnectionID, _ request: OpenRequest) async {
        let node = nodeName
        let conn = String(connection.raw)
        let now = Self.epochMillis()
        do throws(RedisError) {
            switch request {
            case .fresh(let requested, let subject, let grant):
                var peer: String
                switch policy.identity(requested: requested, subject: subject) {
                case .id(let id):
                    peer = id
                case .random:
                    peer = Self.randomPeerID()
                case .refuse(let refusal):
                    self.refuse(connection, refusal)
                    return
                }
                // Whether an existing session with this id is taken over (the script ends it) is the policy's call.
                let takeOver = policy.collision(peer: peer, requested: requested, subject: subject) == .takeOver
                while true {
                    let token = peer + "." + Self.randomString(count: 43)
                    let reply = try await redis.run(
                        ClusterScripts.create,
                        keys: keys.session(peer),
                        arguments: [
                            token, node, conn, now + liveMillis, ttlMillis, takeOver ? "1" : "0",
                            Self.grantString(grant),
                            keys.channelPrefix,
                        ]
                    )
                    let status = reply.array?.first?.string
                    if status == "taken" {
                        switch policy.collision(peer: peer, requested: requested, subject: subject) {
                        case .drawAgain, .takeOver:  // (the script took it over when `takeOver`)
                            peer = Self.randomPeerID()
                            continue
                        case .refuse(let refusal):
                            self.refuse(connection, refusal)
                            return
                        }
                    }
                    if status == "took-over", let parts = reply.array, parts.count == 3 {
                        self.count { $0.takeovers += 1 }
                        await self.cleanUp(peer: peer, rooms: parts[1].string ?? "", origins: parts[2])
                    }
                    _ = try? await redis.send(["ZADD", keys.deadlines, now + liveMillis, peer])
                    self.opened(
                        connection,
                        peer: peer,
                        grant: grant,
                        rooms: [],
                        welcome: welcome.render(peer: peer, session: token, resumed: false, gap: false),
                        replay: [],
                        through: 0
                    )
                    return
                }

            case .resume(let token, let last, let subject):
                let peer = token.lastIndex(of: ".").map { String(token[..<$0]) } ?? ""
                if let refusal = policy.resume(peer: Identifier.isValid(peer) ? peer : nil, known: true, subject: subject) {
                    self.refuse(connection, refusal)
                    return
                }
                let newToken = peer + "." + Self.randomString(count: 43)
                let reply = try await redis.run(
                    ClusterScripts.resume,
                    keys: keys.session(peer),
                    arguments: [
                        token, newToken, node, conn, String(last), now + liveMillis, ttlMillis, keys.channelPrefix,
                    ]
                )
                guard let parts = reply.array, parts.count == 6, parts[0].string == "resumed" else {
                    self.refuse(connection, .sessionNotResumable)
                    return
                }
                _ = try? await redis.send(["ZADD", keys.deadlines, now + liveMillis, peer])
                let gap = parts[1].int == 1
                let seq = UInt64(parts[2].string ?? "0") ?? 0
                let rooms = (parts[3].string ?? "").split(separator: ",").map(String.init)
                let grant = Self.grant(from: parts[4].string ?? "*")
                let replay = Self.entries(parts[5])
                self.count {
                    $0.resumes += 1
                    $0.replayed += replay.count
                    if gap { $0.gaps += 1 }
                }
                self.opened(
                    connection,
                    peer: peer,
                    grant: grant,
                    rooms: rooms,
                    welcome: welcome.render(peer: peer, session: newToken, resumed: true, gap: gap),
                    replay: replay,
                    through: seq
                )
            }
        } catch {
            logger.warning("cluster open failed", metadata: ["error": "\(error)"])
            self.refuse(connection, .unavailable)
        }
    }

    /// Writes the welcome and the replay, then whatever was published meanwhile and not replayed.
    private func opened(
        _ connection: ConnectionID,
        peer: String,
        grant: RoomGrant,
        rooms: [String],
        welcome: ByteBuffer,
        replay: [(seq: UInt64, bytes: ByteBuffer)],
        through seq: UInt64
    ) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard var local = state.locals[connection] else { return nil }
            local.peer = peer
            local.grant = grant
            local.rooms = rooms
            local.isOpen = true
            _ = local.outbox.append(.text(welcome))
            var written = seq
            for entry in replay {
                _ = local.outbox.append(.text(entry.bytes))
                written = max(written, entry.seq)
            }
            for entry in local.held.sorted(by: { $0.seq < $1.seq }) where entry.seq > written {
                _ = local.outbox.append(.text(entry.bytes))
                written = entry.seq
            }
            local.held = []
            local.lastWritten = written
            state.locals[connection] = local
            return local.outbox
        }
        outbox?.wakeOwner()
    }

    private func refuse(_ connection: ConnectionID, _ refusal: Refusal) {
        let close = refusal.close
        if close.sendsError { self.replyError(connection, refusal, id: nil) }
        self.closeConnection(connection, close.code, reason: refusal.message)
    }

    private func receive(
        _ message: ClientMessage,
        on connection: ConnectionID,
        peer: String,
        rooms: [String],
        grant: RoomGrant
    ) async {
        let id = message.id
        do throws(RedisError) {
            switch message.request {
            case .ping:
                self.reply(connection, ServerMessage.pong(id: id))
            case .received(let seq):
                _ = try await redis.run(
                    ClusterScripts.trim,
                    keys: keys.session(peer),
                    arguments: [nodeName, String(connection.raw), String(seq)]
                )
            case .join(let room, let meta):
                try await self.join(room, meta: meta, id: id, on: connection, peer: peer, rooms: rooms, grant: grant)
            case .leave(let room):
                if let refusal = policy.leave(room: room, isMember: rooms.contains(room)) {
                    return self.replyError(connection, refusal, id: id)
                }
                let remaining = try await self.leave(room, peer: peer)
                _ = try await redis.run(
                    ClusterScripts.sessionRooms,
                    keys: [keys.session(peer)[0]],
                    arguments: ["del", room]
                )
                self.updateRooms(connection) { $0.removeAll { $0 == room } }
                self.reply(connection, ServerMessage.left(room: room, id: id))
                await self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), to: remaining)
            case .signal(let envelope):
                try await self.broadcast(envelope, id: id, on: connection, peer: peer, rooms: rooms)
            }
        } catch {
            logger.debug("cluster request failed", metadata: ["error": "\(error)"])
            self.replyError(connection, .unavailable, id: id)
        }
    }

    private func join(
        _ room: String,
        meta: ByteBuffer?,
        id: String?,
        on connection: ConnectionID,
        peer: String,
        rooms: [String],
        grant: RoomGrant
    ) async throws(RedisError) {
        let isNew = !rooms.contains(room)
        // The room's size is decided atomically by the script (`full`); the policy decides the rest.
        if case .refuse(let refusal) = policy.join(
            room: room,
            grant: grant,
            isMember: !isNew,
            roomsHeld: rooms.count,
            roomSize: 0
        ) {
            return self.replyError(connection, refusal, id: id)
        }
        let metaBytes = meta ?? ByteBuffer()
        let reply = try await redis.run(
            ClusterScripts.joinRoom,
            keys: [keys.room(room)],
            arguments: [peer, metaBytes, limits.maxPeersPerRoom]
        )
        guard let parts = reply.array, parts.first?.string != "full", parts.count == 2, let flat = parts[1].array else {
            return self.replyError(connection, .roomFull(room, limit: limits.maxPeersPerRoom), id: id)
        }
        var others: [(peer: String, meta: ByteBuffer?)] = []
        var index = 0
        while index + 1 < flat.count {
            if let member = flat[index].string, member != peer {
                let bytes = flat[index + 1].buffer
                others.append((member, bytes.flatMap { $0.readableBytes > 0 ? $0 : nil }))
            }
            index += 2
        }
        if parts[0].string == "new" {
            _ = try await redis.run(
                ClusterScripts.sessionRooms,
                keys: [keys.session(peer)[0]],
                arguments: ["add", room]
            )
            self.updateRooms(connection) { $0.append(room) }
            await self.announce(
                ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta),
                to: others.map(\.peer)
            )
        }
        self.reply(connection, ServerMessage.joined(room: room, peers: others, id: id))
    }

    /// A room broadcast (`message` with `room` only): every other member, wherever it is. Addressed
    /// signals take ``relayPipelined(_:id:on:)``.
    private func broadcast(
        _ envelope: SignalEnvelope,
        id: String?,
        on connection: ConnectionID,
        peer: String,
        rooms: [String]
    ) async throws(RedisError) {
        guard let room = envelope.room, envelope.to == nil else { return }
        if let refusal = policy.send(room: room, senderRooms: rooms) {
            return self.replyError(connection, refusal, id: id)
        }
        let prefix = ServerMessage.signalPrefix(envelope, from: peer)
        let members = try await redis.send(["HKEYS", keys.room(room)]).array?.compactMap(\.string) ?? []
        let results = await withTaskGroup(of: Result<DeliveryResult, RedisError>.self) { group in
            for member in members where member != peer {
                group.addTask { () async -> Result<DeliveryResult, RedisError> in
                    do throws(RedisError) {
                        return .success(
                            try await self.deliver(
                                DeliveryRequest(
                                    prefix: prefix,
                                    sender: peer,
                                    id: id,
                                    type: envelope.type,
                                    room: room,
                                    signal: true
                                ),
                                to: member
                            )
                        )
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var all: [Result<DeliveryResult, RedisError>] = []
            for await result in group { all.append(result) }
            return all
        }
        var queued = false
        for result in results {
            switch result {
            case .success(let delivery): if delivery == .queued { queued = true }
            case .failure(let error): throw error
            }
        }
        self.count { $0.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1 }
        self.reply(connection, ServerMessage.ack(id: id, queued: queued))
    }

    /// Queues one addressed signal's script without waiting for it; the returned future completes once
    /// its sender has been answered. Nil when it was answered at once (not in a session, not in the room).
    private func relayPipelined(_ envelope: SignalEnvelope, id: String?, on connection: ConnectionID)
        -> EventLoopFuture<Void>?
    {
        guard let (peer, rooms, _) = self.session(of: connection), let target = envelope.to else { return nil }
        if let refusal = policy.send(room: envelope.room, senderRooms: rooms) {
            self.replyError(connection, refusal, id: id)
            return nil
        }
        let prefix = ServerMessage.signalPrefix(envelope, from: peer)
        let shared = policy.needsSenderRooms(room: envelope.room, to: target, from: peer) ? rooms : nil
        return redis.submit(
            ClusterScripts.deliver,
            keys: keys.session(target),
            arguments: self.arguments(
                for: DeliveryRequest(
                    prefix: prefix,
                    sender: peer,
                    id: id,
                    type: envelope.type,
                    room: envelope.room,
                    shared: shared,
                    signal: true
                )
            )
        ).map { reply in
            let result = self.interpret(reply, recipient: target, signal: true)
            self.answer(result, for: envelope, to: target, id: id, on: connection)
        }.recover { error in
            self.logger.debug("cluster request failed", metadata: ["error": "\(error)"])
            self.replyError(connection, .unavailable, id: id)
        }
    }

    /// The sender's answer for an addressed signal.
    private func answer(
        _ result: DeliveryResult,
        for envelope: SignalEnvelope,
        to target: String,
        id: String?,
        on connection: ConnectionID
    ) {
        let typeIndex = SignalType.allCases.firstIndex(of: envelope.type)!
        switch result {
        case .delivered, .queued:
            self.count { $0.signals[typeIndex] += 1 }
            self.reply(connection, ServerMessage.ack(id: id, queued: result == .queued))
        case .queueFull, .notInRoom, .notShared, .unavailable:
            self.replyError(connection, result.refusal(recipient: target, room: envelope.room), id: id)
        }
    }

    /// What ``ClusterScripts/deliver`` did with a message. A resent request id (`dup`) is answered as
    /// the first delivery was.
    enum DeliveryResult: String, Sendable {
        case delivered
        case queued
        case queueFull = "queue-full"
        case notInRoom = "not-in-room"
        case notShared = "not-shared"
        case unavailable

        /// The routing policy's refusal this script answer stands for (for an undelivered message).
        func refusal(recipient: String, room: String?) -> Refusal {
            switch self {
            case .delivered, .queued, .unavailable: return .peerUnavailable(recipient)
            case .queueFull: return .queueFull(recipient)
            case .notInRoom: return .recipientNotInRoom(peer: recipient, room: room ?? "")
            case .notShared: return .noSharedRoom(recipient)
            }
        }
    }

    /// What ``ClusterScripts/deliver`` is asked to give one recipient: a signal (`signal`, with its
    /// sender, request id, type, room and — when a shared room is required — the sender's rooms) or a
    /// presence event (`prefix` only).
    private struct DeliveryRequest {
        var prefix: ByteBuffer
        var sender = ""
        var id: String? = nil
        var type: SignalType? = nil
        var room: String? = nil
        var shared: [String]? = nil
        var signal: Bool
    }

    /// Runs ``ClusterScripts/deliver`` for one recipient and handles what it reports back (messages its
    /// buffer bound pushed out become `expired` notices to their senders).
    @discardableResult
    private func deliver(_ request: DeliveryRequest, to recipient: String) async throws(RedisError)
        -> DeliveryResult
    {
        let reply = try await redis.run(
            ClusterScripts.deliver,
            keys: keys.session(recipient),
            arguments: self.arguments(for: request)
        )
        return self.interpret(reply, recipient: recipient, signal: request.signal)
    }

    private func arguments(for request: DeliveryRequest) -> [any RESPEncodable] {
        [
            request.prefix, request.sender, request.id ?? "", request.type?.rawValue ?? "", request.room ?? "",
            request.shared.map { $0.joined(separator: ",") } ?? "-",
            limits.resumeBufferMessages, limits.resumeBufferBytes, request.signal ? "1" : "0", keys.channelPrefix,
        ]
    }

    /// Reads `deliver`'s reply; counts it, and sends the `expired` notices it asks for (in the background).
    private func interpret(_ reply: RESPValue, recipient: String, signal: Bool) -> DeliveryResult {
        guard let parts = reply.array, let status = parts.first?.string else { return .unavailable }
        if status == "dup" {
            return parts.count > 1 && parts[1].string == "queued" ? .queued : .delivered
        }
        if status == "delivered" || status == "queued", parts.count == 3 {
            if parts[1].string != nodeName && signal { self.count(crossNode: 1) }
            if status == "queued" && signal { self.count { $0.queued += 1 } }
            if let expired = parts[2].array, !expired.isEmpty {
                Task { await self.notifyExpired(expired, recipient: recipient) }
            }
        }
        return DeliveryResult(rawValue: status) ?? .unavailable
    }

    /// Sends a presence event to each of `peers` (errors are logged: presence is best effort when Redis is
    /// unreachable, and a resume with `gap` tells the client).
    private func announce(_ prefix: ByteBuffer, to peers: [String]) async {
        await withTaskGroup(of: Void.self) { group in
            for member in peers {
                group.addTask {
                    do throws(RedisError) {
                        try await self.deliver(DeliveryRequest(prefix: prefix, signal: false), to: member)
                    } catch {
                        self.logger.debug(
                            "presence not delivered",
                            metadata: ["peer": "\(member)", "error": "\(error)"]
                        )
                    }
                }
            }
        }
    }

    /// `expired` notices for signals that left a buffer unread. Origins are `sender|type|request id`.
    private func notifyExpired(_ origins: [RESPValue], recipient: String) async {
        self.count { $0.expired += origins.count }
        for origin in origins {
            guard let text = origin.string else { continue }
            let fields = text.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, let type = SignalType(rawValue: String(fields[1])) else { continue }
            let id = fields[2].isEmpty ? nil : String(fields[2])
            await self.announce(
                ServerMessage.expiredPrefix(id: id, to: recipient, signal: type),
                to: [String(fields[0])]
            )
        }
    }

    /// Takes `peer` out of `room`; returns the members left.
    private func leave(_ room: String, peer: String) async throws(RedisError) -> [String] {
        let reply = try await redis.run(ClusterScripts.leaveRoom, keys: [keys.room(room)], arguments: [peer])
        return reply.array.flatMap { $0.count == 2 ? $0[1].array?.compactMap(\.string) : nil } ?? []
    }

    /// After a session ended: it leaves its rooms (the others get `peer-left`) and the senders of signals
    /// still queued for it get `expired`.
    private func cleanUp(peer: String, rooms: String, origins: RESPValue) async {
        for room in rooms.split(separator: ",") {
            do throws(RedisError) {
                let remaining = try await self.leave(String(room), peer: peer)
                await self.announce(ServerMessage.peerLeftPrefix(room: String(room), peer: peer), to: remaining)
            } catch {
                logger.warning(
                    "could not take an ended session out of its room",
                    metadata: ["peer": "\(peer)", "room": "\(room)"]
                )
            }
        }
        if let origins = origins.array, !origins.isEmpty {
            await self.notifyExpired(origins, recipient: peer)
        }
    }

    private func close(_ connection: ConnectionID, keepSession: Bool) async {
        guard let local = state.withLockedValue({ $0.locals.removeValue(forKey: connection) }) else { return }
        guard local.isOpen, !local.detachedFromSession, let peer = local.peer else { return }
        let node = nodeName
        let conn = String(connection.raw)
        do throws(RedisError) {
            if keepSession && limits.resumeGraceNanos > 0 {
                let deadline = Self.epochMillis() + Int(limits.resumeGraceNanos / 1_000_000)
                let kept = try await redis.run(
                    ClusterScripts.detach,
                    keys: keys.session(peer),
                    arguments: [node, conn, deadline, ttlMillis]
                )
                if kept.int == 1 {
                    _ = try await redis.send(["ZADD", keys.deadlines, deadline, peer])
                }
            } else {
                let reply = try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(peer),
                    arguments: ["close", node, conn, 0, keys.channelPrefix]
                )
                if let parts = reply.array, parts.count == 3, parts[0].string == "ended" {
                    _ = try? await redis.send(["ZREM", keys.deadlines, peer])
                    await self.cleanUp(peer: peer, rooms: parts[1].string ?? "", origins: parts[2])
                }
            }
        } catch {
            // The session stays as it was in Redis: it ends when its deadline passes (no refresh comes).
            logger.warning("session close not recorded in Redis", metadata: ["peer": "\(peer)", "error": "\(error)"])
        }
    }

    // MARK: Node channel

    private func consumeChannel() async {
        for await event in subscriber.events {
            switch event {
            case .message(let message):
                self.handleChannel(message.payload)
            case .disconnected:
                logger.warning("Redis subscription lost; catching up after it is back")
            case .reconnected:
                clusterMetrics.redisReconnects.increment()
                await self.catchUp()
            }
        }
    }

    /// `D conn seq message` (a sequenced message for a connection) or `K conn code` (close it).
    func handleChannel(_ payload: ByteBuffer) {
        guard let parsed = NodeMessage(payload) else {
            logger.warning("unreadable message on the node channel")
            return
        }
        switch parsed {
        case .deliver(let connection, let seq, let bytes):
            self.write(bytes, seq: seq, to: connection)
        case .close(let connection, let code):
            self.closeConnection(
                connection,
                code,
                reason: code == .idTaken ? "session resumed elsewhere" : "session ended"
            )
        }
    }

    /// After the subscription was lost: every connection gets what was published meanwhile.
    private func catchUp() async {
        let open = state.withLockedValue { state in
            state.locals.compactMap { id, local in
                local.isOpen && !local.detachedFromSession ? (id, local.peer!, local.lastWritten) : nil
            }
        }
        for (connection, peer, after) in open {
            do throws(RedisError) {
                let reply = try await redis.run(
                    ClusterScripts.since,
                    keys: keys.session(peer),
                    arguments: [nodeName, String(connection.raw), String(after)]
                )
                guard let parts = reply.array, parts.first?.string == "ok", parts.count == 2 else {
                    self.closeConnection(connection, .sessionNotResumable, reason: "session ended")
                    continue
                }
                for entry in Self.entries(parts[1]) {
                    self.write(entry.bytes, seq: entry.seq, to: connection)
                }
            } catch {
                logger.warning("catch-up failed", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
    }

    /// Writes sequenced message `seq` to a connection once: held until its open or resume is complete,
    /// skipped when the connection already has it (a replay and the live stream can overlap).
    private func write(_ bytes: ByteBuffer, seq: UInt64, to connection: ConnectionID) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard var local = state.locals[connection], !local.detachedFromSession else { return nil }
            if !local.isOpen {
                local.held.append((seq, bytes))
                state.locals[connection] = local
                return nil
            }
            guard seq > local.lastWritten else { return nil }
            local.lastWritten = seq
            state.locals[connection] = local
            return local.outbox.append(.text(bytes)) ? local.outbox : nil
        }
        outbox?.wakeOwner()
    }

    // MARK: Maintenance

    private func maintain() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.sweepInterval)
            if Task.isCancelled { return }
            self.watchPartition()
            let now = NIODeadline.now().uptimeNanoseconds
            let connected = redis.isConnected
            let refreshInterval = Self.nanoseconds(configuration.refreshInterval)
            let settle = 2 * refreshInterval + Self.nanoseconds(configuration.sweepInterval)
            let (refreshDue, sweepDue) = state.withLockedValue { state -> (Bool, Bool) in
                guard connected else {
                    // Re-announce at once when Redis is back, and sweep only once every node had time to.
                    state.connectedSince = nil
                    state.lastRefresh = 0
                    return (false, false)
                }
                let since = state.connectedSince ?? now
                state.connectedSince = since
                let refresh = state.lastRefresh == 0 || now - state.lastRefresh >= refreshInterval
                if refresh { state.lastRefresh = now }
                return (refresh, now - since >= settle)
            }
            if refreshDue { await self.refresh() }
            if sweepDue { await self.sweep() }
        }
    }

    /// Re-announces every live session on this node (deadline and key expiry), and closes connections
    /// whose session ended or moved while this node could not hear about it.
    private func refresh() async {
        let open = state.withLockedValue { state in
            state.locals.compactMap { id, local in local.isOpen && !local.detachedFromSession ? (id, local.peer!) : nil
            }
        }
        guard !open.isEmpty else { return }
        let deadline = Self.epochMillis() + liveMillis
        var zadd: [any RESPEncodable] = ["ZADD", keys.deadlines]
        for (connection, peer) in open {
            do throws(RedisError) {
                let reply = try await redis.run(
                    ClusterScripts.touch,
                    keys: keys.session(peer),
                    arguments: [nodeName, String(connection.raw), deadline, ttlMillis]
                )
                switch reply.int {
                case 1:
                    zadd.append(deadline)
                    zadd.append(peer)
                case 2:
                    self.closeConnection(connection, .idTaken, reason: "session resumed elsewhere")
                default:
                    self.closeConnection(connection, .sessionNotResumable, reason: "session ended")
                }
            } catch {
                return
            }
        }
        if zadd.count > 2 { _ = try? await redis.send(zadd) }
    }

    /// Ends sessions whose deadline passed (their client did not resume in time, or their node died).
    private func sweep() async {
        let now = Self.epochMillis()
        guard let due = try? await redis.send(["ZRANGEBYSCORE", keys.deadlines, "-inf", now, "LIMIT", 0, 200]).array
        else { return }
        for peer in due.compactMap(\.string) {
            do throws(RedisError) {
                let reply = try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(peer),
                    arguments: ["expire", "", "", now, keys.channelPrefix]
                )
                guard let parts = reply.array, let status = parts.first?.string else { continue }
                if status == "alive" { continue }
                _ = try await redis.run(ClusterScripts.forgetDeadline, keys: [keys.deadlines], arguments: [peer, now])
                if status == "ended", parts.count == 3 {
                    logger.debug("session expired", metadata: ["peer": "\(peer)"])
                    await self.cleanUp(peer: peer, rooms: parts[1].string ?? "", origins: parts[2])
                }
            } catch {
                return
            }
        }
    }

    /// A node cut from Redis for longer than ``ClusterConfiguration/partitionTimeout`` sends its clients
    /// away (1001) so they resume on a node that reaches Redis.
    private func watchPartition() {
        let now = NIODeadline.now().uptimeNanoseconds
        let connected = redis.isConnected
        let evict: [ConnectionID]? = state.withLockedValue { state in
            if connected {
                state.unreachableSince = nil
                return []
            }
            guard let since = state.unreachableSince else {
                state.unreachableSince = now
                return nil
            }
            guard let timeout = configuration.partitionTimeout, now - since >= Self.nanoseconds(timeout) else {
                return []
            }
            return state.locals.compactMap { id, local in local.isOpen && !local.detachedFromSession ? id : nil }
        }
        guard let evict else {
            logger.warning("Redis unreachable: not ready", metadata: ["redis.state": "\(redis.state)"])
            return
        }
        if !evict.isEmpty {
            logger.warning(
                "Redis unreachable: sending clients to other nodes",
                metadata: ["connections": "\(evict.count)"]
            )
            for connection in evict {
                self.closeConnection(connection, .goingAway, reason: "node lost its cluster; reconnect")
            }
        }
    }

    // MARK: Output

    private func reply(_ connection: ConnectionID, _ buffer: ByteBuffer) {
        let outbox = state.withLockedValue { $0.locals[connection]?.outbox }
        if let outbox, outbox.append(.text(buffer)) { outbox.wakeOwner() }
    }

    private func replyError(_ connection: ConnectionID, _ refusal: Refusal, id: String?) {
        self.count { $0.errors[ErrorCode.allCases.firstIndex(of: refusal.code)!] += 1 }
        self.reply(connection, refusal.errorMessage(id: id))
    }

    /// Closes a connection; unless the code keeps the session (1001, 1011, 1013), its session is no longer
    /// this connection's business.
    private func closeConnection(_ connection: ConnectionID, _ code: CloseCode, reason: String) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard var local = state.locals[connection] else { return nil }
            if !code.keepsSession || code == .tryAgainLater && !local.isOpen { local.detachedFromSession = true }
            state.locals[connection] = local
            return local.outbox.append(.close(code, reason: reason)) ? local.outbox : nil
        }
        outbox?.wakeOwner()
    }

    private func updateRooms(_ connection: ConnectionID, _ change: (inout [String]) -> Void) {
        state.withLockedValue { state in
            guard state.locals[connection] != nil else { return }
            change(&state.locals[connection]!.rooms)
        }
    }

    private func count(_ change: (inout HubCounters) -> Void) {
        state.withLockedValue { change(&$0.counters) }
    }

    private func count(crossNode: Int) {
        state.withLockedValue { $0.crossNode += crossNode }
    }

    /// Brings the metrics up to date (called before `/metrics` is rendered).
    public func exportMetrics() {
        let (connections, sessions, counters, previous, cross) = state.withLockedValue { state in
            defer {
                state.exported = state.counters
                state.exportedCrossNode = state.crossNode
            }
            return (
                state.locals.count, state.locals.values.filter(\.isOpen).count, state.counters, state.exported,
                state.crossNode - state.exportedCrossNode
            )
        }
        metrics.connections.record(connections)
        metrics.sessions.record(sessions)
        metrics.record(counters, since: previous)
        if cross > 0 { clusterMetrics.crossNodeSignals.increment(by: cross) }
        clusterMetrics.redisUp.record(isReady ? 1 : 0)
    }

    /// Cumulative counters (for tests).
    public var counters: HubCounters { state.withLockedValue { $0.counters } }
    /// Signals whose recipient was on another node (for tests).
    public var crossNodeSignals: Int { state.withLockedValue { $0.crossNode } }

    // MARK: Helpers

    /// How long a live session lasts without a refresh: the grace period plus one refresh interval.
    private var liveMillis: Int {
        Int(limits.resumeGraceNanos / 1_000_000) + Int(Self.nanoseconds(configuration.refreshInterval) / 1_000_000)
    }

    /// Key expiry: a safety net far behind the deadlines, for keys nobody sweeps.
    private var ttlMillis: Int { liveMillis * 2 + 60_000 }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        UInt64(max(0, RedisBackoff.nanoseconds(duration)))
    }

    static func epochMillis() -> Int {
        Int(Date().timeIntervalSince1970 * 1000)
    }

    static func entries(_ value: RESPValue) -> [(seq: UInt64, bytes: ByteBuffer)] {
        guard let flat = value.array else { return [] }
        var result: [(seq: UInt64, bytes: ByteBuffer)] = []
        var index = 0
        while index + 1 < flat.count {
            if let seq = flat[index].string.flatMap({ UInt64($0) }), let bytes = flat[index + 1].buffer {
                result.append((seq, bytes))
            }
            index += 2
        }
        return result
    }

    static func grantString(_ grant: RoomGrant) -> String {
        switch grant {
        case .all: return "*"
        case .only(let rooms): return rooms.sorted().joined(separator: ",")
        }
    }

    static func grant(from string: String) -> RoomGrant {
        string == "*" ? .all : .only(Set(string.split(separator: ",").map(String.init)))
    }

    /// Random base-62 characters (the hub's ``RandomCharacters``, fetching just what one string needs).
    static func randomString(count: Int) -> String {
        var characters = RandomCharacters(source: BufferedSystemRandom(numbers: (count + 7) / 8 + 1))
        return characters.string(count: count)
    }

    static func randomPeerID() -> String {
        var characters = RandomCharacters(source: BufferedSystemRandom(numbers: 3))
        return PeerIdentity.randomID(using: &characters)
    }
}

/// A message on a node's channel.
enum NodeMessage: Equatable {
    /// `D conn seq message`: a sequenced message for connection `conn`.
    case deliver(ConnectionID, seq: UInt64, ByteBuffer)
    /// `K conn code`: close connection `conn` with `code` (its session ended or moved).
    case close(ConnectionID, CloseCode)

    init?(_ payload: ByteBuffer) {
        var buffer = payload
        guard let kind = buffer.readInteger(as: UInt8.self), buffer.readInteger(as: UInt8.self) == UInt8(ascii: " "),
            let conn = Self.readNumber(&buffer)
        else { return nil }
        switch kind {
        case UInt8(ascii: "D"):
            guard let seq = Self.readNumber(&buffer), buffer.readableBytes > 0 else { return nil }
            self = .deliver(ConnectionID(conn), seq: seq, buffer)
        case UInt8(ascii: "K"):
            guard let raw = Self.readNumber(&buffer), let code = CloseCode(rawValue: UInt16(truncatingIfNeeded: raw))
            else { return nil }
            self = .close(ConnectionID(conn), code)
        default:
            return nil
        }
    }

    /// Reads decimal digits up to a space (consumed) or the end.
    private static func readNumber(_ buffer: inout ByteBuffer) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        while let byte = buffer.readInteger(as: UInt8.self) {
            if byte == UInt8(ascii: " ") { break }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 19 else { return nil }
            value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}
