import NIOCore

/// Bounds on links that have not authenticated yet (anyone who can reach the mesh port can open one),
/// and on what happens to a node that sends invalid data. Part of ``MeshRuntimeConfiguration`` (`links`).
///
/// Before the handshake a link reads no frame longer than ``LinkFrame/maxEncodedSize`` (161 bytes); a
/// longer declared length closes it at once, before any of it is buffered.
public struct MeshLinkLimits: Sendable, Hashable {
    /// Accepted links still in their handshake, in all. A handshake takes one round trip and two
    /// signature checks, so an honest mesh has a handful at a time (a node restarting dials every
    /// member; the members dial it back); 64 leaves room for a large mesh reconnecting at once and
    /// bounds what strangers can hold open: 64 sockets with at most 161 bytes of frame each (plus TLS
    /// state with `--mesh-tls-*`).
    public var maxUnauthenticatedLinks = 64
    /// Accepted links still in their handshake from one IP address. An honest node opens one link to
    /// each other node (two when both dial at once); 8 is generous for nodes behind one NAT address.
    public var maxUnauthenticatedLinksPerIP = 8
    /// How long a link may take to authenticate (TLS handshake included) before it is closed. 5 s is
    /// many round trips even between continents.
    public var handshakeTimeout = TimeAmount.seconds(5)
    /// How long a node that sent invalid data (a forged or unsigned signal, see ``MeshOffence``) is
    /// refused after its links are closed: 30 s, long enough for membership to declare it dead (2 s
    /// suspicion) so routing stops using it, short enough that an honest node hit by a bug comes back.
    public var banDuration = TimeAmount.seconds(30)
    /// Refused handshakes and dropped links are logged at most this many times per `logInterval`; the
    /// rest are counted in the metrics and summed up in the next line that is logged.
    public var logsPerInterval = 10
    public var logInterval = TimeAmount.seconds(60)

    public init() {}
}

/// A token bucket for log lines: at most `limit` per `interval`, and a count of those suppressed.
struct LogBudget: Sendable {
    let limit: Int
    let interval: Int64
    var windowStart: Int64 = .min
    var used = 0
    var suppressed = 0

    init(limit: Int, interval: TimeAmount) {
        self.limit = limit
        self.interval = max(1, interval.nanoseconds)
    }

    /// Whether to log now; when yes, also how many were suppressed since the last logged line.
    mutating func take(now: NIODeadline) -> (log: Bool, suppressed: Int) {
        let time = Int64(truncatingIfNeeded: now.uptimeNanoseconds)
        if windowStart == .min || time - windowStart >= interval {
            windowStart = time
            used = 0
        }
        guard used < limit else {
            suppressed += 1
            return (false, 0)
        }
        used += 1
        defer { suppressed = 0 }
        return (true, suppressed)
    }
}
