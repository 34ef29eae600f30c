import Foundation
import NIOCore
import Testing

@testable import Signaling

/// ``Tenant``: names qualified on the way in, shown without the tenant on the way out — without sockets.
@Suite struct TenantTests {
    static func message(_ text: String) -> ClientMessage {
        guard case .success(let message) = MessageDecoder().decode(ByteBuffer(string: text)) else {
            fatalError("not a valid request: \(text)")
        }
        return message
    }

    @Test func namesAreQualifiedAndShownWithoutTheTenant() throws {
        let acme = try #require(Tenant("acme"))
        #expect(acme.qualify("alice") == "acme/alice")
        #expect(Tenant.default.qualify("alice") == "alice")
        #expect(Tenant.display("acme/alice") == "alice")
        #expect(Tenant.display("alice") == "alice")
        #expect(Tenant.of("acme/alice") == acme)
        #expect(Tenant.of("alice") == .default)
        #expect(acme.owns("acme/lobby") && !acme.owns("lobby") && !acme.owns("globex/lobby"))
    }

    @Test func tenantNamesUseThePeerIDCharset() {
        #expect(Tenant("acme-1.eu_~x") != nil)
        for bad in ["", "a/b", "a b", "ü", String(repeating: "a", count: 65)] {
            #expect(Tenant(bad) == nil, "\(bad)")
        }
        #expect(Identifier.isValidQualified("acme/alice") && Identifier.isValidQualified("alice"))
        #expect(!Identifier.isValidQualified("acme/") && !Identifier.isValidQualified("/alice"))
        #expect(!Identifier.isValidQualified("a/b/c"))
    }

