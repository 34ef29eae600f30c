import Testing

@testable import MeshHarness
@testable import PeerMesh

@Suite struct RoutingTests {
    static let second: UInt64 = 1_000_000_000
    static let ms: UInt64 = 1_000_000

    final class Deliveries {
        var byPeer: [String: [MeshSignal]] = [:]
        var unavailable: [SignalKey: UInt64] = [:]
    }

    func cluster(nodes: Int, loss: Double = 0, seed: UInt64 = 3) -> (MeshCluster, Deliveries) {
        var configuration = MeshConfiguration()
        configuration.hopTimeout = 150 * Self.ms
        let cluster = MeshCluster(
            link: LinkModel(delay: 20 * Self.ms, jitter: 5 * Self.ms, loss: loss),
            configuration: configuration,
            seed: seed
        )
        cluster.addNode(seeds: [])
        for _ in 1..<nodes { cluster.addNode(seeds: [0]) }
        let deliveries = Deliveries()
        cluster.onAction = { _, action, time in
            switch action {
            case .deliver(let peer, let signal): deliveries.byPeer[peer, default: []].append(signal)
            case .unavailable(let key, _): deliveries.unavailable[key] = time
            default: break
            }
        }
        cluster.run(until: 2 * Self.second)
        return (cluster, deliveries)
    }

    func homes(of peer: String, in cluster: MeshCluster) -> [Int] {
        Ownership.homeNodes(of: MeshKey(peer: peer), among: cluster.aliveIndices.map { cluster.keys[$0] })
            .map { cluster.index(of: $0)! }
    }

    @Test func locationRecordsReachTheHomeNodesAndFollowAJoin() {
        let (mesh, _) = cluster(nodes: 10)
        mesh.connect(peer: "bob", to: 4)
        mesh.run(until: 3 * Self.second)
        for home in homes(of: "bob", in: mesh) where home != 4 {
            #expect(mesh.node(home)!.directory.location(of: "bob")?.record.host == mesh.keys[4])
        }
        // New nodes join: whichever becomes a home of bob gets the record without bob reconnecting.
        for _ in 0..<20 { mesh.addNode(seeds: [0]) }
        mesh.run(until: 6 * Self.second)
        let newHomes = homes(of: "bob", in: mesh)
        #expect(newHomes.contains { $0 >= 10 }, "with 30 nodes some home should be new (seeded)")
        for home in newHomes where home != 4 {
            #expect(mesh.node(home)!.directory.location(of: "bob")?.record.host == mesh.keys[4])
        }
    }

    @Test func homeNodesDropRecordsOfADeadHostAndOwnershipMovesOnLeave() {
        let (mesh, _) = cluster(nodes: 10)
        mesh.connect(peer: "bob", to: 4)
        mesh.connect(peer: "carol", to: 6)
        mesh.run(until: 3 * Self.second)
        let carolHomes = homes(of: "carol", in: mesh)
        let victim = carolHomes.first { $0 != 6 && $0 != 0 && $0 != 4 }!
        mesh.kill(4)
        mesh.kill(victim)
        mesh.run(until: 8 * Self.second)
        for i in mesh.aliveIndices {
            #expect(mesh.node(i)!.directory.location(of: "bob") == nil, "records of a dead host are dropped")
        }
        let after = homes(of: "carol", in: mesh)
        #expect(!after.contains(victim))
        for home in after where home != 6 {
            #expect(mesh.node(home)!.directory.location(of: "carol")?.record.host == mesh.keys[6])
        }
    }

    @Test func firstSignalTakesTwoHopsThenOne() {
        let (mesh, deliveries) = cluster(nodes: 12)
        // Pick a recipient node that is not a home of the recipient, and a sender node that is neither.
        let recipientNode = 5
        mesh.connect(peer: "bob", to: recipientNode)
        let bobHomes = homes(of: "bob", in: mesh)
        let senderNode = (1..<12).first { $0 != recipientNode && !bobHomes.contains($0) }!
        mesh.connect(peer: "alice", to: senderNode)
        mesh.run(until: 3 * Self.second)
        _ = mesh.send(from: "alice", at: senderNode, to: .peer("bob"), payload: [1])
        mesh.run(until: 4 * Self.second)
        _ = mesh.send(from: "alice", at: senderNode, to: .peer("bob"), payload: [2])
        _ = mesh.send(from: "bob", at: recipientNode, to: .peer("alice"), payload: [3])
        mesh.run(until: 5 * Self.second)
        #expect(deliveries.byPeer["bob"]?.map(\.hops) == [2, 1])
        #expect(deliveries.byPeer["alice"]?.map(\.hops) == [1], "the reply uses the location learned from the signal")
    }

