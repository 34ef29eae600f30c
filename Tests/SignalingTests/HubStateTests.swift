import NIOCore
import Testing

@testable import Signaling

/// Drives a `HubState` with no sockets and records what it decides.
struct HubHarness {
    var state: HubState
    var now: UInt64 = 1_000_000_000
    var nextConnection: UInt64 = 1
    var connections: [String: ConnectionID] = [:]

    init(limits: HubLimits = HubLimits()) {
        state = HubState(limits: limits)
    }

    static func welcome(_ peer: String, _ token: String, _ resumed: Bool, _ gap: Bool) -> ByteBuffer {
        ByteBuffer(
            string: #"{"type":"welcome","peer":"\#(peer)","session":"\#(token)","resumed":\#(resumed),"gap":\#(gap)}"#
        )
    }

    /// Opens a session and returns the actions.
    @discardableResult
    mutating func connect(_ peer: String?, subject: String? = nil, grant: RoomGrant = .all) -> (
        OpenOutcome, [HubAction]
    ) {
        self.open(.fresh(peer: peer, subject: subject, grant: grant), as: nil)
    }

    mutating func resume(_ peer: String, token: String, last: UInt64) -> (OpenOutcome, [HubAction]) {
        self.open(.resume(token: token, last: last, subject: nil), as: peer)
    }

    /// Opens a connection with `request`; once opened it is `peer`'s (nil: whatever id the hub chose).
    private mutating func open(_ request: OpenRequest, as peer: String?) -> (OpenOutcome, [HubAction]) {
        let connection = ConnectionID(nextConnection)
        nextConnection += 1
        var actions: [HubAction] = []
        let outcome = state.open(connection, request, now: now, welcome: Self.welcome, actions: &actions)
        if case .opened(let id, _, _, _) = outcome { connections[peer ?? id] = connection }
        return (outcome, actions)
    }

    @discardableResult
    mutating func send(_ peer: String, _ text: String) -> [HubAction] {
        guard case .success(let message) = MessageDecoder().decode(ByteBuffer(string: text)) else {
            Issue.record("invalid test message \(text)")
            return []
        }
        var actions: [HubAction] = []
        state.receive(connections[peer]!, message, actions: &actions)
        return actions
    }

    @discardableResult
    mutating func drop(_ peer: String, keep: Bool = true) -> [HubAction] {
        var actions: [HubAction] = []
        state.closed(connections[peer]!, keepSession: keep, now: now, actions: &actions)
        return actions
    }

    @discardableResult
    mutating func advance(seconds: Double) -> [HubAction] {
        now += UInt64(seconds * 1e9)
        var actions: [HubAction] = []
        state.tick(now: now, actions: &actions)
        return actions
    }

    /// Text messages `actions` send to `peer`'s current connection.
    func texts(_ actions: [HubAction], to peer: String) -> [String] {
        actions.compactMap {
            if case .send(let connection, let buffer) = $0, connection == connections[peer] {
                return String(buffer: buffer)
            }
            if case .ack(let connection, let id, let queued) = $0, connection == connections[peer] {
                return String(buffer: ServerMessage.ack(id: id, queued: queued))
            }
            return nil
        }
    }

    func closes(_ actions: [HubAction]) -> [(ConnectionID, CloseCode)] {
        actions.compactMap {
            if case .close(let connection, let code, _) = $0 { return (connection, code) }
            return nil
        }
    }
}

