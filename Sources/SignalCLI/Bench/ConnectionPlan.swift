import NIOCore
import Signaling

/// Where and how the generator's connections go: the server's address, the upgrade request (the same
/// bytes for every connection), the TLS setup for `wss://` (one context shared by all), the loopback
/// source addresses to spread them over, and whether each connection is a signaling session (wait for
/// `welcome`, join a room) or a bare WebSocket.
struct ConnectionPlan: Sendable {
    /// The RFC 6455 sample nonce; its accept value is known, so no SHA-1 is needed to check the 101.
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="
    static let expectedAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    let url: WebSocketURL
    let server: SocketAddress
    let upgradeRequest: [UInt8]
    /// TLS for `wss://` URLs (nil for `ws://`).
    let tls: ClientTLS?
    /// Local addresses to bind, used round-robin by global connection index (empty: let the kernel pick).
    let sources: [SocketAddress]
    /// Whether connections are protocol-v1 sessions (`welcome`, then `join`).
    let sessions: Bool

    init(url: WebSocketURL, tls: ClientTLS?, sources: [SocketAddress], sessions: Bool) throws {
        self.url = url
        self.tls = tls
        self.server = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        self.sources = sources
        self.sessions = sessions
        let host = url.host.contains(":") ? "[\(url.host)]" : url.host
        let request =
            "GET \(url.target) HTTP/1.1\r\n"
            + "Host: \(host):\(url.port)\r\n"
            + "Upgrade: websocket\r\n"
            + "Connection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(Self.key)\r\n"
            + "Sec-WebSocket-Version: 13\r\n"
            + "\r\n"
        self.upgradeRequest = Array(request.utf8)
    }

    /// The index in `sources` of the address a connection binds (nil: none).
    func sourceIndex(for globalIndex: Int) -> Int? {
        sources.isEmpty ? nil : globalIndex % sources.count
    }

    /// `count` loopback addresses 127.0.0.1 … 127.0.0.count (Linux routes all of 127/8 to `lo`), so
    /// each address brings its own ~28,000 ephemeral ports. Empty unless the server is on 127.0.0.0/8.
    static func loopbackSources(count: Int, server: SocketAddress) throws -> [SocketAddress] {
        guard count > 0, let ip = server.ipAddress, ip.hasPrefix("127.") else { return [] }
        return try (1...min(count, 254)).map { try SocketAddress(ipAddress: "127.0.0.\($0)", port: 0) }
    }
}
