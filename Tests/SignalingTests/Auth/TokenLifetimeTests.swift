import Foundation
import NIOCore
import Testing

@testable import Signaling

/// ``TokenLifetime``: when a session ends, and what an in-band `auth` changes — without sockets or clocks.
@Suite struct TokenLifetimeTests {
    static let start = Date(timeIntervalSince1970: 1_000_000)

    static func message(_ text: String) -> ClientMessage {
        guard case .success(let message) = MessageDecoder().decode(ByteBuffer(string: text)) else {
            fatalError("not a valid request: \(text)")
        }
        return message
    }

    static func claims(_ sub: String, expiresIn seconds: TimeInterval, rooms: [String]? = nil) -> SignalTokenPayload {
        SignalTokenPayload(sub: sub, exp: start.addingTimeInterval(seconds), rooms: rooms)
    }

    /// The actions as short strings: `pass:TYPE`, `verify:ID`, `reply:TEXT`, `regrant:ROOMS`, `rearm`.
    static func describe(_ actions: [TokenLifetime.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .pass(let message): return "pass:\(message.id ?? "-")"
            case .verify(_, let id): return "verify:\(id ?? "-")"
            case .reply(let buffer): return "reply:" + String(buffer: buffer)
            case .regrant(let grant): return "regrant:\(grant)"
            case .rearm: return "rearm"
            }
        }
    }

    @Test func theSessionEndsAtTheTokensExpiry() {
        let lifetime = TokenLifetime(subject: "alice", expiry: Self.start.addingTimeInterval(60))
        #expect(!lifetime.isExpired(at: Self.start.addingTimeInterval(59.9)))
        #expect(lifetime.isExpired(at: Self.start.addingTimeInterval(60)))
    }

    @Test func aFreshTokenMovesTheExpiryAndItsGrantApplies() {
        var lifetime = TokenLifetime(subject: "alice", expiry: Self.start.addingTimeInterval(60))
        let sent = lifetime.receive(Self.message(#"{"type":"auth","token":"t","id":"a1"}"#))
        #expect(Self.describe(sent) == ["verify:a1"])
        let done = lifetime.verified(.success(Self.claims("alice", expiresIn: 3600, rooms: ["x"])), id: "a1")
        #expect(
            Self.describe(done) == [
                #"regrant:only(Set(["x"]))"#,
                #"reply:{"type":"authed","expires":1003600,"id":"a1"}"#,
                "rearm",
            ]
        )
        #expect(!lifetime.isExpired(at: Self.start.addingTimeInterval(3599)))
    }

    @Test func requestsSentDuringTheCheckWaitForItInOrder() {
        var lifetime = TokenLifetime(subject: "alice", expiry: Self.start.addingTimeInterval(60))
        _ = lifetime.receive(Self.message(#"{"type":"auth","token":"t","id":"a1"}"#))
        #expect(lifetime.receive(Self.message(#"{"type":"join","room":"x","id":"j1"}"#)).isEmpty)
        #expect(lifetime.receive(Self.message(#"{"type":"auth","token":"u","id":"a2"}"#)).isEmpty)
        #expect(lifetime.receive(Self.message(#"{"type":"ping","id":"p1"}"#)).isEmpty)
        // The first check ends: the join passes, the second auth starts its check, the ping waits again.
        let first = lifetime.verified(.success(Self.claims("alice", expiresIn: 120)), id: "a1")
        #expect(Array(Self.describe(first).suffix(2)) == ["pass:j1", "verify:a2"])
        let second = lifetime.verified(.failure(TokenRejection(reason: "token expired")), id: "a2")
        #expect(
            Self.describe(second) == [
                #"reply:{"type":"error","code":"unauthorized","message":"token expired","id":"a2"}"#, "pass:p1",
            ]
        )
        // The refused token changed nothing: the first refresh's expiry holds.
        #expect(lifetime.isExpired(at: Self.start.addingTimeInterval(120)))
    }

    @Test func aTokenForAnotherSubjectIsRefusedAndChangesNothing() {
        var lifetime = TokenLifetime(subject: "alice", expiry: Self.start.addingTimeInterval(60))
        _ = lifetime.receive(Self.message(#"{"type":"auth","token":"t"}"#))
        let done = lifetime.verified(.success(Self.claims("mallory", expiresIn: 3600)), id: nil)
        #expect(
            Self.describe(done) == [
                #"reply:{"type":"error","code":"unauthorized","message":"the token is for another peer"}"#
            ]
        )
        #expect(lifetime.isExpired(at: Self.start.addingTimeInterval(60)))
    }

    @Test func heldRequestsAreBounded() {
        var lifetime = TokenLifetime(subject: "alice", expiry: Self.start.addingTimeInterval(60))
        _ = lifetime.receive(Self.message(#"{"type":"auth","token":"t"}"#))
        for n in 0..<TokenLifetime.maxHeld {
            #expect(lifetime.receive(Self.message(#"{"type":"ping","id":"p\#(n)"}"#)).isEmpty)
        }
        let refused = lifetime.receive(Self.message(#"{"type":"ping","id":"over"}"#))
        #expect(Self.describe(refused).first?.contains(#""code":"unavailable""#) == true)
        let released = lifetime.verified(.success(Self.claims("alice", expiresIn: 120)), id: nil)
        #expect(released.count == 3 + TokenLifetime.maxHeld)
    }
}
