import NIOConcurrencyHelpers
import NIOCore
import RedisTestSupport
import Testing

@testable import SignalRedis

/// `RedisConnection` against a real `redis-server` on loopback.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RedisConnectionIntegrationTests {
    /// Records every state a connection goes through.
    final class StateLog: Sendable {
        private let states = NIOLockedValueBox<[RedisConnectionState]>([])
        var all: [RedisConnectionState] { states.withLockedValue { $0 } }
        func record(_ state: RedisConnectionState) { states.withLockedValue { $0.append(state) } }
        var sawReconnecting: Bool {
            all.contains { if case .reconnecting = $0 { return true } else { return false } }
        }
    }

    @Test func typedCommandsDoWhatRedisDoes() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        #expect(try await redis.ping() == "PONG")

        #expect(try await redis.get("missing") == nil)
        #expect(try await redis.set("k", to: "v1"))
        #expect(try await redis.get("k", as: String.self) == "v1")
        #expect(try await redis.set("k", to: "v2", condition: .ifNotExists) == false)
        #expect(try await redis.get("k", as: String.self) == "v1")
        #expect(try await redis.set("k", to: "v3", condition: .ifExists))
        #expect(try await redis.set("absent", to: "x", condition: .ifExists) == false)
        #expect(try await redis.get("absent") == nil)
        #expect(try await redis.set("ttl-s", to: 42, expiration: .seconds(100)))
        #expect((99_000...100_000).contains(try await redis.pttl("ttl-s")))
        #expect(try await redis.get("ttl-s", as: Int.self) == 42)
        #expect(try await redis.set("ttl-ms", to: "x", expiration: .milliseconds(1500), condition: .ifNotExists))
        #expect((1_000...1_500).contains(try await redis.pttl("ttl-ms")))
        #expect(try await redis.pttl("k") == -1)
        #expect(try await redis.expire("k", after: .seconds(50)))
        #expect((49_000...50_000).contains(try await redis.pttl("k")))
        #expect(try await redis.expire("k", after: .milliseconds(2500)))
        #expect((2_000...2_500).contains(try await redis.pttl("k")))
        #expect(try await redis.expire("missing", after: .seconds(1)) == false)
        #expect(try await redis.del("k", "ttl-s", "missing") == 2)

        let binary = ByteBuffer(bytes: [0, 255, 13, 10, 36])
        try await redis.set("bin", to: binary)
        #expect(try await redis.get("bin") == binary)

        #expect(try await redis.hset("h", fields: ["a": "1", "b": 2, "c": binary]) == 3)
        #expect(try await redis.hset("h", field: "a", to: "one") == 0)
        #expect(try await redis.hget("h", field: "a", as: String.self) == "one")
        #expect(try await redis.hget("h", field: "zz") == nil)
        #expect(
            try await redis.hgetall("h") == ["a": ByteBuffer(string: "one"), "b": ByteBuffer(string: "2"), "c": binary]
        )
        #expect(try await redis.hdel("h", fields: ["b", "nope"]) == 1)
        #expect(try await redis.hgetall("h", as: String.self).keys.sorted() == ["a", "c"])
        #expect(try await redis.hgetall("no-hash").isEmpty)

        #expect(try await redis.sadd("s", members: ["x", "y", "z", "x"]) == 3)
        #expect(try await redis.srem("s", members: ["y", "w"]) == 1)
        #expect(try await redis.smembers("s") == ["x", "z"])
        #expect(try await redis.smembers("no-set").isEmpty)

        #expect(try await redis.publish("hello", to: "nobody-listens") == 0)

        let reply = try await redis.send("LPUSH", "list", "a", "b")
        #expect(reply == .integer(2))
        #expect(try await redis.send(["LRANGE", "list", 0, -1]).array?.compactMap(\.string) == ["b", "a"])
        await redis.close()
    }

    @Test func serverErrorsAreThrownWithTheirMessage() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        try await redis.sadd("a-set", members: ["x"])
        let error = await redisError { try await redis.get("a-set") }
        #expect(error?.code == .server)
        #expect(error?.serverErrorPrefix == "WRONGTYPE")
        #expect(error?.message.contains("wrong kind of value") == true)
        await #expect {
            try await redis.send("NOSUCHCOMMAND")
        } throws: { error in
            (error as? RedisError)?.serverErrorPrefix == "ERR"
        }
        // The connection is fine afterwards.
        #expect(try await redis.ping() == "PONG")
        await redis.close()
    }

    /// 10,000 commands from concurrent tasks on one connection, then a pipeline of 10,000: every reply
    /// reaches the command it answers.
    @Test func tenThousandPipelinedCommands() async throws {
        let server = try await RedisTestServer()
        let roundTrips = NIOLockedValueBox(0)
        let redis = try server.connection(onRoundTrip: { _ in roundTrips.withLockedValue { $0 += 1 } })
        try await redis.waitUntilConnected(timeout: .seconds(5))
        let count = 10_000

        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<count {
                group.addTask { try await redis.set("key:\(n)", to: "value:\(n)") }
            }
            try await group.waitForAll()
        }
        let mismatches = try await withThrowingTaskGroup(of: Bool.self) { group in
            for n in 0..<count {
                group.addTask { try await redis.get("key:\(n)", as: String.self) == "value:\(n)" }
            }
            var mismatches = 0
            for try await matched in group where !matched { mismatches += 1 }
            return mismatches
        }
        #expect(mismatches == 0)
        #expect(roundTrips.withLockedValue { $0 } >= 2 * count, "the latency hook saw every request")

        let results = try await redis.pipeline((0..<count).map { _ in ["INCR", "counter"] })
        #expect(results.count == count)
        let values = results.map { try? $0.get().int }
        #expect(values == (1...count).map { $0 })

        let mixed = try await redis.pipeline([["SET", "p", "1"], ["HGET", "p", "f"], ["GET", "p"]])
        #expect(try mixed[0].get().string == "OK")
        #expect(throws: RedisError.self) { try mixed[1].get() }
        #expect(try mixed[2].get().string == "1")
        await redis.close()
    }

    @Test func aCommandThatTimesOutFailsAloneUntilItsReplyIsLongOverdue() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection { $0.lateReplyWait = .seconds(1) }
        try await redis.waitUntilConnected(timeout: .seconds(5))
        let start = ContinuousClock.now
        let blocked = Task { try await redis.send(["BLPOP", "empty-list", "10"], timeout: .seconds(2)) }
        let observer = try server.connection()
        #expect(
            try await eventually {
                try await observer.send("INFO", "clients").string?.contains("blocked_clients:1") == true
            }
        )
        let behind = Task { try await redis.send(["PING"], timeout: .seconds(5)) }
        let timedOut = await redisError(blocked)
        #expect(timedOut?.code == .timeout)
        #expect(timedOut?.message.contains("127.0.0.1:\(server.port)") == true)
        #expect(ContinuousClock.now - start < .seconds(5), "well before BLPOP's own 10 s")
        // BLPOP's reply is still owed (Redis answers in order): the PING behind it waits until the
        // connection is taken for dead, `lateReplyWait` after BLPOP's deadline, well before its own 5 s.
        let behindResult = await behind.result
        #expect(
            (behindResult.failure as? RedisError)?.code == .connectionClosed,
            "the command behind the overdue one fails: \(behindResult)"
        )
        #expect(ContinuousClock.now - start < .seconds(4.5))
        #expect(try await redis.ping() == "PONG", "a new connection is made")
        #expect(redis.reconnects == 1)
        await redis.close()
        await observer.close()
    }

    /// A server busy for a moment (`DEBUG SLEEP 1` against a 300 ms timeout): the commands it was too slow
    /// for time out, the connection stays, their late replies are dropped, and the next command gets its
    /// own reply.
    @Test func aBusyServerFailsOnlyTheCommandsItWasTooSlowFor() async throws {
        let server = try await RedisTestServer(["--enable-debug-command", "local"])
        let sleeper = try server.connection()
        let client = try server.connection { $0.commandTimeout = .milliseconds(300) }
        try await client.waitUntilConnected(timeout: .seconds(5))
        try await sleeper.waitUntilConnected(timeout: .seconds(5))
        _ = try await client.send(["SET", "k", "before"])
        let slept = Task { try await sleeper.send(["DEBUG", "SLEEP", "1"], timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(await redisError { try await client.send(["GET", "k"]) }?.code == .timeout)
        _ = try await slept.value
        #expect(try await client.send(["SET", "k", "after"]).string == "OK")
        #expect(try await client.send(["GET", "k"]).string == "after", "the late reply was not taken for this one")
        #expect(client.reconnects == 0)
        await client.close()
        await sleeper.close()
    }

    /// `DEBUG SLEEP` stalls the whole server: commands time out, and an idle connection's health check
    /// notices too; both recover when the server does.
    @Test func aStalledServerMakesCommandsTimeOutAndHealthChecksFail() async throws {
        let server = try await RedisTestServer(["--enable-debug-command", "local"])
        let sleeper = try server.connection()
        let client = try server.connection { $0.commandTimeout = .milliseconds(300) }
        let idleStates = StateLog()
        let idle = try server.connection(
            configure: {
                $0.commandTimeout = .milliseconds(300)
                $0.healthCheckInterval = .milliseconds(100)
            },
            onStateChange: idleStates.record
        )
        try await client.waitUntilConnected(timeout: .seconds(5))
        try await idle.waitUntilConnected(timeout: .seconds(5))

        let slept = Task { try await sleeper.send(["DEBUG", "SLEEP", "2"], timeout: .seconds(10)) }
        #expect(
            try await eventually(timeout: .seconds(2)) {
                await redisError { try await client.ping() }?.code == .timeout
            },
            "a command to the stalled server times out"
        )
        #expect(try await eventually(timeout: .seconds(3)) { !idle.isConnected }, "the health check noticed")
        _ = try await slept.value
        try await client.waitUntilConnected(timeout: .seconds(10))
        #expect(try await client.ping() == "PONG")
        #expect(try await eventually { idle.isConnected })
        #expect(idleStates.sawReconnecting)
        #expect(idle.reconnects >= 1)
        for connection in [sleeper, client, idle] { await connection.close() }
    }

    @Test func reconnectsAfterTheServerIsKilledAndRestarted() async throws {
        let server = try await RedisTestServer()
        let states = StateLog()
        let redis = try server.connection(onStateChange: states.record)
        let blocker = try server.connection()
        try await redis.set("before", to: "1")
        try await blocker.waitUntilConnected(timeout: .seconds(5))
        #expect(redis.isConnected)

        // A command in flight when the server dies may or may not have run: connectionClosed.
        let inFlight = Task { try await blocker.send(["BLPOP", "nothing", "30"], timeout: .seconds(40)) }
        try await Task.sleep(for: .milliseconds(100))
        await server.kill()
        #expect(await redisError(inFlight)?.code == .connectionClosed, "in flight when the server died: may have run")
        #expect(try await eventually { !redis.isConnected })
        guard case .reconnecting(_, let lastError) = redis.state else {
            Issue.record("expected reconnecting, got \(redis.state)")
            return
        }
        #expect(lastError.message.contains("127.0.0.1:\(server.port)"))

        // While it is down, a command with a short timeout fails, clearly, without being sent…
        let refused = await redisError { try await redis.send(["GET", "before"], timeout: .milliseconds(300)) }
        #expect(refused?.code == .notConnected)
        #expect(refused?.message.contains("was not sent") == true)
        // …and one with a longer timeout goes out once the server is back.
        let waited = Task { try await redis.send(["SET", "during", "outage"], timeout: .seconds(20)) }
        try await Task.sleep(for: .milliseconds(300))
        try await server.restart()
        #expect(try await waited.value.string == "OK")
        try await redis.waitUntilConnected(timeout: .seconds(5))
        #expect(try await redis.get("during", as: String.self) == "outage")
        #expect(try await redis.get("before") == nil, "a restarted server without persistence is empty")
        #expect(redis.reconnects == 1)
        #expect(states.sawReconnecting)
        #expect(states.all.first == .connecting && states.all.last == .connected)
        #expect(try await eventually { blocker.isConnected })
        await redis.close()
        await blocker.close()
        #expect(redis.state == .closed)
    }

    @Test func authenticatesWithAPasswordAndWithAnACLUser() async throws {
        let server = try await RedisTestServer(["--requirepass", "s3cret pw"])
        let good = try server.connection { $0.password = "s3cret pw" }
        #expect(try await good.ping() == "PONG")
        try await good.send("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all")

        let alice = try RedisConnection(
            configuration: try RedisConfiguration(url: "redis://alice:alice-pw@127.0.0.1:\(server.port)"),
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
        #expect(try await alice.send("ACL", "WHOAMI").string == "alice")

        for (password, expected) in [(nil, "NOAUTH"), ("wrong", "WRONGPASS")] as [(String?, String)] {
            let bad = try server.connection { $0.password = password }
            bad.start()
            #expect(try await eventually { if case .reconnecting = bad.state { true } else { false } })
            guard case .reconnecting(_, let lastError) = bad.state else {
                Issue.record("expected reconnecting, got \(bad.state)")
                continue
            }
            #expect(lastError.message.contains(expected), "\(lastError)")
            let error = await redisError { try await bad.ping(timeout: .milliseconds(200)) }
            #expect(error?.code == .notConnected)
            #expect(error?.message.contains(expected) == true, "\(String(describing: error))")
            #expect(lastError.code == .server)
            await bad.close()
        }
        await good.close()
        await alice.close()
    }

    @Test func selectsTheDatabaseFromTheURL() async throws {
        let server = try await RedisTestServer()
        let db3 = try server.connection("/3")
        let db0 = try server.connection()
        try await db3.set("where", to: "three")
        #expect(try await db0.get("where") == nil)
        let other3 = try server.connection("/3") { $0.clientName = "signal-test" }
        #expect(try await other3.get("where", as: String.self) == "three")
        let info = try await other3.send("CLIENT", "INFO").string ?? ""
        #expect(info.contains("db=3") && info.contains("name=signal-test"))
        for connection in [db3, db0, other3] { await connection.close() }
    }

    @Test func scriptsRunAtomicallyAndSurviveAScriptFlush() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let compareAndSet = RedisScript(
            """
            if redis.call('GET', KEYS[1]) == ARGV[1] then
                redis.call('SET', KEYS[1], ARGV[2])
                return 1
            end
            return 0
            """
        )
        try await redis.set("owner", to: "node-a")
        #expect(try await redis.run(compareAndSet, keys: ["owner"], arguments: ["node-b", "node-c"]) == .integer(0))
        #expect(try await redis.run(compareAndSet, keys: ["owner"], arguments: ["node-a", "node-b"]) == .integer(1))
        #expect(try await redis.get("owner", as: String.self) == "node-b")

        try await redis.send("SCRIPT", "FLUSH")
        await #expect {
            try await redis.evalsha(compareAndSet.sha1, keys: ["owner"], arguments: ["x", "y"])
        } throws: { error in
            (error as? RedisError)?.serverErrorPrefix == "NOSCRIPT"
        }
        #expect(try await redis.run(compareAndSet, keys: ["owner"], arguments: ["node-b", "node-a"]) == .integer(1))
        #expect(try await redis.scriptLoad(compareAndSet.source) == compareAndSet.sha1)
        #expect(
            try await redis.eval("return {KEYS[1], ARGV[1], 7}", keys: ["k"], arguments: ["a"])
                == .array([.bulkString(ByteBuffer(string: "k")), .bulkString(ByteBuffer(string: "a")), .integer(7)])
        )
        await redis.close()
    }

    /// Scripts named in the configuration are loaded in every handshake, before any request: a restarted
    /// server runs them by SHA-1 from the first request; one it refuses leaves the connection up.
    @Test func configuredScriptsAreLoadedOnEveryConnect() async throws {
        let server = try await RedisTestServer()
        let increment = RedisScript("return redis.call('INCR', KEYS[1])")
        let broken = RedisScript("this is not lua")
        let redis = try server.connection { $0.scripts = [increment, broken] }
        let observer = try server.connection()
        func loaded() async throws -> [Int] {
            try await observer.send("SCRIPT", "EXISTS", increment.sha1, broken.sha1).array?.compactMap(\.int) ?? []
        }
        // The very first request, sent before the connection is up, runs by SHA-1.
        #expect(try await redis.evalsha(increment.sha1, keys: ["n"], arguments: []) == .integer(1))
        #expect(try await loaded() == [1, 0])
        await server.kill()
        try await server.restart()
        let afterRestart = Task {
            try await redis.evalsha(increment.sha1, keys: ["n"], arguments: [], timeout: .seconds(10))
        }
        #expect(try await afterRestart.value == .integer(1), "a restarted server is empty, and has the script")
        #expect(try await observer.send("INFO", "errorstats").string?.contains("NOSCRIPT") == false)
        await redis.close()
        await observer.close()
    }

    @Test func commandsWaitingForAConnectionAreBounded() async throws {
        let server = try await RedisTestServer()
        await server.kill()
        let redis = try server.connection {
            $0.maxQueuedWhileDisconnected = 2
            $0.commandTimeout = .seconds(3)
        }
        let first = Task { try await redis.send(["PING"]) }
        let second = Task { try await redis.send(["PING"]) }
        try await Task.sleep(for: .milliseconds(200))
        let refused = await redisError { try await redis.send(["PING"]) }
        #expect(refused?.code == .notConnected)
        #expect(refused?.message.contains("2 commands already waiting") == true)
        await redis.close()
        #expect(await redisError(first)?.code == .shutdown)
        #expect(await redisError(second)?.code == .shutdown)
        await #expect {
            try await redis.ping()
        } throws: { error in
            (error as? RedisError)?.code == .shutdown
        }
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

/// The `RedisError` that `body` throws, or nil when it succeeds (or throws something else).
func redisError<Value>(_ body: () async throws -> Value) async -> RedisError? {
    do {
        _ = try await body()
        return nil
    } catch {
        return error as? RedisError
    }
}

/// The `RedisError` that `task` ends with, or nil when it succeeds.
func redisError<Value>(_ task: Task<Value, any Error>) async -> RedisError? {
    if case .failure(let error) = await task.result { return error as? RedisError }
    return nil
}
