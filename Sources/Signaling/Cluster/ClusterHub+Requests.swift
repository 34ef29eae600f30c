import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// A connection's requests: `ping`, `received`, `join`, `update`, `leave`, room broadcasts and addressed
/// signals.
extension ClusterHub {
    /// Carries out one request (addressed signals take ``relayPipelined(_:id:on:answered:)``).
    func receive(_ message: ClientMessage, on connection: ConnectionID, session: ClusterConnectionState.Session) async {
        let id = message.id
        let peer = session.peer
        do throws(RedisError) {
            switch message.request {
            case .ping:
                self.reply(connection, ServerMessage.pong(id: id))
            case .received(let seq):
                // ``ClusterHub/receive(_:_:)`` takes it before it queues anything; the same here.
                self.confirm(connection, seq)
            case .join(let room, let meta):
                try await self.join(room, meta: meta, id: id, on: connection, session: session)
            case .update(let room, let meta):
                try await self.update(room, meta: meta, id: id, on: connection, session: session)
            case .leave(let room):
                if let refusal = policy.leave(room: room, isMember: session.rooms.contains(room)) {
                    return self.replyError(connection, refusal, id: id)
                }
                try await self.leave(room, id: id, on: connection, peer: peer)
            case .auth:
                self.replyError(connection, .authNotEnabled, id: id)
            case .grant(let grant):
                // The grant is kept with the session (a resume on another node reads it), then every room
                // it no longer allows is left as by `leave`, announced to the members.
                _ = try await redis.run(
                    ClusterScripts.sessionRooms,
                    keys: [keys.sessionHash(peer)],
                    arguments: ["grant", grant.clusterString]
                )
                self.updateSession(connection) { $0.grant = grant }
                for room in session.rooms where !grant.allows(room) {
                    try await self.leave(room, id: nil, on: connection, peer: peer)
                }
            case .signal(let envelope):
                try await self.broadcast(envelope, id: id, on: connection, session: session)
            }
        } catch {
            logger.debug("cluster request failed", metadata: ["error": "\(error)"])
            self.replyError(connection, .unavailable, id: id)
        }
    }

