import PeerMesh

/// Inter-node messages and bytes, by kind.
public struct TrafficCounters: Sendable, Codable {
    /// Signal transmissions between nodes (retries included).
    public var signalMessages = 0
    public var signalBytes = 0
    /// Hop acks (and `undeliverable` notices).
    public var ackMessages = 0
    public var ackBytes = 0
    /// Membership and record traffic.
    public var controlMessages = 0
    public var controlBytes = 0

    public init() {}
}

/// One node's view changing about another: when it suspected or declared it dead.
public struct DetectionEvent: Sendable {
    public enum Kind: Sendable { case suspected, failed, joined }
    public var observer: Int
    public var target: Int
    public var kind: Kind
    public var time: UInt64

    public init(observer: Int, target: Int, kind: Kind, time: UInt64) {
        self.observer = observer
        self.target = target
        self.kind = kind
        self.time = time
    }
}

/// What happened to the workload's signals in one run (simulated, or observed from outside real
/// processes by the process harness, with times on the script's clock).
public struct RunRecord: Sendable {
    /// Per planned signal: when it was delivered (first delivery), nil if never.
    public var deliveredAt: [UInt64?]
    /// Per planned signal: inter-node hops of the first delivery.
    public var hops: [UInt8]
    /// Per planned signal: when the sender was told `peer-unavailable`.
    public var unavailableAt: [UInt64?]
    /// Deliveries after the first of the same signal (must stay 0).
    public var duplicates = 0
    /// Traffic sent inside the measurement window.
    public var traffic = TrafficCounters()
    public var detections: [DetectionEvent] = []
    /// Live nodes integrated over the measurement window (node·seconds), for per-node rates.
    public var nodeSeconds: Double = 0
    /// Events processed (a measure of simulation work).
    public var events = 0

    public init(signals: Int) {
        deliveredAt = Array(repeating: nil, count: signals)
        hops = Array(repeating: 0, count: signals)
        unavailableAt = Array(repeating: nil, count: signals)
    }
}
