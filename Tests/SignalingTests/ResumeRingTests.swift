import Testing

@testable import Signaling

@Suite struct ResumeRingTests {
    @Test func anEmptyRingHoldsNoStorage() {
        let ring = ResumeRing<Int>()
        #expect(ring.isEmpty)
        #expect(ring.capacity == 0)
        #expect(ring.first == nil)
    }

    @Test func keepsOrderAcrossWrapAroundAndGrowth() {
        var ring = ResumeRing<Int>()
        var expected: [Int] = []
        var next = 0
        // Interleave appends and removals so the head wraps around while the storage grows.
        for round in 0..<50 {
            for _ in 0..<(round % 5 + 1) {
                ring.append(next)
                expected.append(next)
                next += 1
            }
            if round % 2 == 0, !expected.isEmpty {
                #expect(ring.removeFirst() == expected.removeFirst())
            }
            #expect(Array(ring) == expected)
            #expect(ring.count == expected.count)
            #expect(ring.first == expected.first)
        }
    }

    @Test func elementsChangeInPlace() {
        var ring = ResumeRing<String>()
        for word in ["a", "b", "c"] { ring.append(word) }
        ring.removeFirst()
        ring.append("d")
        for index in ring.indices { ring[index] += "!" }
        #expect(Array(ring) == ["b!", "c!", "d!"])
    }

    @Test func storageIsReleasedOnceEmpty() {
        var ring = ResumeRing<Int>()
        for value in 0..<100 { ring.append(value) }
        #expect(ring.capacity >= 100)
        while !ring.isEmpty { ring.removeFirst() }
        #expect(ring.capacity == 0)
        ring.append(1)
        #expect(Array(ring) == [1])
    }
}

@Suite struct SessionTokenTests {
    @Test func roundTripsThroughItsWireForm() {
        for _ in 0..<100 {
            let token = SessionToken.random()
            let text = token.description
            #expect(text.utf8.count == 32)
            #expect(text.allSatisfy { $0.isHexDigit && !$0.isUppercase })
            #expect(SessionToken(text) == token)
        }
        #expect(
            SessionToken(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210).description
                == "0123456789abcdeffedcba9876543210"
        )
    }

    @Test func theWireFormNamesThePeer() throws {
        let secret = SessionToken.random()
        let wire = secret.wireForm(peer: "alice.home")
        let (peer, parsed) = try #require(SessionToken.parseWireForm(wire))
        #expect(peer == "alice.home")
        #expect(parsed.matches(secret))
        #expect(!parsed.matches(SessionToken.random()))
        #expect(SessionToken.parseWireForm(secret.description) == nil, "no peer")
        #expect(SessionToken.parseWireForm("." + secret.description) == nil, "empty peer")
        #expect(SessionToken.parseWireForm("alice.xyz") == nil)
    }

    @Test(arguments: [
        "", "abc", String(repeating: "0", count: 31), String(repeating: "0", count: 33),
        String(repeating: "A", count: 32), String(repeating: "g", count: 32), "é" + String(repeating: "0", count: 30),
    ])
    func refusesWhatIsNotThirtyTwoLowercaseHexDigits(_ text: String) {
        #expect(SessionToken(text) == nil)
    }
}
