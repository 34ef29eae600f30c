import NIOCore

/// `signal bench fanout`: rooms of `--room-size` sessions; members take turns broadcasting a `message`
/// to their room, and every other member's receipt is a measured delivery.
///
/// With `--rate max` a room keeps `--inflight` broadcasts under way: the next one starts once the
/// deliveries of one broadcast (room size − 1) have arrived. With a rate, `--rate` is broadcasts per
/// second over all rooms.
final class FanoutDriver: LoopDriver {
    private struct Room {
        var members: [Int]
        /// Deliveries still expected, for the closed loop.
        var outstanding = 0
        var nextSender = 0
    }

    private let runID: String
    private let roomSize: Int
    private let size: Int
    private var rooms: [Room] = []
    private var nextRoom = 0
    private var closedLoop = false
    private var inflight = 1

    /// `units` holds the global indexes of this loop's rooms, `roomSize` each.
    init(
        loop: any EventLoop,
        plan: ConnectionPlan,
        units: [[Int]],
        runID: String,
        roomSize: Int,
        size: Int,
        maxConnectsInFlight: Int
    ) {
        self.runID = runID
        self.roomSize = roomSize
        self.size = size
        super.init(
            loop: loop,
            plan: plan,
            globalIndexes: units.flatMap { $0 },
            maxConnectsInFlight: maxConnectsInFlight
        )
        var index = 0
        for unit in units {
            rooms.append(Room(members: Array(index..<(index + unit.count))))
            index += unit.count
        }
    }

    private func roomName(_ globalIndex: Int) -> String { "\(runID)-f\(globalIndex / roomSize)" }

    override func room(for connection: BenchConnection) -> String? { roomName(connection.globalIndex) }

    override var unitCount: Int { rooms.count }

    override func prepare() {
        for (slot, room) in rooms.enumerated() {
            for member in room.members {
                let connection = connections[member]
                connection.slot = slot
                connection.templates = [BenchMessage.broadcast(room: roomName(connection.globalIndex), size: size)]
            }
        }
    }

    override func beginClosedLoop(inflight: Int) {
        closedLoop = true
        self.inflight = inflight
        for room in rooms.indices {
            for _ in 0..<inflight { self.broadcast(room) }
        }
    }

    override func paced() {
        guard !rooms.isEmpty else { return }
        self.broadcast(nextRoom)
        nextRoom = (nextRoom + 1) % rooms.count
    }

    private func broadcast(_ index: Int) {
        let members = rooms[index].members
        guard members.count > 1 else { return }
        let sender = connections[members[rooms[index].nextSender]]
        rooms[index].nextSender = (rooms[index].nextSender + 1) % members.count
        rooms[index].outstanding += members.count - 1
        let now = Self.now()
        sender.send(sender.templates[0], stamp: now)
        self.recordSend(from: sender, at: now, deliveries: members.count - 1)
    }

    override func delivered(_ connection: BenchConnection, stamp: UInt64, now: UInt64, payload: UnsafeRawBufferPointer)
    {
        self.recordDelivery(to: connection, stamp: stamp, now: now)
        guard connection.slot >= 0 else { return }
        let slot = connection.slot
        rooms[slot].outstanding -= 1
        if closedLoop && running && rooms[slot].outstanding <= (inflight - 1) * (rooms[slot].members.count - 1) {
            self.broadcast(slot)
        }
    }
}
