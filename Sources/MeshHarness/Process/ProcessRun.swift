import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PeerMesh
import Signaling

/// Executes a harness script in wall-clock time through real `signal` processes on loopback (or each in
/// its own network namespace, `Settings.network`, where `partition` and `heal` are carried out), and
/// records what the workload's peers saw, on the script's clock:
///
/// - `.hub`: one plain `signal serve`; every peer connects to it, whatever node the script puts it on.
///   A node's death closes its peers' connections (the hub itself is never killed, as in the sim).
/// - `.mesh`: one `signal serve --mesh-listen …` per node, with the node keys the script planned with
///   (so `kill-home` kills a real home node); peers connect to their node; a node's death is kill -9.
///
/// Peers are protocol-v1 clients (`SignalClient`) in this process: a signal's latency is its receive
/// time minus its send time on one monotonic clock. Each node's `/metrics` is scraped every
/// `pollInterval`: mesh traffic by kind, deliveries by hops, and each node's view of every other
/// member (for failure-detection times).
final class ProcessRun: Sendable {
    enum Mode: String, Sendable {
        case hub
        case mesh
    }

    struct Settings: Sendable {
        /// The `signal` executable the nodes and the hub run.
        var signal: String
        /// Holds the mesh secret file and the node key files.
        var directory: String
        /// Where each process's output goes (none: discarded).
        var logDirectory: String?
        var pollInterval: UInt64 = 100_000_000
        /// How long the initial nodes get to see each other before the script's clock starts.
        var convergenceTimeout = 30.0
        /// Each node (and the hub) in its own network namespace, which makes `partition` possible; nil:
        /// everything on loopback.
        var network: NetnsNetwork?
    }

    /// What the run saw, for `Harness.report` and the process-only figures.
    struct Outcome: Sendable {
        var record: RunRecord
        /// Signals the mesh delivered by inter-node hops ("1", "2", "3"), from the nodes' counters.
        var meshHops: [String: Int]
        /// Peers that could not connect to their node in time.
        var connectFailures: Int
        /// Errors other than `peer-unavailable` the peers received, and the first of them.
        var errors: Int
        var firstError: String?
        /// Seconds from the start of the initial nodes until every one counted all the others live.
        var convergenceSeconds: Double?
    }

    struct State {
        var record: RunRecord
        var sentAt: [UInt64?]
        var nodes: [Int: NodeProcess] = [:]
        var killed: Set<Int> = []
        var clients: [Int: (client: SignalClient, node: Int)] = [:]
        var samples: [Int: [MetricsSample]] = [:]
        var startedAt: [Int: UInt64] = [:]
        var connectFailures = 0
        var errors = 0
        var firstError: String?
        var origin: UInt64 = 0
    }

    let script: SimulationScript
    let mode: Mode
    let settings: Settings
    let group: any EventLoopGroup
    /// Node index → the label its id has on `/metrics` (`MeshKey.description`).
    let labels: [String: Int]
    let keySeeds: [[UInt8]]
    private let ports: [Int]
    private let state: NIOLockedValueBox<State>

    init(script: SimulationScript, mode: Mode, settings: Settings, group: any EventLoopGroup) async throws {
        self.script = script
        self.mode = mode
        self.settings = settings
        self.group = group
        keySeeds = SimulationScript.nodeKeySeeds(count: script.totalNodes, seed: script.options.seed)
        var labels: [String: Int] = [:]
        for (index, seed) in keySeeds.enumerated() { labels[try NodeIdentity(seed: seed).id.description] = index }
        self.labels = labels
        ports = try await NodeProcess.freePorts(script.totalNodes * 2 + 1, group: group)
        state = NIOLockedValueBox(
            State(
                record: RunRecord(signals: script.signals.count),
                sentAt: Array(repeating: nil, count: script.signals.count)
            )
        )
    }

    /// Nanoseconds on the script's clock (0 = the script's start).
    private func clock() -> UInt64 {
        let origin = state.withLockedValue { $0.origin }
        return DispatchTime.now().uptimeNanoseconds &- origin
    }

    private func sleep(until time: UInt64) async {
        let now = clock()
        if time > now { try? await Task.sleep(nanoseconds: time - now) }
    }

