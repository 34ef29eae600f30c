import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// The node's pub/sub channel: what other nodes' scripts publish for this node's connections.
extension ClusterHub {
    /// Subscribes to this node's channel, retrying until it succeeds: the subscription then survives
    /// reconnects by itself.
    func subscribe() async {
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
            case .reconnected:
                clusterMetrics.redisReconnects.increment()
                await self.catchUp()
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
                reason: code == .idTaken ? "session resumed elsewhere" : "session ended"
            )
        }
    }

    /// After the subscription was lost: every connection gets what was published meanwhile.
    private func catchUp() async {
        let open = state.withLockedValue { state in
            state.locals.compactMap { id, local in
                local.connection.session.map { (id, $0.peer, local.connection.lastWritten) }
            }
        }
        for (connection, peer, after) in open {
            do throws(RedisError) {
                let reply = try await redis.run(
                    ClusterScripts.since,
                    keys: keys.session(peer),
                    arguments: [nodeName, String(connection.raw), String(after)]
                )
                guard case .missed(let missed) = SinceReply(reply) else {
                    self.closeConnection(connection, .sessionNotResumable, reason: "session ended")
                    continue
                }
                for entry in missed {
                    self.write(entry.bytes, seq: entry.seq, to: connection)
                }
            } catch {
                logger.warning("catch-up failed", metadata: ["peer.id": "\(peer)", "error": "\(error)"])
            }
        }
    }
}
