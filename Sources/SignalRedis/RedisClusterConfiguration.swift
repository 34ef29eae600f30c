/// How a ``RedisClusterClient`` finds a Redis Cluster and how it talks to its nodes.
public struct RedisClusterConfiguration: Sendable {
    /// Nodes to ask for the slot map at first (any node of the cluster will do; more than one in case
    /// one is down). The first seed's credentials, TLS settings, timeouts and limits are used for every
    /// node the map names.
    public var seeds: [RedisConfiguration]
    /// How often the slot map is read again when nothing suggests it changed. A `MOVED` redirect, a
    /// connection lost or refused, `CLUSTERDOWN` or `TRYAGAIN` read it at once. 1 s: a failover is noticed
    /// within about a second even by a node that sends nothing to the shard that failed over.
    public var refreshInterval: Duration = .seconds(1)
    /// After every command, wait (`WAIT n`) until this many replicas of its shard have it before answering,
    /// so that an answered write survives a failover to one of them (Redis replicates asynchronously: a
    /// primary that dies before a write reached a replica takes it with it). Capped by the shard's online
    /// replicas: a shard without one answers without waiting. 0 never waits. A write that ran but was not
    /// acknowledged in time throws ``RedisError/Code/timeout`` (it may survive, or not).
    public var replicaAcknowledgements = 1
    /// Most redirects one command follows before it fails (a slot that moves back and forth).
    public var maxRedirects = 5

    /// A cluster reached through `seeds` (at least one).
    public init(seeds: [RedisConfiguration]) throws(RedisError) {
        guard !seeds.isEmpty else { throw RedisError(.invalidArgument, "a Redis Cluster needs at least one seed node") }
        for seed in seeds where seed.database != 0 {
            throw RedisError(.invalidArgument, "Redis Cluster has only database 0; \(seed.url) selects another")
        }
        self.seeds = seeds
    }

    /// The configuration for one node: the first seed's, at that node's address.
    public func configuration(for node: RedisClusterNode) -> RedisConfiguration {
        var configuration = seeds[0]
        configuration.host = node.host
        configuration.port = node.port
        return configuration
    }

    /// The seeds' addresses.
    var seedNodes: [RedisClusterNode] { seeds.map { RedisClusterNode(host: $0.host, port: $0.port) } }

    /// The command timeout of every node.
    var commandTimeout: Duration { seeds[0].commandTimeout }
}
