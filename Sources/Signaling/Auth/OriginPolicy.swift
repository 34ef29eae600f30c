import Foundation

/// Which browser origins may open a WebSocket (cross-site WebSocket hijacking defence).
///
/// Default: requests without an `Origin` header (native clients) and same-origin requests (the
/// `Origin`'s host:port equals the request's `Host`). `--allow-origin URL` adds origins; `*` allows any.
public struct OriginPolicy: Sendable, Equatable {
    public var allowed: Set<String>
    public var allowAny: Bool

    public init(allowedOrigins: [String] = []) {
        self.allowAny = allowedOrigins.contains("*")
        self.allowed = Set(allowedOrigins.filter { $0 != "*" }.map(Self.normalize))
    }

    public func allows(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }
        if allowAny { return true }
        let normalized = Self.normalize(origin)
        if allowed.contains(normalized) { return true }
        guard let host, let schemeEnd = normalized.range(of: "://") else { return false }
        let originHost = normalized[schemeEnd.upperBound...]
        return originHost == host.lowercased()
            || originHost + ":80" == host.lowercased() && normalized.hasPrefix("http://")
            || originHost + ":443" == host.lowercased() && normalized.hasPrefix("https://")
    }

    static func normalize(_ origin: String) -> String {
        var value = origin.lowercased()
        while value.hasSuffix("/") { value.removeLast() }
        return value
    }
}
