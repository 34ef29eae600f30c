import NIOCore

/// Everything `signal serve` can be told. The defaults run a safe single-node hub on loopback.
public struct ServerConfiguration: Sendable {
    /// Address to bind. Loopback by default so a first run is never exposed by accident.
    public var host: String = "127.0.0.1"
    /// Port to bind (0 picks a free one; see ``SignalServer/localPort``).
    public var port: Int = 8080
    /// Event loop threads; one per core.
    public var threads: Int = System.coreCount

    /// Join a cluster through Redis (`--redis`); nil runs a single node with everything in memory.
    public var cluster: ClusterConfiguration? = nil

    /// Room, presence and resume bounds.
    public var limits = HubLimits()

    /// Largest message a client may send, in bytes (the contract's floor is 64 KiB; above: close 1009).
    public var maxMessageBytes: Int = 64 * 1024
    /// Most fragments one message may arrive in (above: close 1009), so a stream of tiny continuation
    /// frames cannot pin memory or CPU.
    public var maxFragments: Int = 256

    /// Messages a client may send at once (the contract's floor is 100).
    public var rateBurst: Int = 200
    /// Messages per second a client may sustain (the contract's floor is 50).
    public var ratePerSecond: Int = 100
    /// Refused messages tolerated (each answered `rate-limited`) before closing with 1008.
    public var rateMaxStrikes: Int = 50

    /// Connections the server holds at once; more are refused with 503 before the upgrade.
    public var maxConnections: Int = 100_000
    /// Connections one IP address may hold at once; more are refused with 503.
    public var maxConnectionsPerIP: Int = 1_000
    /// Sessions that may wait to resume at once (`--max-detached-sessions`); nil: ``maxConnections``, so
    /// dropped sockets hold no more sessions than live connections could. At the bound the oldest waiting
    /// session ends (``HubLimits/maxDetachedSessions``).
    public var maxDetachedSessions: Int? = nil
    /// Sessions from one IP address that may wait to resume at once (`--max-detached-per-ip`); nil:
    /// ``maxConnectionsPerIP``.
    public var maxDetachedPerIP: Int? = nil
    /// Proxies (load balancers) whose `X-Forwarded-For` names the client (`--trusted-proxy`). For a
    /// connection from one of these ranges the per-IP caps, the detached-per-IP count and the logs use the
    /// right-most address of the header that is not in one of them (counted at the upgrade request, not at
    /// accept); without the header, or with one that is not a list of IP addresses, the proxy's own
    /// address. Empty by default: the header is ignored and every connection counts under its own
    /// address, so no client can choose the address it is counted under.
    public var trustedProxies: [IPNetwork] = []

    /// Sessions one tenant (a token's `tenant` claim, see ``Tenant``) may have connected to this server at
    /// once (`--max-sessions-per-tenant`); more are refused with an `error` `tenant-full` and close 1008.
    /// nil: ``maxConnections`` (no cap of its own). The default tenant is bounded by ``maxConnections``.
    public var maxSessionsPerTenant: Int? = nil
    /// Tenants that get a metrics label of their own (`--metrics-max-tenants`); the sessions and messages
    /// of later ones are counted under `tenant="(other)"`, so the number of series stays bounded.
    public var metricsMaxTenants: Int = 100

    /// Bytes waiting to be written to one client beyond the socket's own buffer. A client that stops
    /// reading fills it and is closed with 1013 (its session stays resumable); everyone else keeps flowing.
    public var outboundQueueBytes: Int = 1024 * 1024

    /// Seconds between WebSocket pings.
    public var heartbeatInterval: Int = 25
    /// Seconds without any frame (pong included) after which a connection is considered dead and dropped;
    /// its session then waits out the resume grace period.
    public var heartbeatTimeout: Int = 60
    /// Seconds a connection has to complete its HTTP upgrade (slowloris defence).
    public var handshakeTimeout: Double = 10
    /// Seconds to wait for a client's close frame after the server sent one.
    public var closeTimeout: Double = 2
    /// Seconds SIGTERM/SIGINT waits for clients to close after 1001 before exiting anyway.
    public var drainTimeout: Double = 10

    /// Largest number of HTTP header fields on a request (above: 431).
    public var maxHeaderCount: Int = 100
    /// Largest total HTTP header size in bytes (above: 431).
    public var maxHeaderBytes: Int = 16 * 1024

