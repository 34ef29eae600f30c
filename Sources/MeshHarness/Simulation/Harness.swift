import PeerMesh

/// Runs scenarios through the hub baseline and the mesh on the same script, and reports both.
public enum Harness {
    /// Runs one scenario. `clock` returns a monotonic time in nanoseconds, only to report how long the
    /// simulations took (the simulations themselves never read it).
    public static func run(_ scenario: Scenario, options: HarnessOptions, clock: () -> UInt64) -> ScenarioReport {
        let started = clock()
        let script = SimulationScript(scenario: scenario, options: options)
        let hubRecord = HubBackend.run(script)
        let meshRecord = MeshBackend.run(script)
        return report(script: script, hub: hubRecord, mesh: meshRecord, wallSeconds: Double(clock() - started) / 1e9)
    }

    /// The report of one scenario from the records of its two runs — simulated, or observed from real
    /// processes (the process backend executes the same `script` in wall-clock time).
    public static func report(
        script: SimulationScript,
        hub hubRecord: RunRecord,
        mesh meshRecord: RunRecord,
        wallSeconds: Double
    )
        -> ScenarioReport
    {
        let options = script.options
        let hub = FigureCalculator.figures(script: script, record: hubRecord, isMesh: false)
        let mesh = FigureCalculator.figures(script: script, record: meshRecord, isMesh: true)
        func ratio(_ a: Double, _ b: Double) -> Double { b > 0 ? a / b : 0 }
        let start = Double(script.window.start)
        return ScenarioReport(
            scenario: script.scenario.rawValue,
            nodes: options.nodes,
            seed: options.seed,
            linkDelayMs: options.linkDelayMs,
            lossPercent: script.scenario.loss * 100,
            faultAtSeconds: script.faultAt.map { (Double($0) - start) / 1e9 },
            healAtSeconds: script.healAt.map { (Double($0) - start) / 1e9 },
            hub: hub,
            mesh: mesh,
            stretch: [
                "p50": ratio(mesh.latencyMs.p50, hub.latencyMs.p50),
                "p95": ratio(mesh.latencyMs.p95, hub.latencyMs.p95),
                "p99": ratio(mesh.latencyMs.p99, hub.latencyMs.p99),
            ],
            wallSeconds: wallSeconds,
            notes: nil
        )
    }
}
