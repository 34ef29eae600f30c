import NIOCore
import Testing

@testable import Signaling

@Suite struct WebhookTests {
    @Test func bodyNamesTheEventItsTenantPeerAndRoom() {
        let joined = WebhookEvent(id: "evt_1", event: .peerJoined(peer: "alice", room: "lobby"), time: 1_767_225_600)
        #expect(
            String(buffer: joined.body)
                == #"{"id":"evt_1","type":"peer.joined","time":1767225600,"tenant":null,"peer":"alice","room":"lobby"}"#
        )
        let ended = WebhookEvent(id: "evt_2", event: .sessionEnded(peer: "acme/bob", reason: .kicked), time: 5)
        #expect(
            String(buffer: ended.body)
                == #"{"id":"evt_2","type":"session.ended","time":5,"tenant":"acme","peer":"bob","room":null,"reason":"kicked"}"#
        )
        let empty = WebhookEvent(id: "evt_3", event: .roomEmpty(room: "acme/lobby"), time: 5)
        #expect(
            String(buffer: empty.body)
                == #"{"id":"evt_3","type":"room.empty","time":5,"tenant":"acme","peer":null,"room":"lobby"}"#
        )
        #expect(HubEvent.sessionStarted(peer: "a").type == "session.started")
        #expect(HubEvent.peerLeft(peer: "a", room: "r").type == "peer.left")
    }

    @Test func signsTimestampDotBodyWithHMACSHA256() {
        let body = ByteBuffer(
            string:
                #"{"id":"evt_1","type":"peer.joined","time":1767225600,"tenant":null,"peer":"alice","room":"lobby"}"#
        )
        // Python: hmac.new(secret, b"1767225600." + body, hashlib.sha256).hexdigest()
        #expect(
            WebhookSignature.header(body: body, secret: Array("whsec-0123456789abcdef".utf8), timestamp: 1_767_225_600)
                == "t=1767225600,v1=c10565a7117d607559ed1135685a7d06c78e78cea0b2fb053cd468a8d62ea86b"
        )
        #expect(
            WebhookSignature.hex(body: body, secret: Array("another-secret-0123".utf8), timestamp: 1_767_225_600)
                != "c10565a7117d607559ed1135685a7d06c78e78cea0b2fb053cd468a8d62ea86b"
        )
    }

    @Test func eventIDsAreRandomAndWellFormed() {
        var generator = SystemRandomNumberGenerator()
        let ids = (0..<100).map { _ in WebhookEvent.randomID(using: &generator) }
        #expect(Set(ids).count == 100)
        #expect(ids.allSatisfy { $0.hasPrefix("evt_") && $0.count == 36 })
    }

    @Test func backoffDoublesUpToTheCapWithJitter() {
        var backoff = WebhookBackoff()
        backoff.base = .milliseconds(100)
        backoff.cap = .seconds(1)
        #expect(backoff.delay(after: 1, jitter: 0) == .milliseconds(50))
        #expect(backoff.delay(after: 1, jitter: 1) == .milliseconds(100))
        #expect(backoff.delay(after: 2, jitter: 1) == .milliseconds(200))
        #expect(backoff.delay(after: 4, jitter: 1) == .milliseconds(800))
        #expect(backoff.delay(after: 5, jitter: 1) == .seconds(1), "capped")
        #expect(backoff.delay(after: 60, jitter: 0.5) == .milliseconds(750))
        #expect(backoff.delay(after: 3, jitter: 7) == .milliseconds(400), "jitter is clamped")
    }

    @Test func queueDropsTheOldestAtItsBound() {
        var queue = WebhookQueue(capacity: 2)
        let events = (1...3).map { WebhookEvent(id: "evt_\($0)", event: .sessionStarted(peer: "p\($0)"), time: 0) }
        #expect(queue.push(events[0]) == nil)
        #expect(queue.push(events[1]) == nil)
        #expect(queue.push(events[2]) == events[0])
        #expect(queue.pop() == events[1])
        #expect(queue.pop() == events[2])
        #expect(queue.pop() == nil)
    }

    @Test func configurationTakesHTTPSOrLoopbackAndALongSecret() throws {
        let secret = "0123456789abcdef"
        _ = try WebhookConfiguration(urls: ["https://app.example/hooks", "http://127.0.0.1:9/h"], secret: secret)
        #expect(throws: WebhookConfiguration.Invalid.self) {
            try WebhookConfiguration(urls: ["http://app.example/hooks"], secret: secret)
        }
        #expect(throws: WebhookConfiguration.Invalid.self) {
            try WebhookConfiguration(urls: ["https://app.example/hooks"], secret: "short")
        }
        #expect(throws: WebhookConfiguration.Invalid.self) { try WebhookConfiguration(urls: [], secret: secret) }
    }
}

@Suite struct HubStateEventTests {
    @Test func recordsNothingUnlessAsked() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        #expect(hub.state.takeEvents().isEmpty)
    }

    @Test func recordsASessionsLifeInOrder() {
        var hub = HubHarness()
        hub.state.recordsEvents = true
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"leave","room":"r"}"#)
        #expect(
            hub.state.takeEvents() == [
                .sessionStarted(peer: "alice"), .sessionStarted(peer: "bob"), .peerJoined(peer: "alice", room: "r"),
                .peerJoined(peer: "bob", room: "r"), .peerLeft(peer: "bob", room: "r"),
            ]
        )
        hub.drop("bob", keep: false)
        #expect(hub.state.takeEvents() == [.sessionEnded(peer: "bob", reason: .closed)])
        hub.drop("alice", keep: true)
        #expect(hub.state.takeEvents().isEmpty, "waiting to resume is no end")
        hub.advance(seconds: 31)
        #expect(
            hub.state.takeEvents() == [
                .peerLeft(peer: "alice", room: "r"), .roomEmpty(room: "r"),
                .sessionEnded(peer: "alice", reason: .expired),
            ]
        )
    }

    @Test func aKickEndsWithReasonKicked() {
        var hub = HubHarness()
        hub.state.recordsEvents = true
        hub.connect("bob")
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        _ = hub.state.takeEvents()
        var actions: [HubAction] = []
        _ = hub.state.kick("bob", actions: &actions)
        #expect(
            hub.state.takeEvents() == [
                .peerLeft(peer: "bob", room: "r"), .roomEmpty(room: "r"), .sessionEnded(peer: "bob", reason: .kicked),
            ]
        )
    }
}
