import Foundation
import Testing

@testable import Signaling

/// A resume presents a token, and the new token's claims apply: rooms it no longer grants are left.
@Suite(.serialized) struct ResumeClaimsIntegrationTests {
    static let secret = "resume-claims-secret-0123456789-abcdef"

    static func token(_ sub: String, rooms: [String]) async throws -> String {
        try await TokenVerifier(secret: secret).sign(
            SignalTokenPayload(sub: sub, exp: Date().addingTimeInterval(600), rooms: rooms)
        )
    }

    @Test func aResumeWithANarrowerTokenLeavesTheRoomsItNoLongerGrants() async throws {
        let hub = try await TestHub { $0.jwtSecret = Self.secret }
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer(query: "token=\(try await Self.token("alice", rooms: ["a", "b"]))")
        let bob = try await hub.peer(query: "token=\(try await Self.token("bob", rooms: ["a", "b"]))")
        for room in ["a", "b"] {
            alice.send(#"{"type":"join","room":"\#(room)"}"#)
            _ = try await alice.next("joined")
            bob.send(#"{"type":"join","room":"\#(room)"}"#)
            _ = try await bob.next("joined")
            _ = try await alice.next("peer-joined")
        }
        alice.client.abort()
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(bob.pending("peer-left").isEmpty, "alice is only away")

        let narrower = try await Self.token("alice", rooms: ["b"])
        let resumed = try await hub.connect("resume=\(alice.session)&last=2&token=\(narrower)")
        let welcome = try await resumed.next("welcome")
        #expect(welcome["resumed"] as? Bool == true)
        let left = try await resumed.next("left")
        #expect(left["room"] as? String == "a" && left["id"] == nil)
        let peerLeft = try await bob.next("peer-left")
        #expect(peerLeft["room"] as? String == "a" && peerLeft["peer"] as? String == "alice")
        // The new grant decides joins; room b is kept.
        resumed.send(#"{"type":"join","room":"a","id":"j"}"#)
        #expect(try await resumed.next("error")["code"] as? String == "forbidden")
        resumed.send(#"{"type":"message","room":"b","data":"still here","id":"m"}"#)
        #expect(try await bob.next("message")["data"] as? String == "still here")
        #expect(bob.pending("peer-left").isEmpty)
    }
}
