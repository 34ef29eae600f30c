import Histogram
import NIOCore
import NIOPosix
import Signaling

/// The connections of one event loop and the scenario they play. Everything here runs on `loop`:
/// a scenario keeps the connections that talk to each other (a pair, a room) on the same loop, so it
/// needs no locks; the coordinator reaches a driver only through `loop.submit`.
///
/// Subclasses (one per `signal bench` mode) say which room a connection joins, build their templates
/// once every connection is ready, and react to measured messages.
class LoopDriver {
    let loop: any EventLoop
    let plan: ConnectionPlan
    private(set) var connections: [BenchConnection] = []
    var stats = BenchStats()

    private var interval = BenchStats.makeHistogram()
    private var allSent = 0
    private var allReceived = 0
    private var nextToConnect = 0
    private var connectsInFlight = 0
    private let maxConnectsInFlight: Int
    private var settled = 0
    private var setupPromise: EventLoopPromise<Void>?
    private var dirty: [BenchConnection] = []
    private var flushScheduled = false
    private var pacer: RepeatedTask?
    private var pacerStart: UInt64 = 0
    private var pacerFired = 0
    /// One bootstrap per source address (index 0: no source address), reused for every connect.
    private var bootstraps: [ClientBootstrap?] = []
    /// The connection whose channel `connect` is setting up (its initializer adds it to the pipeline).
    private var connecting: BenchConnection?

    /// Measurement window (monotonic nanoseconds): sends inside it are counted, and deliveries of them.
    private(set) var windowStart: UInt64 = .max
    private(set) var windowEnd: UInt64 = .max
    /// Whether the scenario keeps generating load.
    private(set) var running = false
    /// Seconds between a session's `received` confirmations while the load runs (0: it never confirms).
    var confirmEvery = 0.0
    private var confirmer: RepeatedTask?

    init(loop: any EventLoop, plan: ConnectionPlan, globalIndexes: [Int], maxConnectsInFlight: Int) {
        self.loop = loop
        self.plan = plan
        self.maxConnectsInFlight = max(1, maxConnectsInFlight)
        self.stats.nodes = Array(repeating: BenchNodeStats(), count: plan.targets.count)
        self.connections.reserveCapacity(globalIndexes.count)
        for (index, global) in globalIndexes.enumerated() {
            connections.append(
                BenchConnection(driver: self, index: index, globalIndex: global, target: plan.target(for: global))
            )
        }
    }

    // MARK: Scenario hooks

    /// The room a session joins after `welcome` (nil: none; the session is ready at `welcome`).
    func room(for connection: BenchConnection) -> String? { nil }

    /// Called once every connection of every loop is ready: build templates.
    func prepare() {}

    /// Units of load on this loop (pairs, rooms, connections): the rate is shared in proportion.
    var unitCount: Int { connections.count }

    /// Measured messages one paced unit sends (a negotiation sends several signals).
    var messagesPerUnit: Double { 1 }

    /// Closed loop (`--rate max`): start `inflight` units each, the scenario keeps them going.
    func beginClosedLoop(inflight: Int) {}

    /// Open loop (`--rate R`): one unit of load, called at the paced rate.
    func paced() {}

    /// A presence event or another unmeasured message arrived on `connection` (its `seq` is already noted).
    func event(_ connection: BenchConnection, now: UInt64, payload: UnsafeRawBufferPointer) {}

    /// A measured message arrived on `connection`, sent at `stamp`. Subclasses call ``recordDelivery``.
    func delivered(_ connection: BenchConnection, stamp: UInt64, now: UInt64, payload: UnsafeRawBufferPointer) {
        self.recordDelivery(to: connection, stamp: stamp, now: now)
    }

    // MARK: Measuring

    @inline(__always)
    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    /// Counts a measured send by `connection` that should cause `deliveries` deliveries.
    func recordSend(from connection: BenchConnection, at now: UInt64, deliveries: Int) {
        allSent += 1
        if now >= windowStart && now < windowEnd {
            stats.sent += 1
            stats.expected += deliveries
            stats.nodes[connection.target].sent += 1
        }
    }

