import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// Sessions: open, resume, and what a connection's close does to its session.
extension ClusterHub {
    /// Opens (or resumes) a connection's session with Redis; the welcome or the refusal goes to its outbox.
    func open(_ connection: ConnectionID, _ request: OpenRequest) async {
        do throws(RedisError) {
            switch request {
            case .fresh(let requested, let subject, let grant, let client):
                try await self.create(
                    connection,
                    requested: requested,
                    subject: subject,
                    grant: grant,
                    client: client
                )
            case .resume(let token, let last, let subject, let client):
                try await self.resume(connection, token: token, last: last, subject: subject, client: client)
            }
        } catch {
            logger.warning("cluster open failed", metadata: ["error": "\(error)"])
            self.refuse(connection, .unavailable)
        }
    }

    private func create(
        _ connection: ConnectionID,
        requested: String?,
        subject: String?,
        grant: RoomGrant,
        client: String?
    ) async throws(RedisError) {
        let now = Self.epochMillis()
        var peer: String
        switch policy.identity(requested: requested, subject: subject) {
        case .id(let id):
            peer = id
        case .random:
            peer = Self.randomPeerID()
        case .refuse(let refusal):
            return self.refuse(connection, refusal)
        }
        // Whether an existing session with this id is taken over (the script ends it) is the policy's call.
        let takeOver = policy.collision(peer: peer, requested: requested, subject: subject) == .takeOver
        while true {
            let token = peer + "." + Self.randomString(count: 43)
            try await self.listen(on: connection, to: peer)
            let reply = try await redis.run(
                ClusterScripts.create,
                keys: keys.session(peer),
                arguments: [
                    token, nodeName, String(connection.raw), now + liveMillis, ttlMillis, takeOver ? "1" : "0",
                    grant.clusterString, keys.channelPrefix,
                ]
            )
            switch CreateReply(reply) {
            case .taken:
                switch policy.collision(peer: peer, requested: requested, subject: subject) {
                case .drawAgain, .takeOver:  // (the script took it over when `takeOver`)
                    peer = Self.randomPeerID()
                    continue
                case .refuse(let refusal):
                    return self.refuse(connection, refusal)
                }
            case .tookOver(let ended):
                self.count { $0.takeovers += 1 }
                await self.cleanUp(peer: peer, ended)
                self.emit(.sessionEnded(peer: peer, reason: .closed))
            case .created:
                break
            case nil:
                logger.warning("unexpected reply to the create script", metadata: ["reply": "\(reply)"])
                return self.refuse(connection, .unavailable)
            }
            _ = try? await redis.send(["ZADD", keys.deadlines, now + liveMillis, peer])
            self.emit(.sessionStarted(peer: peer))
            return self.opened(
                connection,
                session: ClusterConnectionState.Session(peer: peer, grant: grant, client: client),
                welcome: welcome.render(peer: peer, session: token, resumed: false, gap: false),
                replay: [],
                through: 0
            )
        }
    }

