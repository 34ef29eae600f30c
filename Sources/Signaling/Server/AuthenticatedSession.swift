import CoreMetrics
import Foundation
import JWTKit
import NIOCore

/// One connection's session under a verified token, in front of the backend: the session ends when the
/// token expires (an `error` and close 4001 "token expired"), unless the client sends a fresh token in
/// band first (``TokenLifetime``); a resume's token brings its own room grant. Every other request goes
/// straight to the backend, in order, its peer ids and rooms qualified with the token's tenant (``Tenant``).
///
/// Made per connection when auth is on; every method runs on the connection's event loop.
final class AuthenticatedSession: SessionHub, @unchecked Sendable {
    private let backend: any SessionHub
    private let verifier: TokenVerifier
    private let eventLoop: any EventLoop
    /// A resume: the grant of the token it presented, applied once the session is open.
    private let resumeGrant: RoomGrant?
    /// The token's tenant: the client's peer ids and rooms are qualified with it on the way in.
    private let tenant: Tenant
    /// The session's place in its tenant's count on this server, given back when the connection closes.
    private let accounting: TenantAccounting
    private let slot: TenantAccounting.Slot
    /// Whether ``slot`` still counts: it is given back once, at `closed` (or at deinit, for a connection
    /// that closed before its session opened).
    private var holdsSlot = true
    private var lifetime: TokenLifetime
    private var connection: ConnectionID?
    private var outbox: Outbox?
    private var expiryTimer: Scheduled<Void>?
    /// No more requests or timers: the connection closed, its open was refused, or its token expired.
    private var ended = false
    /// The backend was told the connection closed (once).
    private var backendClosed = false

    init(
        _ backend: any SessionHub,
        verifier: TokenVerifier,
        claims: SignalTokenPayload,
        resumes: Bool,
        eventLoop: any EventLoop,
        tenant: (accounting: TenantAccounting, slot: TenantAccounting.Slot)
    ) {
        self.accounting = tenant.accounting
        self.slot = tenant.slot
        self.backend = backend
        self.verifier = verifier
        self.eventLoop = eventLoop
        self.tenant = claims.namespace
        self.resumeGrant = resumes ? claims.roomGrant : nil
        self.lifetime = TokenLifetime(subject: claims.qualifiedSubject, expiry: claims.exp.value)
    }

    func makeConnectionID() -> ConnectionID { backend.makeConnectionID() }

    func open(_ connection: ConnectionID, outbox: Outbox, request: OpenRequest) -> OpenOutcome {
        eventLoop.assertInEventLoop()
        self.connection = connection
        self.outbox = outbox
        let outcome = backend.open(connection, outbox: outbox, request: request)
        if case .refused = outcome {
            ended = true
            return outcome
        }
        // Queued behind the open: a resumed session continues under the new token's claims.
        if let resumeGrant { backend.receive(connection, ClientMessage(id: nil, request: .grant(resumeGrant))) }
        self.arm()
        return outcome
    }

    func receive(_ connection: ConnectionID, _ message: ClientMessage) {
        eventLoop.assertInEventLoop()
        slot.meters.messages.increment()
        self.carry(out: lifetime.receive(tenant.isDefault ? message : message.qualified(by: tenant)))
    }

    deinit {
        // A connection that closed before its session opened never calls `closed`.
        releaseSlot()
    }

    private func releaseSlot() {
        guard holdsSlot else { return }
        holdsSlot = false
        accounting.release(slot)
    }

    func closed(_ connection: ConnectionID, keepSession: Bool) {
        eventLoop.assertInEventLoop()
        releaseSlot()
        expiryTimer?.cancel()
        expiryTimer = nil
        ended = true
        // After an expiry the backend already closed the session.
        guard !backendClosed else { return }
        backendClosed = true
        backend.closed(connection, keepSession: keepSession)
    }

    private func carry(out actions: [TokenLifetime.Action]) {
        guard !ended, let connection else { return }
        for action in actions {
            switch action {
            case .pass(let message):
                backend.receive(connection, message)
            case .verify(let token, let id):
                let verifier = self.verifier
                let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
                Task {
                    let result: Result<SignalTokenPayload, TokenRejection>
                    do throws(TokenRejection) {
                        result = .success(try await verifier.verify(token))
                    } catch {
                        result = .failure(error)
                    }
                    loopBound.eventLoop.execute {
                        let session = loopBound.value
                        session.carry(out: session.lifetime.verified(result, id: id))
                        // The backend leaves the requesting connection's own outbox for its handler to
                        // drain after `receive`; here no handler call follows, so wake it.
                        session.outbox?.wakeOwner()
                    }
                }
            case .reply(let message):
                self.send(.text(message))
            case .regrant(let grant):
                backend.receive(connection, ClientMessage(id: nil, request: .grant(grant)))
            case .rearm:
                self.arm()
            }
        }
    }

    /// Arms the timer that ends the session at the token's expiry.
    private func arm() {
        expiryTimer?.cancel()
        let seconds = max(0, lifetime.expiry.timeIntervalSinceNow)
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        expiryTimer = eventLoop.scheduleTask(in: .nanoseconds(Int64(seconds * 1_000_000_000))) {
            loopBound.value.expiryDue()
        }
    }

    private func expiryDue() {
        guard !ended else { return }
        // A refresh that raced the timer moved the expiry: wait for the new one.
        guard lifetime.isExpired(at: Date()) else { return self.arm() }
        ended = true
        let refusal = Refusal.tokenExpired
        self.send(.text(refusal.errorMessage(id: nil)))
        self.send(.close(refusal.close.code, reason: refusal.message))
        // The session ends now, not when the client answers the close (up to 2 s later): the other
        // members get `peer-left` at the token's expiry.
        if let connection {
            backendClosed = true
            backend.closed(connection, keepSession: false)
        }
    }

    private func send(_ item: Outbox.Item) {
        if outbox?.append(item) == true { outbox?.wakeOwner() }
    }
}
