import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// Keeping sessions and deadlines up to date: refresh, sweep, and the partition watch, as
/// ``ClusterNodeState`` decides on each tick.
extension ClusterHub {
    func maintain() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.sweepInterval)
            if Task.isCancelled { return }
            let now = NIODeadline.now().uptimeNanoseconds
            let reachable = redis.isConnected
            let (decision, open) = state.withLockedValue { state in
                let decision = state.node.tick(now: now, redisReachable: reachable)
                let open =
                    decision.sendClientsAway
                    ? state.locals.compactMap { $0.value.connection.session == nil ? nil : $0.key } : []
                return (decision, open)
            }
            if decision.lostRedis {
                logger.warning("Redis unreachable: not ready", metadata: ["redis.state": "\(redis.stateDescription)"])
            }
            if decision.sendClientsAway, !open.isEmpty {
                logger.warning(
                    "Redis unreachable: sending clients to other nodes",
                    metadata: ["connections": "\(open.count)"]
                )
                for connection in open {
                    self.closeConnection(connection, .goingAway, reason: "node lost its cluster; reconnect")
                }
            }
            if reachable { await self.sayAlive() }
            if decision.refresh { await self.refresh() }
            if decision.sweep { await self.sweep() }
        }
    }

    /// With TURN credentials in the welcome: every 250 ms (the single hub's tick), sends the connections
    /// due fresh credentials their `ice-servers` message, until cancelled.
    func refreshIceServers() async {
        guard welcome.turn != nil else { return }
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            self.refreshIceServers(now: NIODeadline.now().uptimeNanoseconds)
        }
    }

    private func refreshIceServers(now: UInt64) {
        let due = state.withLockedValue { state in
            (state.iceRefresh?.due(now: now) ?? []).compactMap { entry in
                state.locals[entry.connection].map { ($0.outbox, entry.peer) }
            }
        }
        for (outbox, peer) in due where outbox.append(.text(welcome.iceServersMessage(peer: peer))) {
            outbox.wakeOwner()
        }
    }

    /// How long a refresh's touches wait for Redis: half a session's live period, not the client-facing
    /// command timeout. A Redis that is seconds behind (a burst of other nodes' scripts) still answers
    /// them in time, so the sessions of a live node are not ended as if the node had died; a touch that
    /// times out is retried at the next refresh.
    var maintenanceTimeout: Duration {
        .milliseconds(max(Int(Self.nanoseconds(configuration.redis.commandTimeout) / 1_000_000), liveMillis / 2))
    }

    /// Re-announces every live session on this node (deadline and key expiry), and closes connections
    /// whose session ended or moved while this node could not hear about it. Up to 128 sessions go in one
    /// ``ClusterScripts/touchBatch`` call (on a Redis Cluster, per primary: the sessions whose slots it
    /// serves), two calls in flight, so a refresh costs Redis one script call per 128 sessions instead of
    /// one per session, and a client's request never waits behind more than two of them. A call that
    /// finds a slot moved (`moved`) is done again one ``ClusterScripts/touch`` per session, which follows
    /// the redirect. Each touch also trims the session's buffer through what its client confirmed since
    /// the last refresh (``ClusterConnectionState/trimDue``).
    private func refresh() async {
        let open = state.withLockedValue { state in
            state.locals.compactMap { id, local in
                local.connection.session.map { Touch(connection: id, peer: $0.peer, through: local.connection.trimDue) }
            }
        }
        guard !open.isEmpty else { return }
        let deadline = Self.epochMillis() + liveMillis
        // Each session with its hash key, named once: it picks the primary, and the call names it.
        var groups: [String: [(Touch, hash: String)]] = [:]
        var alone: [Touch] = []
        for touch in open {
            let hash = keys.sessionHash(touch.peer)
            if let shard = redis.shard(of: hash) {
                groups[shard, default: []].append((touch, hash))
            } else {
                alone.append(touch)
            }
        }
        var zadd: [any RESPEncodable] = ["ZADD", keys.deadlines]
        // Two calls in flight at most: the next is on the wire while one runs, and a client's request on
        // the same connection waits behind at most two of them (~1 ms of Redis each), not the whole refresh.
        var inFlight: [(ArraySlice<(Touch, hash: String)>, EventLoopFuture<RESPValue>)] = []
        func finishOldest() async {
            let (chunk, call) = inFlight.removeFirst()
            guard let reply = try? await call.get() else { return }
            if reply.string == "moved" {
                alone += chunk.map(\.0)
                return
            }
            let replies = reply.array ?? []
            for (index, (touch, _)) in chunk.enumerated() where index < replies.count {
                self.touched(touch, TouchReply(replies[index]), deadline: deadline, zadd: &zadd)
            }
        }
        for group in groups.values {
            var start = 0
            while start < group.count {
                let chunk = group[start..<min(group.count, start + 128)]
                start = chunk.endIndex
                var arguments: [any RESPEncodable] = [nodeName, deadline, ttlMillis, keys.sharded ? "1" : "0"]
                arguments.reserveCapacity(4 + chunk.count * 3)
                for (touch, hash) in chunk {
                    arguments.append(hash)
                    arguments.append(String(touch.connection.raw))
                    arguments.append(Int(clamping: touch.through))
                }
                let call = redis.submit(
                    ClusterScripts.touchBatch,
                    keys: [chunk[chunk.startIndex].hash],
                    arguments: arguments,
                    timeout: maintenanceTimeout
                )
                inFlight.append((chunk, call))
                if inFlight.count >= 2 { await finishOldest() }
            }
        }
        while !inFlight.isEmpty { await finishOldest() }
        // No slot map yet, or a slot moved: one touch per session, each routed (and redirected) alone.
        let calls = alone.map { touch in
            redis.submit(
                ClusterScripts.touch,
                keys: keys.session(touch.peer),
                arguments: [nodeName, String(touch.connection.raw), deadline, ttlMillis, Int(clamping: touch.through)],
                timeout: maintenanceTimeout
            )
        }
        for (touch, call) in zip(alone, calls) {
            guard let reply = try? await call.get() else { continue }
            self.touched(touch, TouchReply(reply), deadline: deadline, zadd: &zadd)
        }
        if zadd.count > 2 { _ = try? await redis.send(zadd, timeout: maintenanceTimeout) }
    }

    /// One session a refresh touches: its connection, its peer id, and what its buffer is to be trimmed
    /// through (0: nothing new).
    private struct Touch {
        var connection: ConnectionID
        var peer: String
        var through: UInt64
    }

    /// What a touch found: refreshed (its deadline joins the refresh's `ZADD`; the buffer was trimmed
    /// through what the client had confirmed), or the session moved or ended without this node hearing of
    /// it (its connection is closed).
    private func touched(
        _ touch: Touch,
        _ reply: TouchReply?,
        deadline: Int,
        zadd: inout [any RESPEncodable]
    ) {
        let (connection, peer) = (touch.connection, touch.peer)
        switch reply {
        case .refreshed:
            zadd.append(deadline)
            zadd.append(peer)
            if touch.through > 0 {
                state.withLockedValue { $0.locals[connection]?.connection.trimmed(through: touch.through) }
            }
        case .movedElsewhere:
            self.closeConnection(connection, .idTaken, reason: "session resumed elsewhere")
        case .gone, nil:
            self.closeConnection(connection, .sessionNotResumable, reason: "session ended")
        }
    }

    /// Tells the other nodes this node is alive (`prefix:nodes`), at every maintenance tick: one command.
    private func sayAlive() async {
        _ = try? await redis.send(["ZADD", keys.nodes, Self.epochMillis(), nodeName], timeout: maintenanceTimeout)
    }

    /// Ends sessions whose deadline passed (their client did not resume in time, or their node died). A
    /// session still connected to a node that said it is alive within a live period is kept for up to one
    /// more live period (`protected`): its node is busy or its refresh was lost (Redis seconds behind), not
    /// dead; only a node that stopped saying so, or a session no refresh reaches for that long, ends.
    private func sweep() async {
        let now = Self.epochMillis()
        guard let due = try? await redis.send(["ZRANGEBYSCORE", keys.deadlines, "-inf", now, "LIMIT", 0, 200]).array,
            !due.isEmpty
        else { return }
        _ = try? await redis.send(["ZREMRANGEBYSCORE", keys.nodes, "-inf", now - ttlMillis])
        let live = (try? await redis.send(["ZRANGEBYSCORE", keys.nodes, now - liveMillis, "+inf"]).array) ?? []
        let liveNodes = " " + live.compactMap(\.string).joined(separator: " ") + " "
        for peer in due.compactMap(\.string) {
            do throws(RedisError) {
                let reply = try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(peer),
                    arguments: ["expire", "", "", now, keys.channelPrefix, liveNodes, now - liveMillis]
                )
                guard let end = EndReply(reply), end != .alive else { continue }
                if end == .protected {
                    // Looked at again after a refresh interval, not at every sweep.
                    let again = now + Int(Self.nanoseconds(configuration.refreshInterval) / 1_000_000)
                    _ = try await redis.send(["ZADD", keys.deadlines, "XX", again, peer])
                    continue
                }
                _ = try await redis.run(ClusterScripts.forgetDeadline, keys: [keys.deadlines], arguments: [peer, now])
                if case .ended(let ended) = end {
                    logger.debug("session expired", metadata: ["peer.id": "\(peer)"])
                    await self.cleanUp(peer: peer, ended)
                    self.emit(.sessionEnded(peer: peer, reason: .expired))
                }
            } catch {
                return
            }
        }
    }
}
