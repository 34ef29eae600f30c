import ArgumentParser

/// `signal bench presence --pairs P --rate R|max --duration D`.
struct BenchPresenceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence",
        abstract: "A mover joins and leaves a watcher's room in turn: presence latency (join → peer-joined).",
        discussion: """
            Each pair is a watcher, which joins the pair's room and stays, and a mover, \
            which joins the room and leaves it again in turn. latency_ms runs from the \
            mover's join to the watcher's peer-joined (with --leaves, also from its \
            leave to the watcher's peer-left). A mover's next move waits until the \
            watcher saw the previous one. With two or more --url the watcher and the \
            mover of each pair are on different nodes: the presence path across a \
            cluster. --rate counts moves (joins and leaves) per second over all pairs.
            """
    )

    @OptionGroup var options: BenchOptions
    @Option(help: "Pairs of sessions (a watcher and a mover each).") var pairs = 10
    @Option(
        help: "Moves (joins and leaves) per second over all pairs, or max (a pair moves once its last move was seen)."
    )
    var rate = BenchRate.perSecond(100)
    @Option(help: "Seconds to measure.") var duration = 10.0
    @Option(help: "Seconds of moves before measuring (not counted).") var warmup = 1.0
    @Flag(help: "Measure leaves (leave → peer-left) as well as joins.") var leaves = false

    func validate() throws {
        guard pairs >= 1 else { throw ValidationError("--pairs must be at least 1") }
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
    }

    func run() async throws {
        let units = (0..<pairs).map { [2 * $0, 2 * $0 + 1] }
        let runner = BenchRunner(mode: "presence", options: options, units: units, sessions: true)
        let leaves = self.leaves
        var report = try await runner.run(
            load: .init(warmup: warmup, duration: duration, rate: rate.perSecond, inflight: 1),
            settle: 0
        ) { loop, plan, units, runID, maxConnects in
            PresenceDriver(
                loop: loop,
                plan: plan,
                units: units,
                runID: runID,
                measureLeaves: leaves,
                maxConnectsInFlight: maxConnects
            )
        }
        report.pairs = pairs
        report.rate = rate.description
        try runner.emit(report)
    }
}
