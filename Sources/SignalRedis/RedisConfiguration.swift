import NIOSSL

/// Where a Redis server is and how to talk to it, with the timeouts and limits of a connection.
///
/// Build it from a URL, `redis://[[user]:password@]host[:port][/db]` or `rediss://…` for TLS, then
/// adjust the rest:
///
/// ```swift
/// var configuration = try RedisConfiguration(url: "redis://:secret@10.0.0.5:6379/2")
/// configuration.commandTimeout = .seconds(2)
/// ```
public struct RedisConfiguration: Sendable {
    /// Host name or IP address.
    public var host: String
    /// TCP port; 6379 unless the URL says otherwise.
    public var port: Int
    /// ACL user for `AUTH user password` (Redis 6+). Nil sends `AUTH password`, the `default` user.
    public var username: String?
    /// Password sent with `AUTH` on every connect. Nil sends no `AUTH`.
    public var password: String?
    /// Database selected with `SELECT` on every connect. Redis Cluster only has database 0.
    public var database: Int
    /// TLS settings; nil for plain TCP. `rediss://` URLs set the default client configuration, which
    /// verifies the server's certificate against the system's trust roots.
    public var tls: TLSConfiguration?
    /// The name TLS checks the certificate against and sends as SNI; nil uses ``host`` when it is a
    /// name (an IP address is checked against the certificate's IP addresses).
    public var tlsServerName: String?
    /// A PEM file with the certificate authority to trust instead of the system's trust roots (a private
    /// CA, as self-hosted and many managed Redis services use). Only used with ``tls``.
    public var tlsCAFile: String?

    /// How long a TCP connect plus the `AUTH`/`SELECT` handshake may take before the attempt counts
    /// as failed and the next one is scheduled. 5 s: long enough for a loaded server, short enough
    /// that a black-holed address does not stall reconnection for long.
    public var connectTimeout: Duration = .seconds(5)
    /// How long a command waits for its reply, including any time spent waiting for a connection,
    /// unless the call passes its own timeout. 5 s: a healthy Redis answers in well under a
    /// millisecond, so reaching this means the server or the network is in trouble. Blocking commands
    /// (`BLPOP 10`) need a longer per-call timeout and a connection of their own.
    public var commandTimeout: Duration = .seconds(5)
    /// How long past a command's deadline its reply is still waited for before the connection is taken for
    /// dead and re-established. A command that times out fails at once, but its reply may still come (a
    /// busy server answers late): until then the connection stays open, the late reply is read and
    /// dropped, and the commands behind it keep their own deadlines — one slow command does not fail the
    /// others in flight. 10 s: well past any healthy server's worst moment, and a half-open connection is
    /// still noticed within its command timeout plus this.
    public var lateReplyWait: Duration = .seconds(10)
    /// Delay between reconnect attempts (exponential, with jitter, capped).
    public var reconnectBackoff = RedisBackoff()
    /// How long a connection may be idle before the client sends `PING` to find out whether the server
    /// is still there (a half-open TCP connection is otherwise noticed only when a command times out,
    /// and a pub/sub connection sends no commands). Nil disables it. 5 s: a lost server is noticed
    /// within this plus ``commandTimeout``.
    public var healthCheckInterval: Duration? = .seconds(5)
    /// Most commands that may wait for a connection while Redis is unreachable. Beyond it commands fail
    /// at once with ``RedisError/Code/notConnected``, so an outage cannot grow memory without bound.
    public var maxQueuedWhileDisconnected: Int = 10_000
    /// Sent with `CLIENT SETNAME` on every connect, so `CLIENT LIST` shows which node owns a connection.
    /// Must not contain spaces. Nil sends nothing.
    public var clientName: String?
    /// Lua scripts loaded with `SCRIPT LOAD` in the handshake of every connect, before any request is
    /// written: a server that has not seen them (just started or restarted, a replica just promoted, each
    /// primary of a Redis Cluster) then runs them by SHA-1 from the first request, where otherwise every
    /// request already written would fail with `NOSCRIPT` and be sent again whole. A load the server
    /// refuses does not fail the connection (``RedisConnection/run(_:keys:arguments:timeout:)`` still falls
    /// back to `EVAL`). Empty: nothing is loaded.
    public var scripts: [RedisScript] = []
    /// Bounds on replies; the defaults accept anything a stock Redis sends.
    public var decoderLimits = RESPDecoder.Limits()

    /// A server at `host:port`, database 0, no password, plain TCP.
    public init(host: String = "127.0.0.1", port: Int = 6379) {
        self.host = host
        self.port = port
        self.database = 0
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS). User and password may be
    /// percent-encoded; an IPv6 host goes in brackets (`redis://[::1]:6379`). Throws
    /// ``RedisError/Code/invalidURL`` with the reason.
    public init(url: String) throws(RedisError) {
        func invalid(_ reason: String) -> RedisError {
            RedisError(
                .invalidURL,
                "\(reason) in '\(Self.redacting(url))'; expected redis://[[user]:password@]host[:port][/db]"
            )
        }
        guard let schemeEnd = url.firstRange(of: "://") else { throw invalid("no scheme") }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "redis" || scheme == "rediss" else { throw invalid("unknown scheme '\(scheme)'") }
        var rest = url[schemeEnd.upperBound...]
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            guard rest[query...].count <= 1 else { throw invalid("query parameters are not supported") }
            rest = rest[..<query]
        }
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        let path = rest[authorityEnd...].dropFirst()

        self.init()
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            // `redis://word@host` is read as a user by some clients and as a password by others.
            guard let colon = userInfo.firstIndex(of: ":") else {
                throw invalid("ambiguous credentials (write redis://:password@host or redis://user:password@host)")
            }
            guard let user = Self.percentDecoded(userInfo[..<colon]),
                let password = Self.percentDecoded(userInfo[userInfo.index(after: colon)...])
            else { throw invalid("bad percent-encoding") }
            self.username = user.isEmpty ? nil : user
            self.password = password.isEmpty ? nil : password
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid("unclosed '['") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let port = Int(after.dropFirst()) else { throw invalid("bad port") }
                self.port = port
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let port = Int(authority[authority.index(after: colon)...]) else { throw invalid("bad port") }
            self.port = port
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw invalid("no host") }
        guard (1...65535).contains(port) else { throw invalid("port \(port) out of range") }
        if !path.isEmpty {
            guard let database = Int(path), database >= 0 else { throw invalid("database '\(path)' is not a number") }
            self.database = database
        }
        if scheme == "rediss" {
            tls = TLSConfiguration.makeClientConfiguration()
        }
    }

    /// The server's address as a URL, without the password (for logs and error messages).
    public var url: String {
        var text = tls == nil ? "redis://" : "rediss://"
        if let username { text += username + "@" }
        text += host.contains(":") ? "[\(host)]" : host
        text += ":\(port)"
        if database != 0 { text += "/\(database)" }
        return text
    }

    /// `url` with the password replaced, so a bad URL can be shown in an error.
    static func redacting(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://"),
            let at = url[schemeEnd.upperBound...].lastIndex(of: "@")
        else { return url }
        let userInfo = url[schemeEnd.upperBound..<at]
        let keep = userInfo.firstIndex(of: ":").map { userInfo.index(after: $0) } ?? schemeEnd.upperBound
        return String(url[..<keep]) + "***" + String(url[at...])
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
