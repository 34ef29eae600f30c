import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import PeerMesh
import Prometheus
import ServiceLifecycle
import SignalMesh
import Signaling
import UnixSignals

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the signaling hub (WebSocket at /ws, /healthz, /readyz, /metrics, SDK and demo page).",
        discussion: "Defaults run a single in-memory node on 127.0.0.1:8080 with no auth."
    )

    @OptionGroup var logging: LoggingOptions
    @OptionGroup(title: "PeerMesh") var mesh: MeshOptions

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind (0 picks a free port, printed at start).") var port = 8080
    @Option(
        help: "Event loop threads, for the clients' connections and the Redis or mesh links (default: one per core)."
    )
    var threads: Int?

    @Option(help: "HS256 secret; when set every client needs a token (also SIGNAL_JWT_SECRET).")
    var jwtSecret: String?
    @Option(help: "Read the HS256 secret from this file (keeps it out of the process list).")
    var jwtSecretFile: String?
    @Option(
        help:
            "Public key (PEM: RSA, P-256, P-384 or Ed25519) tokens may be signed with, as [KID=]PATH (repeatable); auth is on."
    )
    var jwtKeyFile: [String] = []
    @Option(
        help:
            "JWKS file (an identity provider's {\"keys\":[…]}) whose signing keys tokens may be signed with, chosen by kid (repeatable); auth is on."
    )
    var jwksFile: [String] = []
    @Option(
        help:
            "JWKS URL (https; http only to loopback) of an identity provider, fetched at start-up, cached, and fetched again when a token names an unknown kid (at most every 30 s) (repeatable); auth is on."
    )
    var jwksUrl: [String] = []
    @Option(help: "Seconds a fetched JWKS is kept before it is fetched again.")
    var jwksRefresh = 600
    @Option(help: "Accept only tokens whose aud names this audience (repeatable: any of them).")
    var jwtAudience: [String] = []
    @Option(help: "Accept only tokens whose iss is this issuer.")
    var jwtIssuer: String?
    @Option(help: "Seconds of clock skew tolerated for a token's nbf.")
    var jwtLeeway = TokenVerifier.defaultLeeway
    @Flag(
        inversion: .prefixedNo,
        help: "Only let peers signal peers they share a room with (default: on when auth is on)."
    )
    var requireSharedRoom: Bool?

    @Option(help: "PEM certificate chain (leaf first) for wss:// and https:// on the same port; reloaded on SIGHUP.")
    var tlsCert: String?
    @Option(help: "PEM private key matching --tls-cert.")
    var tlsKey: String?

    @Option(
        help:
            "Allow this browser Origin (repeatable; '*' allows any). Same-origin and no-Origin clients are always allowed."
    )
    var allowOrigin: [String] = []

    @Option(help: "Seconds between WebSocket pings.") var heartbeatInterval = 25
    @Option(help: "Seconds without a frame after which a connection is dropped.") var heartbeatTimeout = 60
    @Option(help: "Seconds a connection has to complete its upgrade.") var handshakeTimeout = 10.0
    @Option(help: "Seconds SIGTERM waits for clients after closing them with 1001.") var drainTimeout = 10.0

    @Option(help: "Largest client message in bytes (close 1009 above).") var maxMessageBytes = 64 * 1024
    @Option(help: "Most fragments one message may arrive in (close 1009 above).") var maxFragments = 256
    @Option(help: "Most HTTP header fields on a request (431 above).") var maxHeaderCount = 100
    @Option(help: "Largest total HTTP header size in bytes (431 above).") var maxHeaderBytes = 16 * 1024
    @Option(help: "Rooms one peer may be in.") var maxRoomsPerPeer = 16
    @Option(help: "Peers one room may hold.") var maxPeersPerRoom = 256
    @Option(help: "Rooms one tenant (token claim 'tenant') may have at once; a join opening one more gets tenant-full.")
    var maxRoomsPerTenant: Int?
    @Option(help: "Messages a client may send in a burst.") var rateBurst = 200
    @Option(help: "Messages per second a client may sustain.") var ratePerSecond = 100
    @Option(help: "Rate-limited messages tolerated before closing with 1008.") var rateMaxStrikes = 50
    @Option(help: "Connections the server holds (503 above).") var maxConnections = 100_000
    @Option(help: "Connections one IP may hold (503 above).") var maxConnectionsPerIp = 1_000
    @Option(help: "Sessions that may wait to resume at once; the oldest ends beyond (default: --max-connections).")
    var maxDetachedSessions: Int?
    @Option(help: "Sessions from one IP that may wait to resume at once (default: --max-connections-per-ip).")
    var maxDetachedPerIp: Int?
    @Option(
        help: ArgumentHelp(
            "A load balancer's address or CIDR (IPv4 or IPv6; repeatable) whose X-Forwarded-For names the client.",
            discussion:
                "For connections from these, the per-IP limits and the logs use the right-most X-Forwarded-For address that is not a trusted proxy. Default: none (the header is ignored)."
        )
    )
    var trustedProxy: [String] = []
    @Option(help: "Sessions one tenant (token claim 'tenant') may have connected here; more get tenant-full.")
    var maxSessionsPerTenant: Int?
    @Option(help: "Tenants with a metrics label of their own; later ones are counted as tenant=\"(other)\".")
    var metricsMaxTenants = 100
    @Option(help: "Bytes queued for a client that does not read before it is closed with 1013.")
    var outboundQueueBytes = 1024 * 1024

    @Option(help: "Seconds a dropped session waits for its client to resume.") var resumeGrace = 30.0
    @Option(help: "Messages kept per session for resume.") var resumeBufferMessages = 256
    @Option(help: "Bytes kept per session for resume.") var resumeBufferBytes = 256 * 1024
    @Option(help: "Bytes all resume buffers may hold together.") var resumeGlobalBytes = 256 * 1024 * 1024

    @Option(
        help: ArgumentHelp(
            "ICE server handed to clients in welcome (repeatable): URL[,URL…][;username=NAME;credential=SECRET], or ;credential-file=PATH.",
            discussion:
                "e.g. stun:stun.example.org:3478, or 'turn:turn.example.org:3478,turns:turn.example.org:5349;username=app;credential-file=turn.pass' (static TURN credentials)."
        )
    )
    var iceServer: [String] = []
    @Option(
        help:
            "TURN REST secret shared with the TURN server (coturn static-auth-secret); repeat once for rotation: the first signs."
    )
    var turnSecret: [String] = []
    @Option(help: "Read the TURN secret(s) from this file, one per line (at most two; the first signs).")
    var turnSecretFile: String?
    @Option(
        help: "TURN URL the minted credentials are for (repeatable), e.g. turn:turn.example.org:3478?transport=udp."
    )
    var turnUrl: [String] = []
    @Option(help: "Seconds a minted TURN credential is valid; clients get fresh ones at 80% of it.")
    var turnTtl = 3600

    @Option(help: "Serve signal.js, index.html and e2e.html from this directory instead of the built-in copies.")
    var webRoot: String?

    @Flag(help: "Expose /echo, an echoing endpoint on the same WebSocket pipeline (for conformance tests).")
    var echo = false
    @Option(help: "Message size limit on /echo.") var echoMaxMessageBytes = 64 * 1024
    @Option(help: "Fragment count limit on /echo.") var echoMaxFragments = 256

    @Option(
        help:
            "Join a cluster through this Redis: redis://[:PASSWORD@]HOST:PORT[/DB] or rediss:// for TLS. Without it the hub is a single node. With --redis-cluster: a seed node of the Redis Cluster (repeat for more seeds)."
    )
    var redis: [String] = []
    @Flag(
        help:
            "The Redis is a Redis Cluster (7+): read its slot map from the --redis seeds, send each script to its slot's primary, follow MOVED/ASK, use sharded pub/sub, and answer only once a replica has each write."
    )
    var redisCluster = false
    @Option(help: "This node's name in the cluster (default: hostname-pid).") var nodeId: String?
    @Option(help: "Prefix of every Redis key and channel, so clusters can share one Redis.") var redisPrefix = "sig"
    @Option(help: "Private CA (PEM) that signed the rediss:// server's certificate.") var redisCa: String?
    @Option(help: "Seconds without Redis after which a node sends its clients to other nodes with 1001 (0: never).")
    var redisPartitionTimeout = 10.0
    @Option(help: "Seconds between a node's re-announcements of its live sessions.") var clusterRefresh = 2.0
    @Option(help: "Seconds a request waits for an unreachable Redis before its client gets 'unavailable'.")
    var redisTimeout = 2.0

    @Option(
        help:
            "Serve the server API for the app's backend on its own listener, HOST:PORT (off by default); needs --api-key-file."
    )
    var apiListen: String?
    @Option(help: "API keys, one per line: KEY, or KEY TENANT (several for rotation; # comments).")
    var apiKeyFile: String?
    @Option(
        help:
            "POST the hub's events (peer.joined, peer.left, session.started, session.ended, room.empty) to this URL (repeatable; https, or http only to loopback), signed with --webhook-secret-file."
    )
    var webhookUrl: [String] = []
    @Option(help: "The webhooks' HMAC-SHA256 secret (at least 16 bytes), read from this file.")
    var webhookSecretFile: String?
    @Option(help: "Server API calls one key may make at once.") var apiRateBurst = 100
    @Option(help: "Server API calls per second one key may sustain (429 beyond).") var apiRatePerSecond = 50

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535") }
        guard heartbeatInterval > 0, heartbeatTimeout > 0 else {
            throw ValidationError("heartbeat values must be positive")
        }
        guard maxMessageBytes >= 1024 else { throw ValidationError("--max-message-bytes must be at least 1024") }
        guard resumeGrace >= 0 else { throw ValidationError("--resume-grace must not be negative") }
    }

    func makeConfiguration() throws -> ServerConfiguration {
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        if let threads { config.threads = threads }
        var secret = jwtSecret ?? ProcessInfo.processInfo.environment["SIGNAL_JWT_SECRET"]
        if let jwtSecretFile {
            guard let contents = try? String(contentsOfFile: jwtSecretFile, encoding: .utf8) else {
                throw ValidationError("cannot read --jwt-secret-file \(jwtSecretFile)")
            }
            secret = contents.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let value = secret, value.utf8.count < TokenVerifier.minimumSecretBytes {
            throw ValidationError(
                "the JWT secret must be at least \(TokenVerifier.minimumSecretBytes) bytes (HS256 needs a 256-bit key)"
            )
        }
        config.jwtSecret = secret
        config.jwtKeys = try makeTokenKeys()
        guard jwksRefresh >= 30 else { throw ValidationError("--jwks-refresh must be at least 30 seconds") }
        config.jwtRemoteKeys = try jwksUrl.map { url in
            var remote = RemoteKeySet.Configuration(url: url)
            remote.refreshInterval = .seconds(jwksRefresh)
            do {
                return try RemoteKeySet(remote, logger: Logger(label: "signal"))
            } catch {
                throw ValidationError("--jwks-url \(error)")
            }
        }
        config.jwtAudiences = jwtAudience
        config.jwtIssuer = jwtIssuer
        config.jwtLeeway = jwtLeeway
        config.requireSharedRoom = requireSharedRoom
        config.allowedOrigins = allowOrigin
        config.heartbeatInterval = heartbeatInterval
        config.heartbeatTimeout = heartbeatTimeout
        config.handshakeTimeout = handshakeTimeout
        config.drainTimeout = drainTimeout
        config.maxMessageBytes = maxMessageBytes
        config.maxFragments = maxFragments
        config.maxHeaderCount = maxHeaderCount
        config.maxHeaderBytes = maxHeaderBytes
        config.limits.maxRoomsPerPeer = maxRoomsPerPeer
        config.limits.maxPeersPerRoom = maxPeersPerRoom
        if let maxRoomsPerTenant { config.limits.maxRoomsPerTenant = maxRoomsPerTenant }
        config.rateBurst = rateBurst
        config.ratePerSecond = ratePerSecond
        config.rateMaxStrikes = rateMaxStrikes
        config.maxConnections = maxConnections
        config.maxConnectionsPerIP = maxConnectionsPerIp
        config.maxDetachedSessions = maxDetachedSessions
        config.maxDetachedPerIP = maxDetachedPerIp
        config.trustedProxies = try trustedProxy.map { cidr in
            do {
                return try IPNetwork(parsing: cidr)
            } catch {
                throw ValidationError("--trusted-proxy \(error)")
            }
        }
        config.maxSessionsPerTenant = maxSessionsPerTenant
        config.metricsMaxTenants = metricsMaxTenants
        config.outboundQueueBytes = outboundQueueBytes
        config.limits.resumeGraceNanos = UInt64(resumeGrace * 1e9)
        config.limits.resumeBufferMessages = resumeBufferMessages
        config.limits.resumeBufferBytes = resumeBufferBytes
        config.limits.globalBufferBytes = resumeGlobalBytes
        do {
            config.iceServersJSON = IceServer.json(try iceServer.map { try IceServer.parse($0) })
        } catch {
            throw ValidationError("\(error)")
        }
        config.turn = try makeTurnIssuer()
        config.echo = echo
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?): config.tls = TLSFiles(certificatePath: cert, keyPath: key)
        case (nil, nil): break
        default: throw ValidationError("--tls-cert and --tls-key go together")
        }
        config.webRoot = webRoot
        config.echoMaxMessageBytes = echoMaxMessageBytes
        config.echoMaxFragments = echoMaxFragments
        config.api = try makeAPIConfiguration()
        config.webhooks = try makeWebhookConfiguration()
        if !redis.isEmpty {
            var seeds: [RedisConfiguration] = []
            for url in redis {
                do {
                    var seed = try RedisConfiguration(url: url)
                    if let redisCa { seed.tlsCAFile = redisCa }
                    seeds.append(seed)
                } catch {
                    throw ValidationError("--redis: \(error.message)")
                }
            }
            if redisCluster, let selecting = seeds.first(where: { $0.database != 0 }) {
                throw ValidationError("--redis \(selecting.url): a Redis Cluster has only database 0")
            }
            guard seeds.count == 1 || redisCluster else {
                throw ValidationError("--redis is given once, or several times with --redis-cluster (seed nodes)")
            }
            let redisConfiguration = seeds[0]
            var cluster = ClusterConfiguration(
                redis: redisConfiguration,
                nodeID: nodeId ?? "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
            )
            cluster.keyPrefix = redisPrefix
            cluster.redisCluster = redisCluster
            cluster.redisSeeds = Array(seeds.dropFirst())
            if redisCluster {
                for (name, value) in [("--redis-prefix", redisPrefix), ("--node-id", cluster.nodeID)]
                where value.contains("{") || value.contains("}") {
                    throw ValidationError("\(name) may not contain { or } with --redis-cluster (they are hash tags)")
                }
            }
            cluster.redis.commandTimeout = .milliseconds(Int64(redisTimeout * 1000))
            cluster.partitionTimeout =
                redisPartitionTimeout > 0 ? .milliseconds(Int64(redisPartitionTimeout * 1000)) : nil
            cluster.refreshInterval = .milliseconds(Int64(clusterRefresh * 1000))
            config.cluster = cluster
        } else if nodeId != nil {
            throw ValidationError("--node-id needs --redis")
        } else if redisCluster {
            throw ValidationError("--redis-cluster needs --redis (a seed node)")
        }
        return config
    }

    /// `--jwt-key-file [KID=]PATH` and `--jwks-file PATH`.
    func makeTokenKeys() throws -> [TokenKey] {
        func read(_ path: String, _ flag: String) throws -> String {
            guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read \(flag) \(path)")
            }
            return contents
        }
        var keys: [TokenKey] = []
        for value in jwtKeyFile {
            var kid: String?
            var path = value
            if let equals = value.firstIndex(of: "="), !FileManager.default.fileExists(atPath: value) {
                kid = String(value[..<equals])
                path = String(value[value.index(after: equals)...])
            }
            do {
                keys.append(try TokenKey.pem(try read(path, "--jwt-key-file"), kid: kid))
            } catch let error as TokenKey.Invalid {
                throw ValidationError("--jwt-key-file \(path): \(error)")
            }
        }
        for path in jwksFile {
            do {
                keys += try TokenKey.jwks(try read(path, "--jwks-file"))
            } catch let error as TokenKey.Invalid {
                throw ValidationError("--jwks-file \(path): \(error)")
            }
        }
        guard jwtLeeway >= 0 else { throw ValidationError("--jwt-leeway must not be negative") }
        return keys
    }

    /// `--webhook-url` and `--webhook-secret-file`: nil without a URL.
    func makeWebhookConfiguration() throws -> WebhookConfiguration? {
        guard !webhookUrl.isEmpty else {
            if webhookSecretFile != nil { throw ValidationError("--webhook-secret-file needs --webhook-url") }
            return nil
        }
        guard let webhookSecretFile else { throw ValidationError("--webhook-url needs --webhook-secret-file") }
        guard let contents = try? String(contentsOfFile: webhookSecretFile, encoding: .utf8) else {
            throw ValidationError("cannot read --webhook-secret-file \(webhookSecretFile)")
        }
        do {
            return try WebhookConfiguration(
                urls: webhookUrl,
                secret: contents.trimmingCharacters(in: .whitespacesAndNewlines)
            )
        } catch {
            throw ValidationError("--webhook-url: \(error)")
        }
    }

    /// `--api-listen HOST:PORT`, `--api-key-file`, the API's rate: nil without `--api-listen`.
    func makeAPIConfiguration() throws -> APIConfiguration? {
        guard let apiListen else {
            if apiKeyFile != nil { throw ValidationError("--api-key-file needs --api-listen") }
            return nil
        }
        guard let colon = apiListen.lastIndex(of: ":"), let port = Int(apiListen[apiListen.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ValidationError("--api-listen takes HOST:PORT, e.g. 127.0.0.1:8081") }
        var host = String(apiListen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("--api-listen takes HOST:PORT, e.g. 127.0.0.1:8081") }
        guard let apiKeyFile else { throw ValidationError("--api-listen needs --api-key-file (the API's keys)") }
        guard let contents = try? String(contentsOfFile: apiKeyFile, encoding: .utf8) else {
            throw ValidationError("cannot read --api-key-file \(apiKeyFile)")
        }
        let keys: APIKeys
        do {
            keys = try APIKeys(file: contents)
        } catch {
            throw ValidationError("--api-key-file \(apiKeyFile): \(error)")
        }
        guard apiRateBurst >= 1, apiRatePerSecond >= 1 else {
            throw ValidationError("--api-rate-burst and --api-rate-per-second must be at least 1")
        }
        var api = APIConfiguration(host: host, port: port, keys: keys)
        api.router.rateBurst = apiRateBurst
        api.router.ratePerSecond = apiRatePerSecond
        return api
    }

    /// `--turn-secret`/`--turn-secret-file`, `--turn-url`, `--turn-ttl`: nil without a secret.
    func makeTurnIssuer() throws -> TurnCredentialIssuer? {
        var secrets = turnSecret
        if let turnSecretFile {
            guard let contents = try? String(contentsOfFile: turnSecretFile, encoding: .utf8) else {
                throw ValidationError("cannot read --turn-secret-file \(turnSecretFile)")
            }
            secrets += contents.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
        }
        guard !secrets.isEmpty else {
            if !turnUrl.isEmpty { throw ValidationError("--turn-url needs --turn-secret or --turn-secret-file") }
            return nil
        }
        guard secrets.count <= 2 else { throw ValidationError("at most two TURN secrets (the first signs)") }
        guard secrets.allSatisfy({ $0.utf8.count >= TurnCredentialIssuer.minimumSecretBytes }) else {
            throw ValidationError("a TURN secret must be at least \(TurnCredentialIssuer.minimumSecretBytes) bytes")
        }
        guard !turnUrl.isEmpty else { throw ValidationError("--turn-secret needs at least one --turn-url") }
        for url in turnUrl where IceServer.scheme(of: url)?.hasPrefix("turn") != true {
            throw ValidationError("--turn-url \(url) is not a turn: or turns: URL")
        }
        guard turnTtl >= 2 else { throw ValidationError("--turn-ttl must be at least 2 seconds") }
        return TurnCredentialIssuer(urls: turnUrl, secrets: secrets, ttl: turnTtl)
    }

    func run() async throws {
        let logger = logging.bootstrap(label: "signal")
        let configuration = try makeConfiguration()
        if mesh.enabled && configuration.cluster != nil {
            throw ValidationError("--redis and --mesh-listen are two ways to scale out; pick one")
        }
        try await runServer(configuration: configuration, mesh: mesh, logger: logger)
    }
}

