import CoreMetrics
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The connection pipeline: how an accepted connection is admitted, which HTTP handlers it gets, and how
/// an upgrade request becomes a WebSocket session (or the echo endpoint).
extension SignalServer {
    func initializeConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
        // An admitted connection's slot is held by its handshake handler, which hands it on (see
        // ``ConnectionLimiter``). A trusted proxy's connection is counted in the total only until its
        // upgrade request names its client.
        let key = limiter.key(for: channel)
        let admitted = limiter.acquire(key)
        if !admitted {
            metrics.connectionsRefused.increment()
        }
        return channel.eventLoop.makeCompletedFuture {
            // Set here, synchronously: NIO's child channel options are applied one future at a time.
            if let options = channel.syncOptions {
                try options.setOption(.socketOption(.tcp_nodelay), value: 1)
                try options.setOption(.maxMessagesPerRead, value: 16)
                // NIO keeps each connection's last receive buffer for the next read. Most connections are
                // idle or read small messages, so start at 256 B (NIO's default is 2 KiB); the buffer still
                // doubles for connections whose reads fill it.
                try options.setOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
                )
            }
            if let tls = self.tls {
                try channel.pipeline.syncOperations.addHandler(TLSSniffer(store: tls))
            }
            let deadline = NIODeadline.now() + .milliseconds(Int64(self.configuration.handshakeTimeout * 1000))
            if admitted {
                // Upgrades are answered by one small handler; everything else gets the HTTP pipeline.
                try channel.pipeline.syncOperations.addHandler(
                    WebSocketHandshakeHandler(
                        host: self,
                        rules: self.handshakeRules,
                        deadline: deadline,
                        limiter: self.limiter,
                        proxied: key == .proxy
                    )
                )
            } else {
                try self.addHTTPHandlers(channel, overCapacity: true, deadline: deadline)
            }
        }
    }

    func addHTTPHandlers(_ channel: any Channel, overCapacity: Bool, deadline: NIODeadline) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldCount = configuration.maxHeaderCount
        limits.maxHeaderListSize = configuration.maxHeaderBytes
        limits.maxHeaderFieldSize = configuration.maxHeaderBytes
        let decoder = ByteToMessageHandler(
            HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits)
        )
        let encoder = HTTPResponseEncoder()
        let paths = handshakeRules.webSocketPaths
        let proxied = limiter.isTrustedProxy(channel)
        let gatekeeper = HTTPGatekeeper(
            originPolicy: handshakeRules.originPolicy,
            webSocketPaths: paths,
            deadline: deadline,
            overCapacity: overCapacity,
            forwardedClients: proxied && !overCapacity ? self : nil
        )
        let router = HTTPRouter(endpoints: endpoints)
        // One frame never exceeds one message. NIO's decoder refuses a larger declared length (1009)
        // before buffering any of it, and traps on a limit above UInt32.max, so clamp the flag's value.
        let maxFrameSize = max(
            configuration.maxMessageBytes,
            configuration.echo ? configuration.echoMaxMessageBytes : 0
        )
        let upgrader = WebSocketUpgrader(
            maxFrameSize: min(maxFrameSize, Int(UInt32.max)),
            shouldUpgrade: { channel, head in
                let path = UpgradeRequest(head).path
                return channel.eventLoop.makeSucceededFuture(paths.contains(path) ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { [self] channel, head in
                do {
                    var request = UpgradeRequest(head)
                    if proxied {
                        // The gatekeeper counted the client this request names; it is the same one again.
                        request.client = self.forwardedClient(channel, head.headers["X-Forwarded-For"], log: false)
                    }
                    // This connection's slot is released by its close future (see `WebSocketHandshakeHandler`).
                    return try self.upgrade(channel, request, connectionSlot: nil)
                        ?? channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        )
        let upgradeHandler = HTTPServerUpgradeHandler(
            upgraders: [upgrader],
            httpEncoder: encoder,
            extraHTTPHandlers: [decoder, gatekeeper, router],
            upgradeCompletionHandler: { _ in }
        )
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(decoder)
        try sync.addHandler(encoder)
        try sync.addHandler(gatekeeper)
        try sync.addHandler(upgradeHandler)
        try sync.addHandler(router)
    }

    func admitForwardedClient(_ channel: any Channel, forwardedFor: [String]) -> String? {
        let client = self.forwardedClient(channel, forwardedFor, log: true)
        guard limiter.acquireClient(client, for: channel) else {
            metrics.connectionsRefused.increment()
            logger.debug(
                "connection refused: its client is at the per-IP cap",
                metadata: [
                    "client.address": "\(client)",
                    "proxy.address": "\(ConnectionLimiter.clientAddress(of: channel))",
                ]
            )
            return nil
        }
        return client
    }

    /// The client a trusted proxy's request names in `X-Forwarded-For` (``TrustedProxies``), as it is
    /// counted and logged; the proxy's own address when the header is absent or malformed (logged at
    /// debug when `log` is set).
    func forwardedClient(_ channel: any Channel, _ forwardedFor: [String], log: Bool) -> String {
        let proxy = { ConnectionLimiter.clientAddress(of: channel) }
        switch limiter.trustedProxies.client(forwardedFor: forwardedFor) {
        case .forwarded(let address):
            return address.description
        case .absent:
            if log {
                logger.debug(
                    "a trusted proxy's request has no X-Forwarded-For: counting it under the proxy's address",
                    metadata: ["proxy.address": "\(proxy())"]
                )
            }
            return proxy()
        case .malformed(let element):
            if log {
                logger.debug(
                    "a trusted proxy's X-Forwarded-For is not a list of IP addresses: counting the request under the proxy's address",
                    metadata: ["proxy.address": "\(proxy())", "forwarded.element": "\(element)"]
                )
            }
            return proxy()
        }
    }

    func upgrade(
        _ channel: any Channel,
        _ request: UpgradeRequest,
        connectionSlot: ConnectionLimiter?
    ) throws -> EventLoopFuture<Void>? {
        if request.path == "/echo" {
            try self.addWebSocketHandlers(channel, role: .echo, echo: true, connectionSlot: connectionSlot)
            return nil
        }
        let backend: any SessionHub = self.backend
        @Sendable func session(_ open: OpenRequest?, refusal: Refusal?, hub: (any SessionHub)? = nil) throws {
            let role = WebSocketRole.session(
                hub: hub ?? backend,
                request: open ?? .fresh(peer: nil, subject: nil, grant: .all),
                refusal: refusal
            )
            try self.addWebSocketHandlers(channel, role: role, echo: false, connectionSlot: connectionSlot)
        }
        let requestedPeer = request.query["peer"]
        if let requestedPeer, !Identifier.isValid(requestedPeer) {
            try session(
                nil,
                refusal: .invalidPeerID
            )
            return nil
        }
        // The address the connection caps count this client under, for the detached-per-IP cap too.
        let client = request.client ?? channel.remoteAddress.flatMap(IPAddress.init)?.description
        func openRequest(subject: String?, grant: RoomGrant) -> OpenRequest {
            if let resume = request.query["resume"] {
                let last = request.query["last"].flatMap { UInt64($0) } ?? 0
                return .resume(token: resume, last: last, subject: subject, client: client)
            }
            return .fresh(peer: requestedPeer, subject: subject, grant: grant, client: client)
        }
        guard let verifier else {
            try session(openRequest(subject: nil, grant: .all), refusal: nil)
            return nil
        }
        guard let token = request.token else {
            try session(nil, refusal: .tokenRequired)
            return nil
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let tenants = self.tenants
        let tenantLimit = configuration.maxSessionsPerTenant ?? configuration.maxConnections
        Task {
            let open: OpenRequest?
            let refusal: Refusal?
            var hub: (any SessionHub)? = nil
            do throws(TokenRejection) {
                let claims = try await verifier.verify(token)
                // The token's tenant namespaces the session's peer id, subject and rooms.
                let request = openRequest(subject: claims.sub.value, grant: claims.roomGrant)
                    .qualified(by: claims.namespace)
                guard let slot = tenants.acquire(claims.namespace) else {
                    promise.completeWith(
                        channel.eventLoop.submit { try session(nil, refusal: .tenantFull(limit: tenantLimit)) }
                    )
                    return
                }
                open = request
                refusal = nil
                // The session lasts as long as its token (or a fresh one sent in band); a resume continues
                // under the new token's claims.
                var resumes = false
                if case .resume = request { resumes = true }
                hub = AuthenticatedSession(
                    backend,
                    verifier: verifier,
                    claims: claims,
                    resumes: resumes,
                    eventLoop: channel.eventLoop,
                    tenant: (tenants, slot)
                )
            } catch let rejection {
                open = nil
                refusal = .tokenRejected(rejection.reason)
            }
            // Pipeline changes happen on the channel's event loop.
            let sessionHub = hub
            promise.completeWith(channel.eventLoop.submit { try session(open, refusal: refusal, hub: sessionHub) })
        }
        return promise.futureResult
    }

    func addWebSocketHandlers(
        _ channel: any Channel,
        role: WebSocketRole,
        echo: Bool,
        connectionSlot: ConnectionLimiter?
    ) throws {
        let sync = channel.pipeline.syncOperations
        // One handler reads frames (deciding each one: masking, reserved bits and opcodes,
        // fragmentation, size and fragment count, UTF-8 as fragments arrive), serves the connection and
        // writes frames.
        let sweep = sweeps[ObjectIdentifier(channel.eventLoop)]!.value
        try sync.addHandler(
            WebSocketHandler(
                role: role,
                shared: echo ? echoShared : sessionShared,
                sweep: sweep,
                connectionSlot: connectionSlot
            )
        )
    }
}
