import NIOCore
import RedisTestSupport
import Testing

@testable import Signaling

/// One case of the recipient-side signal rule: the same table drives the policy's tests (here) and the
/// cluster's `deliver` script against a real `redis-server` (``RoutingScriptConformanceTests``), so the
/// single hub, the mesh (both through the policy) and the cluster (through its script) decide alike.
struct DeliverCase: Sendable, CustomTestStringConvertible {
    var name: String
    /// The recipient's rooms; nil: it has no session.
    var recipientRooms: [String]?
    var senderRooms: [String]
    var room: String?
    var requireSharedRoom: Bool
    var recipient = "bob"
    var sender = "alice"
    var expected: Refusal?

    var testDescription: String { name }

    static let all: [DeliverCase] = [
        DeliverCase(
            name: "no session",
            recipientRooms: nil,
            senderRooms: [],
            room: nil,
            requireSharedRoom: false,
            expected: .peerUnavailable("bob")
        ),
        DeliverCase(
            name: "open relay",
            recipientRooms: [],
            senderRooms: [],
            room: nil,
            requireSharedRoom: false,
            expected: nil
        ),
        DeliverCase(
            name: "room scope, recipient in it",
            recipientRooms: ["x"],
            senderRooms: ["x"],
            room: "x",
            requireSharedRoom: false,
            expected: nil
        ),
        DeliverCase(
            name: "room scope, recipient not in it",
            recipientRooms: ["y"],
            senderRooms: ["x"],
            room: "x",
            requireSharedRoom: false,
            expected: .recipientNotInRoom(peer: "bob", room: "x")
        ),
        DeliverCase(
            name: "room scope wins over shared rule",
            recipientRooms: ["x"],
            senderRooms: ["x"],
            room: "x",
            requireSharedRoom: true,
            expected: nil
        ),
        DeliverCase(
            name: "mallory: no room, shared required",
            recipientRooms: ["x"],
            senderRooms: [],
            room: nil,
            requireSharedRoom: true,
            expected: .noSharedRoom("bob")
        ),
        DeliverCase(
            name: "mallory: other room, shared required",
            recipientRooms: ["x"],
            senderRooms: ["y"],
            room: nil,
            requireSharedRoom: true,
            expected: .noSharedRoom("bob")
        ),
        DeliverCase(
            name: "shared room",
            recipientRooms: ["a", "x"],
            senderRooms: ["y", "x"],
            room: nil,
            requireSharedRoom: true,
            expected: nil
        ),
        DeliverCase(
            name: "to oneself needs no shared room",
            recipientRooms: [],
            senderRooms: [],
            room: nil,
            requireSharedRoom: true,
            recipient: "alice",
            sender: "alice",
            expected: nil
        ),
        DeliverCase(
            name: "no shared rule",
            recipientRooms: ["x"],
            senderRooms: ["y"],
            room: nil,
            requireSharedRoom: false,
            expected: nil
        ),
    ]
}

@Suite struct RoutingPolicyTests {
    static func policy(requireSharedRoom: Bool = false, rooms: Int = 2, peers: Int = 2) -> RoutingPolicy {
        var limits = HubLimits()
        limits.requireSharedRoom = requireSharedRoom
        limits.maxRoomsPerPeer = rooms
        limits.maxPeersPerRoom = peers
        limits.resumeBufferMessages = 2
        limits.resumeBufferBytes = 100
        limits.globalBufferBytes = 1_000
        return RoutingPolicy(limits: limits)
    }

    @Test(arguments: DeliverCase.all) func recipientSide(_ c: DeliverCase) {
        let policy = Self.policy(requireSharedRoom: c.requireSharedRoom)
        let decision = policy.deliver(
            to: c.recipient,
            from: c.sender,
            room: c.room,
            recipientRooms: c.recipientRooms,
            senderRooms: c.senderRooms
        )
        #expect(decision == c.expected)
        if c.requireSharedRoom && c.room == nil && c.recipient != c.sender {
            #expect(policy.needsSenderRooms(room: c.room, to: c.recipient, from: c.sender))
        }
    }

    @Test func senderMustBeInTheRoomItNames() {
        let policy = Self.policy()
        #expect(policy.send(room: "x", senderRooms: ["y"]) == .senderNotInRoom("x"))
        #expect(policy.send(room: "x", senderRooms: ["y", "x"]) == nil)
        #expect(policy.send(room: nil, senderRooms: []) == nil)
    }