    /// Browser origins allowed to connect, beyond same-origin and no-Origin clients.
    public var allowedOrigins: [String] = []
    /// HS256 secret; when set, every client needs a valid token.
    public var jwtSecret: String? = nil
    /// Public keys client tokens may be signed with (`--jwt-key-file`, `--jwks-file`): RS256, ES256, EdDSA…,
    /// chosen by `kid`. With any, every client needs a valid token.
    public var jwtKeys: [TokenKey] = []
    /// Identity providers' JWKS fetched over HTTPS (`--jwks-url`), each loaded (``RemoteKeySet/load()``)
    /// before the server starts. With any, every client needs a valid token.
    public var jwtRemoteKeys: [RemoteKeySet] = []
    /// Tokens must name one of these in `aud` (`--jwt-audience`); empty: not checked.
    public var jwtAudiences: [String] = []
    /// Tokens must carry this `iss` (`--jwt-issuer`); nil: not checked.
    public var jwtIssuer: String? = nil
    /// Seconds of clock skew tolerated for a token's `nbf` (`--jwt-leeway`).
    public var jwtLeeway: Int = TokenVerifier.defaultLeeway
    /// Whether clients need a token (a JWT secret or key is configured).
    public var authEnabled: Bool { jwtSecret != nil || !jwtKeys.isEmpty || !jwtRemoteKeys.isEmpty }
    /// Whether peers may signal only peers they share a room with. `nil` (the default) means: on when
    /// auth is on, off otherwise. Overrides `limits.requireSharedRoom`.
    public var requireSharedRoom: Bool? = nil

    /// The `welcome` every session of this server gets (heartbeats, ICE servers, limits).
    public var welcomeTemplate: WelcomeTemplate {
        WelcomeTemplate(
            heartbeatInterval: heartbeatInterval,
            heartbeatTimeout: heartbeatTimeout,
            iceServersJSON: iceServersJSON,
            limitsJSON: limitsJSON,
            turn: turn
        )
    }

    /// The hub limits with the defaults that depend on other settings applied.
    public var effectiveLimits: HubLimits {
        var limits = self.limits
        limits.maxDetachedSessions = maxDetachedSessions ?? maxConnections
        limits.maxDetachedPerClient = maxDetachedPerIP ?? maxConnectionsPerIP
        limits.requireSharedRoom = requireSharedRoom ?? (authEnabled || limits.requireSharedRoom)
        return limits
    }
    /// ICE servers handed out in `welcome` (raw JSON array): the static entries (`--ice-server`).
    public var iceServersJSON: String = "[]"
    /// Short-lived TURN credentials for every session (`--turn-secret`, `--turn-url`, `--turn-ttl`),
    /// appended to ``iceServersJSON`` in `welcome` and refreshed with an `ice-servers` message at 80 % of
    /// their TTL; nil: none.
    public var turn: TurnCredentialIssuer? = nil

    /// The server API for the app's backend (`--api-listen`, `--api-key-file`): its own listener, keys and
    /// limits (Docs/server-api.md); nil (the default): no API.
    public var api: APIConfiguration? = nil
    /// Webhooks to the app's backend (`--webhook-url`, `--webhook-secret-file`): sessions started and
    /// ended, joins, leaves, emptied rooms, signed and retried (Docs/server-api.md); nil (the default): none.
    public var webhooks: WebhookConfiguration? = nil

    /// Certificate chain and key for `wss://` and `https://` on the same port (nil: plain text).
    public var tls: TLSFiles? = nil

    /// Serve the SDK and demo page from this directory instead of the built-in copies (development).
    public var webRoot: String? = nil

    /// Expose `/echo` (the same WebSocket pipeline, echoing every message) for conformance tests.
    public var echo: Bool = false
    /// Message size limit on `/echo` (may be raised for the Autobahn testsuite).
    public var echoMaxMessageBytes: Int = 64 * 1024
    /// Fragment count limit on `/echo`.
    public var echoMaxFragments: Int = 256

    public init() {}

    /// The `limits` object of `welcome`.
    var limitsJSON: String {
        "{\"maxMessageBytes\":\(maxMessageBytes),\"maxRoomsPerPeer\":\(limits.maxRoomsPerPeer),"
            + "\"maxPeersPerRoom\":\(limits.maxPeersPerRoom),\"rateBurst\":\(rateBurst),"
            + "\"ratePerSecond\":\(ratePerSecond),\"resumeGrace\":\(Double(limits.resumeGraceNanos) / 1e9),"
            + "\"maxMetaBytes\":1024}"
    }
}

extension ServerConfiguration {
    /// How often each connection's heartbeat is checked: at least every quarter of the timeout (and at
    /// every ping interval), so a dead connection is dropped within timeout + timeout/4, not timeout +
    /// interval; never more often than once a second.
    var heartbeatCheckPeriod: TimeAmount {
        let interval = TimeAmount.seconds(Int64(heartbeatInterval))
        let quarter = TimeAmount.nanoseconds(TimeAmount.seconds(Int64(heartbeatTimeout)).nanoseconds / 4)
        return min(interval, max(.seconds(1), quarter))
    }
}