    private func resume(
        _ connection: ConnectionID,
        token: String,
        last: UInt64,
        subject: String?,
        client: String?
    )
        async throws(RedisError)
    {
        let now = Self.epochMillis()
        let peer = token.lastIndex(of: ".").map { String(token[..<$0]) } ?? ""
        if let refusal = policy.resume(
            peer: Identifier.isValidQualified(peer) ? peer : nil,
            known: true,
            subject: subject
        ) {
            return self.refuse(connection, refusal)
        }
        let newToken = peer + "." + Self.randomString(count: 43)
        try await self.listen(on: connection, to: peer)
        let reply = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session(peer),
            arguments: [
                token, newToken, nodeName, String(connection.raw), String(last), now + liveMillis, ttlMillis,
                keys.channelPrefix,
            ]
        )
        guard case .resumed(let resumed) = ResumeReply(reply) else {
            return self.refuse(connection, .sessionNotResumable)
        }
        _ = try? await redis.send(["ZADD", keys.deadlines, now + liveMillis, peer])
        await self.resumedDetached(peer, client: client)
        self.count {
            $0.resumes += 1
            $0.replayed += resumed.replay.count
            if resumed.gap { $0.gaps += 1 }
        }
        self.opened(
            connection,
            session: ClusterConnectionState.Session(
                peer: peer,
                rooms: resumed.rooms,
                grant: resumed.grant,
                client: client
            ),
            welcome: welcome.render(peer: peer, session: newToken, resumed: true, gap: resumed.gap),
            replay: resumed.replay,
            through: resumed.seq
        )
    }

    /// After the connection's socket closed and its requests were carried out: the session waits for a
    /// resume (detach) or ends everywhere, unless it is no longer this connection's. `trimDue`: the highest
    /// `seq` its client confirmed since the last refresh; `client`: the address it is counted under.
    func closeSession(
        _ close: ClusterConnectionState.SessionClose,
        connection: ConnectionID,
        trimDue through: UInt64,
        client: String?
    ) async {
        let conn = String(connection.raw)
        do throws(RedisError) {
            switch close {
            case .none:
                return
            case .detach(let peer) where limits.resumeGraceNanos == 0 || limits.maxDetachedSessions <= 0:
                // No session may wait for a resume: it ends as at a close.
                try await self.endSession(peer, conn: conn)
            case .detach(let peer):
                let deadline = Self.epochMillis() + Int(limits.resumeGraceNanos / 1_000_000)
                // What the client confirmed since the last refresh leaves the buffer now.
                let counted = limits.maxDetachedPerClient > 0 ? client ?? "" : ""
                let kept = try await redis.run(
                    ClusterScripts.detach,
                    keys: keys.session(peer),
                    arguments: [nodeName, conn, deadline, ttlMillis, Int(clamping: through), counted]
                )
                if kept.int == 1 {
                    _ = try await redis.send(["ZADD", keys.deadlines, deadline, peer])
                    try await self.boundDetached(peer, deadline: deadline, client: client)
                }
            case .end(let peer):
                try await self.endSession(peer, conn: conn)
            }
        } catch {
            // The session stays as it was in Redis: it ends when its deadline passes (no refresh comes).
            logger.warning("session close not recorded in Redis", metadata: ["error": "\(error)"])
        }
    }

    /// Ends `peer`'s session, which the connection `conn` of this node closed.
    private func endSession(_ peer: String, conn: String) async throws(RedisError) {
        let reply = try await redis.run(
            ClusterScripts.end,
            keys: keys.session(peer),
            arguments: ["close", nodeName, conn, 0, keys.channelPrefix]
        )
        if case .ended(let ended) = EndReply(reply) {
            await self.forget(peer, ended, reason: .closed)
        }
    }

    /// After `end` ended `peer`'s session: its deadline goes, its rooms and the senders of its queued
    /// signals are told (``cleanUp(peer:_:)``), and the event is emitted.
    private func forget(_ peer: String, _ ended: EndedSession, reason: SessionEndReason) async {
        _ = try? await redis.send(["ZREM", keys.deadlines, peer])
        await self.cleanUp(peer: peer, ended)
        self.emit(.sessionEnded(peer: peer, reason: reason))
    }

    /// `peer`'s session now waits for a resume until `deadline`: it is counted among the sessions waiting
    /// (``ClusterKeys/detached``) and those of its address (``ClusterKeys/detached(from:)``), and at either
    /// bound (`--max-detached-sessions`, `--max-detached-per-ip`) the oldest waiting ends as if its grace
    /// period were over (``ClusterScripts/boundDetached`` picks them, atomically per set; ``ClusterScripts/end``
    /// in `evict` mode ends one only if it still waits from that detach): as a single hub bounds them,
    /// across every node of the cluster.
    func boundDetached(_ peer: String, deadline: Int, client: String?) async throws(RedisError) {
        var bounds: [(key: String, limit: Int)] = []
        if let client, limits.maxDetachedPerClient > 0 {
            bounds.append((keys.detached(from: client), limits.maxDetachedPerClient))
        }
        bounds.append((keys.detached, limits.maxDetachedSessions))
        let now = Self.epochMillis()
        for bound in bounds {
            let reply = try await redis.run(
                ClusterScripts.boundDetached,
                keys: [bound.key],
                arguments: [peer, deadline, now, bound.limit, ttlMillis]
            )
            let popped = reply.array ?? []
            for index in stride(from: 0, to: popped.count - 1, by: 2) {
                guard let oldest = popped[index].string, oldest != peer, let since = popped[index + 1].string
                else { continue }
                let ended = try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(oldest),
                    arguments: ["evict", "", "", since, keys.channelPrefix]
                )
                guard case .ended(let session) = EndReply(ended) else { continue }
                self.count { $0.detachedEvicted += 1 }
                logger.debug("waiting session ended at the detached bound", metadata: ["peer.id": "\(oldest)"])
                await self.forget(oldest, session, reason: .expired)
            }
        }
    }

    /// A session that waited was resumed: it no longer counts among those waiting, nor among those of the
    /// address it waited from (`dfrom`, written by the detach; a build before it wrote none, and then the
    /// address it resumes from, `client`, is the best guess).
    private func resumedDetached(_ peer: String, client: String?) async {
        _ = try? await redis.send(["ZREM", keys.detached, peer])
        guard limits.maxDetachedPerClient > 0 else { return }
        let from = (try? await redis.send(["HGET", keys.sessionHash(peer), "dfrom"]))?.string ?? client
        if let from { _ = try? await redis.send(["ZREM", keys.detached(from: from), peer]) }
    }

    /// `peer.left`, and `room.empty` when nobody remains.
    func emitLeft(_ peer: String, room: String, remaining: [String]) {
        if remaining.isEmpty {
            self.emit(.peerLeft(peer: peer, room: room), .roomEmpty(room: room))
        } else {
            self.emit(.peerLeft(peer: peer, room: room))
        }
    }

    /// After a session ended: it leaves its rooms (the others get `peer-left`) and the senders of signals
    /// still queued for it get `expired`.
    func cleanUp(peer: String, _ ended: EndedSession) async {
        for room in ended.rooms {
            do throws(RedisError) {
                let remaining = try await self.leave(room, peer: peer)
                self.emitLeft(peer, room: room, remaining: remaining)
                await self.announce(ServerMessage.peerLeftPrefix(room: room, peer: peer), to: remaining)
            } catch {
                logger.warning(
                    "could not take an ended session out of its room",
                    metadata: ["peer.id": "\(peer)", "room.id": "\(room)"]
                )
            }
        }
        if !ended.origins.isEmpty {
            await self.notifyExpired(ended.origins, recipient: peer)
        }
    }
}
