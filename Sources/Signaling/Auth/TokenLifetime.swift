import Foundation
import JWTKit
import NIOCore

/// The token side of one authenticated connection, as a state machine without sockets or clocks: when
/// its session must end, and the in-band `auth` requests that push that moment back.
///
/// A session lives until its token's `exp`. Before then the client may send `{"type":"auth","token":…}`
/// with a fresh token for the same subject: once verified, the session lasts until the new token's `exp`
/// and the new token's `rooms` claim applies (rooms it no longer grants are left). Requests the client
/// sends while a token is being verified wait for it, so a `join` sent right after an `auth` is decided
/// under the new token.
struct TokenLifetime {
    /// What the connection's ``AuthenticatedSession`` carries out.
    enum Action {
        /// Hand this request to the backend.
        case pass(ClientMessage)
        /// Verify this token, then report ``TokenLifetime/verified(_:id:)``.
        case verify(token: String, id: String?)
        /// Send this message to the client.
        case reply(ByteBuffer)
        /// The session now holds a token granting these rooms.
        case regrant(RoomGrant)
        /// The session now ends at ``TokenLifetime/expiry``: (re)arm the timer.
        case rearm
    }

    /// Requests held while a token is verified. A verification takes milliseconds; a client that sends
    /// more in that time is answered `unavailable` for the excess.
    static let maxHeld = 64

    /// The token's subject in its tenant's namespace (``SignalTokenPayload/qualifiedSubject``): a fresh
    /// token must name the same one, in the same tenant.
    let subject: String
    /// When the session ends unless a fresh token arrives.
    private(set) var expiry: Date
    private var verifying = false
    private var held: [ClientMessage] = []

    init(subject: String, expiry: Date) {
        self.subject = subject
        self.expiry = expiry
    }

    /// A request from the client.
    mutating func receive(_ message: ClientMessage) -> [Action] {
        if verifying {
            guard held.count < Self.maxHeld else { return [.reply(Refusal.unavailable.errorMessage(id: message.id))] }
            held.append(message)
            return []
        }
        if case .auth(let token) = message.request {
            verifying = true
            return [.verify(token: token, id: message.id)]
        }
        return [.pass(message)]
    }

    /// The verification of the `auth` request `id` finished; the requests held meanwhile follow.
    mutating func verified(_ result: Result<SignalTokenPayload, TokenRejection>, id: String?) -> [Action] {
        verifying = false
        var actions: [Action] = []
        switch result {
        case .success(let claims) where claims.qualifiedSubject == subject:
            expiry = claims.exp.value
            actions.append(.regrant(claims.roomGrant))
            actions.append(.reply(ServerMessage.authed(expires: Int64(expiry.timeIntervalSince1970), id: id)))
            actions.append(.rearm)
        case .success:
            actions.append(.reply(Refusal.tokenSubjectChanged.errorMessage(id: id)))
        case .failure(let rejection):
            actions.append(.reply(Refusal.tokenRejected(rejection.reason).errorMessage(id: id)))
        }
        while !verifying, !held.isEmpty {
            actions += self.receive(held.removeFirst())
        }
        return actions
    }

    /// Whether the session must end at `now`.
    func isExpired(at now: Date) -> Bool { now >= expiry }
}