/// Runs a hub (with its mesh node, if any) until SIGTERM/SIGINT.
func runServer(configuration: ServerConfiguration, mesh: MeshOptions, logger: Logger) async throws {
    raiseFileDescriptorLimit()
    for keys in configuration.jwtRemoteKeys {
        do {
            try await keys.load()
        } catch {
            throw ValidationError("--jwks-url \(keys.configuration.url): cannot fetch the JWKS: \(error)")
        }
    }
    // One set of event loops for the clients' connections and the backend's own (Redis, mesh links): a
    // reply from Redis or a relayed signal is written to its client on the loop it arrived on, not handed
    // to another thread (on a cluster node, +15-20% signals per CPU-second; Docs/scaling.md).
    let loops = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
    let served: Result<Void, any Error>
    do {
        served = .success(try await serve(configuration: configuration, mesh: mesh, loops: loops, logger: logger))
    } catch {
        served = .failure(error)
    }
    try? await loops.shutdownGracefully()
    try served.get()
}

/// The hub and its backend on `loops`, until SIGTERM/SIGINT.
private func serve(
    configuration: ServerConfiguration,
    mesh: MeshOptions,
    loops: MultiThreadedEventLoopGroup,
    logger: Logger
) async throws {
    let registry = PrometheusCollectorRegistry()
    let backend: any SignalBackend
    if let cluster = configuration.cluster {
        do {
            backend = try ClusterHub(
                configuration: cluster,
                limits: configuration.effectiveLimits,
                welcome: configuration.welcomeTemplate,
                metrics: HubMetrics(factory: PrometheusMetricsFactory(registry: registry)),
                clusterMetrics: ClusterMetrics(factory: PrometheusMetricsFactory(registry: registry)),
                eventLoopGroup: loops,
                logger: logger
            )
        } catch {
            throw ValidationError("cannot use the Redis configuration: \(error)")
        }
    } else if let runtime = try mesh.makeRuntime(
        logger: logger,
        metrics: MeshMetrics(factory: PrometheusMetricsFactory(registry: registry)),
        group: loops
    ) {
        backend = MeshBridge(
            hub: Hub(configuration: configuration, registry: registry),
            runtime: runtime,
            metricsFactory: PrometheusMetricsFactory(registry: registry)
        )
    } else {
        backend = Hub(configuration: configuration, registry: registry)
    }
    let server: SignalServer
    do {
        server = try await SignalServer(
            configuration: configuration,
            backend: backend,
            logger: logger,
            registry: registry,
            eventLoopGroup: loops
        )
    } catch {
        throw ValidationError(error.description)
    }
    let services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
    let group = ServiceGroup(
        configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    )
    try await group.run()
}

/// Lifts the soft open-files limit to the hard limit, so one process can hold many connections.
func raiseFileDescriptorLimit() {
    var limit = rlimit()
    #if os(Linux)
        let resource = Int32(RLIMIT_NOFILE.rawValue)
    #else
        let resource = RLIMIT_NOFILE
    #endif
    guard getrlimit(resource, &limit) == 0 else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(resource, &limit)
}
