/// What the WebSocket layer needs from a hub. ``Hub`` keeps every session in this process's memory;
/// ``ClusterHub`` keeps them in Redis, shared by several nodes. Connections talk to either the same way:
/// events go in, and everything for the client comes back through the connection's ``Outbox``.
public protocol SessionHub: AnyObject, Sendable {
    /// A connection id unique within this process.
    func makeConnectionID() -> ConnectionID
    /// Registers a connection's outbox and opens (or resumes) its session. The welcome (or the refusal)
    /// is the first thing appended to the outbox, now or later (``OpenOutcome/pending``).
    func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome
    /// A validated request from a connection, in the order the connection read them.
    func receive(_ connection: ConnectionID, _ message: ClientMessage)
    /// A connection's socket closed; `keepSession` keeps its session for the resume grace period.
    func closed(_ connection: ConnectionID, keepSession: Bool)
}

extension Hub: SessionHub {}