    @Test func retriesUnderLossDeliverExactlyOnce() {
        let (mesh, deliveries) = cluster(nodes: 8, loss: 0.2, seed: 11)
        mesh.run(until: 8 * Self.second)
        mesh.connect(peer: "bob", to: 2)
        mesh.connect(peer: "alice", to: 6)
        mesh.run(until: 12 * Self.second)
        var sent: [SignalKey] = []
        for n in 0..<200 {
            mesh.schedule(at: 12 * Self.second + UInt64(n) * 20 * Self.ms) { mesh in
                if let key = mesh.send(from: "alice", at: 6, to: .peer("bob"), payload: [UInt8(n % 256)]) {
                    sent.append(key)
                }
            }
        }
        mesh.run(until: 20 * Self.second)
        let received = deliveries.byPeer["bob"] ?? []
        #expect(Set(received.map(\.key)).count == received.count, "no duplicate deliveries")
        // With 20% loss each way, a hop fails 36% of the time: only retries get signals through.
        // Nothing is lost silently: each signal was delivered or its sender was told (a few are both,
        // when every ack of a delivered signal was lost).
        let answered = Set(received.map(\.key)).union(deliveries.unavailable.keys)
        let silent = Set(sent).subtracting(answered).map(\.id).sorted()
        #expect(silent.isEmpty, "lost without an answer: \(silent)")
        #expect(sent.count == 200)
        #expect(received.count >= 195)
    }

    @Test func aPeerNobodyHostsIsReportedUnavailableWithinTwoSeconds() {
        let (mesh, deliveries) = cluster(nodes: 8)
        mesh.connect(peer: "alice", to: 1)
        mesh.connect(peer: "ghost", to: 3)
        mesh.run(until: 3 * Self.second)
        mesh.disconnect(peer: "ghost", from: 3)
        mesh.run(until: 4 * Self.second)
        let sentAt = mesh.now
        let key = mesh.send(from: "alice", at: 1, to: .peer("ghost"))!
        let unknown = mesh.send(from: "alice", at: 1, to: .peer("never-connected"))!
        mesh.run(until: 7 * Self.second)
        #expect(deliveries.unavailable[key].map { $0 - sentAt }! <= 2 * Self.second)
        #expect(deliveries.unavailable[unknown].map { $0 - sentAt }! <= 2 * Self.second)
        #expect(deliveries.byPeer["ghost"] == nil)
    }

    @Test func duplicateSignalIsDeliveredOnceAndAckedAgain() {
        var configuration = MeshConfiguration()
        configuration.replicas = 1
        let me = try! NodeIdentity(seed: [UInt8](repeating: 4, count: 32))
        let other = try! NodeIdentity(seed: [UInt8](repeating: 5, count: 32))
        var node = MeshNode(identity: me, address: "a", configuration: configuration, seed: 1)
        _ = node.start(seeds: [], now: 0)
        _ = node.connect(peer: "bob", now: 0)
        let signal = MeshSignal(
            origin: other.id,
            id: 1,
            from: "alice",
            target: .peer("bob"),
            route: .direct,
            hops: 1,
            payload: []
        ).vouched(by: other)
        let first = node.receive(.signal(signal), from: other.id, now: 10)
        let again = node.receive(.signal(signal), from: other.id, now: 20)
        #expect(first.filter { if case .deliver = $0 { true } else { false } }.count == 1)
        #expect(again.filter { if case .deliver = $0 { true } else { false } }.isEmpty)
        #expect(again.contains(.send(to: other.id, .hopAck(signal.key, .delivered, location: nil))))
    }

    @Test func hopLimitStopsForwarding() {
        let me = try! NodeIdentity(seed: [UInt8](repeating: 6, count: 32))
        let other = try! NodeIdentity(seed: [UInt8](repeating: 7, count: 32))
        var node = MeshNode(identity: me, address: "a", seed: 1)
        _ = node.start(seeds: [], now: 0)
        let signal = MeshSignal(
            origin: other.id,
            id: 9,
            from: "alice",
            target: .peer("bob"),
            route: .viaHome,
            hops: 3,
            payload: []
        ).vouched(by: other)
        let actions = node.receive(.signal(signal), from: other.id, now: 10)
        #expect(actions == [.send(to: other.id, .hopAck(signal.key, .notFound, location: nil))])
    }

    @Test func roomBroadcastReachesMembersOnOtherNodes() {
        let (mesh, deliveries) = cluster(nodes: 10)
        for (peer, node) in [("a", 1), ("b", 3), ("c", 5), ("d", 5), ("e", 8)] {
            mesh.connect(peer: peer, to: node)
            if peer != "e" { mesh.withNode(node) { n, now in ((), n.join(peer: peer, room: "lobby", now: now)) } }
        }
        mesh.run(until: 3 * Self.second)
        _ = mesh.send(from: "a", at: 1, to: .room("lobby"))
        mesh.run(until: 4 * Self.second)
        #expect(deliveries.byPeer.keys.sorted() == ["b", "c", "d"])
        #expect(deliveries.byPeer.values.allSatisfy { $0.count == 1 && $0[0].hops <= 2 })
    }
}
