import ServiceLifecycle

/// Where a ``SignalServer``'s sessions live and how they are routed: the in-memory ``Hub`` (one node),
/// the Redis-backed ``ClusterHub`` (several nodes sharing one Redis), or a hub on the PeerMesh gossip mesh
/// (the `SignalMesh` library). The server talks to exactly one backend through this protocol and names
/// none of them.
///
/// Lifecycle: the server runs its backend: ``run()`` is called by ``SignalServer/run()`` as a child task
/// before the server accepts connections, and is cancelled once the server has drained (so a backend
/// still serves the 1001 closes of the drain). Every background job of a backend — ticks, sweeps,
/// refreshes, subscriptions, per-connection work — runs inside its `run()`, as child tasks: a backend
/// stores no `Task` to cancel by hand. `run()` returns when its task is cancelled; it does not wait for
/// graceful shutdown itself (the server decides when the backend stops). Do not add a backend to a
/// `ServiceGroup` of your own.
///
/// Every backend also answers the server API (``ServerAPIBackend``: server messages, listings, kicks), so
/// `--api-listen` works the same whichever backend serves.
public protocol SignalBackend: SessionHub, ServerAPIBackend {
    /// Runs the backend's background work until the task is cancelled.
    func run() async throws
    /// Whether the backend can serve sessions now (`/readyz` answers 503 otherwise).
    var isReady: Bool { get }
    /// Brings the exported metrics up to date; called when `/metrics` is scraped.
    func exportMetrics()
    /// From now on, the backend hands `sink` the events of the sessions it serves (sessions started and
    /// ended, joins, leaves, emptied rooms: the webhooks' source). Called before ``run()``; a cluster node
    /// reports its own sessions' events, a mesh node those of the sessions it holds.
    func setEventSink(_ sink: @escaping HubEventSink)
}
