import Foundation
import NIOCore
import Testing

@testable import Signaling

/// `--trusted-proxy` over real loopback sockets: the test's connections come from 127.0.0.1, which is
/// the trusted proxy here, and name their clients in `X-Forwarded-For` as a balancer would.
@Suite struct TrustedProxyIntegrationTests {
    static func forwarded(_ value: String) -> [(String, String)] {
        [("X-Forwarded-For", value)]
    }

    /// Waits (up to 5 s) until the server's counts are `total` connections and `perClient`.
    static func counts(
        _ hub: TestHub,
        total: Int,
        perClient: [String: Int],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        for _ in 0..<200
        where hub.server.admittedConnections != total || hub.server.connectionsPerClient != perClient {
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(hub.server.admittedConnections == total, sourceLocation: sourceLocation)
        #expect(hub.server.connectionsPerClient == perClient, sourceLocation: sourceLocation)
    }

    @Test func aTrustedProxysClientsAreCountedByTheirForwardedAddress() async throws {
        let hub = try await TestHub {
            $0.maxConnectionsPerIP = 2
            $0.trustedProxies = [try! IPNetwork(parsing: "127.0.0.0/30")]
        }
        defer { Task { await hub.stop() } }
        // The fast path: two connections of 192.0.2.1 (one claiming another address first, as a client
        // sending its own header would), and a third refused with 503 before the upgrade.
        let a1 = try await hub.peer(headers: Self.forwarded("192.0.2.1"))
        let a2 = try await hub.peer(headers: Self.forwarded("198.51.100.9, 192.0.2.1"))
        await #expect(throws: WebSocketClientError.upgradeRefused(status: 503)) {
            _ = try await hub.connect(headers: Self.forwarded("192.0.2.1"))
        }
        let b1 = try await hub.peer(headers: Self.forwarded("192.0.2.2, 127.0.0.2"))
        try await Self.counts(hub, total: 3, perClient: ["192.0.2.1": 2, "192.0.2.2": 1])

        // The HTTP pipeline (two `Origin` lines are left to it by the fast path) counts the same way.
        let origin = ("Origin", "http://127.0.0.1:\(hub.port)")
        await #expect(throws: WebSocketClientError.upgradeRefused(status: 503)) {
            _ = try await hub.connect(headers: Self.forwarded("192.0.2.1") + [origin, origin])
        }
        let b2 = try await hub.peer(headers: Self.forwarded("192.0.2.2") + [origin, origin])
        // No header, or one that is not a list of addresses: the proxy's own address.
        let p1 = try await hub.peer()
        let p2 = try await hub.peer(headers: Self.forwarded("unknown"))
        try await Self.counts(hub, total: 6, perClient: ["192.0.2.1": 2, "192.0.2.2": 2, "127.0.0.1": 2])
        await #expect(throws: WebSocketClientError.upgradeRefused(status: 503)) {
            _ = try await hub.connect(headers: Self.forwarded("127.0.0.1"))
        }

        // Plain HTTP and a connection that never sends a request hold a total slot only, and give it back.
        #expect(try await httpGet(port: hub.port, path: "/healthz").0 == 200)
        try await sendAndClose(port: hub.port, "")
        try await sendAndClose(port: hub.port, "GET /ws HTTP/1.1\r\nX-Forwarded-For: 192.0.2.3\r\n")
        try await Self.counts(hub, total: 6, perClient: ["192.0.2.1": 2, "192.0.2.2": 2, "127.0.0.1": 2])

        // Closing a connection frees its client's slot, once.
        a1.client.close()
        _ = try await a1.closed()
        b2.client.close()
        _ = try await b2.closed()
        try await Self.counts(hub, total: 4, perClient: ["192.0.2.1": 1, "192.0.2.2": 1, "127.0.0.1": 2])
        let a3 = try await hub.peer(headers: Self.forwarded("192.0.2.1"))
        a3.send(#"{"type":"ping","id":"a3"}"#)
        _ = try await a3.next("pong")
        for peer in [a2, a3, b1, p1, p2] {
            peer.client.close()
            _ = try await peer.closed()
        }
        try await Self.counts(hub, total: 0, perClient: [:])
    }

    @Test func withoutTrustedProxiesTheHeaderIsIgnored() async throws {
        let hub = try await TestHub { $0.maxConnectionsPerIP = 2 }
        defer { Task { await hub.stop() } }
        let a = try await hub.peer(headers: Self.forwarded("192.0.2.1"))
        let b = try await hub.peer(headers: Self.forwarded("192.0.2.2"))
        try await Self.counts(hub, total: 2, perClient: ["127.0.0.1": 2])
        await #expect(throws: WebSocketClientError.upgradeRefused(status: 503)) {
            _ = try await hub.connect(headers: Self.forwarded("192.0.2.3"))
        }
        for peer in [a, b] {
            peer.client.close()
            _ = try await peer.closed()
        }
        try await Self.counts(hub, total: 0, perClient: [:])
    }

    @Test func sessionsWaitingToResumeAreCountedPerForwardedClient() async throws {
        let hub = try await TestHub {
            $0.maxDetachedPerIP = 1
            $0.trustedProxies = [try! IPNetwork(parsing: "127.0.0.1")]
        }
        defer { Task { await hub.stop() } }
        // Three dropped sessions (no close frame: they wait to resume), two of them from one client.
        for client in ["192.0.2.1", "192.0.2.2", "192.0.2.1"] {
            let peer = try await hub.peer(headers: Self.forwarded(client))
            try await peer.client.channel.close()
            _ = try await peer.closed()
        }
        // Only 192.0.2.1's first one was ended early: two wait, one ended. (Counted under one address, the
        // counts would go 1 waiting / 1 ended, then 1 / 2, and never reach this.)
        let expected = ["signal_sessions_detached 2", "signal_detached_sessions_evicted_total 1"]
        var metrics = ""
        for _ in 0..<200 {
            metrics = try await httpGet(port: hub.port, path: "/metrics").1
            if expected.allSatisfy(metrics.contains) { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        for line in expected { #expect(metrics.contains(line), "\(line)") }
    }
}
