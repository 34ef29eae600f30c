import NIOCore

/// An IPv4 or IPv6 address, as the connection caps count clients by it.
///
/// IPv4 addresses are held as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) and
/// written as IPv4, so a client is one address whether it arrives over IPv4, through a dual-stack socket
/// (which reports `::ffff:a.b.c.d`) or named by a proxy in either form. ``description`` writes what
/// glibc's `inet_ntop` writes for the same address (RFC 5952: lowercase, the longest run of two or more
/// zero groups as `::`), so an address counted from a socket and the same address read from a header are
/// the same key.
struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// The 128 bits, most significant first.
    var high: UInt64
    var low: UInt64

    init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The IPv4 address `a.b.c.d` with `a` in the most significant byte.
    init(ipv4: UInt32) {
        self.init(high: 0, low: 0xFFFF_0000_0000 | UInt64(ipv4))
    }

    /// An IPv4 address (or an IPv4-mapped IPv6 one).
    var isIPv4: Bool { high == 0 && low >> 32 == 0xFFFF }

    /// The address of a socket (nil for a Unix domain socket).
    init?(_ address: SocketAddress) {
        // The address bytes, in network order, sit at the same offset on Linux and Darwin: after the family
        // (and length) and the port in a `sockaddr_in`, after those and the flow label in a `sockaddr_in6`.
        let (offset, count): (Int, Int)
        switch address {
        case .v4: (offset, count) = (4, 4)
        case .v6: (offset, count) = (8, 16)
        case .unixDomainSocket: return nil
        }
        var (high, low) = (UInt64(0), UInt64(0))
        address.withSockAddr { pointer, size in
            precondition(size >= offset + count)
            let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer) + offset, count: count)
            // IPv6: the first 8 bytes are the high half; IPv4: all 4 are the low end.
            let split = max(0, count - 8)
            for byte in bytes[..<split] { high = high << 8 | UInt64(byte) }
            for byte in bytes[split...] { low = low << 8 | UInt64(byte) }
        }
        if count == 4 {
            self.init(ipv4: UInt32(truncatingIfNeeded: low))
        } else {
            self.init(high: high, low: low)
        }
    }

    // MARK: Parsing and writing (`inet_pton` and `inet_ntop`, through NIO's `SocketAddress`)

    /// Parses an IPv4 address in dotted decimal or an IPv6 address in RFC 4291 §2.2 text form, as
    /// `inet_pton` takes them. Nothing else: no surrounding spaces, brackets, ports or zone ids.
    init?(_ text: some StringProtocol) {
        guard let address = try? SocketAddress(ipAddress: String(text), port: 0) else { return nil }
        self.init(address)
    }

    /// What `inet_ntop` writes for the address (RFC 5952: lowercase, the longest run of two or more zero
    /// groups as `::`); an IPv4 or IPv4-mapped address as dotted decimal.
    var description: String {
        var packed = ByteBuffer()
        if isIPv4 {
            packed.writeInteger(UInt32(truncatingIfNeeded: low))
        } else {
            packed.writeInteger(high)
            packed.writeInteger(low)
        }
        return (try? SocketAddress(packedIPAddress: packed, port: 0))?.ipAddress ?? "?"
    }
}