    func run() async throws -> Outcome {
        var convergence: Double?
        do {
            convergence = try await self.startInitialNodes()
        } catch {
            await self.stopAll()
            throw error
        }
        // The script's clock starts so that the first peers connect right away: the nodes it starts
        // in its first seconds are up already.
        let firstConnect =
            script.steps.first {
                if case .connect = $0.step { return true }
                return false
            }?.time ?? 0
        let origin = DispatchTime.now().uptimeNanoseconds &- (firstConnect &- min(firstConnect, 300_000_000))
        state.withLockedValue { $0.origin = origin }
        let poller = Task { await self.poll() }
        for (time, step) in script.steps {
            await self.sleep(until: time)
            await self.perform(step)
        }
        await self.sleep(until: script.window.end + 3 * 1_000_000_000)
        poller.cancel()
        _ = await poller.value
        await self.stopAll()
        settings.network?.heal()
        return self.outcome(convergence: convergence)
    }

    // MARK: Processes

    private func port(of node: Int) -> Int { mode == .hub ? ports[0] : ports[1 + 2 * node] }

    /// Where the peers of `node` connect: its address (for the hub run, the hub's address for that node's
    /// peers), or loopback.
    private func host(of node: Int) -> String {
        guard let network = settings.network else { return "127.0.0.1" }
        return mode == .hub ? network.hubAddress(for: node) : network.address(node)
    }

    /// Where `/metrics` of `node` (of the hub) is read: never cut by a partition.
    private func metricsHost(of node: Int) -> String {
        guard let network = settings.network else { return "127.0.0.1" }
        return mode == .hub ? network.hubAddress : network.address(node)
    }

    private func launch(_ node: Int) throws {
        let log = settings.logDirectory.map { "\($0)/\(script.scenario.rawValue)-\(mode.rawValue)-\(node).log" }
        let process: NodeProcess
        switch mode {
        case .hub:
            process = try NodeProcess.launch(
                executable: settings.signal,
                host: settings.network == nil ? "127.0.0.1" : "0.0.0.0",
                port: ports[0],
                meshPort: nil,
                arguments: [],
                namespace: settings.network?.hubNamespace,
                log: log
            )
        case .mesh:
            let meshPort = ports[2 + 2 * node]
            let keyFile = "\(settings.directory)/node-\(node).key"
            let hex = keySeeds[node].map { String(format: "%02x", $0) }.joined()
            try (hex + "\n").write(toFile: keyFile, atomically: true, encoding: .utf8)
            var arguments = [
                "--mesh-listen", "\(host(of: node)):\(meshPort)", "--mesh-secret-file",
                "\(settings.directory)/mesh.secret",
                "--mesh-key-file", keyFile,
            ]
            for seed in 0..<min(node, SimulationScript.seedNodes) {
                arguments += ["--mesh-seed", "\(host(of: seed)):\(ports[2 + 2 * seed])"]
            }
            process = try NodeProcess.launch(
                executable: settings.signal,
                host: host(of: node),
                port: port(of: node),
                meshPort: meshPort,
                arguments: arguments,
                namespace: settings.network?.namespace(node),
                log: log
            )
        }
        let now = state.withLockedValue { $0.origin } == 0 ? 0 : clock()
        state.withLockedValue {
            $0.nodes[node] = process
            $0.startedAt[node] = now
        }
    }

    private func scrape(_ node: Int) async -> MetricsSample? {
        guard
            let text = await MetricsFetcher.fetch(host: metricsHost(of: node), port: port(of: node), group: group)
        else { return nil }
        return MetricsSample(at: clock(), text: text)
    }

