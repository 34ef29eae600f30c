import PeerMesh

/// The figures of one backend (hub or mesh) in one scenario.
public struct BackendFigures: Sendable, Codable {
    public var signalsSent = 0
    /// Signals that could be delivered (both peers up; see `SimulationScript`).
    public var eligible = 0
    public var delivered = 0
    public var deliveryRatio = 0.0
    /// Eligible signals whose sender was told `peer-unavailable` and that were never delivered.
    public var reportedUnavailable = 0
    /// Eligible signals neither delivered nor answered.
    public var silentlyLost = 0
    public var duplicates = 0
    public var latencyMs = Percentiles()
    /// Delivered signals by inter-node hops ("0", "1", "2", "3").
    public var hops: [String: Int] = [:]
    /// Signal transmissions between nodes (retries included) per delivered signal.
    public var signalMessagesPerDelivered = 0.0
    /// Hop acks (and undeliverable notices) per delivered signal, counted separately.
    public var ackMessagesPerDelivered = 0.0
    /// Bytes of signal transmissions and acks per delivered signal.
    public var bytesPerDelivered = 0.0
    /// Membership, record and registration traffic, bytes per second per live node.
    public var controlBytesPerSecondPerNode = 0.0
    /// Failure detection: from the fault to the first / to the last live node declaring the failed node
    /// dead, median and max over failed nodes, milliseconds.
    public var detection: Detection?
    /// Seconds from the fault (or the heal) until delivery stays ≥ 99.9% in every 500 ms window.
    public var recoverySeconds: Double?
    /// Delivery ratio per 500 ms of send time: (seconds since workload start, ratio).
    public var timeline: [[Double]] = []
    /// Latency CDF points (milliseconds, fraction).
    public var cdf: [[Double]] = []
    /// Simulation events processed.
    public var events = 0

    public struct Percentiles: Sendable, Codable {
        public var p50 = 0.0
        public var p95 = 0.0
        public var p99 = 0.0
        public var max = 0.0
    }

    public struct Detection: Sendable, Codable {
        /// From the fault to the first live node suspecting the failed node (routing avoids suspects).
        public var suspectMedianMs: Double
        public var suspectMaxMs: Double
        public var firstMedianMs: Double
        public var firstMaxMs: Double
        public var allMedianMs: Double
        public var allMaxMs: Double
        public var failures: Int
    }
}

/// One scenario, both backends.
public struct ScenarioReport: Sendable, Codable {
    public var scenario: String
    public var nodes: Int
    public var seed: UInt64
    public var linkDelayMs: Double
    public var lossPercent: Double
    public var faultAtSeconds: Double?
    public var healAtSeconds: Double?
    public var hub: BackendFigures
    public var mesh: BackendFigures
    /// Mesh latency ÷ hub latency at p50, p95, p99.
    public var stretch: [String: Double]
    /// Wall-clock seconds the two runs took.
    public var wallSeconds: Double
    /// What a reader of the figures should know about this scenario's run (the process backend says
    /// how it measured and what went wrong, e.g. peers that could not connect).
    public var notes: [String]?
}

/// Everything one `signal-mesh-harness` run measured.
public struct HarnessReport: Sendable, Codable {
    /// `sim` (the deterministic simulation) or `process` (real `signal` processes on loopback).
    public var backend = "sim"
    public var options: HarnessOptions
    public var scenarios: [ScenarioReport] = []
    /// One line describing the setup, printed above the table instead of the simulation's (set by the
    /// process backend).
    public var setup: String?
    /// Scenarios asked for that this backend cannot run, with the reason.
    public var skipped: [String: String]?

    public init(options: HarnessOptions) {
        self.options = options
    }
}