    /// Counts a delivery to `connection` of a message sent at `stamp`.
    func recordDelivery(to connection: BenchConnection, stamp: UInt64, now: UInt64) {
        allReceived += 1
        let value = now > stamp ? now - stamp : 0
        interval.record(value)
        guard stamp >= windowStart && stamp < windowEnd else { return }
        stats.received += 1
        stats.nodes[connection.target].received += 1
        stats.latency.record(value)
    }

    /// Starts the load now; deliveries of messages sent before `measureFrom` are not counted.
    func start(measureFrom: UInt64, unitsPerSecond: Double?, inflight: Int) {
        windowStart = measureFrom
        windowEnd = .max
        running = true
        if confirmEvery > 0 {
            let bound = NIOLoopBound(self, eventLoop: loop)
            let every = TimeAmount.nanoseconds(Int64(confirmEvery * 1e9))
            confirmer = loop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in bound.value.confirm() }
        }
        if let unitsPerSecond {
            guard unitsPerSecond > 0, unitCount > 0 else { return }
            pacerStart = Self.now()
            pacerFired = 0
            let bound = NIOLoopBound(self, eventLoop: loop)
            let perNano = unitsPerSecond / 1e9
            pacer = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(500)) { _ in
                bound.value.pace(perNano: perNano)
            }
        } else {
            self.beginClosedLoop(inflight: inflight)
        }
    }

    private func pace(perNano: Double) {
        guard running else { return }
        let due = Int(Double(Self.now() - pacerStart) * perNano) - pacerFired
        // Open loop: a late tick catches up (bounded, so a stalled loop cannot build a burst forever).
        for _ in 0..<min(max(due, 0), 100_000) {
            self.paced()
            pacerFired += 1
        }
    }

    /// Stops generating load; the window closes now.
    func stop() {
        running = false
        windowEnd = Self.now()
        pacer?.cancel()
        pacer = nil
        confirmer?.cancel()
        confirmer = nil
    }

    /// Each session confirms the highest `seq` it has received since its last confirmation, as the SDK
    /// does (each second by default).
    private func confirm() {
        for connection in connections where connection.ready && !connection.failed {
            guard connection.lastSeq > connection.confirmedSeq else { continue }
            connection.send(BenchMessage.received(seq: connection.lastSeq), stamp: 0)
            connection.confirmedSeq = connection.lastSeq
        }
    }

    func progressSample() -> BenchProgressSample {
        var sample = BenchProgressSample()
        sample.sent = allSent
        sample.received = allReceived
        sample.ready = stats.ready
        sample.failures = stats.connectFailed + stats.closed
        sample.errorMessages = stats.errorMessages
        sample.interval = interval
        interval.reset()
        return sample
    }

    // MARK: Writes

    func markDirty(_ connection: BenchConnection) {
        dirty.append(connection)
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound(self, eventLoop: loop)
        // Runs after this loop iteration's reads: one flush per connection per iteration.
        loop.execute { bound.value.flushDirty() }
    }

    private func flushDirty() {
        flushScheduled = false
        let connections = dirty
        dirty.removeAll(keepingCapacity: true)
        for connection in connections { connection.flush() }
    }

    // MARK: Connecting

    /// Connects every connection of this loop (at most `maxConnectsInFlight` handshakes at once); the
    /// future completes when each is ready or has failed.
    func connectAll() -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        setupPromise = promise
        if connections.isEmpty {
            promise.succeed()
        } else {
            self.connectMore()
        }
        return promise.futureResult
    }

    private func connectMore() {
        while connectsInFlight < maxConnectsInFlight && nextToConnect < connections.count {
            let connection = connections[nextToConnect]
            nextToConnect += 1
            connectsInFlight += 1
            self.startConnect(connection)
        }
    }

    private func startConnect(_ connection: BenchConnection) {
        connection.phase = .connecting
        connection.startedAt = Self.now()
        let bound = NIOLoopBound(connection, eventLoop: loop)
        // The bootstrap runs the channel initializer inside `connect` (on this loop), which takes the
        // connection from `connecting`.
        connecting = connection
        let connected = self.bootstrap(for: plan.sourceIndex(for: connection.globalIndex))
            .connect(to: plan.targets[connection.target].server)
        connecting = nil
        connected.whenFailure { error in
            let connection = bound.value
            connection.phase = .closed
            connection.driver.connectionError(connection, "connect failed: \(error)")
        }
    }

    /// The bootstrap for connections from `plan.sources[source]` (nil: let the kernel pick), made once.
    private func bootstrap(for source: Int?) -> ClientBootstrap {
        let slot = source.map { $0 + 1 } ?? 0
        if slot < bootstraps.count, let bootstrap = bootstraps[slot] { return bootstrap }
        let driver = NIOLoopBound(self, eventLoop: loop)
        let targets = plan.targets
        var bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.maxMessagesPerRead, value: 16)
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let connection = driver.value.connecting else {
                        throw ChannelError.inappropriateOperationForState
                    }
                    try targets[connection.target].tls?.addHandler(to: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
        if let source {
            // Pick the source port at connect time, per destination (IP_BIND_ADDRESS_NO_PORT = 24).
            #if os(Linux)
                bootstrap = bootstrap.channelOption(
                    ChannelOptions.Types.SocketOption(level: .ip, name: NIOBSDSocket.Option(rawValue: 24)),
                    value: 1
                )
            #endif
            bootstrap = bootstrap.bind(to: plan.sources[source])
        }
        if slot >= bootstraps.count { bootstraps += Array(repeating: nil, count: slot + 1 - bootstraps.count) }
        bootstraps[slot] = bootstrap
        return bootstrap
    }

    /// A connection finished its upgrade.
    func connectionUpgraded(_ connection: BenchConnection) {
        if !plan.sessions { self.ready(connection) }
    }

    /// A text message arrived.
    func received(_ connection: BenchConnection, _ payload: UnsafeRawBufferPointer) {
        switch BenchMessage.classify(payload) {
        case .stamped(let stamp):
            if confirmEvery > 0, let seq = BenchMessage.lastSeq(in: payload) {
                connection.lastSeq = max(connection.lastSeq, seq)
            }
            self.delivered(connection, stamp: stamp, now: Self.now(), payload: payload)
        case .ack:
            stats.acks += 1
        case .error:
            stats.errorMessages += 1
            stats.nodes[connection.target].errorMessages += 1
            if stats.firstError == nil {
                stats.firstError = String(decoding: payload.prefix(300), as: UTF8.self)
            }
        case .welcome:
            guard !connection.ready else { return }
            connection.peer = BenchMessage.stringMember("peer", in: payload) ?? ""
            if let room = self.room(for: connection) {
                connection.send(BenchMessage.join(room: room), stamp: 0)
            } else {
                self.ready(connection)
            }
        case .joined:
            if !connection.ready { self.ready(connection) }
        case .other:
            // Presence events (`peer-joined`, `peer-left`): remember their seq for a `received`.
            if let seq = BenchMessage.lastSeq(in: payload) { connection.lastSeq = max(connection.lastSeq, seq) }
            self.event(connection, now: Self.now(), payload: payload)
        }
    }

    private func ready(_ connection: BenchConnection) {
        connection.ready = true
        let now = Self.now()
        stats.ready += 1
        stats.nodes[connection.target].ready += 1
        stats.lastReadyAt = max(stats.lastReadyAt, now)
        stats.connectLatency.record(now - connection.startedAt)
        self.settle()
    }

    private func settle() {
        connectsInFlight -= 1
        settled += 1
        self.connectMore()
        if settled == connections.count {
            setupPromise?.succeed()
            setupPromise = nil
        }
    }

    /// Something went wrong on a connection; counted once per connection.
    func connectionError(_ connection: BenchConnection, _ reason: String) {
        guard !connection.failed else { return }
        connection.failed = true
        if stats.firstError == nil { stats.firstError = reason }
        if connection.ready {
            stats.closed += 1
            stats.nodes[connection.target].closed += 1
        } else {
            stats.connectFailed += 1
            stats.nodes[connection.target].connectFailed += 1
            self.settle()
        }
    }

    func connectionClosed(_ connection: BenchConnection, expected: Bool) {
        if !expected { self.connectionError(connection, "connection dropped") }
    }

    // MARK: Teardown

    /// Sends a close frame on every open connection.
    func closeAll() {
        self.stop()
        for connection in connections { connection.close() }
    }

    /// Connections whose socket is still open.
    var openCount: Int {
        connections.reduce(0) { count, connection in
            switch connection.phase {
            case .idle, .closed: return count
            default: return count + 1
            }
        }
    }
}