@Suite struct HubStateTests {
    @Test func joinAnnouncesPresenceBothWays() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        let a = hub.send("alice", #"{"type":"join","room":"r","meta":{"name":"A"},"id":"1"}"#)
        #expect(hub.texts(a, to: "alice") == [#"{"type":"joined","room":"r","peers":[],"id":"1"}"#])
        let b = hub.send("bob", #"{"type":"join","room":"r","id":"2"}"#)
        #expect(
            hub.texts(b, to: "bob") == [
                #"{"type":"joined","room":"r","peers":[{"peer":"alice","meta":{"name":"A"}}],"id":"2"}"#
            ]
        )
        #expect(hub.texts(b, to: "alice") == [#"{"type":"peer-joined","room":"r","peer":"bob","meta":{},"seq":1}"#])
        let again = hub.send("bob", #"{"type":"join","room":"r"}"#)
        #expect(hub.texts(again, to: "alice").isEmpty, "joining twice is idempotent")
        let left = hub.send("bob", #"{"type":"leave","room":"r","id":"3"}"#)
        #expect(hub.texts(left, to: "bob") == [#"{"type":"left","room":"r","id":"3"}"#])
        #expect(hub.texts(left, to: "alice") == [#"{"type":"peer-left","room":"r","peer":"bob","seq":2}"#])
        let notIn = hub.send("bob", #"{"type":"leave","room":"r","id":"4"}"#)
        #expect(hub.texts(notIn, to: "bob").first?.contains(#""code":"not-in-room""#) == true)
    }

    @Test func relaysWithFromAndSeqAndAcks() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        let actions = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"v=0","from":"eve","id":"o1"}"#)
        #expect(
            hub.texts(actions, to: "bob") == [
                #"{"type":"offer","to":"bob","sdp":"v=0","id":"o1","from":"alice","seq":1}"#
            ]
        )
        #expect(hub.texts(actions, to: "alice") == [#"{"type":"ack","id":"o1"}"#])
        let missing = hub.send("alice", #"{"type":"bye","to":"nobody","id":"b"}"#)
        #expect(hub.texts(missing, to: "alice").first?.contains(#""code":"peer-unavailable""#) == true)
    }

    @Test func roomScopeAndSharedRoomRules() {
        var limits = HubLimits()
        limits.requireSharedRoom = true
        var hub = HubHarness(limits: limits)
        hub.connect("alice")
        hub.connect("bob")
        let noShare = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"1"}"#)
        #expect(hub.texts(noShare, to: "alice").first?.contains("not-in-room") == true)
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        let scoped = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","room":"r","id":"2"}"#)
        #expect(hub.texts(scoped, to: "alice").first?.contains("not-in-room") == true)
        let notMember = hub.send("bob", #"{"type":"message","room":"r","data":1,"id":"3"}"#)
        #expect(hub.texts(notMember, to: "bob").first?.contains("not-in-room") == true)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        let ok = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","room":"r","id":"4"}"#)
        #expect(hub.texts(ok, to: "alice") == [#"{"type":"ack","id":"4"}"#])
    }

    @Test func broadcastReachesEveryOtherMember() {
        var hub = HubHarness()
        for peer in ["a", "b", "c"] {
            hub.connect(peer)
            hub.send(peer, #"{"type":"join","room":"r"}"#)
        }
        let actions = hub.send("a", #"{"type":"message","room":"r","data":"hi","id":"m"}"#)
        #expect(hub.texts(actions, to: "a") == [#"{"type":"ack","id":"m"}"#])
        #expect(hub.texts(actions, to: "b").count == 1)
        #expect(hub.texts(actions, to: "c").count == 1)
    }

    @Test func limitsRoomsAndRoomSize() {
        var limits = HubLimits()
        limits.maxRoomsPerPeer = 2
        limits.maxPeersPerRoom = 2
        var hub = HubHarness(limits: limits)
        for peer in ["a", "b", "c"] { hub.connect(peer) }
        hub.send("a", #"{"type":"join","room":"r1"}"#)
        hub.send("a", #"{"type":"join","room":"r2"}"#)
        #expect(
            hub.texts(hub.send("a", #"{"type":"join","room":"r3"}"#), to: "a").first?.contains("too-many-rooms") == true
        )
        hub.send("b", #"{"type":"join","room":"r1"}"#)
        #expect(hub.texts(hub.send("c", #"{"type":"join","room":"r1"}"#), to: "c").first?.contains("room-full") == true)
    }

    @Test func tokenGrantsRooms() {
        var hub = HubHarness()
        hub.connect(nil, subject: "alice", grant: RoomGrant(claim: ["lobby"]))
        #expect(
            hub.texts(hub.send("alice", #"{"type":"join","room":"vip"}"#), to: "alice").first?.contains("forbidden")
                == true
        )
        #expect(
            hub.texts(hub.send("alice", #"{"type":"join","room":"lobby"}"#), to: "alice").first?.contains("joined")
                == true
        )
        #expect(RoomGrant(claim: ["*"]) == .all)
    }

    @Test func idTakenWithoutTokenAndTakeoverWithIt() {
        var hub = HubHarness()
        hub.connect("alice")
        let (outcome, actions) = hub.connect("alice")
        #expect(outcome == .refused(.idTaken))
        #expect(hub.closes(actions).map(\.1) == [.idTaken])

        var authed = HubHarness()
        authed.connect(nil, subject: "bob")
        authed.connect("carol")
        authed.send("bob", #"{"type":"join","room":"r"}"#)
        authed.send("carol", #"{"type":"join","room":"r"}"#)
        let old = authed.connections["bob"]!
        let (again, takeover) = authed.connect("bob", subject: "bob")
        #expect(again == .opened(peer: "bob", resumed: false, gap: false, replayed: 0))
        #expect(authed.closes(takeover).contains { $0.0 == old && $0.1 == .idTaken })
        #expect(authed.texts(takeover, to: "carol").first?.contains("peer-left") == true)
        let (_, suffixed) = authed.connect("bob~tab2", subject: "bob")
        #expect(authed.state.hasSession("bob~tab2"))
        _ = suffixed
        let (refused, _) = authed.connect("carol", subject: "bob")
        #expect(refused == .refused(.unauthorized))
    }

    @Test func resumeReplaysExactlyWhatWasMissed() throws {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        for n in 1...5 { hub.send("alice", #"{"type":"message","to":"bob","data":\#(n)}"#) }
        let token = try #require(hub.state.resumeToken(of: "bob"))
        hub.drop("bob")
        let queued = hub.send("alice", #"{"type":"message","to":"bob","data":6,"id":"q"}"#)
        #expect(hub.texts(queued, to: "alice") == [#"{"type":"ack","id":"q","queued":true}"#])
        let (outcome, actions) = hub.resume("bob", token: token, last: 3)
        #expect(outcome == .opened(peer: "bob", resumed: true, gap: false, replayed: 3))
        let texts = hub.texts(actions, to: "bob")
        #expect(texts.first?.contains(#""resumed":true"#) == true)
        #expect(
            texts.dropFirst().map { $0.contains(#""seq":4"#) || $0.contains(#""seq":5"#) || $0.contains(#""seq":6"#) }
                == [true, true, true]
        )
        // Once the resumed connection's welcome is written, the used token is refused and the live
        // session is left alone (no 4009 for it).
        hub.state.welcomeWritten(hub.connections["bob"]!)
        let (reused, closes) = hub.resume("bob", token: token, last: 0)
        #expect(reused == .refused(.sessionNotResumable))
        #expect(hub.closes(closes).map(\.1) == [.sessionNotResumable])
        #expect(hub.state.peer(of: hub.connections["bob"]!) == "bob")
    }

    @Test func aResumeCutOffBeforeItsWelcomeCanBeRetried() throws {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"message","to":"bob","data":1}"#)
        let first = try #require(hub.state.resumeToken(of: "bob"))
        hub.drop("bob")
        // The hub takes the resume, but the connection dies before bob reads the welcome (new token).
        let (taken, _) = hub.resume("bob", token: first, last: 0)
        #expect(taken == .opened(peer: "bob", resumed: true, gap: false, replayed: 1))
        let cutOff = hub.connections["bob"]!
        hub.drop("bob")
        hub.state.welcomeWritten(cutOff)  // too late: that connection is no longer the session's
        // bob only knows the first token: it still works, and nothing is lost.
        let (retried, actions) = hub.resume("bob", token: first, last: 0)
        #expect(retried == .opened(peer: "bob", resumed: true, gap: false, replayed: 1))
        #expect(hub.texts(actions, to: "bob").dropFirst().first?.contains(#""data":1"#) == true)
        // This time the welcome is written: from now on only the newest token resumes, even while the
        // client has sent nothing yet.
        let newest = try #require(hub.state.resumeToken(of: "bob"))
        hub.state.welcomeWritten(hub.connections["bob"]!)
        let (reused, reusedActions) = hub.resume("bob", token: first, last: 0)
        #expect(reused == .refused(.sessionNotResumable))
        #expect(hub.closes(reusedActions).map(\.1) == [.sessionNotResumable], "the live session is left alone")
        hub.drop("bob")
        let (stale, _) = hub.resume("bob", token: first, last: 1)
        #expect(stale == .refused(.sessionNotResumable))
        let (fresh, _) = hub.resume("bob", token: newest, last: 1)
        #expect(fresh == .opened(peer: "bob", resumed: true, gap: false, replayed: 0))
    }

    @Test func sessionsWaitingToResumeAreBoundedOldestEndsFirst() throws {
        var limits = HubLimits()
        limits.maxDetachedSessions = 2
        var hub = HubHarness(limits: limits)
        hub.connect("alice")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        for peer in ["b1", "b2", "b3"] {
            hub.connect(peer)
            hub.send(peer, #"{"type":"join","room":"r"}"#)
        }
        let tokens = try ["b1", "b2", "b3"].map { try #require(hub.state.resumeToken(of: $0)) }
        hub.drop("b1")
        hub.advance(seconds: 1)
        hub.drop("b2")
        #expect(hub.state.sessionCount == 4)
        // A third session waiting to resume: the oldest (b1) ends, and its room hears it left.
        let actions = hub.drop("b3")
        #expect(hub.texts(actions, to: "alice") == [#"{"type":"peer-left","room":"r","peer":"b1","seq":4}"#])
        #expect(!hub.state.hasSession("b1") && hub.state.hasSession("b2") && hub.state.hasSession("b3"))
        #expect(hub.state.counters.detachedEvicted == 1)
        #expect(hub.resume("b1", token: tokens[0], last: 0).0 == .refused(.sessionNotResumable))
        // A resumed session no longer counts; its stale queue entry is skipped.
        #expect(
            hub.resume("b2", token: tokens[1], last: 0).0 == .opened(peer: "b2", resumed: true, gap: false, replayed: 2)
        )
        hub.connect("b4")
        hub.drop("b4")
        #expect(hub.state.hasSession("b3") && hub.state.hasSession("b4"))
        // Grace periods still end in order.
        hub.advance(seconds: 31)
        #expect(!hub.state.hasSession("b3") && !hub.state.hasSession("b4") && hub.state.hasSession("b2"))
    }

    @Test func sessionsWaitingToResumeAreBoundedPerAddress() throws {
        var limits = HubLimits()
        limits.maxDetachedPerClient = 2
        var hub = HubHarness(limits: limits)
        for (peer, client) in [("a1", "10.0.0.1"), ("a2", "10.0.0.1"), ("b1", "10.0.0.2"), ("a3", "10.0.0.1")] {
            var actions: [HubAction] = []
            let connection = ConnectionID(hub.nextConnection)
            hub.nextConnection += 1
            _ = hub.state.open(
                connection,
                .fresh(peer: peer, subject: nil, grant: .all, client: client),
                now: hub.now,
                welcome: HubHarness.welcome,
                actions: &actions
            )
            hub.connections[peer] = connection
        }
        hub.drop("a1")
        hub.drop("b1")
        hub.drop("a2")
        // A third from 10.0.0.1 ends that address's oldest (a1); 10.0.0.2's session is not touched.
        hub.drop("a3")
        #expect(!hub.state.hasSession("a1"))
        #expect(hub.state.hasSession("a2") && hub.state.hasSession("a3") && hub.state.hasSession("b1"))
        #expect(hub.state.counters.detachedEvicted == 1)
    }

    @Test func resumeTakesOverALiveSocket() throws {
        var hub = HubHarness()
        hub.connect("bob")
        let old = hub.connections["bob"]!
        let token = try #require(hub.state.resumeToken(of: "bob"))
        let (outcome, actions) = hub.resume("bob", token: token, last: 0)
        #expect(outcome == .opened(peer: "bob", resumed: true, gap: false, replayed: 0))
        #expect(hub.closes(actions).contains { $0.0 == old && $0.1 == .idTaken })
    }

    @Test func gapWhenTheBufferNoLongerCoversLast() throws {
        var limits = HubLimits()
        limits.resumeBufferMessages = 4
        var hub = HubHarness(limits: limits)
        hub.connect("alice")
        hub.connect("bob")
        for n in 1...10 { hub.send("alice", #"{"type":"message","to":"bob","data":\#(n)}"#) }
        let token = try #require(hub.state.resumeToken(of: "bob"))
        hub.drop("bob")
        let (outcome, _) = hub.resume("bob", token: token, last: 2)
        #expect(outcome == .opened(peer: "bob", resumed: true, gap: true, replayed: 4))
        let next = try #require(hub.state.resumeToken(of: "bob"))
        hub.drop("bob")
        let (beyond, _) = hub.resume("bob", token: next, last: 99)
        #expect(beyond == .opened(peer: "bob", resumed: true, gap: true, replayed: 0))
    }

    @Test func receivedTrimsTheBuffer() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        for n in 1...10 { hub.send("alice", #"{"type":"message","to":"bob","data":\#(n)}"#) }
        #expect(hub.state.bufferedCount(of: "bob") == 10)
        hub.send("bob", #"{"type":"received","seq":7}"#)
        #expect(hub.state.bufferedCount(of: "bob") == 3)
    }

    @Test func graceExpiryEndsSessionAndExpiresQueuedSignals() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        let dropped = hub.drop("bob")
        #expect(hub.texts(dropped, to: "alice").isEmpty, "no peer-left during the grace period")
        hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"o1"}"#)
        #expect(hub.advance(seconds: 29).isEmpty)
        let expiry = hub.advance(seconds: 2)
        let toAlice = hub.texts(expiry, to: "alice")
        #expect(toAlice.contains { $0.hasPrefix(#"{"type":"peer-left","room":"r","peer":"bob""#) })
        #expect(toAlice.contains { $0.hasPrefix(#"{"type":"expired","id":"o1","to":"bob","signal":"offer""#) })
        #expect(!hub.state.hasSession("bob"))
    }

    @Test func closeFrameEndsSessionAtOnce() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        hub.send("bob", #"{"type":"join","room":"r"}"#)
        let actions = hub.drop("bob", keep: false)
        #expect(hub.texts(actions, to: "alice").first?.contains("peer-left") == true)
    }

    @Test func queueIsBoundedWhileAway() {
        var limits = HubLimits()
        limits.resumeBufferMessages = 8
        var hub = HubHarness(limits: limits)
        hub.connect("alice")
        hub.connect("bob")
        hub.drop("bob")
        var full = 0
        guard
            case .success(let message) = MessageDecoder().decode(
                ByteBuffer(string: #"{"type":"message","to":"bob","data":1}"#)
            )
        else {
            Issue.record("invalid message")
            return
        }
        let alice = hub.connections["alice"]!
        for _ in 0..<100_000 {
            var actions: [HubAction] = []
            hub.state.receive(alice, message, actions: &actions)
            // An error, not an ack.
            if case .send(_, let reply) = actions.last, reply.readableBytesView.count > 40 { full += 1 }
        }
        #expect(full == 100_000 - 8)
        #expect(hub.state.bufferedCount(of: "bob") == 8)
        #expect(hub.state.totalBufferedBytes < 4096)
    }

    @Test func unconfirmedDeliveriesDoNotFillTheQueue() {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        for n in 0..<300 { hub.send("alice", #"{"type":"message","to":"bob","data":\#(n)}"#) }
        hub.drop("bob")
        let reply = hub.texts(hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"o"}"#), to: "alice")
        #expect(reply == [#"{"type":"ack","id":"o","queued":true}"#])
    }

    @Test func broadcastToAnAwayMemberIsQueuedAndExpires() {
        var limits = HubLimits()
        limits.resumeGraceNanos = 1_000_000_000
        var hub = HubHarness(limits: limits)
        for peer in ["a", "b"] {
            hub.connect(peer)
            hub.send(peer, #"{"type":"join","room":"r"}"#)
        }
        hub.drop("b")
        let ack = hub.texts(hub.send("a", #"{"type":"message","room":"r","data":1,"id":"m"}"#), to: "a")
        #expect(ack == [#"{"type":"ack","id":"m","queued":true}"#])
        let expiry = hub.texts(hub.advance(seconds: 2), to: "a")
        #expect(expiry.contains { $0.hasPrefix(#"{"type":"expired","id":"m","to":"b","signal":"message""#) })
    }

    @Test func resentLeaveIsAnsweredFromMemory() throws {
        var hub = HubHarness()
        hub.connect("alice")
        hub.send("alice", #"{"type":"join","room":"r"}"#)
        hub.send("alice", #"{"type":"leave","room":"r","id":"l1"}"#)
        let token = try #require(hub.state.resumeToken(of: "alice"))
        hub.drop("alice")
        _ = hub.resume("alice", token: token, last: 0)
        let again = hub.texts(hub.send("alice", #"{"type":"leave","room":"r","id":"l1"}"#), to: "alice")
        #expect(again == [#"{"type":"left","room":"r","id":"l1"}"#])
    }

    @Test func impossibleLastStillDeliversWhatWasQueued() throws {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        let token = try #require(hub.state.resumeToken(of: "bob"))
        hub.drop("bob")
        hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"o"}"#)
        let (outcome, actions) = hub.resume("bob", token: token, last: 50)
        #expect(outcome == .opened(peer: "bob", resumed: true, gap: true, replayed: 1))
        #expect(hub.texts(actions, to: "bob").last?.contains(#""type":"offer""#) == true)
    }

    @Test func globalBudgetBoundsAllBuffers() {
        var limits = HubLimits()
        limits.globalBufferBytes = 10_000
        var hub = HubHarness(limits: limits)
        hub.connect("alice")
        for n in 0..<50 { hub.connect("p\(n)") }
        for n in 0..<50 {
            for _ in 0..<20 { hub.send("alice", #"{"type":"message","to":"p\#(n)","data":"0123456789"}"#) }
        }
        #expect(hub.state.totalBufferedBytes <= 10_000)
    }

    @Test func resentRequestIsAnsweredFromMemory() throws {
        var hub = HubHarness()
        hub.connect("alice")
        hub.connect("bob")
        let first = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"o1"}"#)
        #expect(hub.texts(first, to: "bob").count == 1)
        let token = try #require(hub.state.resumeToken(of: "alice"))
        hub.drop("alice")
        _ = hub.resume("alice", token: token, last: 0)
        let again = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"o1"}"#)
        #expect(hub.texts(again, to: "alice") == [#"{"type":"ack","id":"o1"}"#])
        #expect(hub.texts(again, to: "bob").isEmpty, "not delivered twice")
        let fresh = hub.send("alice", #"{"type":"offer","to":"bob","sdp":"x","id":"o2"}"#)
        #expect(hub.texts(fresh, to: "bob").count == 1)
    }
}

@Suite struct RateLimiterTests {
    @Test func burstThenRefuseThenDisconnect() {
        let policy = RateLimiter.Policy(burst: 3, ratePerSecond: 1, maxStrikes: 2)
        var limiter = RateLimiter(policy: policy, now: 0)
        #expect((0..<3).map { _ in limiter.take(now: 0, policy: policy) } == [.allow, .allow, .allow])
        #expect(limiter.take(now: 0, policy: policy) == .refuse)
        #expect(limiter.take(now: 0, policy: policy) == .refuse)
        #expect(limiter.take(now: 0, policy: policy) == .disconnect)
    }

    @Test func refillsAndForgivesAfterAQuietSecond() {
        let policy = RateLimiter.Policy(burst: 1, ratePerSecond: 10, maxStrikes: 1)
        var limiter = RateLimiter(policy: policy, now: 0)
        #expect(limiter.take(now: 0, policy: policy) == .allow)
        #expect(limiter.take(now: 0, policy: policy) == .refuse)
        #expect(limiter.take(now: 2_000_000_000, policy: policy) == .allow)
        #expect(
            limiter.take(now: 2_000_000_000, policy: policy) == .refuse,
            "strikes were forgiven: refuse, not disconnect"
        )
    }
}

@Suite struct OriginPolicyTests {
    @Test func defaultAllowsSameOriginAndNative() {
        let policy = OriginPolicy()
        #expect(policy.allows(origin: nil, host: "hub.example:8080"))
        #expect(policy.allows(origin: "http://hub.example:8080", host: "hub.example:8080"))
        #expect(policy.allows(origin: "https://hub.example", host: "hub.example"))
        #expect(!policy.allows(origin: "https://evil.example", host: "hub.example"))
    }

    @Test func allowListAndWildcard() {
        let policy = OriginPolicy(allowedOrigins: ["https://app.example/"])
        #expect(policy.allows(origin: "https://APP.example", host: "hub"))
        #expect(!policy.allows(origin: "https://other.example", host: "hub"))
        #expect(OriginPolicy(allowedOrigins: ["*"]).allows(origin: "https://any.example", host: "hub"))
    }
}

@Suite struct OutboxTests {
    @Test func overflowIsFlaggedAndWakes() {
        let outbox = Outbox(limit: 10) {}
        #expect(outbox.append(.text(ByteBuffer(string: "12345"))))
        #expect(!outbox.append(.text(ByteBuffer(string: "12345"))), "already waking")
        #expect(outbox.append(.text(ByteBuffer(string: "1"))), "overflow always wakes")
        let (items, overflowed) = outbox.take()
        #expect(items.isEmpty)
        #expect(overflowed)
    }
}
