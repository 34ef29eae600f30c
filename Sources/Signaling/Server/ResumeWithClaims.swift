/// The backend as a connection that resumes with a verified token sees it: once the resume is taken, the
/// new token's room grant applies (``SessionHub/replaceGrant(_:with:)``), so rooms it no longer grants
/// are left. Everything else goes straight to the backend.
final class ResumeWithClaims: SessionHub {
    let backend: any SessionHub
    let grant: RoomGrant

    init(_ backend: any SessionHub, grant: RoomGrant) {
        self.backend = backend
        self.grant = grant
    }

    func makeConnectionID() -> ConnectionID { backend.makeConnectionID() }

    func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        let outcome = backend.open(connection, outbox: outbox, request: request)
        if case .opened(_, resumed: true, _, _) = outcome {
            backend.replaceGrant(connection, with: grant)
        }
        return outcome
    }

    func receive(_ connection: ConnectionID, _ message: ClientMessage) { backend.receive(connection, message) }

    func closed(_ connection: ConnectionID, keepSession: Bool) { backend.closed(connection, keepSession: keepSession) }

    func replaceGrant(_ connection: ConnectionID, with grant: RoomGrant) {
        backend.replaceGrant(connection, with: grant)
    }
}
