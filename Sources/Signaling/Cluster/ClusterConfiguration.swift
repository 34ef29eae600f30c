// `ClusterConfiguration` is built from a `RedisConfiguration`, so an app that configures a cluster needs the
// Redis client's types: `import Signaling` brings them (the client itself is the `SignalRedis` library).
@_exported import SignalRedis

/// How a hub joins a cluster (`signal serve --redis URL --node-id ID`). Without one the hub is a single
/// node that keeps everything in memory.
public struct ClusterConfiguration: Sendable {
    /// The shared Redis (`redis://` or `rediss://`), its timeouts and reconnection backoff.
    public var redis: RedisConfiguration
    /// Use a Redis Cluster (`--redis-cluster`): ``redis`` and ``redisSeeds`` are nodes to read the slot map
    /// from; each script goes to the primary of its keys' slot, and node channels are sharded
    /// (`SSUBSCRIBE`/`SPUBLISH`). Docs/scaling.md, "Redis Cluster".
    public var redisCluster = false
    /// More seed nodes of the Redis Cluster besides ``redis`` (`--redis` given several times). Their
    /// credentials and timeouts are ``redis``'s.
    public var redisSeeds: [RedisConfiguration] = []
    /// With ``redisCluster``: replicas that must have each write before the node answers (`WAIT`), so an
    /// acknowledged signal survives the failover of its primary. Capped by the shard's online replicas.
    public var replicaAcknowledgements = 1

    /// This node's name, unique in the cluster: its pub/sub channel is `PREFIX:node:ID`. Two live nodes
    /// with one id would take each other's messages.
    public var nodeID: String
    /// Namespace of every key and channel (`--redis-prefix`), so several clusters can share one Redis.
    public var keyPrefix: String = "sig"
    /// How often the node re-announces its live sessions. A session whose node stops doing so (killed,
    /// cut from Redis) ends `resumeGrace + refreshInterval` after the last announcement, unless its client
    /// resumes on another node first.
    public var refreshInterval: Duration = .seconds(2)
    /// How often the node looks for sessions whose time is up (any node may end any session).
    public var sweepInterval: Duration = .seconds(1)
    /// After Redis has been unreachable this long the node closes its clients with 1001 so that they
    /// reconnect, through the load balancer, to a node that reaches Redis and resume there. `nil`: never.
    public var partitionTimeout: Duration? = .seconds(10)
    /// Requests one connection may have waiting for Redis (queued in the order read, or being carried
    /// out). Beyond it (or ``maxPendingBytes``) a request is answered `unavailable` at once, so a client
    /// cannot pile up memory while Redis does not answer. At least 64, the signals a connection pipelines;
    /// a healthy Redis answers long before a connection reaches it.
    public var maxPendingRequests = 256
    /// Bytes of one connection's pending requests (each counted as its message's bytes plus 128). 1 MiB,
    /// like the outbound queue (`--outbound-queue-bytes`): a connection can hold at most about that much
    /// of the node's memory in each direction. Always admits one request, whatever its size.
    public var maxPendingBytes = 1 << 20
    /// Requests refused in a row over the bound before the connection is closed with 1013 (the session is
    /// kept: its client resumes, after a back-off, on this node or another). A client that waits for its
    /// answers never gets there; one that keeps sending while Redis does not answer does.
    public var maxPendingRefusals = 64

    /// `redis.commandTimeout` defaults to 2 s here: a request waits that long for an unreachable Redis
    /// before its client gets `unavailable`.
    public init(redis: RedisConfiguration, nodeID: String) {
        var redis = redis
        redis.commandTimeout = .seconds(2)
        self.redis = redis
        self.nodeID = nodeID
    }
}
