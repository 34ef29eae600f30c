import Crypto
import Testing

@testable import PeerMesh

@Suite struct OwnershipTests {
    func key(_ last: UInt8) -> MeshKey {
        MeshKey(bytes: [UInt8](repeating: 0, count: 31) + [last])
    }

    @Test func xorDistanceOrdersNodes() {
        let target = key(0b0000_0101)
        let nodes = [key(0b0000_0100), key(0b0000_0111), key(0b1000_0000), key(0b0000_0001)]
        // distances: 1, 2, 133, 4
        #expect(
            Ownership.homeNodes(of: target, among: nodes) == [key(0b0000_0100), key(0b0000_0111), key(0b0000_0001)]
        )
        #expect(Ownership.homeNodes(of: target, among: nodes, replicas: 1) == [key(0b0000_0100)])
    }

    @Test func ownershipMovesOnlyForKeysNearAJoiningNode() {
        let nodes = (0..<16).map { _ in MeshKey(nodePublicKey: Curve25519.Signing.PrivateKey().publicKey) }
        let peers = (0..<1000).map { MeshKey(peer: "peer-\($0)") }
        let before = peers.map { Ownership.homeNodes(of: $0, among: nodes) }
        let newcomer = MeshKey(nodePublicKey: Curve25519.Signing.PrivateKey().publicKey)
        let after = peers.map { Ownership.homeNodes(of: $0, among: nodes + [newcomer]) }
        var changed = 0
        for (old, new) in zip(before, after) where old != new {
            changed += 1
            #expect(new.contains(newcomer), "a home set only changes by taking in the newcomer")
        }
        // With 17 nodes and r = 3, about 3/17 of the keys gain the newcomer as a home node.
        #expect(changed > 50 && changed < 400)
    }

    @Test func peerKeysAreSHA256() {
        #expect(MeshKey(peer: "alice").description == "2bd806c97f0e")
    }
}
