import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// The node's pub/sub channel: what other nodes' scripts publish for this node's connections.
extension ClusterHub {
    /// Subscribes to this node's channel, retrying until it succeeds: the subscription then survives
    /// reconnects by itself. (In a Redis Cluster the node listens per peer instead: ``listen(on:to:)``.)
    func subscribe() async {
        guard case .single(let subscriber) = subscriber else { return }
        while !Task.isCancelled {
            do throws(RedisError) {
                try await subscriber.subscribe([keys.channel(of: nodeName)])
                return
            } catch {
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    func consumeChannel() async {
        for await event in subscriber.events {
            switch event {
            case .message(let message):
                self.handleChannel(message.payload)
            case .disconnected:
                logger.warning("Redis subscription lost; catching up after it is back")
                self.holdForCatchUp()
            case .reconnected:
                clusterMetrics.redisReconnects.increment()
                await self.catchUp()
            case .unsubscribedByServer:
                break  // the sharded subscriber subscribes it where its slot lives now, then says `.reconnected`
            }
        }
    }

    /// `D conn seq message` (a sequenced message for a connection), `N …` (several) or `K conn code`
    /// (close it).
    func handleChannel(_ payload: ByteBuffer) {
        guard let parsed = NodeMessage(payload) else {
            logger.warning("unreadable message on the node channel")
            return
        }
        switch parsed {
        case .deliver(let delivery):
            self.write(delivery.bytes, seq: delivery.seq, to: delivery.connection)
        case .deliverMany(let deliveries):
            for delivery in deliveries { self.write(delivery.bytes, seq: delivery.seq, to: delivery.connection) }
        case .close(let connection, let code):
            self.closeConnection(
                connection,
                code,
                reason: code == .idTaken ? "session resumed elsewhere" : code == .kicked ? "kicked" : "session ended"
            )
        }
    }

    /// Redis Cluster: before `connection`'s create or resume script runs for `peer`, the node subscribes to
    /// its channel for that peer (on the primary of the peer's slot), so that whatever the script and
    /// later ones publish for the connection reaches the node, held until the open is complete. A no-op
    /// on one Redis, where the node's one channel is always subscribed.
    func listen(on connection: ConnectionID, to peer: String) async throws(RedisError) {
        guard case .sharded(let subscriber) = subscriber else { return }
        let (subscribe, unsubscribe) = state.withLockedValue { state -> (Bool, String?) in
            let previous = state.listening[connection]
            guard previous != peer else { return (false, nil) }
            state.listening[connection] = peer
            state.listeners[peer, default: 0] += 1
            return (state.listeners[peer] == 1, previous.flatMap { Self.release($0, in: &state) })
        }
        if let unsubscribe { await subscriber.sunsubscribe([keys.channel(of: nodeName, peer: unsubscribe)]) }
        if subscribe { try await subscriber.ssubscribe([keys.channel(of: nodeName, peer: peer)]) }
    }

    /// Redis Cluster: the connection is gone; the node stops listening for its peer unless another of its
    /// connections still holds that peer.
    func stopListening(on connection: ConnectionID) async {
        guard case .sharded(let subscriber) = subscriber else { return }
        let unsubscribe = state.withLockedValue { state -> String? in
            guard let peer = state.listening.removeValue(forKey: connection) else { return nil }
            return Self.release(peer, in: &state)
        }
        if let unsubscribe { await subscriber.sunsubscribe([keys.channel(of: nodeName, peer: unsubscribe)]) }
    }

    /// One listener fewer for `peer`; returns the peer when none is left.
    private static func release(_ peer: String, in state: inout State) -> String? {
        let left = (state.listeners[peer] ?? 1) - 1
        state.listeners[peer] = left > 0 ? left : nil
        return left > 0 ? nil : peer
    }

    /// The subscription was lost, or is moving to other Redis nodes: until the catch-up, every connection
    /// holds its live messages (``ClusterConnectionState/beginCatchUp()``), so that none is written before
    /// an older one the catch-up reads from Redis.
    private func holdForCatchUp() {
        state.withLockedValue { state in
            for local in state.locals.values { local.connection.beginCatchUp() }
        }
    }

    /// After the subscription was lost: every connection gets what was published meanwhile, merged in
    /// `seq` order with what arrived live since. The `since` scripts are pipelined, 512 at a time.
    private func catchUp() async {
        let open = state.withLockedValue { state in
            state.locals.compactMap { id, local in
                local.connection.session.map { (id, $0.peer, local.connection.lastWritten) }
            }
        }
        var start = 0
        while start < open.count {
            let batch = open[start..<min(open.count, start + 512)]
            start = batch.endIndex
            let replies = batch.map { connection, peer, after in
                redis.submit(
                    ClusterScripts.since,
                    keys: keys.session(peer),
                    arguments: [nodeName, String(connection.raw), String(after)]
                )
            }
            for ((connection, peer, _), reply) in zip(batch, replies) {
                var missed: [BufferedMessage] = []
                do {
                    guard case .missed(let entries) = SinceReply(try await reply.get()) else {
                        self.closeConnection(connection, .sessionNotResumable, reason: "session ended")
                        continue
                    }
                    missed = entries
                } catch {
                    logger.warning("catch-up failed", metadata: ["peer.id": "\(peer)", "error": "\(error)"])
                }
                self.caughtUp(connection, missed: missed)
            }
        }
    }
}
