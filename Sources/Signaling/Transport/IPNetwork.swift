/// A range of IP addresses in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is one
/// address, `/32` or `/128`): what `--trusted-proxy` takes.
///
/// An IPv4 network holds IPv4 addresses only, and an IPv6 network IPv6 addresses only, as nginx's
/// `set_real_ip_from` does: `::/0` does not trust every IPv4 address. An IPv4-mapped address is IPv4 (see
/// ``IPAddress``) on both sides, so `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The first address of the range (the address as written, with the bits past the prefix cleared).
    let address: IPAddress
    /// Leading bits that are fixed: 0-32 for IPv4, 0-128 for IPv6.
    public let prefixLength: Int

    /// What is wrong with a CIDR.
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses `ADDRESS` or `ADDRESS/PREFIX` (IPv4 dotted decimal or IPv6 text, prefix in decimal).
    public init(parsing text: String) throws(Invalid) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else {
            throw Invalid(description: "\(text) is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)")
        }
        let writtenAsIPv6 = parts[0].contains(":")
        let bits = writtenAsIPv6 ? 128 : 32
        var prefixLength = bits
        if parts.count == 2 {
            let digits = parts[1].utf8
            guard (1...3).contains(digits.count), digits.allSatisfy({ (0x30...0x39).contains($0) }),
                let length = Int(parts[1]), length <= bits
            else {
                throw Invalid(description: "\(text): the prefix length must be 0-\(bits)")
            }
            prefixLength = length
        }
        if writtenAsIPv6 && address.isIPv4 {
            guard prefixLength >= 96 else {
                throw Invalid(description: "\(text): an IPv4-mapped range needs a prefix length of 96-128")
            }
            prefixLength -= 96
        }
        self.init(address: address, prefixLength: prefixLength)
    }

    /// The network of `prefixLength` leading bits of `address` (0-32 for IPv4, 0-128 for IPv6).
    init(address: IPAddress, prefixLength: Int) {
        self.prefixLength = prefixLength
        let (high, low) = Self.mask(address.isIPv4 ? 96 + prefixLength : prefixLength)
        self.address = IPAddress(high: address.high & high, low: address.low & low)
    }

    /// Whether `address` is in this range.
    func contains(_ address: IPAddress) -> Bool {
        guard address.isIPv4 == self.address.isIPv4 else { return false }
        let (high, low) = Self.mask(address.isIPv4 ? 96 + prefixLength : prefixLength)
        return address.high & high == self.address.high && address.low & low == self.address.low
    }

    public var description: String { "\(address)/\(prefixLength)" }

    /// The mask of `bits` leading ones out of 128, as two halves.
    private static func mask(_ bits: Int) -> (UInt64, UInt64) {
        func ones(_ count: Int) -> UInt64 {
            count <= 0 ? 0 : count >= 64 ? .max : ~(UInt64.max >> UInt64(count))
        }
        return (ones(bits), ones(bits - 64))
    }
}
