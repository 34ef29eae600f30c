import NIOCore
import PeerMesh
import Testing

@testable import Signaling

/// Addresses as the connection caps count them: parsed strictly, IPv4-mapped IPv6 as IPv4, written as
/// glibc's `inet_ntop` writes them (checked against it through NIO's `SocketAddress`); CIDR ranges.
@Suite struct IPAddressTests {
    @Test(arguments: [
        ("192.0.2.1", "192.0.2.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("::", "::"),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("fe80::", "fe80::"),
        ("1:0:0:2::", "1:0:0:2::"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:c000:0201", "192.0.2.1"),
        ("0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"),
        ("::192.0.2.1", "::192.0.2.1"),
        ("64:ff9b::192.0.2.1", "64:ff9b::c000:201"),
    ])
    func parsesAndWritesAsInetNtop(text: String, written: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.description == written)
        #expect(IPAddress(written) == address, "what it writes reads back as the same address")
    }

    @Test(arguments: [
        "", " 192.0.2.1", "192.0.2.1 ", "192.0.2", "192.0.2.1.5", "192.0.2.256", "192.0.02.1", "192.0.2.-1",
        "192.0.2.1/32", "192.0.2.1:80", "[::1]", "[::1]:80", "::1%eth0", "1::2::3", ":::", ":1::", "1::2:",
        "1:2:3:4:5:6:7:8:9", "1::2:3:4:5:6:7:8", "1:2:3:4:5:6:7", "12345::", "g::", "::1.2.3.4:5",
        "1.2.3.4::", "::1.2.3", "unknown", "_hidden", "localhost", "1:2:3:4:5:6:7:1.2.3.4",
    ])
    func refusesWhatIsNotAnAddress(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func writesWhatInetNtopWritesAndReadsWhatInetPtonReads() throws {
        // Random addresses with many zero groups (runs of every length and place), through glibc.
        var random = SeededRandom(seed: 6)
        for _ in 0..<5_000 {
            let groups = (0..<8).map { _ in
                Bool.random(using: &random) ? UInt16(0) : UInt16.random(in: 0...0xFFFF, using: &random)
            }
            let text = groups.map { String($0, radix: 16) }.joined(separator: ":")
            let system = try SocketAddress(ipAddress: text, port: 0)
            let address = try #require(IPAddress(text))
            #expect(IPAddress(system) == address, "\(text)")
            if !address.isIPv4 {
                #expect(address.description == system.ipAddress, "\(text)")
            }
            #expect(IPAddress(address.description) == address, "\(text)")
        }
    }

    @Test func socketAddressesAreNormalized() throws {
        let v4 = try SocketAddress(ipAddress: "192.0.2.7", port: 443)
        let mapped = try SocketAddress(ipAddress: "::ffff:192.0.2.7", port: 443)
        #expect(IPAddress(v4)?.description == "192.0.2.7")
        #expect(IPAddress(mapped) == IPAddress(v4), "a dual-stack socket's IPv4 client is the IPv4 client")
        #expect(IPAddress(try SocketAddress(ipAddress: "2001:db8::7", port: 1))?.description == "2001:db8::7")
        #expect(IPAddress(try SocketAddress(unixDomainSocketPath: "/tmp/x")) == nil)
    }

    @Test func networksMatchTheirFamilyAndPrefix() throws {
        let ten = try IPNetwork(parsing: "10.0.0.0/8")
        #expect(ten.contains(IPAddress("10.255.1.2")!))
        #expect(ten.contains(IPAddress("::ffff:10.1.2.3")!))
        #expect(!ten.contains(IPAddress("11.0.0.0")!))
        #expect(!ten.contains(IPAddress("::a00:1")!), "an IPv6 address is not in an IPv4 network")

        let bare = try IPNetwork(parsing: "127.0.0.9")
        #expect(bare.prefixLength == 32)
        #expect(bare.contains(IPAddress("127.0.0.9")!) && !bare.contains(IPAddress("127.0.0.8")!))
        let bare6 = try IPNetwork(parsing: "2001:db8::9")
        #expect(bare6.prefixLength == 128)
        #expect(bare6.contains(IPAddress("2001:db8:0::9")!) && !bare6.contains(IPAddress("2001:db8::8")!))

        let any6 = try IPNetwork(parsing: "::/0")
        #expect(any6.contains(IPAddress("2001:db8::1")!))
        #expect(!any6.contains(IPAddress("192.0.2.1")!), "::/0 is every IPv6 address, not every address")
        let any4 = try IPNetwork(parsing: "0.0.0.0/0")
        #expect(any4.contains(IPAddress("192.0.2.1")!) && !any4.contains(IPAddress("::1")!))

        let odd = try IPNetwork(parsing: "2001:db8:abcd:1234::/49")
        #expect(odd.description == "2001:db8:abcd::/49", "the bits past the prefix are cleared")
        #expect(odd.contains(IPAddress("2001:db8:abcd:7fff::1")!))
        #expect(!odd.contains(IPAddress("2001:db8:abcd:8000::1")!))
        #expect(try IPNetwork(parsing: "192.0.2.77/26").description == "192.0.2.64/26")
        #expect(try IPNetwork(parsing: "::ffff:10.0.0.0/104") == ten, "an IPv4-mapped network is IPv4")
    }

    @Test(arguments: [
        "", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0/8/8",
        "10.0.0.0/08x", "2001:db8::/129", "2001:db8::/1000", "example.org/8", "10.0.0/8", "::ffff:10.0.0.0/95",
    ])
    func refusesBadNetworks(text: String) {
        #expect(throws: IPNetwork.Invalid.self) { try IPNetwork(parsing: text) }
    }
}
