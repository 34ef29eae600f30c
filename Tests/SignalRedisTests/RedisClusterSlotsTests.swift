import NIOCore
import Testing

@testable import SignalRedis

/// The pure parts of Redis Cluster support: key slots, slot maps, redirects. No sockets.
@Suite struct RedisClusterSlotsTests {
    @Test func crc16IsXmodem() {
        #expect(RedisClusterSlots.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(RedisClusterSlots.crc16([UInt8]()) == 0)
    }

    /// Expected slots from `redis-cli CLUSTER KEYSLOT` on Redis 7.0.
    @Test(arguments: [
        ("foo", 12182), ("bar", 5061), ("somekey", 11058), ("foo{hash_tag}", 2515), ("foo{}{bar}", 8363),
        ("foo{{bar}}zap", 4015), ("foo{bar}{zap}", 5061), ("sig:{alice}:s", 749), ("sig:node:a#x:{alice}", 749),
        ("{", 4092), ("}{a}", 15495),
    ])
    func slotsMatchRedis(_ key: String, _ slot: Int) {
        #expect(RedisClusterSlots.slot(of: key) == slot)
    }

    @Test func routingKeys() {
        #expect(RedisClusterSlots.routingKey(of: ["GET", "k"]) == "k")
        #expect(RedisClusterSlots.routingKey(of: ["zadd", "sig:deadlines", 5, "p"]) == "sig:deadlines")
        #expect(RedisClusterSlots.routingKey(of: ["EVALSHA", "abc", 2, "{p}:s", "{p}:b", "x"]) == "{p}:s")
        #expect(RedisClusterSlots.routingKey(of: ["EVAL", "return 1", 0, "x"]) == nil)
        #expect(RedisClusterSlots.routingKey(of: ["PING"]) == nil)
        #expect(RedisClusterSlots.routingKey(of: ["CLUSTER", "SHARDS"]) == nil)
        #expect(RedisClusterSlots.routingKey(of: ["WAIT", 1, 100]) == nil)
    }

