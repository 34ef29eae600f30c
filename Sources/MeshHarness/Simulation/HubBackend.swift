import PeerMesh

/// The baseline: a central hub as a star. Every signal goes sender's node → hub → recipient's node
/// over the same link model as the mesh, each hop acknowledged and retried on the same timeout and
/// time budget. The hub knows every peer's node (it learns of a connect or disconnect one link delay
/// after it happens). It is never killed: `kill-node` and `kill-home` kill the same edge node as in
/// the mesh run; in `partition` the hub is on the side of node 0.
enum HubBackend {
    enum Event {
        case arrive(hop: Int, signal: Int, attempt: Int)
        case ack(hop: Int, signal: Int)
        case timer(hop: Int, signal: Int)
        case register(peer: Int, node: Int)
        case step(Int)
    }

    struct Flight {
        var entry = -1
        var target = -1
        var firstSent: UInt64 = 0
        var acked = [false, false, false]
        var hubSeen = false
        var started2: UInt64 = 0
        var done = false
    }

    static func run(_ script: SimulationScript) -> RunRecord {
        let options = script.options
        let link = script.link
        let configuration = MeshBackend.configuration(for: options)
        let hub = script.totalNodes
        var record = RunRecord(signals: script.signals.count)
        var queue = EventQueue<Event>()
        var rng = SeededRandom(seed: options.seed ^ 0xB0B)
        var alive = Array(repeating: false, count: script.totalNodes + 1)
        alive[hub] = true
        var side = Array(repeating: 0, count: script.totalNodes + 1)
        var peerNode = Array(repeating: -1, count: script.peerCount)
        var hubDirectory = Array(repeating: -1, count: script.peerCount)
        var flights = Array(repeating: Flight(), count: script.signals.count)
        let signalSize = 4 + 1 + 32 + 8 + 2 + 4 + 1 + 2 + 4 + 1 + 1 + 4 + options.payloadBytes
        let ackSize = 4 + 1 + 40 + 2
        let registerSize = 4 + 1 + 2 + 6 + 32 + 1
        let inWindow = { (time: UInt64) in time >= script.window.start && time < script.window.end }

        for (index, step) in script.steps.enumerated() { queue.push(.step(index), at: step.time) }

        func reachable(_ a: Int, _ b: Int) -> Bool { alive[a] && alive[b] && side[a] == side[b] }

        func sendHop(_ hop: Int, _ index: Int, now: UInt64) {
            let (from, to) = hop == 1 ? (flights[index].entry, hub) : (hub, flights[index].target)
            if inWindow(now) {
                record.traffic.signalMessages += 1
                record.traffic.signalBytes += signalSize
            }
            queue.push(.timer(hop: hop, signal: index), at: now + configuration.hopTimeout)
            guard reachable(from, to), let delay = link.sample(from, to, using: &rng) else { return }
            queue.push(.arrive(hop: hop, signal: index, attempt: 0), at: now + delay)
        }

        func sendAck(_ hop: Int, _ index: Int, now: UInt64) {
            let (from, to) = hop == 1 ? (hub, flights[index].entry) : (flights[index].target, hub)
            if inWindow(now) {
                record.traffic.ackMessages += 1
                record.traffic.ackBytes += ackSize
            }
            guard reachable(from, to), let delay = link.sample(from, to, using: &rng) else { return }
            queue.push(.ack(hop: hop, signal: index), at: now + delay)
        }

        func unavailable(_ index: Int, now: UInt64) {
            if record.unavailableAt[index] == nil, record.deliveredAt[index] == nil {
                record.unavailableAt[index] = now
            }
            flights[index].done = true
        }

        func register(_ peer: Int, _ node: Int, now: UInt64) {
            if inWindow(now) {
                record.traffic.controlMessages += 1
                record.traffic.controlBytes += registerSize
            }
            queue.push(.register(peer: peer, node: node), at: now + link.baseDelay(max(node, 0), hub))
        }

        while let (now, event) = queue.pop() {
            guard now <= options.runEnd else { break }
            record.events += 1
            switch event {
            case .step(let index):
                switch script.steps[index].step {
                case .startNode(let node):
                    alive[node] = true
                case .connect(let peer, let node):
                    guard alive[node] else { continue }
                    peerNode[peer] = node
                    register(peer, node, now: now)
                case .disconnect(let peer):
                    if peerNode[peer] >= 0 { register(peer, -1, now: now) }
                    peerNode[peer] = -1
                case .send(let index):
                    let signal = script.signals[index]
                    let entry = peerNode[signal.from]
                    guard entry >= 0, alive[entry] else { continue }
                    flights[index].entry = entry
                    flights[index].firstSent = now
                    sendHop(1, index, now: now)
                case .kill(let node):
                    alive[node] = false
                    for peer in peerNode.indices where peerNode[peer] == node {
                        peerNode[peer] = -1
                        // The hub sees the edge's link drop one delay later.
                        queue.push(.register(peer: peer, node: -1), at: now + link.baseDelay(node, hub))
                    }
                case .partition(let sides):
                    for node in 0..<min(sides.count, side.count - 1) { side[node] = sides[node] }
                    side[hub] = sides.first ?? 0
                case .heal:
                    for node in side.indices { side[node] = 0 }
                }
            case .register(let peer, let node):
                hubDirectory[peer] = node
            case .arrive(let hop, let index, _):
                if hop == 1 {
                    sendAck(1, index, now: now)
                    guard !flights[index].hubSeen else { continue }
                    flights[index].hubSeen = true
                    let target = hubDirectory[script.signals[index].to]
                    guard target >= 0, alive[target] else {
                        // The hub tells the sender's node at once.
                        unavailable(index, now: now + link.baseDelay(flights[index].entry, hub))
                        continue
                    }
                    flights[index].target = target
                    flights[index].started2 = now
                    sendHop(2, index, now: now)
                } else {
                    sendAck(2, index, now: now)
                    // The recipient's node drops a retransmission it already delivered.
                    guard record.deliveredAt[index] == nil else { continue }
                    if peerNode[script.signals[index].to] == flights[index].target {
                        record.deliveredAt[index] = now
                        record.hops[index] = 2
                        flights[index].done = true
                    }
                }
            case .ack(let hop, let index):
                flights[index].acked[hop] = true
            case .timer(let hop, let index):
                guard !flights[index].acked[hop], !flights[index].done else { continue }
                let holder = hop == 1 ? flights[index].entry : hub
                guard alive[holder] else { continue }
                if now - flights[index].firstSent >= configuration.unavailableAfter {
                    if hop == 1 {
                        unavailable(index, now: now)
                    } else {
                        unavailable(index, now: now + link.baseDelay(flights[index].entry, hub))
                    }
                } else {
                    sendHop(hop, index, now: now)
                }
            }
        }
        return record
    }
}