    @Test func requestsNameTheTenantsPeersAndRooms() throws {
        let acme = try #require(Tenant("acme"))
        guard case .join(let room, _) = Self.message(#"{"type":"join","room":"lobby"}"#).qualified(by: acme).request
        else { Issue.record("not a join"); return }
        #expect(room == "acme/lobby")
        guard case .leave(let left) = Self.message(#"{"type":"leave","room":"lobby"}"#).qualified(by: acme).request
        else { Issue.record("not a leave"); return }
        #expect(left == "acme/lobby")
        let offer = Self.message(#"{"type":"offer","to":"bob","room":"lobby","sdp":"v=0","id":"o1"}"#)
        guard case .signal(let envelope) = offer.qualified(by: acme).request else {
            Issue.record("not a signal")
            return
        }
        #expect(envelope.to == "acme/bob" && envelope.room == "acme/lobby")
        // The recipient gets the bytes the sender wrote, with the names its tenant knows.
        #expect(String(buffer: envelope.members).contains(#""to":"bob""#))
        guard case .signal(let same) = offer.qualified(by: .default).request else { return }
        #expect(same.to == "bob")
    }

    @Test func anOpenRequestIsInTheTenantsNamespace() throws {
        let acme = try #require(Tenant("acme"))
        guard
            case .fresh(let peer, let subject, _, _) = OpenRequest.fresh(peer: "alice~2", subject: "alice", grant: .all)
                .qualified(by: acme)
        else { Issue.record("not fresh"); return }
        #expect(peer == "acme/alice~2" && subject == "acme/alice")
        #expect(PeerIdentity.choose(requested: peer, subject: subject) == .id("acme/alice~2"))
    }

    @Test func messagesToClientsCarryNamesWithoutTheTenant() {
        let joined = ServerMessage.joined(room: "acme/lobby", peers: [("acme/bob", nil)], id: "j1")
        #expect(
            String(buffer: joined) == #"{"type":"joined","room":"lobby","peers":[{"peer":"bob","meta":{}}],"id":"j1"}"#
        )
        let relayed = ServerMessage.relayed(
            ByteBuffer(string: #"{"type":"offer","to":"alice""#),
            from: "acme/bob",
            seq: 3
        )
        #expect(String(buffer: relayed) == #"{"type":"offer","to":"alice","from":"bob","seq":3}"#)
        #expect(
            ServerMessage.signalPrefixLength(ByteBuffer(string: "{}"), from: "acme/bob")
                == ServerMessage.signalPrefixLength(ByteBuffer(string: "{}"), from: "bob")
        )
        #expect(Refusal.peerUnavailable("acme/bob").message == #"peer "bob" is not connected"#)
    }

    @Test func aTokensTenantQualifiesItsSubjectAndRooms() {
        let token = SignalTokenPayload(sub: "alice", exp: Date(), rooms: ["lobby", "*"], tenant: "acme")
        #expect(token.qualifiedSubject == "acme/alice")
        #expect(token.roomGrant == .all)
        let narrow = SignalTokenPayload(sub: "alice", exp: Date(), rooms: ["lobby"], tenant: "acme")
        #expect(narrow.roomGrant == .only(["acme/lobby"]))
        let plain = SignalTokenPayload(sub: "alice", exp: Date(), rooms: ["lobby"])
        #expect(plain.qualifiedSubject == "alice" && plain.roomGrant == .only(["lobby"]))
    }

    @Test func aFreshTokenFromAnotherTenantIsAnotherPeer() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var lifetime = TokenLifetime(subject: "acme/alice", expiry: start.addingTimeInterval(60))
        _ = lifetime.receive(Self.message(#"{"type":"auth","token":"t","id":"a1"}"#))
        let other = SignalTokenPayload(sub: "alice", exp: start.addingTimeInterval(600), tenant: "globex")
        let actions = lifetime.verified(.success(other), id: "a1")
        guard case .reply(let reply) = actions.first, actions.count == 1 else {
            Issue.record("expected one reply, got \(actions)")
            return
        }
        #expect(String(buffer: reply).contains("the token is for another peer"))
        #expect(lifetime.isExpired(at: start.addingTimeInterval(60)))
    }
}

/// ``TenantCounts``: the per-tenant session cap and the bounded set of metrics labels.
@Suite struct TenantCountsTests {
    @Test func aTenantIsCappedAndTheDefaultTenantIsNot() throws {
        let acme = try #require(Tenant("acme"))
        let globex = try #require(Tenant("globex"))
        var counts = TenantCounts(maxSessionsPerTenant: 2, maxLabels: 10)
        var granted: [Bool] = []
        for tenant in [acme, acme, acme, globex] { granted.append(counts.acquire(tenant)) }
        #expect(granted == [true, true, false, true])
        var defaults = 0
        for _ in 0..<5 where counts.acquire(.default) { defaults += 1 }
        #expect(defaults == 5)
        counts.release(acme)
        let again = counts.acquire(acme)
        #expect(again)
        counts.release(globex)
        #expect(counts.sessions[globex] == nil)
    }

    @Test func labelsAreBounded() throws {
        var counts = TenantCounts(maxSessionsPerTenant: 10, maxLabels: 2)
        let names = ["a", "b", "c", "d"].compactMap(Tenant.init)
        var labels: [String] = []
        for name in names { labels.append(counts.label(name)) }
        #expect(labels == ["a", "b", "(other)", "(other)"])
        let kept = counts.label(names[1])
        let plain = counts.label(.default)
        #expect(kept == "b" && plain == "(default)")
    }
}

/// `--max-rooms-per-tenant` in the routing policy: only a join that opens a room of a named tenant counts.
@Suite struct TenantRoomsPolicyTests {
    @Test func aJoinOpeningOneRoomTooManyIsRefused() {
        var limits = HubLimits()
        limits.maxRoomsPerTenant = 2
        let policy = RoutingPolicy(limits: limits)
        func join(_ room: String, size: Int, tenantRooms: Int) -> RoutingPolicy.Join {
            policy.join(
                room: room,
                grant: .all,
                isMember: false,
                roomsHeld: 0,
                roomSize: size,
                tenantRooms: { tenantRooms }
            )
        }
        #expect(join("acme/c", size: 0, tenantRooms: 2) == .refuse(.tenantRoomsFull(limit: 2)))
        #expect(join("acme/c", size: 0, tenantRooms: 1) == .join)
        #expect(join("acme/a", size: 1, tenantRooms: 2) == .join, "an open room of the tenant")
        #expect(join("c", size: 0, tenantRooms: 2) == .join, "the default tenant is not bounded")
        #expect(Refusal.tenantRoomsFull(limit: 2).code == .tenantFull)
    }
}
