import PeerMesh

/// Turns a script and the record of one run into the report's figures.
enum FigureCalculator {
    static let ms = 1_000_000.0

    static func figures(script: SimulationScript, record: RunRecord, isMesh: Bool) -> BackendFigures {
        var figures = BackendFigures()
        let start = script.window.start
        figures.signalsSent = script.signals.count
        var latencies: [Double] = []
        var buckets: [Int: (eligible: Int, delivered: Int)] = [:]
        for (index, signal) in script.signals.enumerated() where signal.eligible {
            figures.eligible += 1
            let bucket = Int((signal.at - start) / 500_000_000)
            buckets[bucket, default: (0, 0)].eligible += 1
            if let at = record.deliveredAt[index] {
                figures.delivered += 1
                buckets[bucket, default: (0, 0)].delivered += 1
                latencies.append(Double(at - signal.at) / ms)
                figures.hops[String(record.hops[index]), default: 0] += 1
            } else if record.unavailableAt[index] != nil {
                figures.reportedUnavailable += 1
            } else {
                figures.silentlyLost += 1
            }
        }
        figures.duplicates = record.duplicates
        figures.deliveryRatio = figures.eligible == 0 ? 1 : Double(figures.delivered) / Double(figures.eligible)
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        figures.latencyMs = .init(
            p50: percentile(0.5),
            p95: percentile(0.95),
            p99: percentile(0.99),
            max: latencies.last ?? 0
        )
        if !latencies.isEmpty {
            figures.cdf = (0...100).map { step in
                let fraction = Double(step) / 100
                return [percentile(min(fraction, 0.9999)), fraction]
            }
        }
        let delivered = Double(max(figures.delivered, 1))
        let traffic = record.traffic
        figures.signalMessagesPerDelivered = Double(traffic.signalMessages) / delivered
        figures.ackMessagesPerDelivered = Double(traffic.ackMessages) / delivered
        figures.bytesPerDelivered = Double(traffic.signalBytes + traffic.ackBytes) / delivered
        figures.controlBytesPerSecondPerNode = Double(traffic.controlBytes) / nodeSeconds(script)
        let ordered = buckets.keys.sorted()
        figures.timeline = ordered.map { bucket in
            let (eligible, delivered) = buckets[bucket]!
            return [Double(bucket) * 0.5, eligible == 0 ? 1 : Double(delivered) / Double(eligible)]
        }
        if let recoveryFrom = script.healAt ?? script.faultAt {
            let fromBucket = Int((recoveryFrom - start) / 500_000_000)
            let bad = ordered.filter { bucket in
                let (eligible, delivered) = buckets[bucket]!
                return bucket >= fromBucket && Double(delivered) < 0.999 * Double(eligible)
            }
            if let last = bad.last {
                figures.recoverySeconds = Double(last + 1) * 0.5 - Double(recoveryFrom - start) / 1e9
            } else {
                figures.recoverySeconds = 0
            }
        }
        if isMesh { figures.detection = detection(script: script, record: record) }
        figures.events = record.events
        return figures
    }

    /// Node·seconds of live nodes inside the workload window.
    static func nodeSeconds(_ script: SimulationScript) -> Double {
        var started: [Int: UInt64] = [:]
        var killed: [Int: UInt64] = [:]
        for (time, step) in script.steps {
            if case .startNode(let node) = step { started[node] = time }
            if case .kill(let node) = step { killed[node] = time }
        }
        var total = 0.0
        for (node, from) in started {
            let begin = max(from, script.window.start)
            let end = min(killed[node] ?? .max, script.window.end)
            if end > begin { total += Double(end - begin) / 1e9 }
        }
        return max(total, 1)
    }

    static func detection(script: SimulationScript, record: RunRecord) -> BackendFigures.Detection? {
        var faults: [(node: Int, at: UInt64, observers: Set<Int>?)] = script.kills.map { ($0.node, $0.time, nil) }
        if let sides = script.partitionSides, let at = script.faultAt {
            for node in sides.indices {
                faults.append((node, at, Set(sides.indices.filter { sides[$0] != sides[node] })))
            }
        }
        guard !faults.isEmpty else { return nil }
        var first: [Double] = []
        var all: [Double] = []
        var suspected: [Double] = []
        for fault in faults {
            let end = script.healAt ?? .max
            var byObserver: [Int: UInt64] = [:]
            var firstSuspicion: UInt64?
            for event in record.detections
            where event.kind != .joined && event.target == fault.node && event.time >= fault.at && event.time < end {
                if let observers = fault.observers, !observers.contains(event.observer) { continue }
                firstSuspicion = min(firstSuspicion ?? .max, event.time)
            }
            if let firstSuspicion { suspected.append(Double(firstSuspicion - fault.at) / ms) }
            for event in record.detections
            where event.kind == .failed && event.target == fault.node && event.time >= fault.at && event.time < end {
                if let observers = fault.observers, !observers.contains(event.observer) { continue }
                if byObserver[event.observer] == nil { byObserver[event.observer] = event.time }
            }
            guard let earliest = byObserver.values.min(), let latest = byObserver.values.max() else { continue }
            first.append(Double(earliest - fault.at) / ms)
            all.append(Double(latest - fault.at) / ms)
        }
        guard !first.isEmpty else { return nil }
        first.sort()
        all.sort()
        suspected.sort()
        return .init(
            suspectMedianMs: suspected.isEmpty ? 0 : suspected[suspected.count / 2],
            suspectMaxMs: suspected.last ?? 0,
            firstMedianMs: first[first.count / 2],
            firstMaxMs: first.last!,
            allMedianMs: all[all.count / 2],
            allMaxMs: all.last!,
            failures: first.count
        )
    }
}
