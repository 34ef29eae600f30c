import NIOCore

/// One heartbeat timer per event loop instead of one `RepeatedTask` per connection (and the loop's other
/// per-connection scratch state).
///
/// Every connection on the loop is visited once per `period`, a slice of them at each of `slices` ticks,
/// so pings and timeout checks are spread evenly over the period rather than bunched the way the
/// connections were opened. A connection costs one array slot here instead of a scheduled task (and
/// its closure) in the event loop's timer queue.
final class HeartbeatSweep {
    /// What the sweep visits: a connection's heartbeat check.
    protocol Member: AnyObject {
        /// The member's index in the sweep, kept by the sweep; nil when not a member.
        var sweepSlot: Int? { get set }
        func heartbeatTick()
    }

    private let eventLoop: any EventLoop
    private let tick: TimeAmount
    private let slices: Int
    private var members: [any Member] = []
    private var task: RepeatedTask?
    private var nextSlice = 0
    /// The array every connection of this loop drains its outbox into (``Outbox/take(swapping:)``), so a
    /// drain allocates nothing and an idle connection keeps no array of its own. A nested drain finds it
    /// empty (swapped out) and simply uses a fresh one.
    var drainScratch: [Outbox.Item] = []

    /// - Parameters:
    ///   - period: how often each member is visited.
    ///   - slices: ticks per period; each visits about `1/slices` of the members.
    init(eventLoop: any EventLoop, period: TimeAmount, slices: Int = 16) {
        self.eventLoop = eventLoop
        self.slices = max(1, slices)
        self.tick = .nanoseconds(max(1_000_000, period.nanoseconds / Int64(self.slices)))
    }

    var count: Int { members.count }

    /// Adds a member; must be called on the sweep's event loop.
    func add(_ member: any Member) {
        self.eventLoop.preconditionInEventLoop()
        guard member.sweepSlot == nil else { return }
        member.sweepSlot = members.count
        members.append(member)
        if task == nil {
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            task = eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
                loopBound.value.sweep()
            }
        }
    }

    /// Removes a member (a no-op for non-members); must be called on the sweep's event loop.
    func remove(_ member: any Member) {
        self.eventLoop.preconditionInEventLoop()
        guard let slot = member.sweepSlot else { return }
        member.sweepSlot = nil
        let last = members.count - 1
        if slot != last {
            members[slot] = members[last]
            members[slot].sweepSlot = slot
        }
        members.removeLast()
        if members.isEmpty {
            task?.cancel()
            task = nil
            members = []
        }
    }

    /// Visits the members whose slot falls in this tick's slice. A member moved by a removal may wait up
    /// to one more period for its visit.
    private func sweep() {
        let slice = nextSlice
        nextSlice = (nextSlice + 1) % slices
        guard slice < members.count else { return }
        // Collected first: a visit may close its connection, which removes it (and moves another).
        let due = stride(from: slice, to: members.count, by: slices).map { members[$0] }
        for member in due where member.sweepSlot != nil {
            member.heartbeatTick()
        }
    }
}