    @Test func joins() {
        let policy = Self.policy()
        #expect(
            policy.join(room: "x", grant: .only(["y"]), isMember: false, roomsHeld: 0, roomSize: 0)
                == .refuse(.roomNotGranted("x"))
        )
        #expect(policy.join(room: "x", grant: .all, isMember: false, roomsHeld: 0, roomSize: 0) == .join)
        #expect(
            policy.join(room: "x", grant: .all, isMember: false, roomsHeld: 2, roomSize: 0)
                == .refuse(.tooManyRooms(limit: 2))
        )
        #expect(
            policy.join(room: "x", grant: .all, isMember: false, roomsHeld: 0, roomSize: 2)
                == .refuse(.roomFull("x", limit: 2))
        )
        // A member joining its own (full) room again, at its room limit: only its meta changes.
        #expect(policy.join(room: "x", grant: .all, isMember: true, roomsHeld: 2, roomSize: 2) == .rejoin)
        // A grant taken away still refuses a member's re-join.
        #expect(
            policy.join(room: "x", grant: .only([]), isMember: true, roomsHeld: 1, roomSize: 1)
                == .refuse(.roomNotGranted("x"))
        )
        #expect(policy.leave(room: "x", isMember: false) == .notInRoom("x"))
        #expect(policy.leave(room: "x", isMember: true) == nil)
    }

    @Test func identityAndCollisions() {
        let policy = Self.policy()
        #expect(policy.identity(requested: nil, subject: nil) == .random)
        #expect(policy.identity(requested: "bob", subject: nil) == .id("bob"))
        #expect(policy.identity(requested: nil, subject: "bob") == .id("bob"))
        #expect(policy.identity(requested: "eve", subject: "bob") == .refuse(.peerIDNotAllowed("eve")))
        #expect(policy.collision(peer: "bob", requested: "bob", subject: nil) == .refuse(.idTaken("bob")))
        #expect(policy.collision(peer: "bob", requested: nil, subject: "bob") == .takeOver)
        #expect(policy.collision(peer: "r4nd", requested: nil, subject: nil) == .drawAgain)
    }

    @Test func resumeTokens() {
        let policy = Self.policy()
        #expect(policy.resume(peer: "bob", known: true, subject: nil) == nil)
        #expect(policy.resume(peer: "bob", known: false, subject: nil) == .sessionNotResumable)
        #expect(policy.resume(peer: nil, known: true, subject: nil) == .sessionNotResumable)
        #expect(policy.resume(peer: "bob", known: true, subject: "eve") == .sessionNotResumable)
        #expect(policy.resume(peer: "bob", known: true, subject: "bob") == nil)
    }

    @Test func queueBounds() {
        let policy = Self.policy()
        #expect(policy.mayQueue(size: 50, queuedCount: 0, queuedBytes: 0, globalBytes: 0))
        #expect(!policy.mayQueue(size: 50, queuedCount: 2, queuedBytes: 0, globalBytes: 0))
        #expect(!policy.mayQueue(size: 50, queuedCount: 1, queuedBytes: 60, globalBytes: 0))
        #expect(!policy.mayQueue(size: 50, queuedCount: 0, queuedBytes: 0, globalBytes: 980))
    }

    @Test func updatesNeedMembershipAndRejoinsCompareMetaAsSent() {
        let policy = Self.policy()
        #expect(policy.update(room: "x", isMember: false) == .notInRoom("x"))
        #expect(policy.update(room: "x", isMember: true) == nil)
        let a = ByteBuffer(string: #"{"a":1}"#)
        #expect(!policy.rejoinUpdates(previous: nil, meta: nil), "a resent join without meta")
        #expect(!policy.rejoinUpdates(previous: a, meta: ByteBuffer(string: #"{"a":1}"#)), "a resent join")
        #expect(!policy.rejoinUpdates(previous: nil, meta: ByteBuffer(string: "{}")), "no meta counts as {}")
        #expect(!policy.rejoinUpdates(previous: ByteBuffer(string: "{}"), meta: nil))
        #expect(policy.rejoinUpdates(previous: a, meta: nil), "no meta after some: reset to {}")
        #expect(policy.rejoinUpdates(previous: nil, meta: a))
        #expect(policy.rejoinUpdates(previous: a, meta: ByteBuffer(string: #"{"a": 1}"#)), "compared as sent")
    }

    @Test func volatileSignalsReachOnlyConnectedRecipients() {
        let policy = Self.policy()
        #expect(policy.deliverVolatile(to: "bob", connected: true) == nil)
        #expect(policy.deliverVolatile(to: "bob", connected: false) == .recipientAway("bob"))
        #expect(Refusal.recipientAway("bob").code == .peerUnavailable)
    }

    /// Every refusal's code, text and close are produced here, once; spot-check the wire form.
    @Test func refusalsRenderOnce() {
        #expect(
            String(buffer: Refusal.noSharedRoom("bob").errorMessage(id: "o1"))
                == #"{"type":"error","code":"not-in-room","message":"you share no room with peer \"bob\"","id":"o1"}"#
        )
        #expect(Refusal.idTaken("bob").close == (.idTaken, true))
        #expect(Refusal.sessionNotResumable.close == (.sessionNotResumable, false))
        #expect(Refusal.peerIDNotAllowed("x").close == (.unauthorized, true))
    }
}

