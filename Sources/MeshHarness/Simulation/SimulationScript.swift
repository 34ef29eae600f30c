import Foundation
import PeerMesh

/// The same timeline for both backends: when nodes start and die, where peers connect, which signals
/// are sent when, and which of them could be delivered at all ("eligible": both peers connected when
/// it was sent, and neither they nor their nodes went away within the next 2 s).
public struct SimulationScript: Sendable {
    public enum Step: Sendable {
        case startNode(Int)
        case connect(peer: Int, node: Int)
        case disconnect(peer: Int)
        case send(Int)
        case kill(Int)
        case partition([Int])
        case heal
    }

    public struct PlannedSignal: Sendable {
        public var from: Int
        public var to: Int
        public var at: UInt64
        public var eligible: Bool
    }

    public var scenario: Scenario
    public var options: HarnessOptions
    public var totalNodes: Int
    public var steps: [(time: UInt64, step: Step)] = []
    public var signals: [PlannedSignal] = []
    public var peerCount: Int
    /// Faults, for detection and recovery figures: (time, node killed) — or nil node for a partition.
    public var kills: [(time: UInt64, node: Int)] = []
    public var partitionSides: [Int]?
    public var faultAt: UInt64?
    public var healAt: UInt64?
    /// Workload window (signals are sent in it; traffic is counted in it).
    public var window: (start: UInt64, end: UInt64)

    public static let seedNodes = 3

    /// Node identities exactly as `MeshCluster` derives them for `seed`.
    static func nodeKeys(count: Int, seed: UInt64) -> [MeshKey] {
        nodeKeySeeds(count: count, seed: seed).map { try! NodeIdentity(seed: $0).id }
    }

    /// The 32-byte Ed25519 seeds of those identities (the process harness writes them to
    /// `--mesh-key-file`s, so real nodes get the ids the script planned with).
    public static func nodeKeySeeds(count: Int, seed: UInt64) -> [[UInt8]] {
        var identitySeed = SeededRandom(seed: seed ^ 0x5EED_1D)
        return (0..<count).map { _ in identitySeed.bytes(32) }
    }

