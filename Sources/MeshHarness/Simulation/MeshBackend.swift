import PeerMesh

/// Runs a `SimulationScript` on a `MeshCluster`: N real `MeshNode`s on the simulated network.
enum MeshBackend {
    final class Recorder {
        var record: RunRecord
        var signalOf: [SignalKey: Int] = [:]
        let window: (start: UInt64, end: UInt64)

        init(signals: Int, window: (start: UInt64, end: UInt64)) {
            record = RunRecord(signals: signals)
            self.window = window
        }

        func count(_ message: MeshMessage, at time: UInt64) {
            guard time >= window.start, time < window.end else { return }
            let size = message.wireSize
            switch message {
            case .signal:
                record.traffic.signalMessages += 1
                record.traffic.signalBytes += size
            case .hopAck, .undeliverable:
                record.traffic.ackMessages += 1
                record.traffic.ackBytes += size
            case .membership, .store, .storeAck:
                record.traffic.controlMessages += 1
                record.traffic.controlBytes += size
            }
        }
    }

    static func configuration(for options: HarnessOptions) -> MeshConfiguration {
        var configuration = MeshConfiguration()
        // The simulator knows its links: a hop is retried after a round trip plus jitter and margin
        // (the default, 500 ms, is for unknown networks).
        let delay = options.delay
        configuration.hopTimeout = max(
            50_000_000,
            2 * delay + 2 * UInt64(Double(delay) * options.jitterFraction) + 40_000_000
        )
        configuration.membership.probeTimeout = max(configuration.membership.probeTimeout, 2 * delay + 100_000_000)
        return configuration
    }

    static func run(_ script: SimulationScript) -> RunRecord {
        let options = script.options
        let link = script.link
        let cluster = MeshCluster(link: link, configuration: configuration(for: options), seed: options.seed)
        let recorder = Recorder(signals: script.signals.count, window: script.window)
        var keyIndex: [MeshKey: Int] = [:]
        cluster.onSend = { _, _, message, time in recorder.count(message, at: time) }
        cluster.onAction = { node, action, time in
            switch action {
            case .deliver(_, let signal):
                guard let index = recorder.signalOf[signal.key] else { return }
                if recorder.record.deliveredAt[index] == nil {
                    recorder.record.deliveredAt[index] = time
                    recorder.record.hops[index] = signal.hops
                } else {
                    recorder.record.duplicates += 1
                }
            case .unavailable(let key, _):
                if let index = recorder.signalOf[key], recorder.record.unavailableAt[index] == nil {
                    recorder.record.unavailableAt[index] = time
                }
            case .membership(let event):
                let (target, kind): (MeshKey, DetectionEvent.Kind)
                switch event {
                case .failed(let key): (target, kind) = (key, .failed)
                case .suspected(let key): (target, kind) = (key, .suspected)
                case .joined(let key): (target, kind) = (key, .joined)
                case .recovered: return
                }
                if let index = keyIndex[target] {
                    recorder.record.detections.append(
                        DetectionEvent(observer: node, target: index, kind: kind, time: time)
                    )
                }
            case .send:
                break
            }
        }
        let names = (0..<script.peerCount).map { "p\($0)" }
        var peerNode = Array(repeating: -1, count: script.peerCount)
        let payload = [UInt8](repeating: 0x61, count: options.payloadBytes)
        for (time, step) in script.steps {
            cluster.run(until: time)
            switch step {
            case .startNode(let i):
                precondition(i == cluster.count, "nodes start in index order")
                let seeds = (0..<min(SimulationScript.seedNodes, cluster.count)).filter { cluster.alive[$0] }
                cluster.addNode(seeds: seeds)
                keyIndex[cluster.keys[i]] = i
            case .connect(let peer, let node):
                if peerNode[peer] >= 0, cluster.alive[peerNode[peer]] {
                    cluster.disconnect(peer: names[peer], from: peerNode[peer])
                }
                peerNode[peer] = cluster.alive[node] ? node : -1
                if cluster.alive[node] { cluster.connect(peer: names[peer], to: node) }
            case .disconnect(let peer):
                if peerNode[peer] >= 0, cluster.alive[peerNode[peer]] {
                    cluster.disconnect(peer: names[peer], from: peerNode[peer])
                }
                peerNode[peer] = -1
            case .send(let index):
                let signal = script.signals[index]
                let node = peerNode[signal.from]
                guard node >= 0, cluster.alive[node] else { continue }
                if let key = cluster.send(
                    from: names[signal.from],
                    at: node,
                    to: .peer(names[signal.to]),
                    payload: payload
                ) {
                    recorder.signalOf[key] = index
                    // A delivery on the entry node itself happened inside `send`, before the key was known.
                    if signal.to < peerNode.count, peerNode[signal.to] == node,
                        recorder.record.deliveredAt[index] == nil
                    {
                        recorder.record.deliveredAt[index] = time
                        recorder.record.hops[index] = 0
                    }
                }
            case .kill(let node):
                cluster.kill(node)
                for peer in peerNode.indices where peerNode[peer] == node { peerNode[peer] = -1 }
            case .partition(let sides):
                cluster.partition(sides)
            case .heal:
                cluster.heal()
            }
        }
        cluster.run(until: options.runEnd)
        recorder.record.events = cluster.events
        return recorder.record
    }
}
