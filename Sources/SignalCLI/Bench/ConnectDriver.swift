import NIOCore

/// `signal bench connect`: opens and holds sessions joined to rooms of `--room-size`; while they are
/// held, probe pairs (the first two members of evenly spread rooms) exchange addressed `message`s at
/// `--probe-rate`, so relay latency is measured with every session connected.
final class ConnectDriver: LoopDriver {
    private struct Probe {
        var from: Int
        var to: Int
    }

    private let runID: String
    private let roomSize: Int
    private let size: Int
    private let confirm: Bool
    private var probes: [Probe] = []
    private var nextProbe = 0

    /// `units` holds this loop's rooms. Room `r` carries a probe pair when `r % probeStride == 0` and
    /// `r / probeStride < probePairs`.
    init(
        loop: any EventLoop,
        plan: ConnectionPlan,
        units: [[Int]],
        runID: String,
        roomSize: Int,
        size: Int,
        confirm: Bool,
        probeStride: Int,
        probePairs: Int,
        maxConnectsInFlight: Int
    ) {
        self.runID = runID
        self.roomSize = roomSize
        self.size = size
        self.confirm = confirm
        super.init(
            loop: loop,
            plan: plan,
            globalIndexes: units.flatMap { $0 },
            maxConnectsInFlight: maxConnectsInFlight
        )
        var index = 0
        for unit in units {
            let room = (unit.first ?? 0) / roomSize
            let probed = room % probeStride == 0 && room / probeStride < probePairs
            if probed && unit.count >= 2 && plan.sessions { probes.append(Probe(from: index, to: index + 1)) }
            index += unit.count
        }
    }

    override func room(for connection: BenchConnection) -> String? {
        "\(runID)-c\(connection.globalIndex / roomSize)"
    }

    override var unitCount: Int { probes.count }

    override func prepare() {
        // Like the SDK (every second): tell the hub what was processed, so it can let go of it.
        if confirm {
            for connection in connections where connection.ready && !connection.failed && connection.lastSeq > 0 {
                connection.send(BenchMessage.received(seq: connection.lastSeq), stamp: 0)
            }
        }
        for probe in probes {
            let from = connections[probe.from]
            let to = connections[probe.to]
            from.templates = [BenchMessage.signal(.message, to: to.peer, size: size)]
        }
    }

    override func paced() {
        guard !probes.isEmpty else { return }
        let connection = connections[probes[nextProbe].from]
        nextProbe = (nextProbe + 1) % probes.count
        guard connection.ready, !connection.failed, !connection.templates.isEmpty else { return }
        let now = Self.now()
        connection.send(connection.templates[0], stamp: now)
        self.recordSend(from: connection, at: now, deliveries: 1)
    }
}
