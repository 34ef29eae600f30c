/// Everything a mesh node's state machines need to know, with defaults for real networks. Times are
/// nanoseconds on the clock the driver passes in.
public struct MeshConfiguration: Sendable {
    public var membership = MembershipConfiguration()
    /// Home nodes per key (r). 3 survives two simultaneous failures without losing a location.
    public var replicas = 3
    /// How long a location record is valid. 60 s bounds how long a record outlives a host that stopped
    /// refreshing it without being declared dead.
    public var recordLifetime: UInt64 = 60_000_000_000
    /// When a record is re-signed and re-published: half its lifetime, so one lost refresh is harmless.
    public var recordRefresh: UInt64 = 30_000_000_000
    /// How long to wait for the ack of a store before sending it again.
    public var storeRetryInterval: UInt64 = 1_000_000_000
    /// Sends of one store before giving up (the next refresh or re-home sends it again anyway).
    public var storeAttempts = 4
    /// How long to wait for a hop ack before retrying the hop. 500 ms covers a 200 ms round trip with
    /// jitter; a driver that knows its links (the simulator) may set it tighter.
    public var hopTimeout: UInt64 = 500_000_000
    /// Sends to one next hop before moving to the next option (another home node).
    public var attemptsPerHop = 2
    /// After this long without a delivery or an acceptance the sender is told `peer-unavailable`:
    /// 1.8 s keeps the answer within the 2 s promise.
    public var unavailableAfter: UInt64 = 1_800_000_000
    /// Inter-node hops a signal may take (entry → home → host is 2; one more is allowed for a home
    /// node that hands over to a better-placed one).
    public var maxHops: UInt8 = 3
    /// How long (origin, id) pairs are remembered to drop duplicates; longer than any retry sequence.
    public var dedupWindow: UInt64 = 10_000_000_000
    /// How long a location learned from traffic (a signal's origin, a home node's answer) is used to
    /// send directly (1 hop) before asking a home node again.
    public var hintLifetime: UInt64 = 30_000_000_000
    /// How often expired records, remembered ids and hints are swept.
    public var sweepInterval: UInt64 = 1_000_000_000

    // MARK: Bounds on what other nodes can make this one hold (hostile members)

    /// Longest peer id or room name accepted in a signal or a location record, in UTF-8 bytes: protocol
    /// v1's ids and rooms are at most 64 bytes, and the hub never hands the mesh a longer one.
    public var maxNameBytes = 64
    /// Location records a home node holds in all, and from any one host. A record costs about 0.6 KiB
    /// (signature, key, body), so 500,000 bound the directory near 300 MiB; no single host, honest or
    /// not, can take more than half of it, so one hostile member cannot crowd out the others. An honest
    /// host publishes 1 + (rooms) records per peer, spread over the r home nodes of each key.
    public var maxDirectoryRecords = 500_000
    public var maxRecordsPerHost = 250_000
    /// Signals waiting for a hop ack here (the entry node's own and the legs a home node forwards). Each
    /// holds its payload (≤ one 64 KiB message), so 16,384 bound them near 1 GiB in the worst case and
    /// far less in practice; beyond it a forwarded signal is answered `notFound` and a local one
    /// `unavailable`.
    public var maxPendingSignals = 16_384
    /// (origin, id) pairs remembered for deduplication, and learned locations (hints): 65,536 each, more
    /// than `dedupWindow` (10 s) of traffic at several thousand signals per second. Beyond, new ones are
    /// not remembered until the next sweep.
    public var maxSeenSignals = 65_536
    public var maxHints = 65_536

    public init() {}
}