/// The cluster's `deliver` script decides the recipient side from the rooms in Redis: it must agree with
/// the policy on every case of the shared table.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RoutingScriptConformanceTests {
    @Test func deliverScriptAgreesWithThePolicy() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let keys = ClusterKeys(prefix: "rc")
        for (index, c) in DeliverCase.all.enumerated() {
            // Each case on its own recipient id, so cases do not see each other's state.
            let recipient = "\(c.recipient)\(index)"
            let sender = c.recipient == c.sender ? recipient : c.sender
            if let rooms = c.recipientRooms {
                _ = try await redis.run(
                    ClusterScripts.create,
                    keys: keys.session(recipient),
                    arguments: [recipient + ".t", "n#1", "1", 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
                )
                for room in rooms {
                    _ = try await redis.run(
                        ClusterScripts.sessionRooms,
                        keys: [keys.session(recipient)[0]],
                        arguments: ["add", room]
                    )
                }
            }
            let policy = RoutingPolicyTests.policy(requireSharedRoom: c.requireSharedRoom)
            let shared = policy.needsSenderRooms(room: c.room, to: recipient, from: sender) ? c.senderRooms : nil
            let prefix = ByteBuffer(string: #"{"type":"message","data":1,"from":"\#(sender)","seq":"#)
            let reply = try await redis.run(
                ClusterScripts.deliver,
                keys: keys.session(recipient),
                arguments: [
                    prefix, sender, "", "message", c.room ?? "", shared.map { $0.joined(separator: ",") } ?? "-",
                    16, 1 << 20, "1", keys.channelPrefix,
                ]
            )
            let result = try #require(DeliverReply(reply)).result
            let scriptDecision: Refusal? =
                (result == .delivered || result == .queued) ? nil : result.refusal(recipient: recipient, room: c.room)
            let expected: Refusal? = c.expected.map { expected in
                switch expected {
                case .peerUnavailable: return .peerUnavailable(recipient)
                case .recipientNotInRoom(_, let room): return .recipientNotInRoom(peer: recipient, room: room)
                case .noSharedRoom: return .noSharedRoom(recipient)
                default: return expected
                }
            }
            #expect(scriptDecision == expected, "\(c.name)")
        }
        await redis.close()
    }

    /// The same table for volatile signals (mode `v`), to recipients connected through a subscribed node:
    /// the script refuses what the policy refuses and delivers the rest; a detached recipient refuses it as
    /// ``RoutingPolicy/deliverVolatile(to:connected:)`` does.
    @Test func volatileDeliveryAgreesWithThePolicy() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        let keys = ClusterKeys(prefix: "rv")
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        for (index, c) in DeliverCase.all.enumerated() {
            let recipient = "\(c.recipient)\(index)"
            let sender = c.recipient == c.sender ? recipient : c.sender
            if let rooms = c.recipientRooms {
                _ = try await redis.run(
                    ClusterScripts.create,
                    keys: keys.session(recipient),
                    arguments: [recipient + ".t", "n#1", "1", 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
                )
                for room in rooms {
                    _ = try await redis.run(
                        ClusterScripts.sessionRooms,
                        keys: [keys.session(recipient)[0]],
                        arguments: ["add", room]
                    )
                }
            }
            let policy = RoutingPolicyTests.policy(requireSharedRoom: c.requireSharedRoom)
            let shared = policy.needsSenderRooms(room: c.room, to: recipient, from: sender) ? c.senderRooms : nil
            func run() async throws -> DeliveryResult {
                let message = ByteBuffer(string: #"{"type":"message","data":1,"volatile":true,"from":"\#(sender)"}"#)
                let reply = try await redis.run(
                    ClusterScripts.deliver,
                    keys: keys.session(recipient),
                    arguments: [
                        message, sender, "", "message", c.room ?? "", shared.map { $0.joined(separator: ",") } ?? "-",
                        16, 1 << 20, "v", keys.channelPrefix,
                    ]
                )
                return try #require(DeliverReply(reply)).result
            }
            let policyDecision = { (connected: Bool) -> Refusal? in
                policy.deliver(
                    to: recipient,
                    from: sender,
                    room: c.room,
                    recipientRooms: c.recipientRooms,
                    senderRooms: c.senderRooms
                ) ?? policy.deliverVolatile(to: recipient, connected: connected)
            }
            let connected = try await run()
            #expect(connected != .queued, "\(c.name): a volatile signal is never queued")
            let decision = connected == .delivered ? nil : connected.refusal(recipient: recipient, room: c.room)
            #expect(decision == policyDecision(true), "\(c.name), connected")
            guard c.recipientRooms != nil else { continue }
            _ = try await redis.run(
                ClusterScripts.detach,
                keys: keys.session(recipient),
                arguments: ["n#1", "1", 9_999_999_999_999, 600_000]
            )
            let away = try await run()
            let awayDecision = away == .delivered ? nil : away.refusal(recipient: recipient, room: c.room)
            #expect(awayDecision == policyDecision(false), "\(c.name), away")
            #expect(try await redis.send(["LLEN", keys.session(recipient)[1]]).int == 0, "\(c.name): nothing buffered")
        }
        await subscriber.close()
        await redis.close()
    }
}
