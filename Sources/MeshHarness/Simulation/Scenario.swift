import PeerMesh

/// A harness scenario: what happens to the network while the workload runs.
public enum Scenario: String, CaseIterable, Sendable, Codable {
    /// No faults.
    case steady
    /// kill -9 of a node hosting peers (not a seed).
    case killNode = "kill-node"
    /// kill -9 of the node that is a home node of the most workload peers.
    case killHome = "kill-home"
    /// The nodes split into two halves, then heal.
    case partition
    /// 1% of inter-node messages lost.
    case loss1 = "loss-1"
    /// 5% of inter-node messages lost.
    case loss5 = "loss-5"
    /// Nodes and peers leave and join continuously.
    case churn

    /// Scenario names as typed on the command line: `loss` means both loss rates, `all` every scenario.
    public static func parse(_ name: String) -> [Scenario]? {
        switch name {
        case "all": allCases
        case "loss": [.loss1, .loss5]
        default: Scenario(rawValue: name).map { [$0] }
        }
    }

    var loss: Double {
        switch self {
        case .loss1: 0.01
        case .loss5: 0.05
        default: 0
        }
    }
}

/// Parameters of one harness run.
public struct HarnessOptions: Sendable, Codable {
    /// Mesh nodes (and hub edge nodes).
    public var nodes = 64
    public var seed: UInt64 = 1
    /// One-way inter-node delay, milliseconds.
    public var linkDelayMs = 100.0
    /// Uniform extra delay, as a fraction of the link delay.
    public var jitterFraction = 0.1
    /// Peers connected per node (they form pairs on different nodes).
    public var peersPerNode = 4
    /// Signals per second per node, over the whole mesh.
    public var signalsPerSecondPerNode = 8.0
    /// Seconds of workload (the fault comes at a third, a heal at two thirds).
    public var workloadSeconds = 30.0
    /// Bytes of each signal's payload (a typical SDP-candidate-sized message).
    public var payloadBytes = 300

    public init() {}

    static let second: UInt64 = 1_000_000_000

    var delay: UInt64 { UInt64(linkDelayMs * 1_000_000) }
    var workloadStart: UInt64 { 5 * Self.second }
    var workloadEnd: UInt64 { workloadStart + UInt64(workloadSeconds * 1e9) }
    var faultAt: UInt64 { workloadStart + UInt64(workloadSeconds * 1e9 / 3) }
    var healAt: UInt64 { workloadStart + UInt64(workloadSeconds * 2e9 / 3) }
    var runEnd: UInt64 { workloadEnd + 3 * Self.second }
}
