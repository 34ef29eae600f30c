import Foundation

/// A parsed `ws://` or `wss://` URL.
public struct WebSocketURL: Sendable, Equatable, CustomStringConvertible {
    public var secure: Bool
    public var host: String
    public var port: Int
    /// Path and query, e.g. `/ws?peer=alice`.
    public var target: String

    public init(_ string: String) throws(WebSocketClientError) {
        let scheme: Substring
        let rest: Substring
        if let range = string.range(of: "://") {
            scheme = string[..<range.lowerBound]
            rest = string[range.upperBound...]
        } else {
            throw WebSocketClientError.invalidURL(string)
        }
        switch scheme.lowercased() {
        case "ws", "http": secure = false
        case "wss", "https": secure = true
        default: throw WebSocketClientError.invalidURL(string)
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.isEmpty { path = "/" }
        if path.hasPrefix("?") { path = "/" + path }
        target = path
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            port = after.hasPrefix(":") ? Int(after.dropFirst()) ?? -1 : (secure ? 443 : 80)
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = Int(authority[authority.index(after: colon)...]) ?? -1
        } else {
            host = String(authority)
            port = secure ? 443 : 80
        }
        guard !host.isEmpty, (1...65535).contains(port) else { throw WebSocketClientError.invalidURL(string) }
    }

    /// The same URL with `query` appended to the target.
    public func appendingQuery(_ query: String) -> WebSocketURL {
        var copy = self
        copy.target += (target.contains("?") ? "&" : "?") + query
        return copy
    }

    public var description: String {
        "\(secure ? "wss" : "ws")://\(host.contains(":") ? "[\(host)]" : host):\(port)\(target)"
    }
}

/// Why a WebSocket client could not connect.
public enum WebSocketClientError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidURL(String)
    /// The server answered the upgrade with this HTTP status instead of 101.
    case upgradeRefused(status: Int)
    case connectionClosed

    public var description: String {
        switch self {
        case .invalidURL(let url): return "invalid WebSocket URL: \(url)"
        case .upgradeRefused(let status): return "server refused the WebSocket upgrade with HTTP \(status)"
        case .connectionClosed: return "connection closed before the upgrade completed"
        }
    }
}
