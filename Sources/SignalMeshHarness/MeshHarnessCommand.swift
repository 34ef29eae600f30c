import ArgumentParser
import Foundation
import MeshHarness
import NIOPosix

/// `signal-mesh-harness --backend sim|process …`: the harness that measures the mesh against the hub.
/// It is an executable of its own, so neither the libraries nor the `signal` server contain the
/// simulator, the process runner or the network-namespace code.
@main
struct MeshHarnessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal-mesh-harness",
        abstract: "Run one workload through the hub and through the mesh, side by side, and report both.",
        discussion: """
            The sim backend is a deterministic discrete-event simulation: a virtual clock, a seeded \
            RNG, per-link delay, jitter and loss, and N nodes each running the real PeerMesh state \
            machines. The hub baseline is a star over the same links (sender's node → hub → \
            recipient's node). The same seed gives the same report.

            The process backend runs the same script in real time through real signal processes on \
            loopback (the `signal` executable beside this one, or --signal PATH): one plain `signal serve` (the hub) and N `signal serve --mesh-listen` nodes (the \
            mesh), one after the other, with the peers in this process; traffic, hops and failure \
            detection are read from each node's /metrics. It runs steady, kill-node, kill-home and \
            churn on loopback, and partition with each node and the hub in its own network namespace \
            (root and iproute2: veth pairs to one bridge, the split made of blackhole routes); loss \
            needs tc netem and is skipped.

            Scenarios: steady, kill-node, kill-home, partition, loss (1% and 5%), churn, or all.
            """
    )

    @Option(help: "Backend: sim (deterministic simulation) or process (real signal processes on loopback).")
    var backend = "sim"
    @Option(help: "Mesh nodes (default: 64 for sim, 8 for process).") var nodes: Int?
    @Option(help: "Scenario name, 'loss' (1% and 5%) or 'all'.") var scenario = "all"
    @Option(help: "Seed of every random choice.") var seed: UInt64 = 1
    @Option(help: "One-way inter-node link delay in milliseconds (sim only).") var linkDelayMs = 100.0
    @Option(help: "Peers per node.") var peersPerNode = 4
    @Option(help: "Signals per second per node.") var rate = 8.0
    @Option(help: "Seconds of workload per scenario (default: 30 for sim, 20 for process).") var duration: Double?
    @Option(help: "Write the report as JSON to this file.") var json: String?
    @Option(help: "Write the charts (latency CDF, delivery through the fault) as SVG to this file.") var svg: String?
    @Option(help: "Write the Markdown table to this file (it is printed to stdout as well).") var markdown: String?
    @Option(help: "process: keep each signal process's log in this directory.") var logDir: String?
    @Option(
        help:
            "process: auto (network namespaces for partition only), loopback (never), netns (every scenario; root)."
    )
    var isolation = "auto"
    @Option(help: "process: the signal executable to run (default: the one beside this executable).")
    var signal: String?

    func validate() throws {
        guard backend == "sim" || backend == "process" else {
            throw ValidationError("--backend \(backend) is unknown; use sim or process")
        }
        let nodes = self.nodes ?? (backend == "sim" ? 64 : 8)
        if backend == "sim" {
            guard nodes >= 4, nodes <= 1024 else { throw ValidationError("--nodes must be between 4 and 1024") }
        } else {
            guard nodes >= 4, nodes <= 32 else {
                throw ValidationError("--nodes must be between 4 and 32 with --backend process (one process per node)")
            }
        }
        guard let scenarios = Scenario.parse(scenario) else {
            throw ValidationError(
                "unknown --scenario \(scenario); use \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")), loss or all"
            )
        }
        guard let isolation = ProcessHarness.Isolation(rawValue: isolation) else {
            throw ValidationError("--isolation \(self.isolation) is unknown; use auto, loopback or netns")
        }
        if backend == "process", isolation == .netns, let problem = netnsProblem(isolation, scenarios) {
            throw ValidationError("--isolation netns: \(problem)")
        }
        let unsupported = ProcessHarness.unsupported(
            isolation: isolation,
            netnsProblem: netnsProblem(isolation, scenarios)
        )
        if backend == "process", scenarios.allSatisfy({ unsupported[$0] != nil }) {
            let reasons = scenarios.map { "\($0.rawValue): \(unsupported[$0]!)" }.joined(separator: "; ")
            throw ValidationError(
                "--scenario \(scenario) cannot run on the process backend: \(reasons). Use --backend sim."
            )
        }
        guard linkDelayMs >= 1, rate > 0, (duration ?? 30) >= 6, peersPerNode >= 2 else {
            throw ValidationError("--link-delay-ms ≥ 1, --rate > 0, --duration ≥ 6 and --peers-per-node ≥ 2")
        }
    }

    /// Why network namespaces cannot be used, when the run would use them (checked once).
    private func netnsProblem(_ isolation: ProcessHarness.Isolation, _ scenarios: [Scenario]) -> String? {
        guard backend == "process", isolation == .netns || (isolation == .auto && scenarios.contains(.partition))
        else { return nil }
        return Self.netnsCheck.reason
    }

    private static let netnsCheck = NetnsCheck()

    func run() async throws {
        var options = HarnessOptions()
        options.nodes = nodes ?? (backend == "sim" ? 64 : 8)
        options.seed = seed
        options.linkDelayMs = backend == "sim" ? linkDelayMs : 0
        options.peersPerNode = peersPerNode
        options.signalsPerSecondPerNode = rate
        options.workloadSeconds = duration ?? (backend == "sim" ? 30 : 20)
        let scenarios = Scenario.parse(scenario)!
        let report: HarnessReport
        if backend == "process" {
            report = try await ProcessHarness.run(
                scenarios,
                options: options,
                signal: signal ?? Self.siblingSignal(),
                isolation: ProcessHarness.Isolation(rawValue: isolation) ?? .auto,
                netnsProblem: netnsProblem(ProcessHarness.Isolation(rawValue: isolation) ?? .auto, scenarios),
                logDirectory: logDir,
                group: MultiThreadedEventLoopGroup.singleton
            )
        } else {
            var simulated = HarnessReport(options: options)
            for scenario in scenarios {
                let result = Harness.run(scenario, options: options) { DispatchTime.now().uptimeNanoseconds }
                FileHandle.standardError.write(
                    Data(
                        "\(scenario.rawValue): mesh \(result.mesh.delivered)/\(result.mesh.eligible), hub \(result.hub.delivered)/\(result.hub.eligible), \(String(format: "%.1f", result.wallSeconds)) s\n"
                            .utf8
                    )
                )
                simulated.scenarios.append(result)
            }
            report = simulated
        }
        let table = ReportRenderer.markdown(report)
        print(table, terminator: "")
        if let markdown { try table.write(toFile: markdown, atomically: true, encoding: .utf8) }
        if let json { try ReportRenderer.json(report).write(toFile: json, atomically: true, encoding: .utf8) }
        if let svg { try ReportRenderer.svg(report).write(toFile: svg, atomically: true, encoding: .utf8) }
    }

    /// The `signal` executable in this executable's directory (a build puts both there).
    static func siblingSignal() -> String {
        #if os(Linux)
            let this =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
        #else
            let this = Bundle.main.executablePath ?? CommandLine.arguments[0]
        #endif
        return URL(fileURLWithPath: this).deletingLastPathComponent().appendingPathComponent("signal").path
    }
}
