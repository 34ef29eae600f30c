import NIOCore

/// The condition of a `SET`.
public enum RedisSetCondition: Sendable, Hashable {
    /// Always set.
    case always
    /// `NX`: only if the key does not exist (claim a name, take a lock).
    case ifNotExists
    /// `XX`: only if the key exists (refresh what is still owned).
    case ifExists
}

/// The commands the cluster layer uses, typed. Anything else goes through `send`.
extension RedisConnection {
    /// `PING`; returns `PONG`.
    @discardableResult
    public func ping(timeout: Duration? = nil) async throws(RedisError) -> String {
        let reply = try await send(["PING"], timeout: timeout)
        guard let text = reply.string else { throw .unexpectedReply(reply, expected: "a status") }
        return text
    }

    // MARK: Strings

    /// `GET key`; nil when the key does not exist.
    public func get(_ key: String) async throws(RedisError) -> ByteBuffer? {
        try await get(key, as: ByteBuffer.self)
    }

    /// `GET key` converted to `type` (`String`, `Int`, …); nil when the key does not exist.
    public func get<Value: RESPDecodable>(_ key: String, as type: Value.Type) async throws(RedisError) -> Value? {
        try await Self.optional(send(["GET", key]), as: type)
    }

    /// `SET key value [EX s | PX ms] [NX | XX]`. Returns false when the condition was not met.
    ///
    /// - Parameters:
    ///   - expiration: Time to live; whole seconds are sent as `EX`, anything else as `PX` (rounded up
    ///     to the millisecond). Nil keeps the key forever (and clears an existing TTL).
    ///   - condition: `NX` / `XX`.
    @discardableResult
    public func set(
        _ key: String,
        to value: some RESPEncodable,
        expiration: Duration? = nil,
        condition: RedisSetCondition = .always
    ) async throws(RedisError) -> Bool {
        var arguments: [any RESPEncodable] = ["SET", key, value]
        if let expiration {
            arguments.append(contentsOf: Self.expirationArguments(expiration, seconds: "EX", milliseconds: "PX"))
        }
        switch condition {
        case .always: break
        case .ifNotExists: arguments.append("NX")
        case .ifExists: arguments.append("XX")
        }
        let reply = try await send(arguments)
        switch reply {
        case .null: return false
        case .simpleString: return true
        default: throw .unexpectedReply(reply, expected: "OK or nil")
        }
    }

    /// `DEL key…`; returns how many keys existed.
    @discardableResult
    public func del(_ keys: [String]) async throws(RedisError) -> Int {
        guard !keys.isEmpty else { return 0 }
        return try await integer(send(["DEL"] + keys.map { $0 as any RESPEncodable }))
    }

    /// `DEL key…`; returns how many keys existed.
    @discardableResult
    public func del(_ keys: String...) async throws(RedisError) -> Int {
        try await del(keys)
    }

    /// `EXPIRE key s` for whole seconds, `PEXPIRE key ms` otherwise. Returns false when the key does not
    /// exist. A zero or negative duration deletes the key.
    @discardableResult
    public func expire(_ key: String, after duration: Duration) async throws(RedisError) -> Bool {
        let (command, amount) = Self.expiration(duration, seconds: "EXPIRE", milliseconds: "PEXPIRE")
        return try await integer(send([command, key, amount])) == 1
    }

    /// `PTTL key`: milliseconds to live, -1 when the key has no TTL, -2 when it does not exist.
    public func pttl(_ key: String) async throws(RedisError) -> Int {
        try await integer(send(["PTTL", key]))
    }

    // MARK: Hashes

    /// `HSET key field value …`; returns how many fields were added (not updated).
    @discardableResult
    public func hset(_ key: String, fields: [String: any RESPEncodable]) async throws(RedisError) -> Int {
        guard !fields.isEmpty else { throw RedisError(.invalidArgument, "HSET needs at least one field") }
        var arguments: [any RESPEncodable] = ["HSET", key]
        arguments.reserveCapacity(2 + fields.count * 2)
        for (field, value) in fields {
            arguments.append(field)
            arguments.append(value)
        }
        return try await integer(send(arguments))
    }

    /// `HSET key field value`; returns 1 when the field is new, 0 when it was updated.
    @discardableResult
    public func hset(_ key: String, field: String, to value: some RESPEncodable) async throws(RedisError) -> Int {
        try await integer(send(["HSET", key, field, value]))
    }