    /// Leaves `room` (the session is in it): the members hash, the session's list, the connection's
    /// `left`, then `peer-left` to the others.
    private func leave(_ room: String, id: String?, on connection: ConnectionID, peer: String) async throws(RedisError)
    {
        let remaining = try await self.leave(room, peer: peer)
        _ = try await redis.run(
            ClusterScripts.sessionRooms,
            keys: [keys.sessionHash(peer)],
            arguments: ["del", room]
        )
        self.updateSession(connection) { $0.rooms.removeAll { $0 == room } }
        self.emitLeft(peer, room: room, remaining: remaining)
        self.reply(connection, ServerMessage.left(room: room, id: id))
        await self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), to: remaining)
    }

    private func join(
        _ room: String,
        meta: ByteBuffer?,
        id: String?,
        on connection: ConnectionID,
        session: ClusterConnectionState.Session
    ) async throws(RedisError) {
        let peer = session.peer
        // The room's size is decided atomically by the script (`full`); the policy decides the rest.
        if case .refuse(let refusal) = policy.join(
            room: room,
            grant: session.grant,
            isMember: session.rooms.contains(room),
            roomsHeld: session.rooms.count,
            roomSize: 0
        ) {
            return self.replyError(connection, refusal, id: id)
        }
        // A named tenant's rooms are counted in a set of their own (`--max-rooms-per-tenant`): the room is
        // entered there first, refused when the set is full and the room not in it.
        let tenant = Tenant.of(room)
        if countsRooms(of: tenant), !(try await self.reserve(room, for: tenant)) {
            return self.replyError(connection, .tenantRoomsFull(limit: limits.maxRoomsPerTenant), id: id)
        }
        let reply = try await redis.run(
            ClusterScripts.joinRoom,
            keys: [keys.room(room)],
            arguments: [peer, meta ?? ByteBuffer(), limits.maxPeersPerRoom]
        )
        guard case .joined(let isNew, let changed, let members) = JoinReply(reply) else {
            return self.replyError(connection, .roomFull(room, limit: limits.maxPeersPerRoom), id: id)
        }
        let others = members.filter { $0.peer != peer }
        if isNew, others.isEmpty, countsRooms(of: tenant) {
            // This join opened the room: the last leave of the room it reserved may have released it
            // between the reservation and the join (``release(_:of:)``); it counts again.
            _ = try await redis.send(["SADD", keys.tenantRooms(tenant), room])
        }
        if isNew {
            _ = try await redis.run(
                ClusterScripts.sessionRooms,
                keys: [keys.sessionHash(peer)],
                arguments: ["add", room]
            )
            self.updateSession(connection) { $0.rooms.append(room) }
            self.emit(.peerJoined(peer: peer, room: room))
            await self.announce(
                ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta),
                to: others.map(\.peer)
            )
        } else if changed {
            // A re-join with another meta: an update the others hear of.
            await self.announce(
                ServerMessage.peerUpdatedPrefix(room: room, peer: peer, meta: meta),
                to: others.map(\.peer)
            )
        }
        self.reply(
            connection,
            ServerMessage.joined(room: room, peers: others.map { (peer: $0.peer, meta: $0.meta) }, id: id)
        )
    }

    /// Counts `room` against `tenant`'s rooms (``ClusterScripts/reserveRoom``); false when the tenant has
    /// its most rooms. A room can stay counted with nobody in it: its join failed after the reservation
    /// (Redis unreachable), or a node died between a room's reservation and its join, or between its last
    /// leave and its release. So a full set is checked before it refuses: rooms in it that no longer exist
    /// (no member) are taken out, then the reservation is tried again. At most once per
    /// ``tenantRoomCheckInterval`` per tenant on this node, and about ``tenantRoomCheckSample`` rooms a
    /// check, so a tenant at its bound cannot have every refused join read all its rooms. Each check goes on
    /// where this node's last one for the tenant stopped (an `SSCAN` cursor), so a room counted with nobody
    /// in it is found within one walk through the set: about `rooms / 64` checks.
    private func reserve(_ room: String, for tenant: Tenant) async throws(RedisError) -> Bool {
        let key = keys.tenantRooms(tenant)
        let arguments: [any RESPEncodable] = [room, limits.maxRoomsPerTenant]
        if try await redis.run(ClusterScripts.reserveRoom, keys: [key], arguments: arguments).int == 1 { return true }
        let now = NIODeadline.now()
        guard let cursor = state.withLockedValue({ $0.tenantRoomChecks.start(tenant, at: now) }) else { return false }
        let scan = try await redis.send(["SSCAN", key, cursor, "COUNT", Self.tenantRoomCheckSample]).array ?? []
        let counted = scan.count == 2 ? scan[1].array?.compactMap(\.string) ?? [] : []
        let next = scan.first?.string ?? "0"
        state.withLockedValue { $0.tenantRoomChecks.finish(tenant, cursor: next) }
        let vanished = try await self.sizes(of: counted).filter { $0.members == 0 }.map(\.room)
        guard !vanished.isEmpty else { return false }
        let released = try await release(vanished, of: tenant)
        logger.info(
            "rooms of a tenant counted with nobody in them released",
            metadata: ["tenant": "\(tenant.name)", "rooms": "\(released)"]
        )
        return try await redis.run(ClusterScripts.reserveRoom, keys: [key], arguments: arguments).int == 1
    }

    /// Whether `tenant`'s rooms are counted: a named tenant, with `--max-rooms-per-tenant`.
    func countsRooms(of tenant: Tenant) -> Bool {
        limits.maxRoomsPerTenant != .max && !tenant.isDefault
    }

    /// Takes `rooms`, found with nobody in them, out of `tenant`'s count, then counts again each one
    /// somebody has entered since (a join that reserved it before the release and entered it after; a join
    /// that enters after this check counts the room itself, as it opens it). Returns how many stay out.
    func release(_ rooms: [String], of tenant: Tenant) async throws(RedisError) -> Int {
        let key = keys.tenantRooms(tenant)
        _ = try await redis.send(["SREM", key] + rooms)
        let back = try await self.sizes(of: rooms).filter { $0.members > 0 }.map(\.room)
        if !back.isEmpty { _ = try await redis.send(["SADD", key] + back) }
        return rooms.count - back.count
    }

    /// How often a node checks a full tenant's rooms for ones nobody is in (``reserve(_:for:)``).
    static var tenantRoomCheckInterval: TimeAmount { .seconds(2) }
    /// How many of a full tenant's rooms one check reads (``reserve(_:for:)``; `SSCAN`'s `COUNT`, which
    /// Redis takes as a hint).
    static var tenantRoomCheckSample: Int { 64 }

    /// `update`: the member's new meta in the room's hash, `peer-updated` to the others, then `updated`.
    private func update(
        _ room: String,
        meta: ByteBuffer,
        id: String?,
        on connection: ConnectionID,
        session: ClusterConnectionState.Session
    ) async throws(RedisError) {
        let peer = session.peer
        if let refusal = policy.update(room: room, isMember: session.rooms.contains(room)) {
            return self.replyError(connection, refusal, id: id)
        }
        let reply = try await redis.run(ClusterScripts.updateMeta, keys: [keys.room(room)], arguments: [peer, meta])
        guard case .updated(let members) = UpdateReply(reply) else {
            return self.replyError(connection, .notInRoom(room), id: id)
        }
        await self.announce(
            ServerMessage.peerUpdatedPrefix(room: room, peer: peer, meta: meta),
            to: members.filter { $0 != peer }
        )
        self.reply(connection, ServerMessage.updated(room: room, id: id))
    }

    /// The message a signal's recipients get, as handed to ``ClusterScripts/deliver``: a prefix ending in
    /// `"seq":` (the script completes it), or for a volatile signal the whole message, which has no `seq`.
    private func relayed(_ envelope: SignalEnvelope, from peer: String) -> ByteBuffer {
        envelope.volatile
            ? ServerMessage.volatileRelayed(envelope.members, from: peer)
            : ServerMessage.signalPrefix(envelope, from: peer)
    }

    /// A room broadcast (`message` with `room` only): every other member, wherever it is.
    private func broadcast(
        _ envelope: SignalEnvelope,
        id: String?,
        on connection: ConnectionID,
        session: ClusterConnectionState.Session
    ) async throws(RedisError) {
        let peer = session.peer
        guard let room = envelope.room, envelope.to == nil else { return }
        if let refusal = policy.send(room: room, senderRooms: session.rooms) {
            return self.replyError(connection, refusal, id: id)
        }
        let members = try await redis.send(["HKEYS", keys.room(room)]).array?.compactMap(\.string) ?? []
        // A volatile broadcast reaches the members connected now; the others (`away`) miss it.
        let request = DeliveryRequest(
            prefix: self.relayed(envelope, from: peer),
            sender: peer,
            id: id,
            type: envelope.type,
            room: room,
            signal: true,
            volatile: envelope.volatile
        )
        let results = await withTaskGroup(of: Result<DeliveryResult, RedisError>.self) { group in
            for member in members where member != peer {
                group.addTask { () async -> Result<DeliveryResult, RedisError> in
                    do throws(RedisError) {
                        return .success(try await self.deliver(request, to: member))
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

    /// Queues one addressed signal's script without waiting for it; `answered` is called once its sender
    /// has been answered (at once when it was refused here: not in a session, not in the room).
    func relayPipelined(
        _ envelope: SignalEnvelope,
        id: String?,
        on connection: ConnectionID,
        answered: @escaping @Sendable () -> Void
    ) {
        guard let session = self.session(of: connection), let target = envelope.to else { return answered() }
        let peer = session.peer
        if let refusal = policy.send(room: envelope.room, senderRooms: session.rooms) {
            self.replyError(connection, refusal, id: id)
            return answered()
        }
        let shared = policy.needsSenderRooms(room: envelope.room, to: target, from: peer) ? session.rooms : nil
        let request = DeliveryRequest(
            prefix: self.relayed(envelope, from: peer),
            sender: peer,
            id: id,
            type: envelope.type,
            room: envelope.room,
            shared: shared,
            signal: true,
            volatile: envelope.volatile
        )
        batcher.submit(request, to: target) { result in
            switch result {
            case .success(let reply):
                let result = self.interpret(reply, recipient: target, signal: true)
                self.answer(result, for: envelope, to: target, id: id, on: connection)
            case .failure(let error):
                self.logger.debug("cluster request failed", metadata: ["error": "\(error)"])
                self.replyError(connection, .unavailable, id: id)
            }
            answered()
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
        switch result {
        case .delivered, .queued:
            self.count { $0.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1 }
            self.reply(connection, ServerMessage.ack(id: id, queued: result == .queued))
        case .queueFull, .notInRoom, .notShared, .unavailable, .away:
            self.replyError(connection, result.refusal(recipient: target, room: envelope.room), id: id)
        }
    }
}
