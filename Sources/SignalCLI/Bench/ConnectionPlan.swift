import NIOCore
import Signaling

/// Where and how the generator's connections go: the servers (one or several `--url`s, taken
/// round-robin by global connection index), the loopback source addresses to spread them over, and
/// whether each connection is a signaling session (wait for `welcome`, join a room) or a bare WebSocket.
struct ConnectionPlan: Sendable {
    /// The RFC 6455 sample nonce; its accept value is known, so no SHA-1 is needed to check the 101.
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="
    static let expectedAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    /// One server (a `--url`): its address, the upgrade request (the same bytes for every connection to
    /// it) and the TLS setup for `wss://` (one context shared by all its connections).
    struct Target: Sendable {
        let url: WebSocketURL
        let server: SocketAddress
        let upgradeRequest: [UInt8]
        /// TLS for `wss://` URLs (nil for `ws://`).
        let tls: ClientTLS?

        init(url: WebSocketURL, tls: ClientTLS?) throws {
            self.url = url
            self.tls = tls
            self.server = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
            let host = url.host.contains(":") ? "[\(url.host)]" : url.host
            let request =
                "GET \(url.target) HTTP/1.1\r\n"
                + "Host: \(host):\(url.port)\r\n"
                + "Upgrade: websocket\r\n"
                + "Connection: Upgrade\r\n"
                + "Sec-WebSocket-Key: \(ConnectionPlan.key)\r\n"
                + "Sec-WebSocket-Version: 13\r\n"
                + "\r\n"
            self.upgradeRequest = Array(request.utf8)
        }
    }

    /// The servers, in `--url` order (at least one).
    let targets: [Target]
    /// Local addresses to bind, used round-robin by global connection index (empty: let the kernel pick).
    let sources: [SocketAddress]
    /// Whether connections are protocol-v1 sessions (`welcome`, then `join`).
    let sessions: Bool

    init(targets: [Target], sources: [SocketAddress], sessions: Bool) {
        precondition(!targets.isEmpty, "a connection plan needs a server")
        self.targets = targets
        self.sources = sources
        self.sessions = sessions
    }

    /// The index in `targets` of the server a connection goes to: round-robin, so consecutive
    /// connections (the two peers of a pair, neighbouring members of a room) land on different servers.
    func target(for globalIndex: Int) -> Int {
        globalIndex % targets.count
    }

    /// The index in `sources` of the address a connection binds (nil: none).
    func sourceIndex(for globalIndex: Int) -> Int? {
        sources.isEmpty ? nil : globalIndex % sources.count
    }

    /// `count` loopback addresses 127.0.0.1 … 127.0.0.count (Linux routes all of 127/8 to `lo`), so
    /// each address brings its own ~28,000 ephemeral ports. Empty unless every server is on 127.0.0.0/8.
    static func loopbackSources(count: Int, servers: [SocketAddress]) throws -> [SocketAddress] {
        guard count > 0, servers.allSatisfy({ $0.ipAddress?.hasPrefix("127.") ?? false }) else { return [] }
        return try (1...min(count, 254)).map { try SocketAddress(ipAddress: "127.0.0.\($0)", port: 0) }
    }
}
