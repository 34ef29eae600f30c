import Testing

@testable import PeerMesh

/// A member that knows the mesh secret (its links authenticate) but not the other nodes' keys: what it
/// sends must not crash a node, rewrite another member's address or incarnation, grow a table without
/// bound, or put words in the mouth of a peer it does not host. State machines only, no sockets.
@Suite struct HostileMemberTests {
    static let second: UInt64 = 1_000_000_000
    let victim = NodeIdentity.seeded(31)
    let hostile = NodeIdentity.seeded(32)
    let honest = NodeIdentity.seeded(33)

    /// The victim's membership with the hostile and the honest node as members.
    func membership(configuration: MembershipConfiguration = .init()) -> Membership {
        var membership = Membership(identity: victim, address: "victim:1", configuration: configuration, seed: 1)
        _ = membership.start(seeds: [], now: 0)
        let joins = [hostile, honest].map {
            MemberUpdate(signedBy: $0, address: "\($0.id):1", incarnation: 0, status: .alive)
        }
        _ = membership.receive(.gossip(updates: joins), from: hostile.id, now: 1)
        #expect(membership.liveCount == 3)
        return membership
    }

    @Test(arguments: [MemberUpdate.Status.suspect, .dead, .left])
    func aSuspicionAtIncarnationMaxDoesNotCrashOrRaiseTheVictim(status: MemberUpdate.Status) {
        var membership = membership()
        // Unsigned, and signed by the hostile node: both refused.
        var forged = MemberUpdate(signedBy: hostile, address: "victim:1", incarnation: .max, status: status)
        forged.node = victim.id
        let unsigned = MemberUpdate(node: victim.id, address: "victim:1", incarnation: .max, status: status)
        _ = membership.receive(.gossip(updates: [forged, unsigned]), from: hostile.id, now: 2)
        #expect(membership.incarnation == 0)
        #expect(membership.refusedUpdates == 2)
        // The victim's own claim at 0xFFFFFFFF (only the victim can sign it, say before a restart with
        // the same key): it cannot refute above it, and nothing overflows.
        let own = MemberUpdate(signedBy: victim, address: "victim:1", incarnation: .max, status: status)
        _ = membership.receive(.gossip(updates: [own]), from: hostile.id, now: 3)
        _ = membership.tick(now: 10 * Self.second)
        _ = membership.leave(now: 11 * Self.second)
        #expect(membership.incarnation <= .max)
    }

    @Test func aMemberAtIncarnationMaxOfItsOwnCannotOverflowAnyone() {
        var membership = membership()
        for status in [MemberUpdate.Status.alive, .suspect, .dead, .alive, .left] {
            let update = MemberUpdate(signedBy: hostile, address: "h:1", incarnation: .max, status: status)
            _ = membership.receive(.gossip(updates: [update]), from: hostile.id, now: 2)
        }
        _ = membership.tick(now: 5 * Self.second)
        #expect(membership.status(of: hostile.id) == .dead)
        #expect(membership.members[hostile.id]?.incarnation == .max)
    }

    @Test func anotherMembersAddressAndIncarnationCannotBeRewritten() {
        var membership = membership()
        let address = membership.address(of: honest.id)
        // The hostile node moves the honest one to its own address, with a higher incarnation: signed by
        // the hostile node (wrong key), unsigned, and the honest node's signature on other values.
        var wrongKey = MemberUpdate(signedBy: hostile, address: "evil:1", incarnation: 7, status: .alive)
        wrongKey.node = honest.id
        let unsigned = MemberUpdate(node: honest.id, address: "evil:1", incarnation: 7, status: .alive)
        var replayed = MemberUpdate(signedBy: honest, address: "honest:2", incarnation: 1, status: .alive)
        replayed.address = "evil:1"
        _ = membership.receive(.gossip(updates: [wrongKey, unsigned, replayed]), from: hostile.id, now: 2)
        #expect(membership.address(of: honest.id) == address)
        #expect(membership.refusedUpdates == 3)
        // A suspicion at an incarnation the honest node never signed is refused too.
        var suspicion = MemberUpdate(signedBy: hostile, address: address!, incarnation: 3, status: .suspect)
        suspicion.node = honest.id
        _ = membership.receive(.gossip(updates: [suspicion]), from: hostile.id, now: 3)
        #expect(membership.status(of: honest.id) == .alive)
        // The honest node's own move is accepted, from anyone who passes it on.
        let moved = MemberUpdate(signedBy: honest, address: "honest:2", incarnation: 1, status: .alive)
        _ = membership.receive(.gossip(updates: [moved]), from: hostile.id, now: 4)
        #expect(membership.address(of: honest.id) == "honest:2")
        // Whatever this node passes on about the honest node still carries the honest node's signature.
        let ack = membership.receive(
            .join(MemberUpdate(signedBy: hostile, address: "h:1", incarnation: 0, status: .alive)),
            from: hostile.id,
            now: 5
        )
        guard case .send(_, .joinReply(let list)) = ack.last else {
            Issue.record("no join reply: \(ack)")
            return
        }
        #expect(list.allSatisfy { $0.isSigned })
    }

