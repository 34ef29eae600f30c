import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Prometheus

/// The thread-safe face of ``HubState``: every connection's events go through one lock into the state
/// machine, and the actions it returns are handed to the connections' ``Outbox``es in decision order.
///
/// This is the routing seam: a session on this node is reached through its outbox; a later cluster
/// backend (Redis, PeerMesh) plugs in where `HubState` finds no local session.
public final class Hub: Sendable {
    struct Locked {
        var state: HubState
        var outboxes: [ConnectionID: Outbox] = [:]
        var nextConnection: UInt64 = 1
        var exported = HubCounters()
        /// The actions of one `receive`, reused so a request allocates no array (only under the lock).
        var scratch: [HubAction] = []
        /// Connections due fresh TURN credentials (only with ``WelcomeTemplate/turn``).
        var iceRefresh: IceRefreshSchedule?
        /// Where the state's events go (``setEventSink(_:)``); nil: none are recorded.
        var eventSink: HubEventSink?

        /// Hands the events the last step recorded to the sink, still under the lock, so they reach it in
        /// the order they happened. One check when there are none (every signal).
        mutating func flushEvents() {
            guard !state.events.isEmpty, let eventSink else { return }
            eventSink(state.takeEvents())
        }
    }

    /// The outboxes whose owners must be woken once the lock is released. Usually none or one (the
    /// recipient of a signal), which needs no array.
    struct Wakes {
        private var first: Outbox?
        private var more: [Outbox] = []

        mutating func append(_ outbox: Outbox) {
            if first == nil { first = outbox } else { more.append(outbox) }
        }

        func wakeAll() {
            first?.wakeOwner()
            more.forEach { $0.wakeOwner() }
        }
    }

    let locked: NIOLockedValueBox<Locked>
    let welcome: WelcomeTemplate
    let metrics: HubMetrics

    public init(limits: HubLimits, welcome: WelcomeTemplate, metrics: HubMetrics) {
        var locked = Locked(state: HubState(limits: limits))
        locked.iceRefresh = welcome.turn.map { IceRefreshSchedule(periodNanos: $0.refreshNanos) }
        self.locked = NIOLockedValueBox(locked)
        self.welcome = welcome
        self.metrics = metrics
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    public func makeConnectionID() -> ConnectionID {
        self.locked.withLockedValue { locked in
            defer { locked.nextConnection += 1 }
            return ConnectionID(locked.nextConnection)
        }
    }

    /// Registers a connection's outbox and opens (or resumes) its session. The caller drains its own
    /// outbox right after, so the `welcome` is the first thing written.
    public func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        let now = Self.now()
        var actions: [HubAction] = []
        let (outcome, wakes) = self.locked.withLockedValue { locked in
            locked.outboxes[connection] = outbox
            let welcome = self.welcome
            let outcome = locked.state.open(
                connection,
                request,
                now: now,
                welcome: { peer, token, resumed, gap in
                    welcome.render(peer: peer, session: token, resumed: resumed, gap: gap)
                },
                actions: &actions
            )
            let wakes = Self.dispatch(actions, outboxes: locked.outboxes, skipping: connection)
            locked.flushEvents()
            if case .refused = outcome {
                // The refusal (error and close) is already in the outbox; no session owns it.
                locked.outboxes[connection] = nil
            } else if case .opened(let peer, _, _, _) = outcome {
                locked.iceRefresh?.add(connection, peer: peer, now: now)
            }
            return (outcome, wakes)
        }
        wakes.wakeAll()
        if case .opened(_, resumed: true, _, _) = outcome {
            // The retry window of the token it resumed with closes once its welcome is written.
            outbox.afterOwnerDrains { self.welcomeWritten(connection) }
        }
        return outcome
    }

    /// A resumed connection's `welcome` was handed to its socket: the token it resumed with is spent.
    func welcomeWritten(_ connection: ConnectionID) {
        self.locked.withLockedValue { $0.state.welcomeWritten(connection) }
    }

    /// A validated request from a connection. The caller drains its own outbox afterwards.
    public func receive(_ connection: ConnectionID, _ message: ClientMessage) {
        let wakes = self.locked.withLockedValue { locked in
            locked.state.receive(connection, message, actions: &locked.scratch)
            let wakes = Self.dispatch(locked.scratch, outboxes: locked.outboxes, skipping: connection)
            locked.scratch.removeAll(keepingCapacity: true)
            locked.flushEvents()
            return wakes
        }
        wakes.wakeAll()
    }

