import NIOCore
import RedisTestSupport
import Testing

@testable import SignalRedis

/// `RedisClient.scan(matching:count:limit:timeout:)`: the reply parsing and the bookkeeping without sockets,
/// then the cursor loop against a real `redis-server` (on a Redis Cluster: RedisClusterIntegrationTests).
@Suite(.serialized, .timeLimit(.minutes(1))) struct RedisScanTests {
    @Test func parsesReplies() throws {
        let reply = RESPValue.array([
            .bulkString(ByteBuffer(string: "17")),
            .array([.bulkString(ByteBuffer(string: "a")), .bulkString(ByteBuffer(string: "b"))]),
        ])
        let (cursor, keys) = try RedisScan.parse(reply)
        #expect(cursor == "17" && keys == ["a", "b"])
        for bad: RESPValue in [.integer(0), .array([.bulkString(ByteBuffer(string: "0"))]), .null] {
            #expect(throws: RedisError.self) { try RedisScan.parse(bad) }
        }
        let command = RedisScan.command(cursor: "5", pattern: "p:*", count: 0)
        #expect(command.count == 6 && (command[5] as? Int) == 1)
    }

    @Test func keepsEachKeyOnceUpToTheLimit() {
        var found = RedisScan.Found(limit: 3)
        for key in ["a", "b", "a", "c", "d"] { found.add(key) }
        #expect(found.keys == ["a", "b", "c"] && found.isFull)
        #expect(RedisScan.Found(limit: 0).isFull)
    }

    @Test func scansOneServerStepByStep() async throws {
        let server = try await RedisTestServer()
        let redis: any RedisClient = try server.connection()
        for index in 0..<40 { try await redis.send(["SET", "scan:\(index)", index]) }
        try await redis.send(["SET", "other", 1])
        let keys = try await redis.scan(matching: "scan:*", count: 3, limit: .max, timeout: nil)
        #expect(keys.count == 40 && Set(keys) == Set((0..<40).map { "scan:\($0)" }))
        #expect(try await redis.scan(matching: "scan:*", limit: 10).count == 10)
        #expect(try await redis.scan(matching: "none:*").isEmpty)
        await redis.close()
    }
}
