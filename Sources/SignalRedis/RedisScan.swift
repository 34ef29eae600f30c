/// The `SCAN` cursor loop of ``RedisClient/scan(matching:count:limit:timeout:)``, shared by one server
/// (``RedisConnection``) and a Redis Cluster (``RedisClusterClient``, once per primary).
enum RedisScan {
    /// The keys found so far: each once, in the order first seen, at most `limit`.
    struct Found: Sendable {
        let limit: Int
        private(set) var keys: [String] = []
        private var seen: Set<String> = []

        init(limit: Int) { self.limit = max(0, limit) }

        var isFull: Bool { keys.count >= limit }

        mutating func add(_ key: String) {
            guard !isFull, seen.insert(key).inserted else { return }
            keys.append(key)
        }
    }

    /// `SCAN cursor MATCH pattern COUNT count`.
    static func command(cursor: String, pattern: String, count: Int) -> [any RESPEncodable] {
        ["SCAN", cursor, "MATCH", pattern, "COUNT", max(1, count)]
    }

    /// A `SCAN` reply: `[next cursor, [key, …]]`.
    static func parse(_ reply: RESPValue) throws(RedisError) -> (cursor: String, keys: [String]) {
        guard let parts = reply.array, parts.count == 2, let cursor = parts[0].string, let keys = parts[1].array
        else { throw .unexpectedReply(reply, expected: "a SCAN reply (cursor and keys)") }
        return (cursor, keys.compactMap(\.string))
    }

    /// Scans one server from cursor 0 until the cursor is 0 again (or `found` is full), sending each step
    /// with `send`. `SCAN` only reads, so a step lost with its connection (a failover under way) is sent
    /// again, up to 3 times.
    static func collect(
        pattern: String,
        count: Int,
        into found: inout Found,
        send: ([any RESPEncodable]) async throws(RedisError) -> RESPValue
    ) async throws(RedisError) {
        var cursor = "0"
        var lost = 0
        repeat {
            let reply: RESPValue
            do throws(RedisError) {
                reply = try await send(command(cursor: cursor, pattern: pattern, count: count))
            } catch {
                lost += 1
                guard error.code == .connectionClosed, lost <= 3 else { throw error }
                continue
            }
            let (next, keys) = try parse(reply)
            for key in keys { found.add(key) }
            cursor = next
        } while cursor != "0" && !found.isFull
    }
}
