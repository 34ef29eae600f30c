import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PeerMesh
import Prometheus
import ServiceLifecycle
import SignalMesh
import Signaling
import Testing

/// Mesh mode as an app embeds it: a `MeshRuntime`, a `MeshBridge` around a `Hub`, given to a `SignalServer`
/// as its backend, run by a `ServiceGroup` (nothing else). Two such nodes relay an offer over real
/// WebSockets, and shut down gracefully.
@Suite(.serialized, .timeLimit(.minutes(1))) struct EmbeddingTests {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    /// Free loopback ports (bound and released).
    static func freePorts(_ count: Int) async throws -> [Int] {
        var channels: [any Channel] = []
        for _ in 0..<count {
            channels.append(try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get())
        }
        defer { for channel in channels { channel.close(promise: nil) } }
        return channels.compactMap { $0.localAddress?.port }
    }

    /// The few lines of Docs/mesh.md: one node, serving WebSockets on `port`, its mesh on `meshPort`.
    static func node(port: Int, meshPort: Int, seeds: [Int]) async throws -> (ServiceGroup, MeshRuntime) {
        var logger = Logger(label: "embedded-mesh")
        logger.logLevel = .warning
        var configuration = ServerConfiguration()
        configuration.port = port
        configuration.threads = 1
        let registry = PrometheusCollectorRegistry()
        let secret = try MeshSecret(bytes: Array("the embedding test mesh secret, 32+ bytes".utf8))
        var mesh = MeshRuntimeConfiguration(
            listenHost: "127.0.0.1",
            listenPort: meshPort,
            seeds: seeds.map { "127.0.0.1:\($0)" },
            secret: secret
        )
        mesh.mesh.membership.probeInterval = 200_000_000
        let runtime = try MeshRuntime(configuration: mesh, group: group, logger: logger)
        let bridge = MeshBridge(hub: Hub(configuration: configuration, registry: registry), runtime: runtime)
        let server = try await SignalServer(
            configuration: configuration,
            backend: bridge,
            logger: logger,
            registry: registry
        )
        return (ServiceGroup(services: [server], logger: logger), runtime)
    }

    /// A WebSocket client that keeps every text message it receives.
    final class Client: Sendable {
        let socket: WebSocketClient
        private let texts = NIOLockedValueBox<[String]>([])

        init(port: Int, peer: String) async throws {
            socket = try await WebSocketClient.connect(
                to: try WebSocketURL("ws://127.0.0.1:\(port)/ws?peer=\(peer)"),
                group: EmbeddingTests.group
            )
            let socket = self.socket
            let texts = self.texts
            Task {
                for await event in socket.events {
                    if case .text(let text) = event { texts.withLockedValue { $0.append(text) } }
                }
            }
        }

        var received: [String] { texts.withLockedValue { $0 } }

        func waitFor(_ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            try await eventually("\(fragment)", sourceLocation: sourceLocation) {
                self.received.contains { $0.contains(fragment) }
            }
        }
    }

    @Test func twoEmbeddedNodesRelayAnOfferAndShutDownGracefully() async throws {
        let ports = try await Self.freePorts(4)
        let (first, firstMesh) = try await Self.node(port: ports[0], meshPort: ports[1], seeds: [])
        let (second, secondMesh) = try await Self.node(port: ports[2], meshPort: ports[3], seeds: [ports[1]])
        let runs = [Task { try await first.run() }, Task { try await second.run() }]
        defer {
            // A failed expectation below still stops both nodes: nothing of this test outlives it.
            Task {
                await first.triggerGracefulShutdown()
                await second.triggerGracefulShutdown()
            }
        }
        // Serving: connections are accepted once the server has bound; the mesh joins meanwhile.
        var alice: Client?
        var bob: Client?
        for _ in 0..<100 where alice == nil || bob == nil {
            if alice == nil { alice = try? await Client(port: ports[0], peer: "alice") }
            if bob == nil { bob = try? await Client(port: ports[2], peer: "bob") }
            if alice == nil || bob == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let a = try #require(alice)
        let b = try #require(bob)
        try await a.waitFor(#""type":"welcome""#)
        try await b.waitFor(#""type":"welcome""#)
        // The second node may have dialled its seed before the first listened; it retries every second.
        try await eventually("the two nodes see each other") {
            firstMesh.liveMembers.count == 2 && secondMesh.liveMembers.count == 2
        }
        a.socket.send(#"{"type":"join","room":"r","id":"j"}"#)
        try await a.waitFor(#""type":"joined""#)
        try await Task.sleep(for: .milliseconds(500))  // alice's records reach their home nodes
        b.socket.send(#"{"type":"join","room":"r","id":"j"}"#)
        try await a.waitFor(#""type":"peer-joined""#)
        b.socket.send(#"{"type":"offer","to":"alice","sdp":"v=0","id":"o1"}"#)
        try await a.waitFor(#""from":"bob""#)
        try await b.waitFor(#"{"type":"ack","id":"o1"}"#)
        await first.triggerGracefulShutdown()
        await second.triggerGracefulShutdown()
        for run in runs { try await run.value }
    }
}
