import Foundation
import NIOCore
import PeerMesh

/// The harness's process backend: each scenario's script runs twice in wall-clock time, through one
/// plain `signal serve` (the hub) and through N `signal serve --mesh-listen …` nodes (the mesh), with
/// the workload's peers in this process; the two records go through the same figures and renderers
/// as the simulation's.
enum ProcessHarness {
    /// Scenarios that need what one machine without root does not have, and why.
    static let unsupported: [Scenario: String] = [
        .partition:
            "splitting loopback needs root (iptables/nftables, or a network namespace per node); SIGSTOP of half "
            + "the nodes would freeze them, which is not a partition (the frozen side detects nothing)",
        .loss1: "dropping 1% of packets on loopback needs root (tc qdisc netem)",
        .loss5: "dropping 5% of packets on loopback needs root (tc qdisc netem)",
    ]

    static func run(
        _ scenarios: [Scenario],
        options: HarnessOptions,
        logDirectory: String?,
        group: any EventLoopGroup
    ) async throws -> HarnessReport {
        var report = HarnessReport(options: options)
        report.backend = "process"
        report.setup =
            "Processes: \(options.nodes) `signal serve --mesh-listen` nodes (mesh) and one plain `signal serve` (hub) on "
            + "loopback, one event-loop thread each; \(options.peersPerNode) peers per node in pairs on different nodes "
            + "(protocol-v1 clients in the harness), \(ReportRenderer.format(options.signalsPerSecondPerNode, 0)) signals/s "
            + "per node for \(ReportRenderer.format(options.workloadSeconds, 0)) s, \(options.payloadBytes)-byte signals; "
            + "latency is send → receive at the peers (both WebSocket legs included); seed \(options.seed)."
        let skipped = scenarios.filter { unsupported[$0] != nil }
        if !skipped.isEmpty {
            report.skipped = Dictionary(uniqueKeysWithValues: skipped.map { ($0.rawValue, unsupported[$0]!) })
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "signal-mesh-harness-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        if let logDirectory {
            try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        }
        let settings = ProcessRun.Settings(directory: directory.path, logDirectory: logDirectory)
        for scenario in scenarios where unsupported[scenario] == nil {
            let started = DispatchTime.now().uptimeNanoseconds
            let script = SimulationScript(scenario: scenario, options: options)
            let hub = try await ProcessRun(script: script, mode: .hub, settings: settings, group: group).run()
            let mesh = try await ProcessRun(script: script, mode: .mesh, settings: settings, group: group).run()
            let wall = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            var result = Harness.report(script: script, hub: hub.record, mesh: mesh.record, wallSeconds: wall)
            // Hops are counted by the nodes (a peer cannot see them): the mesh's deliveries by hops, and
            // the rest of the delivered signals never left their node. The hub is one process: 0 hops.
            var hops = mesh.meshHops
            let local = result.mesh.delivered - hops.values.reduce(0, +)
            if local > 0 { hops["0"] = local }
            result.mesh.hops = hops
            var notes: [String] = []
            if let seconds = mesh.convergenceSeconds {
                notes.append(
                    "mesh of \(options.nodes) processes converged \(ReportRenderer.format(seconds)) s after the first started"
                )
            }
            for (name, outcome) in [("hub", hub), ("mesh", mesh)] where outcome.connectFailures > 0 {
                notes.append(
                    "\(name): \(outcome.connectFailures) peer connections failed (their signals count as lost)"
                )
            }
            for (name, outcome) in [("hub", hub), ("mesh", mesh)] where outcome.errors > 0 {
                notes.append(
                    "\(name): \(outcome.errors) errors other than peer-unavailable, first: `\(outcome.firstError ?? "")`"
                )
            }
            result.notes = notes.isEmpty ? nil : notes
            FileHandle.standardError.write(
                Data(
                    ("\(scenario.rawValue): mesh \(result.mesh.delivered)/\(result.mesh.eligible), "
                        + "hub \(result.hub.delivered)/\(result.hub.eligible), \(ReportRenderer.format(wall)) s\n").utf8
                )
            )
            report.scenarios.append(result)
        }
        return report
    }
}