    /// A connection's socket closed.
    public func closed(_ connection: ConnectionID, keepSession: Bool) {
        let now = Self.now()
        var actions: [HubAction] = []
        let wakes = self.locked.withLockedValue { locked in
            locked.outboxes[connection] = nil
            locked.iceRefresh?.remove(connection)
            locked.state.closed(connection, keepSession: keepSession, now: now, actions: &actions)
            locked.flushEvents()
            return Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil)
        }
        wakes.wakeAll()
    }

    /// Ends sessions whose resume grace period is over and sends connections due fresh TURN credentials
    /// their `ice-servers` message. Called four times a second.
    public func tick() {
        let now = Self.now()
        var actions: [HubAction] = []
        let welcome = self.welcome
        let wakes = self.locked.withLockedValue { locked in
            locked.state.tick(now: now, actions: &actions)
            for (connection, peer) in locked.iceRefresh?.due(now: now) ?? [] {
                actions.append(.send(connection, welcome.iceServersMessage(peer: peer)))
            }
            locked.flushEvents()
            return Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil)
        }
        wakes.wakeAll()
    }

    /// A point-in-time view for `/metrics` and tests.
    public struct Snapshot: Sendable {
        public var connections: Int
        public var sessions: Int
        public var rooms: Int
        public var bufferedBytes: Int
        public var counters: HubCounters
    }

    public func snapshot() -> Snapshot {
        self.locked.withLockedValue {
            Snapshot(
                connections: $0.outboxes.count,
                sessions: $0.state.sessionCount,
                rooms: $0.state.roomCount,
                bufferedBytes: $0.state.totalBufferedBytes,
                counters: $0.state.counters
            )
        }
    }

    /// Brings the metrics up to date (called before `/metrics` is rendered).
    public func exportMetrics() {
        let (snapshot, previous) = self.locked.withLockedValue { locked in
            defer { locked.exported = locked.state.counters }
            return (
                Snapshot(
                    connections: locked.outboxes.count,
                    sessions: locked.state.sessionCount,
                    rooms: locked.state.roomCount,
                    bufferedBytes: locked.state.totalBufferedBytes,
                    counters: locked.state.counters
                ), locked.exported
            )
        }
        metrics.connections.record(snapshot.connections)
        metrics.sessions.record(snapshot.sessions)
        metrics.detachedSessions.record(snapshot.sessions - snapshot.connections)
        metrics.rooms.record(snapshot.rooms)
        metrics.bufferedBytes.record(snapshot.bufferedBytes)
        metrics.record(snapshot.counters, since: previous)
    }

    /// Appends actions to outboxes (under the lock, so per-connection order is decision order) and
    /// returns the outboxes whose owners must be woken once the lock is released.
    static func dispatch(_ actions: [HubAction], outboxes: [ConnectionID: Outbox], skipping: ConnectionID?) -> Wakes {
        var wakes = Wakes()
        for action in actions {
            let connection: ConnectionID
            let item: Outbox.Item
            switch action {
            case .send(let id, let buffer):
                connection = id
                item = .text(buffer)
            case .ack(let id, let request, let queued):
                connection = id
                item = .ack(ServerMessage.Ack(id: request, queued: queued))
            case .close(let id, let code, let reason):
                connection = id
                item = .close(code, reason: reason)
            }
            guard let outbox = outboxes[connection] else { continue }
            if outbox.append(item) && connection != skipping {
                wakes.append(outbox)
            }
        }
        return wakes
    }
}

/// The in-memory hub as a server's backend: everything in this process, ticked four times a second to end
/// sessions whose resume grace period is over.
extension Hub: SignalBackend {
    /// A single-node hub set up as `configuration` says, with its metrics in `registry`.
    public convenience init(configuration: ServerConfiguration, registry: PrometheusCollectorRegistry) {
        self.init(
            limits: configuration.effectiveLimits,
            welcome: configuration.welcomeTemplate,
            metrics: HubMetrics(factory: PrometheusMetricsFactory(registry: registry))
        )
    }

    /// Ticks every 250 ms until cancelled.
    public func run() async throws {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .milliseconds(250))
            } catch {
                return
            }
            self.tick()
        }
    }

    /// Always ready: it needs nothing outside this process.
    public var isReady: Bool { true }

    /// From now on, sessions starting and ending, joins, leaves and emptied rooms go to `sink`.
    public func setEventSink(_ sink: @escaping HubEventSink) {
        locked.withLockedValue { locked in
            locked.eventSink = sink
            locked.state.recordsEvents = true
        }
    }
}

extension SignalServer {
    /// A single-node server: an in-memory ``Hub`` set up from `configuration`, its metrics and the
    /// server's in one registry (rendered at `/metrics`).
    public convenience init(
        inMemory configuration: ServerConfiguration,
        logger: Logger = Logger(label: "signal"),
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()
    ) async throws(TLSSetupError) {
        try await self.init(
            configuration: configuration,
            backend: Hub(configuration: configuration, registry: registry),
            logger: logger,
            registry: registry
        )
    }
}
