import Foundation
import NIOCore
import PeerMesh

/// The harness's process backend: each scenario's script runs twice in wall-clock time, through one
/// plain `signal serve` (the hub) and through N `signal serve --mesh-listen …` nodes (the mesh), with
/// the workload's peers in this process; the two records go through the same figures and renderers
/// as the simulation's.
public enum ProcessHarness {
    /// Where the processes run: `auto` puts them in network namespaces for `partition` only, `loopback`
    /// never, `netns` for every scenario.
    public enum Isolation: String, CaseIterable, Sendable {
        case auto
        case loopback
        case netns
    }

    /// Scenarios this backend cannot run, and why: `partition` needs a network namespace per node (root
    /// and `ip netns`; `netnsProblem` says why they do not work, nil when they do); `loss` needs a
    /// packet-dropping qdisc, which is not faked.
    public static func unsupported(isolation: Isolation, netnsProblem: String?) -> [Scenario: String] {
        func loss(_ percent: Int) -> String {
            "dropping \(percent)% of packets needs tc netem (with namespaces: `tc qdisc add dev <veth> root netem "
                + "loss \(percent)%` on each node's veth), which this harness does not fake and which kernels built "
                + "without sch_netem lack"
        }
        var out: [Scenario: String] = [.loss1: loss(1), .loss5: loss(5)]
        if isolation == .loopback {
            out[.partition] = "loopback cannot be split: use --isolation auto or netns (root, `ip netns`)"
        } else if let netnsProblem {
            out[.partition] = netnsProblem
        }
        return out
    }

    /// - Parameter signal: the `signal` executable the hub and the mesh nodes run.
    public static func run(
        _ scenarios: [Scenario],
        options: HarnessOptions,
        signal: String,
        isolation: Isolation = .auto,
        netnsProblem: String? = nil,
        logDirectory: String?,
        group: any EventLoopGroup
    ) async throws -> HarnessReport {
        let unsupported = Self.unsupported(isolation: isolation, netnsProblem: netnsProblem)
        var report = HarnessReport(options: options)
        report.backend = "process"
        report.setup =
            "Processes: \(options.nodes) `signal serve --mesh-listen` nodes (mesh) and one plain `signal serve` (hub) on "
            + "loopback, one event-loop thread each; \(options.peersPerNode) peers per node in pairs on different nodes "
            + "(protocol-v1 clients in the harness), \(ReportRenderer.format(options.signalsPerSecondPerNode, 0)) signals/s "
            + "per node for \(ReportRenderer.format(options.workloadSeconds, 0)) s, \(options.payloadBytes)-byte signals; "
            + "latency is send → receive at the peers (both WebSocket legs included); seed \(options.seed)."
            + (isolation == .loopback
                ? ""
                : " \(isolation == .netns ? "Every scenario" : "partition") runs with each node (and the hub) in its "
                    + "own network namespace, joined by veth pairs to one bridge; the peers stay outside and reach "
                    + "each node's address; the split is blackhole routes between the sides (the hub, on node 0's "
                    + "side, is cut off from the peers of the other side's nodes).")
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
        let settings = ProcessRun.Settings(signal: signal, directory: directory.path, logDirectory: logDirectory)
        for scenario in scenarios where unsupported[scenario] == nil {
            let started = DispatchTime.now().uptimeNanoseconds
            let script = SimulationScript(scenario: scenario, options: options)
            var settings = settings
            let network =
                isolation == .netns || (isolation == .auto && scenario == .partition)
                ? try NetnsNetwork.create(nodes: script.totalNodes) : nil
            settings.network = network
            let interrupt = network.map { InterruptCleanup(network: $0, directory: directory.path) }
            defer {
                network?.destroy()
                interrupt?.cancel()
            }
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
            if let network {
                notes.append(
                    "network namespaces on 10.77.\(network.subnet).0/24: node i at .\(10)+i, the hub at .2 "
                        + "(.\(100)+i for the peers of node i)"
                )
            }
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
            for (name, outcome) in [("hub", hub), ("mesh", mesh)] {
                if let note = splitNote(script: script, record: outcome.record) { notes.append("\(name): \(note)") }
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

    /// Partition only: how the signals across the split fared while it lasted and after the heal. A
    /// real partition does not drop what TCP holds: what was written before or during it reaches the
    /// other side after the heal (once TCP retransmits), so the delivery ratio alone counts those late
    /// signals as delivered; this says when they arrived.
    ///
    /// `across during: D/N in time, L late, U unavailable, S silent; same side during: d/n; across after
    /// the heal: a/b within 1 s; back to ≥ 99.9% within 1 s at heal + T s`
    static func splitNote(script: SimulationScript, record: RunRecord) -> String? {
        guard let sides = script.partitionSides, let fault = script.faultAt, let heal = script.healAt else {
            return nil
        }
        var connects: [(time: UInt64, peer: Int, node: Int)] = []
        for (time, step) in script.steps {
            if case .connect(let peer, let at) = step { connects.append((time, peer, at)) }
        }
        func side(_ peer: Int, at time: UInt64) -> Int? {
            let node = connects.last { $0.peer == peer && $0.time <= time }?.node ?? -1
            return node >= 0 && node < sides.count ? sides[node] : nil
        }
        let second: UInt64 = 1_000_000_000
        var across = (sent: 0, inTime: 0, late: 0, unavailable: 0, silent: 0)
        var same = (sent: 0, delivered: 0)
        var after = (sent: 0, delivered: 0)
        var buckets: [Int: (sent: Int, delivered: Int)] = [:]
        for (index, signal) in script.signals.enumerated() where signal.eligible {
            guard let from = side(signal.from, at: signal.at), let to = side(signal.to, at: signal.at) else { continue }
            let delivered = record.deliveredAt[index]
            let quick = delivered.map { $0 - signal.at <= second } ?? false
            if signal.at >= fault && signal.at < heal {
                if from == to {
                    same.sent += 1
                    if let delivered, delivered < heal { same.delivered += 1 }
                } else {
                    across.sent += 1
                    if let delivered {
                        if delivered < heal { across.inTime += 1 } else { across.late += 1 }
                    } else if record.unavailableAt[index] != nil {
                        across.unavailable += 1
                    } else {
                        across.silent += 1
                    }
                }
            } else if signal.at >= heal {
                if from != to {
                    after.sent += 1
                    if quick { after.delivered += 1 }
                }
                buckets[Int((signal.at - heal) / (second / 2)), default: (0, 0)].sent += 1
                if quick { buckets[Int((signal.at - heal) / (second / 2)), default: (0, 0)].delivered += 1 }
            }
        }
        let bad = buckets.filter { Double($0.value.delivered) < 0.999 * Double($0.value.sent) }.keys.max()
        let back = bad.map { ReportRenderer.format(Double($0 + 1) * 0.5) } ?? "0.0"
        return "across the split, sent during the partition: \(across.inTime)/\(across.sent) delivered during it, "
            + "\(across.late) late (after the heal), \(across.unavailable) peer-unavailable, \(across.silent) silent; "
            + "same side during it: \(same.delivered)/\(same.sent); across after the heal: "
            + "\(after.delivered)/\(after.sent) within 1 s; every signal sent from heal + \(back) s on (500 ms windows) "
            + "delivered within 1 s at ≥ 99.9%"
    }
}
