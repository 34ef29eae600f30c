/// The proxies (load balancers) whose `X-Forwarded-For` the hub believes (``ServerConfiguration/trustedProxies``),
/// and how a request's client is read from that header.
///
/// Each proxy appends the address it got the request from to `X-Forwarded-For` (HAProxy's
/// `option forwardfor`, nginx's `$proxy_add_x_forwarded_for`), so the list reads client, proxy, proxy… from
/// left to right, and only its right end was written by proxies the hub trusts: everything left of the
/// first address that is not a trusted proxy is whatever the client sent. The client is therefore the
/// right-most address that is not in a trusted range, as nginx's `real_ip_recursive on` picks it. A
/// client cannot escape its per-IP cap by sending a header of its own: the proxy's appended address comes
/// after it.
struct TrustedProxies: Sendable {
    let networks: [IPNetwork]

    init(_ networks: [IPNetwork]) {
        self.networks = networks
    }

    /// No trusted proxies (the default): every connection is counted under its own address.
    var isEmpty: Bool { networks.isEmpty }

    /// Whether a connection from `address` is a trusted proxy's.
    func contains(_ address: IPAddress) -> Bool {
        for network in networks where network.contains(address) { return true }
        return false
    }

    /// Where a trusted proxy's request comes from, by its `X-Forwarded-For`.
    enum Client: Equatable {
        /// The right-most address that is not in a trusted range; the left-most when all are.
        case forwarded(IPAddress)
        /// No `X-Forwarded-For` (or only empty list elements): the connection's own address counts.
        case absent
        /// An element that is not an IP address (its first 64 characters): the connection's own address
        /// counts.
        case malformed(String)
    }

    /// The client of a request from a trusted proxy, given the values of every `X-Forwarded-For` line of
    /// the request in order (each a comma-separated list; the lines make one list, RFC 9110 §5.3). Empty
    /// list elements are skipped (RFC 9110 §5.6.1); spaces and tabs around an element are not part of it.
    func client(forwardedFor values: [String]) -> Client {
        var addresses: [IPAddress] = []
        for value in values {
            for element in value.split(separator: ",", omittingEmptySubsequences: false) {
                let trimmed = Self.trimmed(element)
                if trimmed.isEmpty { continue }
                guard let address = IPAddress(trimmed) else { return .malformed(String(trimmed.prefix(64))) }
                addresses.append(address)
            }
        }
        guard let leftMost = addresses.first else { return .absent }
        return .forwarded(addresses.last(where: { !self.contains($0) }) ?? leftMost)
    }

    private static func trimmed(_ text: Substring) -> Substring {
        func isSpace(_ character: Character) -> Bool { character == " " || character == "\t" }
        guard let first = text.firstIndex(where: { !isSpace($0) }), let last = text.lastIndex(where: { !isSpace($0) })
        else { return text[text.endIndex...] }
        return text[first...last]
    }
}