    private func waitUntilServing(_ nodes: [Int], timeout: Double = 20) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        for node in nodes {
            while await self.scrape(node) == nil {
                guard Date() < deadline else {
                    throw HarnessProcessError(
                        "node \(node) (\(mode.rawValue)) did not answer /metrics within \(Int(timeout)) s"
                    )
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Starts the hub, or the nodes the script starts before its workload (node 0 founds the mesh, the
    /// seeds next, then the rest), and waits until every node counts every other one live.
    private func startInitialNodes() async throws -> Double? {
        switch mode {
        case .hub:
            try self.launch(0)
            try await self.waitUntilServing([0])
            return nil
        case .mesh:
            try? "\(UUID().uuidString)-\(UUID().uuidString)\n".write(
                toFile: "\(settings.directory)/mesh.secret",
                atomically: true,
                encoding: .utf8
            )
            let initial = script.steps.compactMap { step -> Int? in
                if case .startNode(let node) = step.step, step.time < script.window.start { return node }
                return nil
            }
            let started = Date()
            let seeds = initial.filter { $0 < SimulationScript.seedNodes }
            for node in seeds {
                try self.launch(node)
                try await self.waitUntilServing([node])
            }
            let rest = initial.filter { $0 >= SimulationScript.seedNodes }
            for node in rest { try self.launch(node) }
            try await self.waitUntilServing(rest)
            let deadline = Date().addingTimeInterval(settings.convergenceTimeout)
            while Date() < deadline {
                var converged = true
                for node in initial {
                    let live = await self.scrape(node)?["signal_mesh_members_live"] ?? 0
                    if Int(live) != initial.count { converged = false }
                }
                if converged { return Date().timeIntervalSince(started) }
                try await Task.sleep(for: .milliseconds(100))
            }
            FileHandle.standardError.write(
                Data("warning: the mesh did not converge within \(Int(settings.convergenceTimeout)) s\n".utf8)
            )
            return nil
        }
    }

    private func stopAll() async {
        let (clients, nodes) = state.withLockedValue { state in
            let clients = state.clients.values.map(\.client)
            state.clients = [:]
            return (clients, Array(state.nodes.values))
        }
        await withTaskGroup(of: Void.self) { group in
            for client in clients { group.addTask { await client.close() } }
        }
        await withTaskGroup(of: Void.self) { group in
            for node in nodes { group.addTask { await node.stop() } }
        }
    }

    /// Scrapes every running mesh node's `/metrics`, every `pollInterval`.
    private func poll() async {
        guard mode == .mesh else { return }
        while !Task.isCancelled {
            let next = clock() + settings.pollInterval
            let nodes = state.withLockedValue { state in state.nodes.keys.filter { !state.killed.contains($0) } }
            await withTaskGroup(of: (Int, MetricsSample?).self) { group in
                for node in nodes { group.addTask { (node, await self.scrape(node)) } }
                for await (node, sample) in group {
                    guard let sample else { continue }
                    state.withLockedValue { state in
                        if !state.killed.contains(node) { state.samples[node, default: []].append(sample) }
                    }
                }
            }
            await self.sleep(until: next)
        }
    }

    // MARK: The script

    private func perform(_ step: SimulationScript.Step) async {
        switch step {
        case .startNode(let node):
            guard mode == .mesh, state.withLockedValue({ $0.nodes[node] == nil }) else { return }
            do {
                try self.launch(node)
            } catch {
                FileHandle.standardError.write(Data("warning: cannot start node \(node): \(error)\n".utf8))
            }
        case .connect(let peer, let node):
            Task { await self.connect(peer: peer, node: node) }
        case .disconnect(let peer):
            if let client = state.withLockedValue({ $0.clients.removeValue(forKey: peer)?.client }) {
                Task { await client.close() }
            }
        case .send(let index):
            self.send(index)
        case .kill(let node):
            let (process, clients) = state.withLockedValue { state in
                state.killed.insert(node)
                let peers = state.clients.filter { $0.value.node == node }
                for peer in peers.keys { state.clients[peer] = nil }
                return (state.nodes[node], peers.values.map(\.client))
            }
            switch mode {
            case .mesh: process?.kill()
            case .hub: for client in clients { Task { await client.close() } }
            }
        case .partition(let sides):
            // Only with network namespaces (the command refuses the scenario without them).
            do {
                try settings.network?.partition(sides, hub: mode == .hub)
            } catch {
                FileHandle.standardError.write(Data("warning: cannot partition: \(error)\n".utf8))
            }
        case .heal:
            settings.network?.heal()
        }
    }

    private func connect(peer: Int, node: Int) async {
        var options = SignalClient.Options(
            url: try! WebSocketURL("ws://\(host(of: node)):\(port(of: node))/ws"),
            peer: "p\(peer)"
        )
        options.autoResume = false
        let deadline = clock() + 3_000_000_000
        while true {
            let client = SignalClient(options: options, group: group)
            do {
                try await client.start()
                state.withLockedValue { $0.clients[peer] = (client, node) }
                Task { await self.consume(client) }
                return
            } catch {
                guard clock() < deadline else {
                    state.withLockedValue { $0.connectFailures += 1 }
                    return
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    private func send(_ index: Int) {
        let signal = script.signals[index]
        guard let client = state.withLockedValue({ $0.clients[signal.from]?.client }) else { return }
        let head =
            "{\"type\":\"candidate\",\"to\":\"p\(signal.to)\",\"id\":\"s\(index)\",\"n\":\(index),"
            + "\"candidate\":{\"sdpMid\":\"0\",\"candidate\":\"candidate:"
        let padding = String(repeating: "x", count: max(0, script.options.payloadBytes - head.utf8.count - 3))
        let text = head + padding + "\"}}"
        let now = clock()
        state.withLockedValue { $0.sentAt[index] = now }
        Task { await client.send(text, id: "s\(index)") }
    }

    private func consume(_ client: SignalClient) async {
        for await event in client.events {
            guard case .message(let text) = event, text.contains("\"n\":") || text.contains("\"error\"") else {
                continue
            }
            let now = clock()
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                continue
            }
            if object["type"] as? String == "error" {
                guard object["code"] as? String == "peer-unavailable", let id = object["id"] as? String,
                    let index = Int(id.dropFirst())
                else {
                    state.withLockedValue { state in
                        state.errors += 1
                        if state.firstError == nil { state.firstError = text }
                    }
                    continue
                }
                self.record(index, at: now, delivered: false)
            } else if let index = (object["n"] as? NSNumber)?.intValue {
                self.record(index, at: now, delivered: true)
            }
        }
    }

    /// Times go on the script's clock shifted by how late the signal was actually sent, so that
    /// latency = receive − send and the 500 ms windows are those of the planned send times.
    private func record(_ index: Int, at now: UInt64, delivered: Bool) {
        guard index >= 0, index < script.signals.count else { return }
        state.withLockedValue { state in
            let sent = state.sentAt[index] ?? now
            let at = script.signals[index].at + (now >= sent ? now - sent : 0)
            if delivered {
                if state.record.deliveredAt[index] != nil {
                    state.record.duplicates += 1
                } else {
                    state.record.deliveredAt[index] = at
                }
            } else if state.record.unavailableAt[index] == nil {
                state.record.unavailableAt[index] = at
            }
        }
    }

    // MARK: Figures from the scrapes

    private func outcome(convergence: Double?) -> Outcome {
        let state = state.withLockedValue { $0 }
        var record = state.record
        var hops: [String: Int] = [:]
        let window = script.window
        var traffic = TrafficCounters()
        for (node, samples) in state.samples {
            guard let last = samples.last(where: { $0.at <= window.end }) else { continue }
            let startedInWindow = (state.startedAt[node] ?? 0) > window.start
            let base = startedInWindow ? nil : (samples.last { $0.at <= window.start } ?? samples.first)
            func delta(_ series: String) -> Int { Int(last[series] - (base?[series] ?? 0)) }
            func kind(_ name: String) -> (Int, Int) {
                (
                    delta("signal_mesh_messages_sent_total{kind=\"\(name)\"}"),
                    delta("signal_mesh_sent_bytes_total{kind=\"\(name)\"}")
                )
            }
            let signal = kind("signal")
            let ack = kind("hop_ack")
            let control = kind("control")
            traffic.signalMessages += signal.0
            traffic.signalBytes += signal.1
            traffic.ackMessages += ack.0
            traffic.ackBytes += ack.1
            traffic.controlMessages += control.0
            traffic.controlBytes += control.1
            // Deliveries of signals sent near the end of the window come after it: count to the end.
            for hop in 1...3 {
                let series = "signal_mesh_delivered_total{hops=\"\(hop)\"}"
                hops[String(hop), default: 0] += Int((samples.last?[series] ?? 0) - (base?[series] ?? 0))
            }
            // Detection: each change of this node's view of another member.
            var previous: (live: [String: Double], suspect: [String: Double])?
            for sample in samples {
                let live = sample.members("signal_mesh_member_live")
                let suspect = sample.members("signal_mesh_member_suspect")
                if let previous {
                    for (label, value) in live where value == 0 && previous.live[label] == 1 {
                        if let target = labels[label] {
                            record.detections.append(
                                .init(observer: node, target: target, kind: .failed, time: sample.at)
                            )
                        }
                    }
                    for (label, value) in suspect where value == 1 && previous.suspect[label] != 1 {
                        if let target = labels[label] {
                            record.detections.append(
                                .init(observer: node, target: target, kind: .suspected, time: sample.at)
                            )
                        }
                    }
                }
                previous = (live, suspect)
            }
        }
        record.traffic = traffic
        record.detections.sort { $0.time < $1.time }
        return Outcome(
            record: record,
            meshHops: hops.filter { $0.value > 0 },
            connectFailures: state.connectFailures,
            errors: state.errors,
            firstError: state.firstError,
            convergenceSeconds: convergence
        )
    }
}

/// Something the process harness could not set up.
struct HarnessProcessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
