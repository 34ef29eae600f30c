import ArgumentParser

/// `signal bench relay --pairs P --rate R|max --duration D --size B`.
struct BenchRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Pairs negotiate (offer, answer, candidates) in a loop: signals/s, latency, server CPU.",
        discussion: """
            Each pair joins its own room. A negotiation is an offer; the answer, the \
            answerer's candidates and its end-of-candidates (null), sent as soon as the \
            offer arrives; then the offerer's candidates and null once the answer \
            arrives: 2 + 2 × (candidates + 1) signals. Latency is measured per signal, \
            from the sender's write to the recipient's read.
            """
    )

    @OptionGroup var options: BenchOptions
    @OptionGroup var load: LoadOptions
    @Option(help: "Pairs of sessions.") var pairs = 100
    @Option(help: "Signals per second over all pairs, or max (each pair runs --inflight negotiations back to back).")
    var rate = BenchRate.max
    @Option(help: "Candidates each side sends per negotiation, besides the end-of-candidates null.")
    var candidates = 4
    @Option(
        help: """
            Seconds between each session's `received` (the highest seq it got), as the SDK sends one each \
            second; 0: never (the hub keeps every message for a resume, up to its bound).
            """
    )
    var confirmEvery = 0.0

    func validate() throws {
        try load.validateLoad()
        guard pairs >= 1 else { throw ValidationError("--pairs must be at least 1") }
        guard candidates >= 0 else { throw ValidationError("--candidates must not be negative") }
        guard confirmEvery >= 0 else { throw ValidationError("--confirm-every must not be negative") }
    }

    func run() async throws {
        let units = (0..<pairs).map { [2 * $0, 2 * $0 + 1] }
        let runner = BenchRunner(mode: "relay", options: options, units: units, sessions: true)
        let size = load.size
        let candidates = self.candidates
        let confirmEvery = self.confirmEvery
        var report = try await runner.run(
            load: .init(warmup: load.warmup, duration: load.duration, rate: rate.perSecond, inflight: load.inflight),
            settle: 0
        ) { loop, plan, units, runID, maxConnects in
            let driver = RelayDriver(
                loop: loop,
                plan: plan,
                units: units,
                runID: runID,
                size: size,
                candidates: candidates,
                maxConnectsInFlight: maxConnects
            )
            driver.confirmEvery = confirmEvery
            return driver
        }
        report.pairs = pairs
        report.rate = rate.description
        report.sizeBytes = size
        report.inflight = load.inflight
        try runner.emit(report)
    }
}