    /// `HGET key field`; nil when the key or field does not exist.
    public func hget(_ key: String, field: String) async throws(RedisError) -> ByteBuffer? {
        try await hget(key, field: field, as: ByteBuffer.self)
    }

    /// `HGET key field` converted to `type`.
    public func hget<Value: RESPDecodable>(
        _ key: String,
        field: String,
        as type: Value.Type
    ) async throws(RedisError) -> Value? {
        try await Self.optional(send(["HGET", key, field]), as: type)
    }

    /// `HDEL key field…`; returns how many fields existed.
    @discardableResult
    public func hdel(_ key: String, fields: [String]) async throws(RedisError) -> Int {
        guard !fields.isEmpty else { return 0 }
        return try await integer(send(["HDEL", key] + fields.map { $0 as any RESPEncodable }))
    }

    /// `HGETALL key`; empty when the key does not exist.
    public func hgetall(_ key: String) async throws(RedisError) -> [String: ByteBuffer] {
        try await hgetall(key, as: ByteBuffer.self)
    }

    /// `HGETALL key` with values converted to `type`.
    public func hgetall<Value: RESPDecodable>(
        _ key: String,
        as type: Value.Type
    ) async throws(RedisError) -> [String: Value] {
        let reply = try await send(["HGETALL", key])
        var result: [String: Value] = [:]
        switch reply {
        case .array(let flat):
            guard flat.count % 2 == 0 else { throw .unexpectedReply(reply, expected: "field-value pairs") }
            result.reserveCapacity(flat.count / 2)
            var index = 0
            while index < flat.count {
                guard let field = flat[index].string, let value = Value(resp: flat[index + 1]) else {
                    throw .unexpectedReply(reply, expected: "field-value pairs of \(Value.self)")
                }
                result[field] = value
                index += 2
            }
        case .map(let map):
            for (field, value) in map {
                guard let field = field.string, let value = Value(resp: value) else {
                    throw .unexpectedReply(reply, expected: "field-value pairs of \(Value.self)")
                }
                result[field] = value
            }
        default:
            throw .unexpectedReply(reply, expected: "field-value pairs")
        }
        return result
    }

    // MARK: Sets

    /// `SADD key member…`; returns how many members were new.
    @discardableResult
    public func sadd(_ key: String, members: [String]) async throws(RedisError) -> Int {
        guard !members.isEmpty else { return 0 }
        return try await integer(send(["SADD", key] + members.map { $0 as any RESPEncodable }))
    }

    /// `SREM key member…`; returns how many members were removed.
    @discardableResult
    public func srem(_ key: String, members: [String]) async throws(RedisError) -> Int {
        guard !members.isEmpty else { return 0 }
        return try await integer(send(["SREM", key] + members.map { $0 as any RESPEncodable }))
    }

    /// `SMEMBERS key`; empty when the key does not exist.
    public func smembers(_ key: String) async throws(RedisError) -> Set<String> {
        let reply = try await send(["SMEMBERS", key])
        guard let elements = reply.array else { throw .unexpectedReply(reply, expected: "an array of members") }
        var members = Set<String>(minimumCapacity: elements.count)
        for element in elements {
            guard let member = element.string else { throw .unexpectedReply(reply, expected: "string members") }
            members.insert(member)
        }
        return members
    }

    // MARK: Pub/sub

    /// `PUBLISH channel message`; returns how many subscribers received it (in Redis Cluster, only those
    /// connected to the node that took the command).
    @discardableResult
    public func publish(_ message: some RESPEncodable, to channel: String) async throws(RedisError) -> Int {
        try await integer(send(["PUBLISH", channel, message]))
    }

    // MARK: Scripts

    /// `EVAL script numkeys key… arg…`. Lua scripts run atomically: nothing else runs on the server
    /// while one runs, so a script is the way to check-and-set. Declare every key the script touches in
    /// `keys` (Redis Cluster routes by them and requires them in one hash slot).
    public func eval(
        _ script: String,
        keys: [String] = [],
        arguments: [any RESPEncodable] = [],
        timeout: Duration? = nil
    ) async throws(RedisError) -> RESPValue {
        try await send(Self.scriptCall("EVAL", script, keys, arguments), timeout: timeout)
    }

