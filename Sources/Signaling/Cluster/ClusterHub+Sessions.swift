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
            case .fresh(let requested, let subject, let grant, _):
                try await self.create(connection, requested: requested, subject: subject, grant: grant)
            case .resume(let token, let last, let subject, _):
                try await self.resume(connection, token: token, last: last, subject: subject)
            }
        } catch {
            logger.warning("cluster open failed", metadata: ["error": "\(error)"])
            self.refuse(connection, .unavailable)
        }
    }

    private func create(_ connection: ConnectionID, requested: String?, subject: String?, grant: RoomGrant)
        async throws(RedisError)
    {
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
                session: ClusterConnectionState.Session(peer: peer, grant: grant),
                welcome: welcome.render(peer: peer, session: token, resumed: false, gap: false),
                replay: [],
                through: 0
            )
        }
    }

    private func resume(_ connection: ConnectionID, token: String, last: UInt64, subject: String?)
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
        self.count {
            $0.resumes += 1
            $0.replayed += resumed.replay.count
            if resumed.gap { $0.gaps += 1 }
        }
        self.opened(
            connection,
            session: ClusterConnectionState.Session(peer: peer, rooms: resumed.rooms, grant: resumed.grant),
            welcome: welcome.render(peer: peer, session: newToken, resumed: true, gap: resumed.gap),
            replay: resumed.replay,
            through: resumed.seq
        )
    }

    /// After the connection's socket closed and its requests were carried out: the session waits for a
    /// resume (detach) or ends everywhere, unless it is no longer this connection's.
    func closeSession(_ close: ClusterConnectionState.SessionClose, connection: ConnectionID) async {
        let conn = String(connection.raw)
        do throws(RedisError) {
            switch close {
            case .none:
                return
            case .detach(let peer):
                let deadline = Self.epochMillis() + Int(limits.resumeGraceNanos / 1_000_000)
                // What the client confirmed since the last refresh leaves the buffer now.
                let through = state.withLockedValue { $0.locals[connection]?.connection.trimDue } ?? 0
                let kept = try await redis.run(
                    ClusterScripts.detach,
                    keys: keys.session(peer),
                    arguments: [nodeName, conn, deadline, ttlMillis, Int(clamping: through)]
                )
                if kept.int == 1 {
                    _ = try await redis.send(["ZADD", keys.deadlines, deadline, peer])
                }
            case .end(let peer):
                let reply = try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(peer),
                    arguments: ["close", nodeName, conn, 0, keys.channelPrefix]
                )
                if case .ended(let ended) = EndReply(reply) {
                    _ = try? await redis.send(["ZREM", keys.deadlines, peer])
                    await self.cleanUp(peer: peer, ended)
                    self.emit(.sessionEnded(peer: peer, reason: .closed))
                }
            }
        } catch {
            // The session stays as it was in Redis: it ends when its deadline passes (no refresh comes).
            logger.warning("session close not recorded in Redis", metadata: ["error": "\(error)"])
        }
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
