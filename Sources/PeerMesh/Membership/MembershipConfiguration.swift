/// Timing and size limits of SWIM membership. All times are nanoseconds on the clock the driver passes
/// in (`now`); the state machine never reads a clock itself.
public struct MembershipConfiguration: Sendable {
    /// How often this node probes one member. 1 s, as in SWIM and memberlist's LAN profile: with n
    /// nodes each probing once per interval, a dead node is probed by someone about every 1/n s.
    public var probeInterval: UInt64 = 1_000_000_000
    /// How long to wait for a direct ack before asking others to probe (ping-req). 500 ms covers a
    /// 200 ms round trip (100 ms links) with room for jitter.
    public var probeTimeout: UInt64 = 500_000_000
    /// How long after the probe was sent an indirect ack may still arrive; after that the target is
    /// suspected. Kept below `probeInterval` so one probe ends before the next begins.
    public var indirectProbeTimeout: UInt64 = 950_000_000
    /// Members asked to probe on our behalf (SWIM's k). 3 makes a false suspicion under 5% loss rare.
    public var indirectProbes: Int = 3
    /// How long a suspected member has to refute before it is declared dead. 2 s gives a refutation
    /// several round trips to arrive and keeps detection within the 3 s median goal.
    public var suspicionTimeout: UInt64 = 2_000_000_000
    /// How often pending updates are pushed to `gossipFanout` random members (only while there are
    /// updates to spread, so a quiet mesh pays nothing for it).
    public var gossipInterval: UInt64 = 200_000_000
    /// Members a gossip round goes to.
    public var gossipFanout: Int = 3
    /// Most updates piggybacked on one message, which bounds every membership message's size.
    public var maxPiggyback: Int = 8
    /// λ in "each update is sent λ·⌈log₂(n+1)⌉ times": 3 spreads an update to every node with high
    /// probability, as in SWIM's analysis.
    public var retransmitMultiplier: Int = 3
    /// How long dead members are remembered (and pinged now and then, so a healed partition merges).
    public var deadRetention: UInt64 = 120_000_000_000
    /// How often a joining node retries its seeds until one answers.
    public var joinRetryInterval: UInt64 = 1_000_000_000

    /// Most members (live and remembered dead) one node keeps. Beyond it, the member dead the longest is
    /// forgotten to make room, and if none is dead the update is refused: a hostile member gossiping
    /// thousands of made-up nodes (each with its own fresh key) cannot grow the table without bound.
    /// 1,024 is far above the meshes this is built for (N ≤ 256).
    public var maxMembers: Int = 1024
    /// Most ping-req relays pending at once (each lives `indirectProbeTimeout`). A mesh of n members sends
    /// about k = 3 per probe interval; 256 leaves room for large meshes and bounds a flood of ping-reqs.
    public var maxRelays: Int = 256

    public init() {}
}