    @Test func redirects() {
        #expect(
            RedisClusterRedirect("MOVED 3999 127.0.0.1:6381", defaultHost: "x")
                == .moved(slot: 3999, to: RedisClusterNode(host: "127.0.0.1", port: 6381))
        )
        #expect(
            RedisClusterRedirect("ASK 12 10.0.0.2:7002", defaultHost: "x")
                == .ask(slot: 12, to: RedisClusterNode(host: "10.0.0.2", port: 7002))
        )
        // A node that does not know its own address leaves the host out: it is the host that answered.
        #expect(
            RedisClusterRedirect("MOVED 1 :7000", defaultHost: "10.1.1.1")
                == .moved(slot: 1, to: RedisClusterNode(host: "10.1.1.1", port: 7000))
        )
        #expect(
            RedisClusterRedirect("MOVED 1 ::1:7000", defaultHost: "x")
                == .moved(slot: 1, to: RedisClusterNode(host: "::1", port: 7000))
        )
        for other in [
            "ERR wrong", "MOVED x 1.2.3.4:5", "MOVED 16384 a:1", "ASK 1 nowhere", "NOSCRIPT No matching script",
        ] {
            #expect(RedisClusterRedirect(other, defaultHost: "x") == nil, "\(other)")
        }
    }

    private func bulk(_ text: String) -> RESPValue { .bulkString(ByteBuffer(string: text)) }

    private func node(_ port: Int, role: String, health: String = "online") -> RESPValue {
        .array([
            bulk("id"), bulk("abc\(port)"), bulk("port"), .integer(port), bulk("ip"), bulk("127.0.0.1"),
            bulk("endpoint"), bulk("127.0.0.1"), bulk("role"), bulk(role), bulk("replication-offset"), .integer(0),
            bulk("health"), bulk(health),
        ])
    }

    @Test func decodesClusterShards() throws {
        let reply = RESPValue.array([
            .array([
                bulk("slots"), .array([.integer(0), .integer(5460)]), bulk("nodes"),
                .array([node(7000, role: "master"), node(7003, role: "replica")]),
            ]),
            .array([
                bulk("slots"), .array([.integer(5461), .integer(10922)]), bulk("nodes"),
                .array([node(7004, role: "replica", health: "failed"), node(7001, role: "master")]),
            ]),
            .array([
                bulk("slots"), .array([.integer(10923), .integer(16000), .integer(16001), .integer(16383)]),
                bulk("nodes"), .array([node(7002, role: "master")]),
            ]),
        ])
        let map = try #require(RedisClusterSlotMap(clusterShards: reply, defaultHost: "h"))
        #expect(map.coversEverySlot)
        #expect(map.primary(forSlot: 0)?.port == 7000)
        #expect(map.primary(forSlot: 5460)?.port == 7000)
        #expect(map.primary(forSlot: 5461)?.port == 7001)
        #expect(map.primary(forSlot: 16383)?.port == 7002)
        #expect(map.shard(forSlot: 0)?.onlineReplicas == 1)
        #expect(map.shard(forSlot: 6000)?.onlineReplicas == 0, "a failed replica does not count")
        #expect(map.shard(forSlot: 6000)?.replicas.map(\.port) == [7004])
        #expect(map.primaries.map(\.port).sorted() == [7000, 7001, 7002])
        #expect(RedisClusterSlotMap(clusterShards: .array([.integer(1)]), defaultHost: "h") == nil)
    }

    @Test func aNodeThatKnowsNoAddressOfItsOwnIsWhereTheReplyCameFrom() throws {
        // A lone primary (all slots, no other node met) reports `ip` and `endpoint` empty.
        let lone = RESPValue.array([
            bulk("id"), bulk("abc"), bulk("port"), .integer(7000), bulk("ip"), bulk(""), bulk("endpoint"), bulk(""),
            bulk("role"), bulk("master"), bulk("health"), bulk("online"),
        ])
        let reply = RESPValue.array([
            .array([bulk("slots"), .array([.integer(0), .integer(16383)]), bulk("nodes"), .array([lone])])
        ])
        let map = try #require(RedisClusterSlotMap(clusterShards: reply, defaultHost: "10.0.0.9"))
        #expect(map.coversEverySlot)
        #expect(map.primary(forSlot: 16383) == RedisClusterNode(host: "10.0.0.9", port: 7000))
    }

    @Test func decodesClusterSlots() throws {
        func entry(_ start: Int, _ end: Int, _ ports: [Int]) -> RESPValue {
            .array([.integer(start), .integer(end)] + ports.map { .array([bulk(""), .integer($0), bulk("id")]) })
        }
        let reply = RESPValue.array([entry(0, 8000, [7000, 7003]), entry(8001, 16383, [7001])])
        let map = try #require(RedisClusterSlotMap(clusterSlots: reply, defaultHost: "10.0.0.9"))
        #expect(map.coversEverySlot)
        #expect(map.primary(forSlot: 8000) == RedisClusterNode(host: "10.0.0.9", port: 7000))
        #expect(map.shard(forSlot: 1)?.onlineReplicas == 1)
        #expect(map.primary(forSlot: 8001)?.port == 7001)
    }

    @Test func movesOneSlot() {
        let a = RedisClusterNode(host: "h", port: 1)
        let b = RedisClusterNode(host: "h", port: 2)
        var map = RedisClusterSlotMap([(0...9000, .init(primary: a)), (9001...16383, .init(primary: b))])
        map.move(slot: 5, to: b)
        #expect(map.primary(forSlot: 5) == b && map.primary(forSlot: 4) == a)
        let c = RedisClusterNode(host: "h", port: 3)
        map.move(slot: 6, to: c)
        #expect(map.primary(forSlot: 6) == c && map.primaries.count == 3)
        let partial = RedisClusterSlotMap([(0...100, .init(primary: a))])
        #expect(!partial.coversEverySlot && partial.primary(forSlot: 101) == nil)
    }

    /// One slot per shard that serves any, so a keyless command (`SCAN`) sent to each slot's primary
    /// reaches every primary once.
    @Test func firstSlotsNameEachShardOnce() {
        let a = RedisClusterNode(host: "h", port: 1)
        let b = RedisClusterNode(host: "h", port: 2)
        let c = RedisClusterNode(host: "h", port: 3)
        var map = RedisClusterSlotMap([
            (0...5460, .init(primary: a)), (5461...10922, .init(primary: b)), (10923...16383, .init(primary: c)),
        ])
        #expect(map.firstSlots == [0, 5461, 10923])
        // A shard with several ranges is named once, by its lowest slot.
        let split = RedisClusterSlotMap([
            (0...99, .init(primary: a)), (100...199, .init(primary: b)), (200...16383, .init(primary: a)),
        ])
        #expect(split.firstSlots == [0, 100])
        // A new primary learnt from `MOVED` is named; one left without slots is not.
        let d = RedisClusterNode(host: "h", port: 4)
        map.move(slot: 7000, to: d)
        #expect(map.firstSlots == [0, 5461, 7000, 10923])
        for slot in 5461...10922 { map.move(slot: slot, to: a) }
        #expect(map.firstSlots == [0, 10923])
        #expect(RedisClusterSlotMap([]).firstSlots.isEmpty)
    }
}
