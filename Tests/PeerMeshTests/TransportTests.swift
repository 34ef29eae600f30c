import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import PeerMesh

/// Real mesh nodes over loopback TCP: membership converges, a signal crosses nodes, a node without the
/// mesh secret cannot join.
@Suite(.serialized, .timeLimit(.minutes(1))) struct TransportTests {
    final class Inbox: MeshDelivery {
        let delivered = NIOLockedValueBox<[(peer: String, from: String, payload: [UInt8])]>([])
        let unavailable = NIOLockedValueBox<[String]>([])
        func deliver(_ payload: [UInt8], from sender: String, to peer: String, addressed: Bool) {
            delivered.withLockedValue { $0.append((peer, sender, payload)) }
        }
        func unavailable(_ key: SignalKey, peer: String) {
            unavailable.withLockedValue { $0.append(peer) }
        }
    }

    static let secret = try! MeshSecret(bytes: Array("the transport test mesh secret, 32+ bytes".utf8))
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    func node(seeds: [Int], secret: MeshSecret = Self.secret) async throws -> (MeshRuntime, Int, Inbox) {
        var configuration = MeshRuntimeConfiguration(
            listenHost: "127.0.0.1",
            listenPort: 0,
            seeds: seeds.map { "127.0.0.1:\($0)" },
            secret: secret
        )
        configuration.mesh.membership.probeInterval = 200_000_000
        let runtime = try MeshRuntime(
            configuration: configuration,
            group: Self.group,
            logger: Logger(label: "mesh-test")
        )
        let inbox = Inbox()
        runtime.setDelivery(inbox)
        let port = try await runtime.start()
        return (runtime, port, inbox)
    }

    func eventually(_ what: String, timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting for \(what)")
    }

    @Test func threeNodesConvergeAndRelayASignal() async throws {
        let (a, portA, _) = try await node(seeds: [])
        let (b, _, _) = try await node(seeds: [portA])
        let (c, _, inboxC) = try await node(seeds: [portA])
        try await eventually("membership converges") { [a, b, c].allSatisfy { $0.liveMembers.count == 3 } }
        c.connect(peer: "carol")
        try await Task.sleep(for: .milliseconds(300))  // the location record reaches carol's home nodes
        let payload = Array("{\"type\":\"offer\",\"sdp\":\"x\",\"from\":\"alice\",\"seq\":".utf8)
        #expect(b.send(from: "alice", to: .peer("carol"), payload: payload) != nil)
        try await eventually("delivery on c") { !inboxC.delivered.withLockedValue { $0.isEmpty } }
        let delivered = inboxC.delivered.withLockedValue { $0 }
        #expect(delivered.count == 1)
        #expect(
            delivered.first?.peer == "carol" && delivered.first?.from == "alice" && delivered.first?.payload == payload
        )
        for runtime in [a, b, c] { await runtime.stop() }
    }

    @Test func aNodeWithoutTheSecretCannotJoin() async throws {
        let (a, portA, _) = try await node(seeds: [])
        let wrong = try MeshSecret(bytes: Array("not this mesh's secret, but 32 bytes".utf8))
        let (intruder, _, _) = try await node(seeds: [portA], secret: wrong)
        try await Task.sleep(for: .milliseconds(800))
        #expect(a.liveMembers.count == 1)
        #expect(intruder.liveMembers.count == 1)
        await intruder.stop()
        await a.stop()
    }

    /// Counts the connections a plain TCP listener accepts.
    final class Counter: ChannelInboundHandler, Sendable {
        typealias InboundIn = Never
        let accepted = NIOLockedValueBox(0)
        func channelActive(context: ChannelHandlerContext) {
            accepted.withLockedValue { $0 += 1 }
            context.close(promise: nil)
        }
    }

    @Test func aStoppedNodeDialsItsSeedsNoMore() async throws {
        // A seed that is not up yet: the node retries it every second, until it is stopped.
        let probe = try await ServerBootstrap(group: Self.group).bind(host: "127.0.0.1", port: 0).get()
        let seedPort = try #require(probe.localAddress?.port)
        try await probe.close()
        let (runtime, _, _) = try await node(seeds: [seedPort])
        await runtime.stop()
        // Whatever listens on that port next hears nothing from the stopped node.
        let counter = Counter()
        let listener = try await ServerBootstrap(group: Self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in channel.pipeline.addHandler(counter) }
            .bind(host: "127.0.0.1", port: seedPort).get()
        try await Task.sleep(for: .milliseconds(2500))
        try await listener.close()
        #expect(counter.accepted.withLockedValue { $0 } == 0)
    }
}
