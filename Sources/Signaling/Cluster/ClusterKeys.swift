import SignalRedis

/// Where the cluster keeps things in Redis. Every key of one session carries the peer id as its hash tag
/// (`{…}`), so a session's scripts touch one Redis Cluster slot; a room's members are one key of their own.
struct ClusterKeys: Sendable {
    /// Namespace prefix (`--redis-prefix`, default `sig`), so several clusters can share one Redis.
    let prefix: String
    /// `prefix:{`, with which every session key starts.
    private let open: String

    init(prefix: String) {
        self.prefix = prefix
        self.open = prefix + ":{"
    }

    /// `prefix:{peer}:s` (hash: token, node, conn, away, deadline, seq, counters, rooms, grant, the
    /// address it waits from), `:b` (list: buffered messages), `:m` (list: their descriptors), `:r`
    /// (sorted set: the request ids already delivered, `sender|id`, scored by when and how, for duplicate
    /// suppression).
    func session(_ peer: String) -> [String] {
        Self.sessionSuffixes.map { open + peer + $0 }
    }

    /// What follows `prefix:{peer` in each of ``session(_:)``'s keys, in order.
    private static let sessionSuffixes = ["}:s", "}:b", "}:m", "}:r"]

    /// Writes ``sessionHash(_:)`` as an argument (for a batch: no `String` made for it; the batch scripts
    /// name the session's other keys from it).
    func writeSessionHash(_ peer: String, into argv: inout RESPArguments) {
        argv.append(concatenating: open, peer, Self.sessionSuffixes[0])
    }

    /// `prefix:{peer}:s` alone, the first of ``session(_:)``: for a command or call that names only the
    /// session hash (it routes a script on a Redis Cluster).
    func sessionHash(_ peer: String) -> String { open + peer + Self.sessionSuffixes[0] }

    /// `prefix:tenant:{tenant}:rooms` (set: the rooms a named tenant has, with `--max-rooms-per-tenant`).
    func tenantRooms(_ tenant: Tenant) -> String { "\(prefix):tenant:{\(tenant.name)}:rooms" }

    /// `prefix:room:{room}` (hash: member peer id → its `meta` JSON, empty for none).
    func room(_ room: String) -> String { "\(prefix):room:{\(room)}" }

    /// `prefix:nodes` (sorted set: node id → when, in ms since the epoch, it last said it is alive). The
    /// sweeper does not end a connected session of a node seen within a session's live period.
    var nodes: String { "\(prefix):nodes" }

    /// `prefix:detached` (sorted set: peer id → the deadline, in ms since the epoch, of a session waiting
    /// for a resume): the sessions waiting, for `--max-detached-sessions`.
    var detached: String { "\(prefix):detached" }

    /// `prefix:detached:{address}` (sorted set, as ``detached``): the sessions waiting whose connection came
    /// from `client`, for `--max-detached-per-ip`.
    func detached(from client: String) -> String { "\(prefix):detached:{\(client)}" }

    /// `prefix:deadlines` (sorted set: peer id → the time, in ms since the epoch, its session ends unless
    /// refreshed or resumed). Any node sweeps it.
    var deadlines: String { "\(prefix):deadlines" }

    /// Redis Cluster (`--redis-cluster`): a node's channel is sharded, one per session it holds (below).
    var sharded = false

    /// What the scripts get to publish to a node (their "channel prefix" argument): `prefix:node:`, to which
    /// they append the node (`PUBLISH`); with ``sharded``, `+prefix:node:`, which tells them to
    /// `SPUBLISH` to ``channel(of:peer:)`` instead, a channel in the slot of the keys they run on.
    var channelPrefix: String { sharded ? "+\(prefix):node:" : "\(prefix):node:" }

    /// The pub/sub channel of a node: `prefix:node:ID`.
    func channel(of node: String) -> String { "\(prefix):node:" + node }

    /// With ``sharded``, a node's channel for one peer's messages: `prefix:node:ID:{peer}`, whose hash tag
    /// is the peer's, so a script on the peer's keys can `SPUBLISH` to it. The node subscribes to it (on the
    /// primary of the peer's slot) while it holds one of the peer's connections.
    func channel(of node: String, peer: String) -> String { "\(prefix):node:\(node):{\(peer)}" }
}