    @Test func theMemberListIsBounded() {
        var configuration = MembershipConfiguration()
        configuration.maxMembers = 8
        var membership = membership(configuration: configuration)
        let strangers = (0..<40).map { NodeIdentity.seeded(100 + UInt8($0)) }
        let updates = strangers.map { MemberUpdate(signedBy: $0, address: "x:1", incarnation: 0, status: .alive) }
        _ = membership.receive(.gossip(updates: updates), from: hostile.id, now: 2)
        #expect(membership.members.count == 8)
        #expect(membership.refusedUpdates == 40 - 6)
        // Dead members make room for new ones.
        let dead = strangers.prefix(6).map { MemberUpdate(signedBy: $0, address: "x:1", incarnation: 0, status: .dead) }
        _ = membership.receive(.gossip(updates: dead), from: hostile.id, now: 3)
        let newcomer = NodeIdentity.seeded(200)
        _ = membership.receive(
            .gossip(updates: [MemberUpdate(signedBy: newcomer, address: "n:1", incarnation: 0, status: .alive)]),
            from: hostile.id,
            now: 4
        )
        #expect(membership.status(of: newcomer.id) == .alive)
        #expect(membership.members.count == 8)
    }

    @Test func pingRequestRelaysAreBounded() {
        var configuration = MembershipConfiguration()
        configuration.maxRelays = 4
        var membership = membership(configuration: configuration)
        var pings = 0
        for probe in 0..<50 {
            let actions = membership.receive(
                .pingRequest(probe: UInt32(probe), target: honest.id, updates: []),
                from: hostile.id,
                now: 2
            )
            pings += actions.count { if case .send(_, .ping) = $0 { true } else { false } }
        }
        #expect(pings == 4)
        #expect(membership.relays.count == 4)
    }

    // MARK: Directory

    func record(_ peer: String, room: String? = nil, host: NodeIdentity, expiresAt: UInt64 = 60 * second)
        -> SignedRecord
    {
        let subject: LocationRecord.Subject = room.map { .roomMember(room: $0, peer: peer) } ?? .peer(peer)
        return LocationRecord(subject: subject, host: host.id, sequence: 1, expiresAt: expiresAt, present: true)
            .signed(by: host).signed
    }

    @Test func theDirectoryIsBoundedInAllAndPerHost() {
        var configuration = MeshConfiguration()
        configuration.maxRecordsPerHost = 5
        configuration.maxDirectoryRecords = 8
        var node = MeshNode(identity: victim, address: "victim:1", configuration: configuration, seed: 1)
        _ = node.start(seeds: [], now: 0)
        let flood = (0..<20).map { record("p\($0)", host: hostile) }
        _ = node.receive(.store(batch: 1, records: flood), from: hostile.id, now: 1)
        #expect(node.directory.count == 5)
        let honestRecords = (0..<5).map { record("q\($0)", host: honest) }
        _ = node.receive(.store(batch: 2, records: honestRecords), from: honest.id, now: 1)
        #expect(node.directory.count == 8)
        #expect(node.directory.refused == 15 + 2)
        // Refreshing a held record is always allowed.
        let refreshed = LocationRecord(
            subject: .peer("p0"),
            host: hostile.id,
            sequence: 2,
            expiresAt: 60 * Self.second,
            present: true
        )
        _ = node.receive(.store(batch: 3, records: [refreshed.signed(by: hostile).signed]), from: hostile.id, now: 2)
        #expect(node.directory.location(of: "p0")?.record.sequence == 2)
    }

    @Test func recordsWithLongNamesOrEndlessLifetimesAreRefused() {
        var node = MeshNode(identity: victim, address: "victim:1", seed: 1)
        _ = node.start(seeds: [], now: 0)
        let records = [
            record(String(repeating: "x", count: 65), host: hostile),
            record("p", room: String(repeating: "r", count: 65), host: hostile),
            record("forever", host: hostile, expiresAt: .max),
        ]
        _ = node.receive(.store(batch: 1, records: records), from: hostile.id, now: 1)
        #expect(node.directory.count == 0)
        #expect(node.takeOffences() == [MeshOffence(node: hostile.id, reason: .locationRecord)])
    }

    // MARK: Relayed signals

    /// The victim node hosting "bob", with the hostile and the honest node as members.
    func victimNode() -> MeshNode {
        var node = MeshNode(identity: victim, address: "victim:1", seed: 1)
        _ = node.start(seeds: [], now: 0)
        let joins = [hostile, honest].map {
            MemberUpdate(signedBy: $0, address: "\($0.id):1", incarnation: 0, status: .alive)
        }
        _ = node.receive(.membership(.gossip(updates: joins)), from: hostile.id, now: 1)
        _ = node.connect(peer: "bob", now: 1)
        _ = node.takeOffences()
        return node
    }

