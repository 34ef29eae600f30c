import NIOCore

/// `signal bench presence`: pairs of sessions, a watcher and a mover. The watcher stays in the pair's
/// room; the mover joins it and leaves it in turn, so the latency measured is the presence path: from
/// the mover's `join` (or `leave`) to the watcher's `peer-joined` (or `peer-left`). With two or more
/// `--url`s the watcher and the mover of a pair are on different nodes.
final class PresenceDriver: LoopDriver {
    private struct Pair {
        var watcher: Int
        var mover: Int
        var room: String
        var inRoom = false
        /// When the mover's pending join or leave was sent (nil: none pending).
        var sentAt: UInt64?
    }

    private let runID: String
    private let measureLeaves: Bool
    private var pairs: [Pair] = []
    private var nextPair = 0
    private var closedLoop = false
    private var joinTemplates: [FrameTemplate] = []
    private var leaveTemplates: [FrameTemplate] = []

    /// `units` holds the global indexes of this loop's pairs, two each: the watcher, then the mover.
    init(
        loop: any EventLoop,
        plan: ConnectionPlan,
        units: [[Int]],
        runID: String,
        measureLeaves: Bool,
        maxConnectsInFlight: Int
    ) {
        self.runID = runID
        self.measureLeaves = measureLeaves
        super.init(
            loop: loop,
            plan: plan,
            globalIndexes: units.flatMap { $0 },
            maxConnectsInFlight: maxConnectsInFlight
        )
        var index = 0
        for unit in units {
            let room = "\(runID)-w\(unit[0] / 2)"
            pairs.append(Pair(watcher: index, mover: index + 1, room: room))
            joinTemplates.append(BenchMessage.join(room: room))
            leaveTemplates.append(BenchMessage.leave(room: room))
            index += unit.count
        }
    }

    /// The watcher joins its pair's room while connecting; the mover is ready at `welcome`.
    override func room(for connection: BenchConnection) -> String? {
        connection.globalIndex % 2 == 0 ? "\(runID)-w\(connection.globalIndex / 2)" : nil
    }

    override var unitCount: Int { pairs.count }

    override func prepare() {
        for (slot, pair) in pairs.enumerated() {
            connections[pair.watcher].slot = slot
            connections[pair.mover].slot = slot
        }
    }

    override func beginClosedLoop(inflight: Int) {
        closedLoop = true
        for pair in pairs.indices { self.move(pair) }
    }

    override func paced() {
        guard !pairs.isEmpty else { return }
        self.move(nextPair)
        nextPair = (nextPair + 1) % pairs.count
    }

    /// The mover of `pair` joins (or leaves) unless its previous move has not been seen yet.
    private func move(_ pair: Int) {
        guard pairs[pair].sentAt == nil else { return }
        let mover = connections[pairs[pair].mover]
        guard mover.ready, !mover.failed else { return }
        let now = Self.now()
        let joining = !pairs[pair].inRoom
        mover.send(joining ? joinTemplates[pair] : leaveTemplates[pair], stamp: 0)
        pairs[pair].inRoom = joining
        pairs[pair].sentAt = now
        if joining || measureLeaves { self.recordSend(from: mover, at: now, deliveries: 1) }
    }

    override func event(_ connection: BenchConnection, now: UInt64, payload: UnsafeRawBufferPointer) {
        guard connection.slot >= 0, connection.index == pairs[connection.slot].watcher,
            let joined = BenchMessage.presence(payload), let sentAt = pairs[connection.slot].sentAt,
            joined == pairs[connection.slot].inRoom
        else { return }
        pairs[connection.slot].sentAt = nil
        if joined || measureLeaves { self.recordDelivery(to: connection, stamp: sentAt, now: now) }
        if closedLoop && running { self.move(connection.slot) }
    }
}
