import NIOConcurrencyHelpers
import NIOCore
import RedisTestSupport
import Testing

@testable import SignalRedis

/// `RedisClusterClient` and `RedisShardedSubscriber` against a real Redis Cluster on loopback (three primaries,
/// three replicas).
@Suite(.serialized, .timeLimit(.minutes(2))) struct RedisClusterIntegrationTests {
    static let incr = RedisScript("return redis.call('INCR', KEYS[1])")

    @Test func routesBySlotAndWaitsForAReplica() async throws {
        let cluster = try await RedisTestCluster()
        let client = try cluster.client()
        client.start()
        #expect(try await eventually { client.isConnected })
        let map = try #require(client.slotMap)
        #expect(map.coversEverySlot && map.primaries.count == 3)
        #expect(map.primaries.count == 3)
        #expect(try await eventually { client.slotMap?.shards.allSatisfy { $0.onlineReplicas == 1 } == true })

        // Keys in every shard, by command and by script.
        for index in 0..<60 {
            try await client.send(["SET", "key:\(index)", "v\(index)"])
            #expect(try await client.run(Self.incr, keys: ["counter:{\(index)}"], arguments: []).int == 1)
        }
        for index in 0..<60 {
            #expect(try await client.send(["GET", "key:\(index)"]).string == "v\(index)")
        }
        // Each one landed on its slot's primary, and a replica has it (WAIT).
        let slot = RedisClusterSlots.slot(of: "key:7")
        let primary = try await cluster.primary(ofSlot: slot)
        #expect(try await primary.connection().send(["GET", "key:7"]).string == "v7")
        // Pipelined scripts keep their order on one slot.
        let futures = (0..<50).map { _ in client.submit(Self.incr, keys: ["ordered"], arguments: []) }
        var values: [Int] = []
        for future in futures { values.append(try await future.get().int ?? -1) }
        #expect(values == Array(1...50))
        await client.close()
    }

    /// One primary with every slot, that has met no other node, reports its own address as empty: the
    /// client takes it to be the seed's, as it takes an empty host in a redirect.
    @Test func aClusterOfOnePrimaryIsUsable() async throws {
        let cluster = try await RedisTestCluster(primaries: 1, replicas: 0)
        let client = try cluster.client()
        client.start()
        #expect(try await eventually { client.isConnected })
        let map = try #require(client.slotMap)
        #expect(map.coversEverySlot && map.primaries.map(\.port) == [cluster.servers[0].port])
        for index in 0..<20 {
            #expect(try await client.run(Self.incr, keys: ["counter:{\(index)}"], arguments: []).int == 1)
        }
        await client.close()
    }

    /// A slot migrated by hand: `ASK` while it is being migrated, `MOVED` once it is done.
    @Test func followsAskAndMoved() async throws {
        let cluster = try await RedisTestCluster()
        let client = try cluster.client { $0.refreshInterval = .seconds(60) }  // only redirects teach it
        client.start()
        #expect(try await eventually { client.isConnected })
        let key = "migrating:{m}"
        let slot = RedisClusterSlots.slot(of: key)
        let source = try await cluster.primary(ofSlot: slot)
        let targetPort = try #require(client.slotMap?.primaries.first { $0.port != source.port }?.port)
        let target = try #require(cluster.servers.first { $0.port == targetPort })
        let sourceID = try await cluster.nodeID(of: source)
        let targetID = try await cluster.nodeID(of: target)
        try await client.send(["SET", key, "before"])

        try await RedisTestCluster.redisCLI([
            "-p", "\(target.port)", "CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID,
        ])
        try await RedisTestCluster.redisCLI([
            "-p", "\(source.port)", "CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID,
        ])
        // A key the source no longer has: ASK, and the write lands on the target.
        let fresh = "fresh:{m}"
        try await client.send(["SET", fresh, "asked"])
        let onTarget = try await target.connection().pipeline([["ASKING"], ["GET", fresh]])
        #expect(try onTarget[1].get().string == "asked")
        #expect(try await client.send(["GET", fresh]).string == "asked")
        #expect(client.slotMap?.primary(forSlot: slot)?.port == source.port, "ASK does not change the map")

        // Finish the migration: the old key moves, the slot is the target's, the client learns it by MOVED.
        try await RedisTestCluster.redisCLI([
            "-p", "\(source.port)", "MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS", key,
        ])
        for server in cluster.servers {
            try await RedisTestCluster.redisCLI([
                "-p", "\(server.port)", "CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID,
            ])
        }
        #expect(try await client.send(["GET", key]).string == "before")
        #expect(client.slotMap?.primary(forSlot: slot)?.port == target.port, "MOVED updated the map")
        #expect(try await client.run(Self.incr, keys: ["n:{m}"], arguments: []).int == 1)
        await client.close()
    }

    /// Writes go on through `CLUSTER FAILOVER` and through a primary killed with SIGKILL; every write that
    /// was answered is there afterwards. The promoted replica is given the client's scripts when the client
    /// connects to it, so none of them is answered `NOSCRIPT`.
    @Test(arguments: ["manual", "kill"])
    func survivesFailover(_ kind: String) async throws {
        let cluster = try await RedisTestCluster()
        let client = try cluster.client { $0.seeds[0].scripts = [Self.incr] }
        client.start()
        #expect(try await eventually { client.isConnected })
        let key = "count:{f}"
        let slot = RedisClusterSlots.slot(of: key)
        let primary = try await cluster.primary(ofSlot: slot)
        let primaryID = try await cluster.nodeID(of: primary)
        var replica: RedisTestServer?
        for server in cluster.servers where server.port != primary.port {
            let role = try await RedisTestCluster.redisCLI(["-p", "\(server.port)", "CLUSTER", "NODES"])
            let me = role.split(separator: "\n").first { $0.contains("myself") } ?? ""
            if me.contains(primaryID) { replica = server }
        }
        let promoted = try #require(replica)

        var answered = 0
        var failed = 0
        let clock = ContinuousClock()
        let start = clock.now
        var switched = false
        while clock.now - start < .seconds(8) {
            if !switched && clock.now - start > .seconds(1) {
                switched = true
                if kind == "manual" {
                    try await RedisTestCluster.redisCLI(["-p", "\(promoted.port)", "CLUSTER", "FAILOVER"])
                } else {
                    await primary.kill()
                }
            }
            do {
                _ = try await client.run(Self.incr, keys: [key], arguments: [])
                answered += 1
            } catch {
                failed += 1
            }
        }
        print("\(kind): \(answered) answered, \(failed) failed")
        #expect(client.slotMap?.primary(forSlot: slot)?.port == promoted.port)
        let value = try await promoted.connection().send(["GET", key]).int ?? 0
        let errors = try await promoted.connection().send(["INFO", "errorstats"]).string ?? ""
        #expect(!errors.contains("NOSCRIPT"), "\(errors)")
        // Every answered write survived; a failed one may or may not have run.
        #expect(value >= answered && value <= answered + failed)
        #expect(answered > 100)
        if kind == "manual" { #expect(failed == 0, "a manual failover loses nothing and refuses nothing") }
        await client.close()
    }

    /// `SCAN` reaches every primary, each key once; after a primary is killed, the scan goes to the
    /// replica promoted in its place.
    @Test func scansEveryPrimaryAndFollowsAFailover() async throws {
        let cluster = try await RedisTestCluster()
        let client = try cluster.client()
        client.start()
        #expect(try await eventually { client.isConnected })
        let keys = (0..<90).map { "scan:{\($0)}" }
        for key in keys { try await client.send(["SET", key, "1"]) }
        try await client.send(["SET", "other:{1}", "1"])
        let map = try #require(client.slotMap)
        #expect(Set(keys.compactMap { map.primary(forSlot: RedisClusterSlots.slot(of: $0)) }).count == 3)
        let found = try await client.scan(matching: "scan:*", count: 7, limit: .max, timeout: nil)
        #expect(found.count == keys.count && Set(found) == Set(keys))
        #expect(try await client.scan(matching: "scan:*", limit: 20).count == 20)

        let victim = try await cluster.primary(ofSlot: RedisClusterSlots.slot(of: keys[0]))
        await victim.kill()
        #expect(
            try await eventually(timeout: .seconds(20)) {
                client.slotMap?.primary(forSlot: RedisClusterSlots.slot(of: keys[0]))?.port != victim.port
            }
        )
        let after = try await client.scan(matching: "scan:*", count: 7, limit: .max, timeout: .seconds(10))
        #expect(Set(after) == Set(keys), "every acknowledged write is on the promoted replica")
        await client.close()
    }

    @Test func shardedSubscriptionsFollowTheirSlot() async throws {
        let cluster = try await RedisTestCluster()
        let client = try cluster.client()
        client.start()
        let subscriber = RedisShardedSubscriber(
            client: client,
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
        subscriber.start()
        #expect(try await eventually { client.isConnected })
        let received = NIOLockedValueBox<[String]>([])
        let reconnected = NIOLockedValueBox(0)
        let pump = Task {
            for await event in subscriber.events {
                switch event {
                case .message(let message): received.withLockedValue { $0.append(message.text) }
                case .reconnected: reconnected.withLockedValue { $0 += 1 }
                case .unsubscribedByServer: Issue.record("the sharded subscriber passes its own events on")
                default: break
                }
            }
        }
        let channels = (0..<6).map { "node:a:{peer\($0)}" }
        try await subscriber.ssubscribe(channels)
        #expect(subscriber.isConnected)
        for channel in channels {
            #expect(try await client.send(["SPUBLISH", channel, "1 \(channel)"]).int == 1)
        }
        #expect(try await eventually { received.withLockedValue { $0.count } == 6 })

        // Fail over the shard of the first channel: its subscription moves to the new primary.
        let slot = RedisClusterSlots.slot(of: channels[0])
        let primary = try await cluster.primary(ofSlot: slot)
        let primaryID = try await cluster.nodeID(of: primary)
        for server in cluster.servers where server.port != primary.port {
            let nodes = try await RedisTestCluster.redisCLI(["-p", "\(server.port)", "CLUSTER", "NODES"])
            if (nodes.split(separator: "\n").first { $0.contains("myself") } ?? "").contains(primaryID) {
                try await RedisTestCluster.redisCLI(["-p", "\(server.port)", "CLUSTER", "FAILOVER"])
            }
        }
        #expect(try await eventually { reconnected.withLockedValue { $0 } > 0 && subscriber.isConnected })
        #expect(try await eventually { try await client.send(["SPUBLISH", channels[0], "2"]).int == 1 })
        #expect(try await eventually { received.withLockedValue { $0.contains("2") } })

        // Move the slot of another channel to another primary by hand: the server drops the subscription
        // (a pushed sunsubscribe) and the subscriber subscribes it where the slot lives now.
        let movedSlot = RedisClusterSlots.slot(of: channels[2])
        let owner = try await cluster.primary(ofSlot: movedSlot)
        // Another current primary, asked of the cluster (the client's map may still name the primary the
        // failover above demoted, and a slot handed to a replica has no owner).
        var targetPort: Int?
        for channel in channels {
            let primary = try await cluster.primary(ofSlot: RedisClusterSlots.slot(of: channel))
            if primary.port != owner.port {
                targetPort = primary.port
                break
            }
        }
        let target = try #require(cluster.servers.first { $0.port == targetPort })
        let targetID = try await cluster.nodeID(of: target)
        let before = reconnected.withLockedValue { $0 }
        for server in cluster.servers where server.isRunning {
            try await RedisTestCluster.redisCLI([
                "-p", "\(server.port)", "CLUSTER", "SETSLOT", "\(movedSlot)", "NODE", targetID,
            ])
        }
        #expect(try await eventually { reconnected.withLockedValue { $0 } > before && subscriber.isConnected })
        #expect(try await eventually { try await client.send(["SPUBLISH", channels[2], "3"]).int == 1 })
        #expect(try await eventually { received.withLockedValue { $0.contains("3") } })

        await subscriber.sunsubscribe([channels[1]])
        #expect(try await client.send(["SPUBLISH", channels[1], "gone"]).int == 0)
        await subscriber.close()
        await client.close()
        await pump.value
    }
}
