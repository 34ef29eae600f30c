import NIOCore
import RedisTestSupport
import Testing

@testable import Signaling

/// The scripts' Redis Cluster side against a real redis-server (Redis 7 has sharded pub/sub on one server
/// too): `SPUBLISH` to the node's channel for the peer, in the slot of the peer's keys (a delivery, a
/// resume's 4009, a kick's 4003); and `since` never
/// letting a later message reuse a `seq` the connection already has.
@Suite(.serialized, .timeLimit(.minutes(1))) struct ClusterScriptsShardedTests {
    let keys = ClusterKeys.shardedForTests

    func deliver(_ redis: RedisConnection, to peer: String, id: String) async throws -> String? {
        let prefix = ByteBuffer(string: "{\"type\":\"message\",\"data\":\"\(id)\",\"from\":\"alice\",\"seq\":")
        let reply = try await redis.run(
            ClusterScripts.deliver,
            keys: keys.session(peer),
            arguments: [prefix, "alice", id, "message", "", "-", 16, 1 << 20, "1", keys.channelPrefix]
        )
        // The one-string reply (`delivered <node>`): its status.
        return reply.string?.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    @Test func scriptsPublishToThePeersShardedChannelAndSinceNeverReusesASeq() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let channel = keys.channel(of: "n#1", peer: "bob")
        #expect(channel == "t:node:n#1:{bob}")
        #expect(RedisClusterSlots.slot(of: channel) == RedisClusterSlots.slot(of: keys.session("bob")[0]))
        let subscriber = try server.subscriber()
        try await subscriber.ssubscribe([channel])
        var events = subscriber.events.makeAsyncIterator()

        let created = try await redis.run(
            ClusterScripts.create,
            keys: keys.session("bob"),
            arguments: ["bob.t1", "n#1", "1", 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
        )
        #expect(created.array?.first?.string == "created")
        #expect(try await deliver(redis, to: "bob", id: "r1") == "delivered")
        guard case .message(let first) = await events.next() else {
            Issue.record("nothing published on the sharded channel")
            return
        }
        #expect(first.channel == channel)
        #expect(first.text == "D 1 1 {\"type\":\"message\",\"data\":\"r1\",\"from\":\"alice\",\"seq\":1}")

        // The connection has seen seq 5 although Redis is at 1 (writes lost in a failover): `since` raises it.
        let since = try await redis.run(ClusterScripts.since, keys: keys.session("bob"), arguments: ["n#1", "1", 5])
        #expect(SinceReply(since) == .missed([]))
        #expect(try await deliver(redis, to: "bob", id: "r2") == "delivered")
        guard case .message(let second) = await events.next() else { return }
        #expect(second.text.hasPrefix("D 1 6 "))

        // Resumed elsewhere: the old connection's node is told on its channel for the peer.
        let resumed = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session("bob"),
            arguments: ["bob.t1", "bob.t2", "n#2", "9", 6, 9_999_999_999_999, 600_000, keys.channelPrefix]
        )
        #expect(resumed.array?.first?.string == "resumed")
        guard case .message(let close) = await events.next() else { return }
        #expect(close.text == "K 1 4009")

        // A client resuming with more than Redis remembers (last 20, seq 6): a gap, and numbering goes on
        // from 20, so its next message is not taken for one it already has.
        let ahead = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session("bob"),
            arguments: ["bob.t2", "bob.t3", "n#1", "1", 20, 9_999_999_999_999, 600_000, keys.channelPrefix]
        )
        guard case .resumed(let session) = ResumeReply(ahead) else {
            Issue.record("not resumed: \(ahead)")
            return
        }
        #expect(session.gap && session.seq == 20)
        #expect(try await deliver(redis, to: "bob", id: "r3") == "delivered")
        guard case .message(let third) = await events.next() else { return }
        #expect(third.text.hasPrefix("D 1 21 "))

        // Kicked by the server API: the node holding the connection is told on its channel for the peer.
        let kicked = try await redis.run(
            ClusterScripts.kick,
            keys: keys.session("bob"),
            arguments: [keys.channelPrefix]
        )
        guard case .ended = EndReply(kicked) else {
            Issue.record("not ended: \(kicked)")
            return
        }
        guard case .message(let kick) = await events.next() else { return }
        #expect(kick.channel == channel && kick.text == "K 1 4003")
        let again = try await redis.run(ClusterScripts.kick, keys: keys.session("bob"), arguments: [keys.channelPrefix])
        #expect(EndReply(again) == .gone)
        await subscriber.close()
        await redis.close()
    }

    /// ``ClusterScripts/deliverShardBatch``: a recipient's deliveries are decided together and reach its
    /// channel in one `N` message, in `seq` order; a recipient nobody listens for is queued, one by one.
    @Test func aShardBatchSendsARecipientsDeliveriesInOneMessage() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let channel = keys.channel(of: "n#1", peer: "bob")
        let subscriber = try server.subscriber()
        try await subscriber.ssubscribe([channel])
        var events = subscriber.events.makeAsyncIterator()
        for (peer, conn) in [("bob", "1"), ("carol", "2")] {
            let created = try await redis.run(
                ClusterScripts.create,
                keys: keys.session(peer),
                arguments: ["\(peer).t1", "n#1", conn, 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
            )
            #expect(created.array?.first?.string == "created")
        }
        func message(_ id: String) -> String { "{\"type\":\"message\",\"data\":\"\(id)\",\"from\":\"alice\",\"seq\":" }
        /// deliverShardBatch for `plan` (recipient, id; data `id` + `padding`), laid out as a node lays it out.
        func shardBatch(_ plan: [(String, String)], padding: String = "") async throws -> (DeliveryBatch, RESPValue) {
            var common = RESPArguments()
            common.append(16)
            common.append(1 << 20)
            common.append(keys.channelPrefix)
            let layout = DeliveryBatch(
                recipients: plan.map(\.0),
                deliveries: plan.map {
                    DeliveryRequest(
                        prefix: ByteBuffer(string: message($0.1 + padding)),
                        sender: "alice",
                        id: $0.1,
                        type: .message,
                        signal: true
                    )
                },
                keys: keys,
                common: common
            )
            let reply = try await redis.run(
                ClusterScripts.deliverShardBatch,
                keys: [layout.key],
                arguments: [layout.arguments]
            )
            return (layout, reply)
        }
        let plan = [("bob", "b1"), ("carol", "c1"), ("bob", "b2"), ("carol", "c2"), ("bob", "b3")]
        let (layout, reply) = try await shardBatch(plan)
        // In the layout's order: bob's three, then carol's two.
        #expect(layout.order == [0, 2, 4, 1, 3])
        #expect(
            reply.array?.compactMap { DeliverReply($0)?.result } == [
                .delivered, .delivered, .delivered, .queued, .queued,
            ]
        )
        guard case .message(let published) = await events.next() else {
            Issue.record("nothing published")
            return
        }
        let expected = ["b1", "b2", "b3"].enumerated().map { index, id in
            let text = message(id) + "\(index + 1)}"
            return " 1 \(index + 1) \(text.utf8.count) \(text)"
        }
        #expect(published.channel == channel && published.text == "N" + expected.joined())
        #expect(try await redis.send(["LLEN", keys.session("carol")[1]]).int == 2)

        // A burst beyond ~6 KB goes in several messages, in order.
        let padding = String(repeating: "x", count: 1000)
        let (_, burstReply) = try await shardBatch((4...13).map { ("bob", "b\($0)") }, padding: padding)
        #expect(burstReply.array?.compactMap { DeliverReply($0)?.result } == Array(repeating: .delivered, count: 10))
        var seqs: [UInt64] = []
        var messages = 0
        while seqs.count < 10, case .message(let next) = await events.next() {
            messages += 1
            guard case .deliverMany(let deliveries) = NodeMessage(ByteBuffer(string: next.text)) else {
                Issue.record("not an N message")
                break
            }
            seqs += deliveries.map(\.seq)
        }
        #expect(messages >= 2 && seqs == Array(4...13))
        await subscriber.close()
        await redis.close()
    }
}

extension ClusterKeys {
    /// The keys of the Redis Cluster tests: prefix `t`, sharded node channels.
    static var shardedForTests: ClusterKeys {
        var keys = ClusterKeys(prefix: "t")
        keys.sharded = true
        return keys
    }

}
