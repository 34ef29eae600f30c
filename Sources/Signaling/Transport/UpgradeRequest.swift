import NIOHTTP1

/// The parts of an HTTP request the hub looks at, parsed once.
struct UpgradeRequest {
    var path: String
    var query: [String: String]
    var origin: String?
    var host: String?
    var bearer: String?
    /// The values of every `X-Forwarded-For` line, in order; read only from a trusted proxy's request
    /// (``TrustedProxies``), empty otherwise.
    var forwardedFor: [String] = []
    /// The client's address when a trusted proxy's request named it (``TrustedProxies``), as it is counted
    /// and logged; nil: the connection's own address.
    var client: String?

    init(_ head: HTTPRequestHead) {
        self.init(
            uri: head.uri,
            origin: head.headers.first(name: "origin"),
            host: head.headers.first(name: "host"),
            authorization: head.headers.first(name: "authorization")
        )
    }

    /// From the request target and the values of the headers of those names.
    init(uri: String, origin: String?, host: String?, authorization: String?) {
        if let mark = uri.firstIndex(of: "?") {
            path = String(uri[..<mark])
            query = Self.parseQuery(uri[uri.index(after: mark)...])
        } else {
            path = uri
            query = [:]
        }
        self.origin = origin
        self.host = host
        if let authorization, authorization.lowercased().hasPrefix("bearer ") {
            bearer = String(authorization.dropFirst(7)).trimmingSpaces()
        }
    }

    /// The token from `?token=` or `Authorization: Bearer`.
    var token: String? { query["token"] ?? bearer }

    static func parseQuery(_ query: Substring) -> [String: String] {
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecode(parts[0]) else { continue }
            let value = parts.count > 1 ? percentDecode(parts[1]) : ""
            if let value, result[name] == nil { result[name] = value }
        }
        return result
    }

    static func percentDecode(_ value: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(value.utf8.count)
        var iterator = value.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next(), let low = iterator.next(),
                    let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
