import Testing

@testable import Signaling

struct BufferedSystemRandomTests {
    /// Numbers keep coming across refills, differ between generators, and look uniform.
    @Test func numbersAreDistinctAcrossRefillsAndGenerators() {
        var first = BufferedSystemRandom(numbers: 4)
        var second = BufferedSystemRandom()
        var seen = Set<UInt64>()
        var ones = 0
        for _ in 0..<1000 {
            let number = first.next()
            ones += number.nonzeroBitCount
            seen.insert(number)
            seen.insert(second.next())
        }
        #expect(seen.count == 2000)
        // 64,000 bits: the count of ones is within 1% of half (more than 8 standard deviations).
        #expect(abs(ones - 32_000) < 640)
    }

    @Test func tokensAndPeerIDsFromOneSourceAreUnique() {
        var characters = RandomCharacters()
        var tokens = Set<SessionToken>()
        var peers = Set<String>()
        for _ in 0..<5000 {
            tokens.insert(SessionToken.random(using: &characters.source))
            peers.insert(PeerIdentity.randomID(using: &characters))
        }
        #expect(tokens.count == 5000)
        #expect(peers.count == 5000)
    }
}
