import ArgumentParser

/// `signal bench fanout --room-size M`.
struct BenchFanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "Room broadcast: members take turns sending a message to their room; deliveries/s and latency.",
        discussion: """
            signals_per_sec counts deliveries (each broadcast reaches room size − 1 \
            members); broadcasts_per_sec counts the messages sent. With --rate max a \
            room starts its next broadcast once the previous one reached every member \
            (--inflight broadcasts under way per room).
            """
    )

    @OptionGroup var options: BenchOptions
    @OptionGroup var load: LoadOptions
    @Option(help: "Sessions per room.") var roomSize = 50
    @Option(help: "Rooms.") var rooms = 1
    @Option(help: "Broadcasts per second over all rooms, or max.") var rate = BenchRate.max

    func validate() throws {
        try load.validateLoad()
        guard roomSize >= 2 else { throw ValidationError("--room-size must be at least 2") }
        guard rooms >= 1 else { throw ValidationError("--rooms must be at least 1") }
    }

    func run() async throws {
        let roomSize = self.roomSize
        let units = (0..<rooms).map { Array(($0 * roomSize)..<(($0 + 1) * roomSize)) }
        let runner = BenchRunner(mode: "fanout", options: options, units: units, sessions: true)
        let size = load.size
        var report = try await runner.run(
            load: .init(warmup: load.warmup, duration: load.duration, rate: rate.perSecond, inflight: load.inflight),
            settle: 0
        ) { loop, plan, units, runID, maxConnects in
            FanoutDriver(
                loop: loop,
                plan: plan,
                units: units,
                runID: runID,
                roomSize: roomSize,
                size: size,
                maxConnectsInFlight: maxConnects
            )
        }
        report.rooms = rooms
        report.roomSize = roomSize
        report.rate = rate.description
        report.sizeBytes = size
        report.inflight = load.inflight
        if report.durationS > 0 { report.broadcastsPerSec = (Double(report.sent) / report.durationS).rounded() }
        try runner.emit(report)
    }
}
