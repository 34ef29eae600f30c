import NIOCore

/// `signal bench echo`: every connection sends stamped messages to an echo endpoint and measures the
/// round trip — the transport ceiling, without any signaling logic (the hub's `/echo` with `--echo`,
/// or a bare echo server).
final class EchoDriver: LoopDriver {
    private let size: Int
    private var next = 0
    private var closedLoop = false

    init(loop: any EventLoop, plan: ConnectionPlan, units: [[Int]], size: Int, maxConnectsInFlight: Int) {
        self.size = size
        super.init(
            loop: loop,
            plan: plan,
            globalIndexes: units.flatMap { $0 },
            maxConnectsInFlight: maxConnectsInFlight
        )
    }

    override func prepare() {
        for connection in connections {
            connection.slot = connection.index
            connection.templates = [BenchMessage.echo(size: size)]
        }
    }

    override func beginClosedLoop(inflight: Int) {
        closedLoop = true
        for connection in connections where connection.ready {
            for _ in 0..<inflight { self.send(connection) }
        }
    }

    override func paced() {
        guard !connections.isEmpty else { return }
        self.send(connections[next])
        next = (next + 1) % connections.count
    }

    private func send(_ connection: BenchConnection) {
        guard connection.ready, !connection.failed else { return }
        let now = Self.now()
        connection.send(connection.templates[0], stamp: now)
        self.recordSend(from: connection, at: now, deliveries: 1)
    }

    override func delivered(_ connection: BenchConnection, stamp: UInt64, now: UInt64, payload: UnsafeRawBufferPointer)
    {
        self.recordDelivery(to: connection, stamp: stamp, now: now)
        if closedLoop && running { self.send(connection) }
    }
}