    /// `EVALSHA sha1 numkeys key… arg…`; throws a ``RedisError/Code/server`` error with prefix `NOSCRIPT`
    /// when the server does not have the script cached. ``run(_:keys:arguments:timeout:)`` handles that.
    public func evalsha(
        _ sha1: String,
        keys: [String] = [],
        arguments: [any RESPEncodable] = [],
        timeout: Duration? = nil
    ) async throws(RedisError) -> RESPValue {
        try await send(Self.scriptCall("EVALSHA", sha1, keys, arguments), timeout: timeout)
    }

    /// `SCRIPT LOAD script`; returns the script's SHA-1.
    @discardableResult
    public func scriptLoad(_ script: String) async throws(RedisError) -> String {
        let reply = try await send(["SCRIPT", "LOAD", script])
        guard let sha1 = reply.string else { throw .unexpectedReply(reply, expected: "a SHA-1") }
        return sha1
    }

    /// Runs `script` with `EVALSHA`, falling back to `EVAL` (which caches it) when the server does not
    /// know it yet — after a restart, a failover, or on first use. The script is sent in full at most
    /// once per server cache miss.
    public func run(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [any RESPEncodable] = [],
        timeout: Duration? = nil
    ) async throws(RedisError) -> RESPValue {
        do throws(RedisError) {
            return try await evalsha(script.sha1, keys: keys, arguments: arguments, timeout: timeout)
        } catch {
            guard error.serverErrorPrefix == "NOSCRIPT" else { throw error }
            return try await eval(script.source, keys: keys, arguments: arguments, timeout: timeout)
        }
    }

    /// Runs `script` like ``run(_:keys:arguments:timeout:)``, but queues it at once and returns a future:
    /// scripts submitted one after another from one task go out, and run, in that order (nothing waits
    /// in between, so a caller can keep many in flight without losing their order). The fallback to
    /// `EVAL` after a `NOSCRIPT` (a server restart or `SCRIPT FLUSH`) is sent later and so may run after
    /// scripts submitted in the meantime.
    public func submit(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [any RESPEncodable] = [],
        timeout: Duration? = nil
    ) -> EventLoopFuture<RESPValue> {
        let first = submit(Self.scriptCall("EVALSHA", script.sha1, keys, arguments), timeout: timeout)
        return first.flatMapError { error in
            guard let redisError = error as? RedisError, redisError.serverErrorPrefix == "NOSCRIPT" else {
                return self.eventLoop.makeFailedFuture(error)
            }
            return self.submit(Self.scriptCall("EVAL", script.source, keys, arguments), timeout: timeout)
        }
    }

    // MARK: - Helpers

    private func integer(_ reply: RESPValue) throws(RedisError) -> Int {
        guard case .integer(let value) = reply else { throw .unexpectedReply(reply, expected: "an integer") }
        return value
    }

    private static func optional<Value: RESPDecodable>(_ reply: RESPValue, as type: Value.Type) throws(RedisError)
        -> Value?
    {
        if reply.isNull { return nil }
        guard let value = Value(resp: reply) else { throw .unexpectedReply(reply, expected: "a \(Value.self)") }
        return value
    }

    /// `EVAL`/`EVALSHA` with its script, key count, keys and arguments (also the cluster client's).
    static func scriptCall(
        _ command: String,
        _ script: String,
        _ keys: [String],
        _ arguments: [any RESPEncodable]
    ) -> [any RESPEncodable] {
        var call: [any RESPEncodable] = [command, script, keys.count]
        call.reserveCapacity(3 + keys.count + arguments.count)
        for key in keys { call.append(key) }
        call.append(contentsOf: arguments)
        return call
    }

    /// Whole seconds as (`seconds`, s), anything else as (`milliseconds`, ms rounded up).
    static func expiration(_ duration: Duration, seconds: String, milliseconds: String) -> (String, Int) {
        let (wholeSeconds, attoseconds) = duration.components
        if attoseconds == 0 { return (seconds, Int(wholeSeconds)) }
        let nanos = RedisBackoff.nanoseconds(duration)
        let millis = nanos >= 0 ? (nanos + 999_999) / 1_000_000 : nanos / 1_000_000
        return (milliseconds, Int(millis))
    }

    private static func expirationArguments(
        _ duration: Duration,
        seconds: String,
        milliseconds: String
    ) -> [any RESPEncodable] {
        let (option, amount) = expiration(duration, seconds: seconds, milliseconds: milliseconds)
        return [option, amount]
    }
}
