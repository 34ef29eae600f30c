import Testing

@testable import Signaling

/// The connection caps' accounting: a connection counted under its own address at accept, or (a trusted
/// proxy's) in the total at accept and under its client at the upgrade; everything given back once.
@Suite struct ConnectionCountsTests {
    @Test func connectionsAreCountedInAllAndPerAddress() {
        var counts = ConnectionCounts(maxTotal: 3, maxPerClient: 2)
        let first = ["192.0.2.1", "192.0.2.1", "192.0.2.1"].map { counts.acquire(client: $0) }
        #expect(first == [true, true, false], "the per-address cap")
        #expect(counts.total == 2 && counts.perClient == ["192.0.2.1": 2], "a refusal takes nothing")
        let second = ["192.0.2.2", "192.0.2.3"].map { counts.acquire(client: $0) }
        #expect(second == [true, false], "the total cap")
        #expect(counts.perClient["192.0.2.3"] == nil)
        counts.release(client: "192.0.2.1")
        let third = counts.acquire(client: "192.0.2.3")
        #expect(third)
        for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] { counts.release(client: client) }
        #expect(counts.total == 0 && counts.perClient.isEmpty)
    }

    @Test func aProxysConnectionCountsItsClientAtTheUpgrade() {
        var counts = ConnectionCounts(maxTotal: 10, maxPerClient: 2)
        // Three connections from the proxy: in the total only, whatever the per-address cap.
        let accepted = (0..<3).map { _ in counts.acquire(client: nil) }
        #expect(accepted == [true, true, true])
        #expect(counts.total == 3 && counts.perClient.isEmpty)
        // Their upgrades name two clients; the third of one client is refused, and takes nothing.
        let upgrades = ["192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"].map { counts.acquireClient($0) }
        #expect(upgrades == [true, true, false, true])
        #expect(counts.total == 3 && counts.perClient == ["192.0.2.1": 2, "192.0.2.2": 1])
        // A client's direct connection shares its count with its proxied ones.
        let direct = counts.acquire(client: "192.0.2.1")
        #expect(!direct)
        #expect(counts.total == 3)
        // Closing: each part given back once.
        counts.releaseClient("192.0.2.1")
        counts.release(client: nil)
        #expect(counts.total == 2 && counts.perClient == ["192.0.2.1": 1, "192.0.2.2": 1])
        let again = counts.acquireClient("192.0.2.1")
        #expect(again, "the slot is free again")
    }

    @Test func aProxysConnectionThatNeverNamesAClientGivesBackItsTotalSlot() {
        var counts = ConnectionCounts(maxTotal: 1, maxPerClient: 1)
        let accepted = [counts.acquire(client: nil), counts.acquire(client: nil)]
        #expect(accepted == [true, false], "the total cap holds for the proxy's connections too")
        counts.release(client: nil)
        #expect(counts.total == 0 && counts.perClient.isEmpty)
        let direct = counts.acquire(client: "192.0.2.1")
        #expect(direct)
    }
}
