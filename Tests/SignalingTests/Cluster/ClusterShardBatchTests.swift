import NIOCore
import NIOPosix
import RedisTestSupport
import SignalRedis
import Testing

@testable import Signaling

/// ``ClusterScripts/deliverShardBatch`` and ``DeliveryBatcher`` on a real Redis Cluster (three primaries):
/// deliveries to recipients in many slots go one call per primary and are each decided as ``deliver``
/// decides them; a batch naming a recipient another primary serves does nothing and answers `moved`.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterShardBatchTests {
    let keys = ClusterKeys.shardedForTests

    func item(_ id: String) -> [any RESPEncodable] {
        let prefix = ByteBuffer(string: "{\"type\":\"message\",\"data\":\"\(id)\",\"from\":\"alice\",\"seq\":")
        return ["s", prefix, "message", "alice|\(id)"]
    }

    @Test func deliveriesGatherPerPrimaryAndAMovedRecipientStopsTheWholeCall() async throws {
        let cluster = try await RedisTestCluster(primaries: 3, replicas: 0)
        let client = try cluster.client()
        client.start()
        #expect(try await eventually { client.isConnected })
        let peers = (0..<40).map { "p\($0)" }
        for (index, peer) in peers.enumerated() {
            let created = try await client.run(
                ClusterScripts.create,
                keys: keys.session(peer),
                arguments: ["\(peer).t", "n#1", "\(index)", 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
            )
            #expect(created.array?.first?.string == "created")
        }
        let shards = Dictionary(grouping: peers) { client.shard(of: keys.session($0)[0]) ?? "?" }
        #expect(shards.count == 3)

        // Through the batcher: every delivery answered, each recipient's buffer holds its message.
        let batcher = DeliveryBatcher(
            redis: client,
            eventLoop: RedisTestServer.group.next(),
            keys: keys,
            maxMessages: 16,
            maxBytes: 1 << 20,
            sharded: true
        )
        var futures: [EventLoopFuture<RESPValue>] = []
        for peer in peers {
            let promise = RedisTestServer.group.next().makePromise(of: RESPValue.self)
            batcher.submit(
                DeliveryRequest(
                    prefix: ByteBuffer(
                        string: "{\"type\":\"message\",\"data\":\"to-\(peer)\",\"from\":\"alice\",\"seq\":"
                    ),
                    sender: "alice",
                    id: "to-\(peer)",
                    type: .message,
                    signal: true
                ),
                to: peer,
                completion: promise.completeWith
            )
            futures.append(promise.futureResult)
        }
        for future in futures {
            // Nobody listens on the peers' channels: queued, in their buffers.
            #expect(DeliverReply(try await future.get())?.result == .queued)
        }
        for peer in peers {
            #expect(try await client.send(["LLEN", keys.session(peer)[1]]).int == 1)
        }

        // One call for two recipients of one primary in different slots, then one naming a recipient of
        // another primary: the second does nothing.
        let (here, elsewhere) = try #require(
            shards.values.first { $0.count >= 2 }.flatMap { local in
                peers.first { !local.contains($0) }.map { (local, $0) }
            }
        )
        #expect(
            RedisClusterSlots.slot(of: keys.session(here[0])[0]) != RedisClusterSlots.slot(of: keys.session(here[1])[0])
        )
        let both = try await client.run(
            ClusterScripts.deliverShardBatch,
            keys: [keys.session(here[0])[0]],
            arguments: [16, 1 << 20, keys.channelPrefix, keys.sessionHash(here[0]), 1] + item("a")
                + [keys.sessionHash(here[1]), 1] + item("b")
        )
        #expect(both.array?.compactMap { DeliverReply($0)?.result } == [.queued, .queued])
        let moved = try await client.run(
            ClusterScripts.deliverShardBatch,
            keys: [keys.session(here[0])[0]],
            arguments: [16, 1 << 20, keys.channelPrefix, keys.sessionHash(here[0]), 1] + item("c")
                + [keys.sessionHash(elsewhere), 1] + item("d")
        )
        #expect(moved.string == "moved")
        // A refresh's batch touch checks the same way.
        let touched = try await client.run(
            ClusterScripts.touchBatch,
            keys: [keys.session(here[0])[0]],
            arguments: ["n#1", 1, 600_000, "1", keys.session(here[0])[0], "x", 0, keys.session(here[1])[0], "x", 0]
        )
        #expect(touched.array?.map { TouchReply($0) } == [.movedElsewhere, .movedElsewhere])
        let touchedElsewhere = try await client.run(
            ClusterScripts.touchBatch,
            keys: [keys.session(here[0])[0]],
            arguments: ["n#1", 1, 600_000, "1", keys.session(here[0])[0], "x", 0, keys.session(elsewhere)[0], "x", 0]
        )
        #expect(touchedElsewhere.string == "moved")
        #expect(try await client.send(["LLEN", keys.session(here[0])[1]]).int == 2)
        #expect(try await client.send(["LLEN", keys.session(elsewhere)[1]]).int == 1)
        await client.close()
    }
}
