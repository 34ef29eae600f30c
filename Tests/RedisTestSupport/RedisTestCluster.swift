import Foundation
import Logging
import NIOCore
import SignalRedis

/// A real Redis Cluster on loopback for one test: three primaries and three replicas, each a
/// ``RedisTestServer`` with `--cluster-enabled yes`, joined with `redis-cli --cluster create`, ready once
/// every node reports `cluster_state:ok`. Killed with the test's reference to it.
public final class RedisTestCluster: @unchecked Sendable {
    /// Every node, in the order they were started (the first three were created primaries).
    public let servers: [RedisTestServer]

    /// Starts `primaries * (1 + replicas)` nodes and creates the cluster (three primaries or more, or one
    /// primary alone). `nodeTimeout` (ms) is how long a node may be unreachable before it counts as failed
    /// and a replica is promoted.
    public init(primaries: Int = 3, replicas: Int = 1, nodeTimeout: Int = 1000) async throws {
        var servers: [RedisTestServer] = []
        for _ in 0..<(primaries * (1 + replicas)) {
            // A bus port found free can be taken before the node binds it (by an outgoing connection's
            // ephemeral port, or a node started just before that had not bound its own yet): then the
            // node is started again with another bus port and a fresh configuration file.
            var attempt = 0
            while true {
                attempt += 1
                let bus = try await RedisTestServer.freePort()
                do {
                    servers.append(
                        try await RedisTestServer([
                            "--cluster-enabled", "yes", "--cluster-config-file", "nodes-\(UUID().uuidString).conf",
                            "--cluster-port", String(bus), "--cluster-node-timeout", String(nodeTimeout),
                            "--cluster-allow-replica-migration", "no",
                        ])
                    )
                    break
                } catch let error as RedisTestServer.DidNotStart where attempt < 5 {
                    _ = error
                }
            }
        }
        self.servers = servers
        let addresses = servers.map { "127.0.0.1:\($0.port)" }
        if servers.count == 1 {
            // `redis-cli --cluster create` wants three primaries: a cluster of one is given every slot by hand.
            _ = try await Self.redisCLI(["-p", String(servers[0].port), "CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
        } else {
            _ = try await Self.redisCLI(
                ["--cluster", "create"] + addresses + ["--cluster-replicas", String(replicas), "--cluster-yes"]
            )
        }
        try await waitUntilHealthy()
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on the primaries.
    public func waitUntilHealthy(timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var ok = true
            for server in servers where server.isRunning {
                let info = (try? await Self.redisCLI(["-p", String(server.port), "CLUSTER", "INFO"])) ?? ""
                if !info.contains("cluster_state:ok") { ok = false }
                // Every replica has finished its initial sync (a primary's `WAIT` counts only those).
                let replication = (try? await Self.redisCLI(["-p", String(server.port), "INFO", "replication"])) ?? ""
                if replication.contains("role:slave") && !replication.contains("master_link_status:up") { ok = false }
                if replication.contains("role:master") && replication.contains("state=wait_bgsave") { ok = false }
            }
            if ok { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw RedisTestServer.DidNotStart(description: "the Redis Cluster did not reach cluster_state:ok")
    }

    /// The seed configurations (every node), with short test timeouts.
    public func seeds() throws -> [RedisConfiguration] {
        try servers.map { try $0.configuration() }
    }

    /// A cluster client for the test.
    public func client(
        configure: (inout RedisClusterConfiguration) -> Void = { _ in }
    ) throws -> RedisClusterClient {
        var configuration = try RedisClusterConfiguration(seeds: [servers[0].configuration()])
        configuration.refreshInterval = .milliseconds(300)
        configure(&configuration)
        return try RedisClusterClient(
            configuration: configuration,
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
    }

    /// The server that is the primary of `slot` now, as the first live node reports it.
    public func primary(ofSlot slot: Int) async throws -> RedisTestServer {
        for server in servers where server.isRunning {
            let text = try await Self.redisCLI(["-p", String(server.port), "CLUSTER", "SLOTS"])
            // Lines: start, end, host, port, id, (replicas: host, port, id)…
            let lines = text.split(separator: "\n").map { String($0) }
            var index = 0
            while index + 4 < lines.count {
                if let start = Int(lines[index]), let end = Int(lines[index + 1]), let port = Int(lines[index + 3]),
                    (start...end).contains(slot), let primary = servers.first(where: { $0.port == port })
                {
                    return primary
                }
                index += 1
            }
        }
        throw RedisTestServer.DidNotStart(description: "no primary serves slot \(slot)")
    }

    /// The node id of `server` (`CLUSTER MYID`).
    public func nodeID(of server: RedisTestServer) async throws -> String {
        try await Self.redisCLI(["-p", String(server.port), "CLUSTER", "MYID"]).trimmingCharacters(
            in: .whitespacesAndNewlines
        )
    }

    /// Runs `redis-cli` (next to `redis-server`, or `REDIS_CLI`) with `arguments` and returns what it printed.
    @discardableResult
    public static func redisCLI(_ arguments: [String]) async throws -> String {
        let environment = ProcessInfo.processInfo.environment
        let server = try RedisTestServer.executable()
        let executable =
            environment["REDIS_CLI"]
            ?? URL(fileURLWithPath: server).deletingLastPathComponent().appendingPathComponent("redis-cli").path
        let (status, text) = try await SpawnedProcess.run(executable, arguments)
        guard status == 0 else {
            throw RedisTestServer.DidNotStart(description: "redis-cli \(arguments.joined(separator: " ")): \(text)")
        }
        return text
    }
}
