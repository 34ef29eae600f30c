import Testing

@testable import MeshHarness
@testable import PeerMesh

@Suite struct MembershipTests {
    static let second: UInt64 = 1_000_000_000

    func cluster(nodes: Int, loss: Double = 0, seed: UInt64 = 1) -> MeshCluster {
        let cluster = MeshCluster(link: LinkModel(delay: 20_000_000, jitter: 5_000_000, loss: loss), seed: seed)
        cluster.addNode(seeds: [])
        for _ in 1..<nodes { cluster.addNode(seeds: [0]) }
        return cluster
    }

    func converged(_ cluster: MeshCluster) -> Bool {
        let expected = cluster.aliveIndices.map { cluster.keys[$0] }.sorted()
        return cluster.aliveIndices.allSatisfy { cluster.node($0)!.liveMembers == expected }
    }

    @Test func membershipConvergesThroughASeed() {
        let mesh = cluster(nodes: 32)
        mesh.run(until: 3 * Self.second)
        #expect(converged(mesh))
    }

    @Test func aKilledNodeIsDeclaredDeadByEveryone() {
        let mesh = cluster(nodes: 16)
        mesh.run(until: 3 * Self.second)
        var failedAt: [Int: UInt64] = [:]
        mesh.onAction = { observer, action, time in
            if case .membership(.failed(let node)) = action, node == mesh.keys[5] { failedAt[observer] = time }
        }
        let killedAt = mesh.now
        mesh.kill(5)
        mesh.run(until: killedAt + 6 * Self.second)
        #expect(converged(mesh))
        #expect(failedAt.count == 15)
        let slowest = failedAt.values.max()! - killedAt
        #expect(slowest <= 3 * Self.second, "declared dead everywhere after \(slowest) ns")
    }

    @Test func silentFailureIsFoundByProbes() {
        // A partition reports no dropped link: only probes, indirect probes and suspicion find it.
        let mesh = cluster(nodes: 12)
        mesh.run(until: 3 * Self.second)
        mesh.partition((0..<12).map { $0 == 7 ? 1 : 0 })
        mesh.run(until: 12 * Self.second)
        for i in mesh.aliveIndices where i != 7 {
            #expect(mesh.node(i)!.membership.status(of: mesh.keys[7]) == .dead)
        }
    }

    @Test func aSuspectedNodeRefutesWithAHigherIncarnation() {
        let me = try! NodeIdentity(seed: [UInt8](repeating: 21, count: 32))
        let otherIdentity = try! NodeIdentity(seed: [UInt8](repeating: 22, count: 32))
        var membership = Membership(identity: me, address: "a", seed: 1)
        _ = membership.start(seeds: [], now: 0)
        let other = otherIdentity.id
        _ = membership.receive(
            .gossip(updates: [MemberUpdate(signedBy: otherIdentity, address: "b", incarnation: 0, status: .alive)]),
            from: other,
            now: 1
        )
        // The suspicion carries our own signed claim at incarnation 0 (as every update about us does).
        var suspicion = membership.selfUpdate
        suspicion.status = .suspect
        let actions = membership.receive(.gossip(updates: [suspicion]), from: other, now: 2)
        #expect(actions.isEmpty)
        #expect(membership.incarnation == 1)
        let ack = membership.receive(.ping(probe: 4, updates: []), from: other, now: 3)
        guard case .send(to: other, .ack(probe: 4, let updates)) = ack.first else {
            Issue.record("expected an ack, got \(ack)")
            return
        }
        #expect(updates.contains { $0.node == me.id && $0.incarnation == 1 && $0.status == .alive && $0.isSigned })
        #expect(updates.allSatisfy { $0.isSigned })
    }

    @Test func partitionHealsAndListsMerge() {
        let mesh = cluster(nodes: 16)
        mesh.run(until: 3 * Self.second)
        mesh.partition((0..<16).map { $0 < 8 ? 0 : 1 })
        mesh.run(until: 15 * Self.second)
        #expect(mesh.node(0)!.liveMembers.count == 8)
        mesh.heal()
        mesh.run(until: 20 * Self.second)
        #expect(converged(mesh))
    }

    @Test func membershipSurvivesFivePercentLoss() {
        let mesh = cluster(nodes: 24, loss: 0.05)
        mesh.run(until: 30 * Self.second)
        #expect(converged(mesh))
        for i in mesh.aliveIndices where mesh.node(i)!.liveMembers.count != 24 {
            let missing = mesh.aliveIndices.filter { !mesh.node(i)!.liveMembers.contains(mesh.keys[$0]) }
            print(
                "node \(i) misses \(missing) statuses \(missing.map { mesh.node(i)!.membership.status(of: mesh.keys[$0]).map { "\($0)" } ?? "nil" })"
            )
        }
    }
}
