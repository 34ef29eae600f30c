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

    // MARK: Parsing

    /// Parses an IPv4 address in dotted decimal (four decimal octets, no leading zeros, as `inet_pton`
    /// takes them) or an IPv6 address in RFC 4291 §2.2 text form (hex groups, at most one `::`, an
    /// optional dotted IPv4 tail). Nothing else: no surrounding spaces, brackets, ports or zone ids.
    init?(_ text: some StringProtocol) {
        var text = String(text)
        guard let parsed = text.withUTF8({ Self.parse($0) }) else { return nil }
        self = parsed
    }

    private static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> IPAddress? {
        if bytes.contains(UInt8(ascii: ":")) { return parseIPv6(bytes) }
        return parseIPv4(bytes[...]).map { IPAddress(ipv4: $0) }
    }

    /// Four dotted decimal octets, each 0-255 without leading zeros.
    private static func parseIPv4(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> UInt32? {
        var value: UInt32 = 0
        var octets = 0
        var octet: UInt32 = 0
        var digits = 0
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if digits == 1 && octet == 0 { return nil }  // a leading zero
                octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                guard octet <= 255 else { return nil }
            case UInt8(ascii: "."):
                guard digits > 0, octets < 3 else { return nil }
                value = value << 8 | octet
                octets += 1
                octet = 0
                digits = 0
            default:
                return nil
            }
        }
        guard digits > 0, octets == 3 else { return nil }
        return value << 8 | octet
    }

    private static func parseIPv6(_ bytes: UnsafeBufferPointer<UInt8>) -> IPAddress? {
        var groups: [UInt16] = []
        groups.reserveCapacity(8)
        /// Where `::` stands (an index into `groups`), if it appears.
        var gap: Int?
        var index = 0
        let count = bytes.count
        if count >= 2 && bytes[0] == UInt8(ascii: ":") && bytes[1] == UInt8(ascii: ":") {
            gap = 0
            index = 2
        } else if count >= 1 && bytes[0] == UInt8(ascii: ":") {
            return nil  // a single leading colon
        }
        while index < count {
            // One group: hex digits up to the next colon, or a dotted IPv4 tail.
            var end = index
            var isIPv4Tail = false
            while end < count && bytes[end] != UInt8(ascii: ":") {
                if bytes[end] == UInt8(ascii: ".") { isIPv4Tail = true }
                end += 1
            }
            if isIPv4Tail {
                guard end == count, groups.count <= 6,
                    let ipv4 = parseIPv4(bytes[index..<end])
                else { return nil }
                groups.append(UInt16(ipv4 >> 16))
                groups.append(UInt16(ipv4 & 0xFFFF))
                index = end
                break
            }
            guard end > index, end - index <= 4, groups.count < 8 else { return nil }
            var group: UInt16 = 0
            for position in index..<end {
                guard let digit = hexValue(bytes[position]) else { return nil }
                group = group << 4 | UInt16(digit)
            }
            groups.append(group)
            index = end
            guard index < count else { break }
            // A colon: another group follows, or a second colon makes `::`.
            index += 1
            if index < count && bytes[index] == UInt8(ascii: ":") {
                guard gap == nil else { return nil }
                gap = groups.count
                index += 1
            } else if index == count {
                return nil  // a single trailing colon
            }
        }
        if let gap {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
        }
        guard groups.count == 8 else { return nil }
        let high = groups[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let low = groups[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        return IPAddress(high: high, low: low)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: Writing

    var description: String {
        if isIPv4 { return Self.dotted(UInt32(truncatingIfNeeded: low)) }
        let groups = (0..<8).map { index -> UInt16 in
            let word = index < 4 ? high : low
            return UInt16(truncatingIfNeeded: word >> (48 - 16 * UInt64(index % 4)))
        }
        // The longest run of zero groups (the first of equal ones), if at least two long.
        var best: Range<Int>?
        var start: Int?
        for index in 0...8 {
            if index < 8 && groups[index] == 0 {
                if start == nil { start = index }
            } else if let runStart = start {
                if index - runStart >= 2 && index - runStart > (best?.count ?? 0) { best = runStart..<index }
                start = nil
            }
        }
        var text = ""
        var index = 0
        while index < 8 {
            if let best, index == best.lowerBound {
                text += "::"
                index = best.upperBound
                continue
            }
            if index > 0 && !text.hasSuffix(":") { text += ":" }
            // An IPv4-compatible address (::a.b.c.d, RFC 4291 §2.5.5.1) ends in dotted decimal, as
            // `inet_ntop` writes it.
            if index == 6 && best == 0..<6 {
                text += Self.dotted(UInt32(truncatingIfNeeded: low))
                break
            }
            text += String(groups[index], radix: 16)
            index += 1
        }
        return text
    }

    private static func dotted(_ value: UInt32) -> String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
}
