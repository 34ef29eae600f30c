import ArgumentParser

/// `signal bench echo`: the transport ceiling.
struct BenchEchoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo",
        abstract: "Echo round trips against an echo endpoint: the WebSocket layer's ceiling, no signaling logic.",
        discussion: """
            Point --url at an echo endpoint: the hub's /echo (signal serve --echo), or \
            a reference echo server. signals_per_sec counts echoed messages; latency is \
            the round trip.
            """
    )

    @OptionGroup var options: BenchOptions
    @OptionGroup var load: LoadOptions
    @Option(help: "Connections.") var connections = 100
    @Option(help: "Messages per second over all connections, or max (each keeps --inflight messages under way).")
    var rate = BenchRate.max

    func validate() throws {
        try load.validateLoad()
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
    }

    func run() async throws {
        let units = (0..<connections).map { [$0] }
        let runner = BenchRunner(mode: "echo", options: options, units: units, sessions: false)
        let size = load.size
        var report = try await runner.run(
            load: .init(warmup: load.warmup, duration: load.duration, rate: rate.perSecond, inflight: load.inflight),
            settle: 0
        ) { loop, plan, units, _, maxConnects in
            EchoDriver(loop: loop, plan: plan, units: units, size: size, maxConnectsInFlight: maxConnects)
        }
        report.rate = rate.description
        report.sizeBytes = size
        report.inflight = load.inflight
        try runner.emit(report)
    }
}
