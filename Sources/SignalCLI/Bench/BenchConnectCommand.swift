import ArgumentParser

/// `signal bench connect --connections N`.
struct BenchConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Open and hold N sessions joined to rooms: connect rate, server memory per connection.",
        discussion: """
            Sessions connect (at most --connect-concurrency handshakes at once), get \
            their welcome and join rooms of --room-size. Once all are held and --settle \
            seconds have passed, the server's resident memory is read again: \
            server_rss_bytes_per_connection is its growth since the start of the run \
            divided by the sessions held (start the server fresh for this figure: an \
            allocator keeps what earlier runs freed). Then, for --duration seconds, \
            probe pairs (the first two members of --probe-pairs rooms spread over all) \
            exchange messages at --probe-rate: latency_ms is relay latency with every \
            session connected.

            Like the browser SDK, which reports the highest seq it processed every \
            second, each session confirms the presence events it got (`received`) once \
            all are held, so the hub can let go of them; --no-confirm keeps them \
            unconfirmed (a client that never confirms: the hub keeps them for resume).

            With --hold-until-signal the sessions are held (and probed) until SIGINT or \
            SIGTERM instead of for --duration seconds; then the summary is printed as \
            usual. Several generators started side by side (one per few thousand \
            sessions, each under its open-files limit) are held together this way and \
            stopped when the whole count is in place.

            With --websocket-only the connections are bare WebSockets (no welcome, no \
            rooms, no probe): the memory per connection of an echo endpoint.
            """
    )

    @OptionGroup var options: BenchOptions
    @Option(help: "Sessions to open and hold.") var connections = 1000
    @Option(help: "Sessions per room.") var roomSize = 4
    @Option(help: "Seconds to hold the sessions (the probe runs meanwhile).") var duration = 5.0
    @Option(help: "Seconds to wait after connecting before reading the server's memory.") var settle = 1.0
    @Option(help: "Probe messages per second while holding (0: none).") var probeRate = 1000.0
    @Option(help: "Probe pairs, spread evenly over the rooms.") var probePairs = 100
    @Option(help: "Bytes per probe message.") var size = 256
    @Flag(help: "Hold until SIGINT or SIGTERM (then report as usual) instead of --duration seconds.")
    var holdUntilSignal = false
    @Flag(help: "Bare WebSocket connections: no welcome expected, no rooms, no probe.") var websocketOnly = false
    @Flag(
        inversion: .prefixedNo,
        help: "Confirm the presence events received (`received`), as the SDK does each second."
    ) var confirm = true

    func validate() throws {
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard roomSize >= 1 else { throw ValidationError("--room-size must be at least 1") }
        guard duration >= 0, settle >= 0, probeRate >= 0 else {
            throw ValidationError("times and rates must not be negative")
        }
        guard probePairs >= 0 else { throw ValidationError("--probe-pairs must not be negative") }
    }

    func run() async throws {
        let roomSize = self.roomSize
        let total = connections
        let units = stride(from: 0, to: total, by: roomSize).map { Array($0..<min($0 + roomSize, total)) }
        let probeStride = max(1, units.count / max(1, probePairs))
        let probePairs = self.probePairs
        let size = self.size
        let confirm = self.confirm
        let runner = BenchRunner(mode: "connect", options: options, units: units, sessions: !websocketOnly)
        let duration = holdUntilSignal ? Double.infinity : self.duration
        var stopRequested: (@Sendable () -> Bool)? = nil
        if holdUntilSignal {
            let stop = StopSignal()
            stopRequested = { stop.requested }
        }
        let probing = !websocketOnly && probeRate > 0 && probePairs > 0 && roomSize >= 2 && duration > 0
        var report = try await runner.run(
            load: duration > 0
                ? .init(
                    warmup: 0,
                    duration: duration,
                    rate: probing ? probeRate : nil,
                    inflight: 1,
                    stopRequested: stopRequested
                ) : nil,
            settle: max(settle, 0.001)
        ) { loop, plan, units, runID, maxConnects in
            ConnectDriver(
                loop: loop,
                plan: plan,
                units: units,
                runID: runID,
                roomSize: roomSize,
                size: size,
                confirm: confirm,
                probeStride: probeStride,
                probePairs: probePairs,
                maxConnectsInFlight: maxConnects
            )
        }
        report.roomSize = websocketOnly ? nil : roomSize
        report.confirmed = websocketOnly ? nil : confirm
        report.rooms = websocketOnly ? nil : units.count
        if probing {
            report.rate = BenchRate.perSecond(probeRate).description
            report.sizeBytes = size
        }
        try runner.emit(report)
    }
}
