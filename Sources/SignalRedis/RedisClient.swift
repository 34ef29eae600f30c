import NIOCore

/// "A Redis": one server through one ``RedisConnection``, or a Redis Cluster through a
/// ``RedisClusterClient`` that sends each command to the primary of its key's slot. Code that needs no more
/// than commands and scripts takes `any RedisClient` and works with both.
///
/// In a cluster every key a command or script names must share one slot (one hash tag); the client routes
/// by the first key (``RedisClusterSlots/routingKey(of:)``).
public protocol RedisClient: AnyObject, Sendable {
    /// Starts connecting in the background.
    func start()
    /// Closes every connection and stops reconnecting.
    func close() async
    /// True while commands can go straight to Redis (in a cluster: the slot map is known and every
    /// primary's connection is up).
    var isConnected: Bool { get }
    /// Where the connection stands, for logs.
    var stateDescription: String { get }
    /// Sends one command and returns its reply; an error reply throws ``RedisError/Code/server``.
    func send(_ arguments: [any RESPEncodable], timeout: Duration?) async throws(RedisError) -> RESPValue
    /// Runs a script by its SHA-1, sending its source when the server does not have it yet.
    func run(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RESPEncodable],
        timeout: Duration?
    ) async throws(RedisError) -> RESPValue
    /// Queues a script at once and returns a future of its reply: scripts submitted one after another go
    /// out, and run, in that order.
    func submit(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RESPEncodable],
        timeout: Duration?
    ) -> EventLoopFuture<RESPValue>
    /// Which server `key`'s commands go to now: keys with the same answer may be touched by one script
    /// call that names only the first of them (a Redis Cluster primary serves many slots); nil while that
    /// is not known (no slot map yet). One Redis server: always the same.
    func shard(of key: String) -> String?
    /// Every key matching the glob `pattern`, each once, at most `limit` (the scan then stops early):
    /// `SCAN 0 MATCH pattern COUNT count` and on with the cursor it returns until that is 0 again; in a
    /// cluster, on every primary. As `SCAN` promises, every key present from start to end is returned, one
    /// added or deleted meanwhile may or may not be. `timeout` is each step's.
    func scan(matching pattern: String, count: Int, limit: Int, timeout: Duration?) async throws(RedisError)
        -> [String]
}

extension RedisClient {
    /// ``send(_:timeout:)`` with the configured timeout.
    @discardableResult
    public func send(_ arguments: [any RESPEncodable]) async throws(RedisError) -> RESPValue {
        try await send(arguments, timeout: nil)
    }

    /// ``run(_:keys:arguments:timeout:)`` with the configured timeout.
    @discardableResult
    public func run(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RESPEncodable]
    ) async throws(RedisError) -> RESPValue {
        try await run(script, keys: keys, arguments: arguments, timeout: nil)
    }

    /// ``submit(_:keys:arguments:timeout:)`` with the configured timeout.
    public func submit(
        _ script: RedisScript,
        keys: [String],
        arguments: [any RESPEncodable]
    ) -> EventLoopFuture<RESPValue> {
        submit(script, keys: keys, arguments: arguments, timeout: nil)
    }

    /// ``scan(matching:count:limit:timeout:)`` 1,000 keys a step, with the configured timeout.
    public func scan(matching pattern: String, limit: Int = .max) async throws(RedisError) -> [String] {
        try await scan(matching: pattern, count: 1000, limit: limit, timeout: nil)
    }
}

extension RedisConnection: RedisClient {
    public var stateDescription: String { state.description }

    public func shard(of key: String) -> String? { "" }

    public func scan(matching pattern: String, count: Int, limit: Int, timeout: Duration?) async throws(RedisError)
        -> [String]
    {
        var found = RedisScan.Found(limit: limit)
        try await RedisScan.collect(pattern: pattern, count: count, into: &found) {
            command async throws(RedisError) -> RESPValue in
            try await self.send(command, timeout: timeout)
        }
        return found.keys
    }
}
