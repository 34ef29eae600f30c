import Testing

@testable import Signaling

/// Which client a trusted proxy's request comes from, by its `X-Forwarded-For`.
@Suite struct TrustedProxiesTests {
    /// A balancer on 10.0.0.0/8 and one on 2001:db8:1::/48, as `--trusted-proxy` would give them.
    let proxies = TrustedProxies([
        try! IPNetwork(parsing: "10.0.0.0/8"),
        try! IPNetwork(parsing: "2001:db8:1::/48"),
    ])

    func client(_ values: String...) -> TrustedProxies.Client {
        proxies.client(forwardedFor: values)
    }

    func forwarded(_ text: String) -> TrustedProxies.Client {
        .forwarded(IPAddress(text)!)
    }

    @Test func theRightMostAddressThatIsNotATrustedProxyIsTheClient() {
        #expect(client("192.0.2.1") == forwarded("192.0.2.1"))
        // Proxies in front of proxies: the trusted ones at the right end are skipped.
        #expect(client("192.0.2.1, 10.1.1.1, 10.2.2.2") == forwarded("192.0.2.1"))
        #expect(client("2001:db8:2::5, 2001:db8:1::7") == forwarded("2001:db8:2::5"))
    }

    @Test func whatTheClientSentItselfDoesNotCount() {
        // A client that sends `X-Forwarded-For: 198.51.100.9` reaches the hub with the proxy's append after
        // it: its own address is the right-most untrusted one, whatever it claimed.
        #expect(client("198.51.100.9, 192.0.2.1") == forwarded("192.0.2.1"))
        #expect(client("10.9.9.9, 192.0.2.1") == forwarded("192.0.2.1"), "claiming a proxy's address too")
        #expect(client("198.51.100.9", "192.0.2.1") == forwarded("192.0.2.1"), "as a header line of its own")
    }

    @Test func whenEveryAddressIsATrustedProxyTheLeftMostIsTheClient() {
        #expect(client("10.0.0.5, 10.0.0.6") == forwarded("10.0.0.5"))
        #expect(client("10.0.0.5") == forwarded("10.0.0.5"))
    }

    @Test func everyHeaderLineIsPartOfOneList() {
        #expect(client("192.0.2.1, 203.0.113.4", "10.0.0.1") == forwarded("203.0.113.4"))
        #expect(client("10.0.0.1", "192.0.2.1") == forwarded("192.0.2.1"))
    }

    @Test func addressesAreNormalized() {
        #expect(client("::ffff:192.0.2.1") == forwarded("192.0.2.1"))
        #expect(client("192.0.2.1, ::ffff:10.0.0.1") == forwarded("192.0.2.1"), "a mapped proxy address is trusted")
        #expect(client("2001:DB8:2:0:0:0:0:5") == forwarded("2001:db8:2::5"))
        if case .forwarded(let address) = client("2001:DB8:2:0:0:0:0:5") {
            #expect(address.description == "2001:db8:2::5")
        }
    }

    @Test func spacesAndEmptyElementsAreSkipped() {
        #expect(client(" 192.0.2.1 ,\t10.0.0.1\t") == forwarded("192.0.2.1"))
        #expect(client(",192.0.2.1,,") == forwarded("192.0.2.1"))
    }

    @Test func noAddressMeansTheConnectionsOwn() {
        #expect(proxies.client(forwardedFor: []) == .absent)
        #expect(client("") == .absent)
        #expect(client(" , ,") == .absent)
    }

    @Test func anElementThatIsNotAnAddressMeansTheConnectionsOwn() {
        #expect(client("unknown, 192.0.2.1") == .malformed("unknown"))
        #expect(client("192.0.2.1:4711") == .malformed("192.0.2.1:4711"), "no ports")
        #expect(client("[2001:db8::1]") == .malformed("[2001:db8::1]"), "no brackets")
        #expect(client("192.0.2.1", "for=192.0.2.2") == .malformed("for=192.0.2.2"), "not RFC 7239 Forwarded")
        #expect(client("192.0.2.1 10.0.0.1") == .malformed("192.0.2.1 10.0.0.1"))
        let long = String(repeating: "x", count: 1000)
        #expect(client(long) == .malformed(String(repeating: "x", count: 64)), "only its start is kept")
    }

    @Test func trustIsByRange() {
        #expect(proxies.contains(IPAddress("10.200.0.1")!))
        #expect(proxies.contains(IPAddress("::ffff:10.200.0.1")!))
        #expect(proxies.contains(IPAddress("2001:db8:1:ffff::1")!))
        #expect(!proxies.contains(IPAddress("2001:db8:2::1")!))
        #expect(!proxies.contains(IPAddress("192.0.2.1")!))
        #expect(TrustedProxies([]).isEmpty && !TrustedProxies([]).contains(IPAddress("10.0.0.1")!))
    }
}