    public init(scenario: Scenario, options: HarnessOptions) {
        let second = HarnessOptions.second
        self.scenario = scenario
        self.options = options
        var rng = SeededRandom(seed: options.seed &* 0x9E37_79B9 &+ UInt64(Scenario.allCases.firstIndex(of: scenario)!))
        let n = options.nodes
        window = (options.workloadStart, options.workloadEnd)
        peerCount = max(2, n * options.peersPerNode / 2 * 2)
        var nodeAlive = Array(repeating: true, count: n)
        var total = n
        // Nodes start over the first second; node 0 founds the mesh.
        for i in 0..<n {
            steps.append((i == 0 ? 0 : 100_000_000 + UInt64(i) * 900_000_000 / UInt64(n), .startNode(i)))
        }
        // Peers connect between 3 s and 4 s, the two peers of a pair on different nodes.
        var peerNode = Array(repeating: -1, count: peerCount)
        var connectTimes: [[(UInt64, Bool)]] = Array(repeating: [], count: peerCount)
        var nodeKills: [Int: UInt64] = [:]
        for peer in 0..<peerCount {
            var node = Int(rng.next() % UInt64(n))
            if peer % 2 == 1 { while node == peerNode[peer - 1] { node = Int(rng.next() % UInt64(n)) } }
            peerNode[peer] = node
            let at = 3 * second + rng.next() % second
            steps.append((at, .connect(peer: peer, node: node)))
            connectTimes[peer].append((at, true))
        }
        // Faults.
        let keys = Self.nodeKeys(count: n, seed: options.seed)
        switch scenario {
        case .killNode:
            let candidates = peerNode.filter { $0 >= Self.seedNodes }
            let victim = candidates[Int(rng.next() % UInt64(candidates.count))]
            steps.append((options.faultAt, .kill(victim)))
            kills.append((options.faultAt, victim))
            nodeKills[victim] = options.faultAt
            faultAt = options.faultAt
        case .killHome:
            var homeOf = Array(repeating: 0, count: n)
            for peer in 0..<peerCount {
                for home in Ownership.closest(to: MeshKey(peer: "p\(peer)"), among: keys) {
                    homeOf[keys.firstIndex(of: home)!] += 1
                }
            }
            let victim = (Self.seedNodes..<n).max { homeOf[$0] < homeOf[$1] } ?? n - 1
            steps.append((options.faultAt, .kill(victim)))
            kills.append((options.faultAt, victim))
            nodeKills[victim] = options.faultAt
            faultAt = options.faultAt
        case .partition:
            let sides = (0..<n).map { $0 < n / 2 ? 0 : 1 }
            partitionSides = sides
            steps.append((options.faultAt, .partition(sides)))
            steps.append((options.healAt, .heal))
            faultAt = options.faultAt
            healAt = options.healAt
        case .churn:
            // Every 2 s a node dies and a new one joins; every 0.5 s a peer leaves and comes back 1 s
            // later on another node; peers of a dead node reconnect elsewhere 1 s after it died.
            var t = options.workloadStart + 2 * second
            var churnPeerAt = options.workloadStart + second / 2
            while t < options.workloadEnd - 2 * second {
                while churnPeerAt < t {
                    let peer = Int(rng.next() % UInt64(peerCount))
                    if peerNode[peer] >= 0, connectTimes[peer].last!.1 {
                        steps.append((churnPeerAt, .disconnect(peer: peer)))
                        connectTimes[peer].append((churnPeerAt, false))
                        let live = (0..<total).filter { nodeAlive[$0] && $0 != peerNode[peer] }
                        let node = live[Int(rng.next() % UInt64(live.count))]
                        peerNode[peer] = node
                        steps.append((churnPeerAt + second, .connect(peer: peer, node: node)))
                        connectTimes[peer].append((churnPeerAt + second, true))
                    }
                    churnPeerAt += second / 2
                }
                let arriving = Set(
                    steps.compactMap { step -> Int? in
                        if case .connect(_, let node) = step.step, step.time > t { return node }
                        return nil
                    }
                )
                let candidates = (Self.seedNodes..<total).filter { nodeAlive[$0] && !arriving.contains($0) }
                let victim = candidates[Int(rng.next() % UInt64(candidates.count))]
                nodeAlive[victim] = false
                nodeKills[victim] = t
                steps.append((t, .kill(victim)))
                kills.append((t, victim))
                steps.append((t, .startNode(total)))
                nodeAlive.append(true)
                total += 1
                let live = (0..<total).filter { nodeAlive[$0] }
                for peer in 0..<peerCount where peerNode[peer] == victim && connectTimes[peer].last!.1 {
                    connectTimes[peer].append((t, false))
                    let node = live[Int(rng.next() % UInt64(live.count))]
                    peerNode[peer] = node
                    steps.append((t + second, .connect(peer: peer, node: node)))
                    connectTimes[peer].append((t + second, true))
                }
                t += 2 * second
            }
            faultAt = options.workloadStart + 2 * second
        case .steady, .loss1, .loss5:
            break
        }
        totalNodes = total
        // The initial placement (before churn) decides which node each kill-node peer died with.
        var initialNode = Array(repeating: -1, count: peerCount)
        for (_, step) in steps.sorted(by: { $0.time < $1.time }) {
            if case .connect(let peer, let node) = step, initialNode[peer] < 0 { initialNode[peer] = node }
        }
        // Workload: a Poisson stream of signals, each between the two peers of a random pair.
        let rate = options.signalsPerSecondPerNode * Double(n)
        var t = Double(options.workloadStart)
        let pairs = peerCount / 2
        while true {
            t += -log(1 - rng.nextUnit()) / rate * 1e9
            guard UInt64(t) < options.workloadEnd else { break }
            let pair = Int(rng.next() % UInt64(pairs))
            let forward = rng.next() % 2 == 0
            let from = forward ? 2 * pair : 2 * pair + 1
            let to = forward ? 2 * pair + 1 : 2 * pair
            let at = UInt64(t)
            signals.append(PlannedSignal(from: from, to: to, at: at, eligible: true))
            steps.append((at, .send(signals.count - 1)))
        }
        // Eligibility: both peers connected at `at`, neither disconnected nor killed within 2 s.
        for peer in connectTimes.indices { connectTimes[peer].sort { $0.0 < $1.0 } }
        func connected(_ peer: Int, at time: UInt64) -> Bool {
            connectTimes[peer].last { $0.0 <= time }?.1 ?? false
        }
        func goesAway(_ peer: Int, from start: UInt64) -> Bool {
            let end = start + 2 * second
            if connectTimes[peer].contains(where: { !$0.1 && $0.0 >= start && $0.0 <= end }) { return true }
            if scenario != .churn, let killed = nodeKills[initialNode[peer]], killed <= end { return true }
            return false
        }
        for index in signals.indices {
            let signal = signals[index]
            signals[index].eligible =
                connected(signal.from, at: signal.at) && connected(signal.to, at: signal.at)
                && !goesAway(signal.from, from: signal.at) && !goesAway(signal.to, from: signal.at)
        }
        steps.sort { $0.time < $1.time }
    }
}

extension SimulationScript {
    /// The links both backends (hub star and mesh) of this script run on.
    var link: LinkModel {
        LinkModel(
            delay: options.delay,
            jitter: UInt64(Double(options.delay) * options.jitterFraction),
            loss: scenario.loss
        )
    }
}