    func signal(from: String, origin: NodeIdentity, id: UInt64 = 1, hops: UInt8 = 1) -> MeshSignal {
        MeshSignal(
            origin: origin.id,
            id: id,
            from: from,
            target: .peer("bob"),
            route: .direct,
            hops: hops,
            payload: Array("{}".utf8)
        )
    }

    func deliveries(_ actions: [MeshAction]) -> Int {
        actions.count { if case .deliver = $0 { true } else { false } }
    }

    @Test func aSignalFromAPeerTheSenderHostsIsDelivered() {
        var node = victimNode()
        let actions = node.receive(
            .signal(signal(from: "mallory", origin: hostile).vouched(by: hostile)),
            from: hostile.id,
            now: 2
        )
        #expect(deliveries(actions) == 1)
        #expect(node.takeOffences().isEmpty)
    }

    @Test func aSignalFromAPeerTheSenderDoesNotHostIsDroppedAndTheSenderReported() {
        var node = victimNode()
        // alice is the honest node's peer; the hostile node has a genuine record of her (as her home).
        let alicesRecord = record("alice", host: honest)
        var cases: [(MeshSignal, MeshOffence.Reason)] = []
        // 1. No credential at all.
        cases.append((signal(from: "alice", origin: hostile, id: 1), .unsignedSignal))
        // 2. The hostile node vouches for alice itself: its record names mallory, not alice.
        var wrongPeer = signal(from: "alice", origin: hostile, id: 2)
        wrongPeer.credential = SignalCredential.sign(wrongPeer, sender: record("mallory", host: hostile), as: hostile)
        cases.append((wrongPeer, .senderNotHosted))
        // 3. Alice's genuine record, but the hostile node as origin.
        var wrongHost = signal(from: "alice", origin: hostile, id: 3)
        wrongHost.credential = SignalCredential.sign(wrongHost, sender: alicesRecord, as: hostile)
        cases.append((wrongHost, .senderNotHosted))
        // 4. Alice's genuine record with the honest node as origin, signed by the hostile node.
        var forged = signal(from: "alice", origin: honest, id: 4)
        forged.credential = SignalCredential.sign(forged, sender: alicesRecord, as: hostile)
        cases.append((forged, .forgedSignal))
        // 5. A genuine signal of the honest node, its payload rewritten on the way.
        var rewritten = signal(from: "alice", origin: honest, id: 5).vouched(by: honest)
        rewritten.payload = Array("{\"sdp\":\"evil\"}".utf8)
        cases.append((rewritten, .forgedSignal))
        // 6. A hop count past the limit.
        cases.append(
            (signal(from: "mallory", origin: hostile, id: 6, hops: 255).vouched(by: hostile), .malformedSignal)
        )
        for (signal, reason) in cases {
            let actions = node.receive(.signal(signal), from: hostile.id, now: 2)
            #expect(deliveries(actions) == 0, "\(reason)")
            #expect(actions.isEmpty, "a forger gets no answer: \(actions)")
            let offences = node.takeOffences()
            #expect(offences == [MeshOffence(node: hostile.id, reason: reason)])
            #expect(offences.allSatisfy { $0.disconnects })
        }
        // A forged signal leaves no trace: the genuine one with the same key is still delivered.
        let genuine = signal(from: "alice", origin: honest, id: 4).vouched(by: honest)
        #expect(deliveries(node.receive(.signal(genuine), from: honest.id, now: 3)) == 1)
    }

    @Test func aStaleSenderRecordIsDroppedWithoutDisconnecting() {
        var node = victimNode()
        let expired = signal(from: "alice", origin: honest).vouched(by: honest, expiresAt: 1)
        let actions = node.receive(.signal(expired), from: honest.id, now: 2)
        #expect(deliveries(actions) == 0)
        #expect(actions == [.send(to: honest.id, .hopAck(expired.key, .notFound, location: nil))])
        let offences = node.takeOffences()
        #expect(offences == [MeshOffence(node: honest.id, reason: .staleSender)])
        #expect(!offences[0].disconnects)
    }

    @Test func anUndeliverableNoticeCountsOnlyFromTheHomeNodeThatAcceptedTheSignal() {
        var router = Router(me: victim.id, configuration: MeshConfiguration())
        let key = SignalKey(origin: victim.id, id: 9)
        router.accepted[key] = ("bob", honest.id, 0)
        #expect(router.receiveUndeliverable(key, from: hostile.id).isEmpty)
        #expect(router.receiveUndeliverable(key, from: honest.id) == [.unavailable(key, peer: "bob")])
    }
}
