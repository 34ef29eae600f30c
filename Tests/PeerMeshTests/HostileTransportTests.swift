import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import PeerMesh

/// The mesh port against strangers (no mesh secret) and a hostile member (the secret, its own key), over
/// real loopback sockets.
@Suite(.serialized, .timeLimit(.minutes(1))) struct HostileTransportTests {
    static let secret = try! MeshSecret(bytes: Array("the hostile transport test secret, 32+".utf8))
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    final class Inbox: MeshDelivery {
        let delivered = NIOLockedValueBox<[(peer: String, from: String)]>([])
        func deliver(_ payload: [UInt8], from sender: String, to peer: String, addressed: Bool) {
            delivered.withLockedValue { $0.append((peer, sender)) }
        }
        func unavailable(_ key: SignalKey, peer: String) {}
    }

    func node(links: MeshLinkLimits = MeshLinkLimits(), seeds: [Int] = []) async throws -> (MeshRuntime, Int, Inbox) {
        var configuration = MeshRuntimeConfiguration(
            listenHost: "127.0.0.1",
            listenPort: 0,
            seeds: seeds.map { "127.0.0.1:\($0)" },
            secret: Self.secret
        )
        configuration.links = links
        configuration.mesh.membership.probeInterval = 200_000_000
        let runtime = try MeshRuntime(configuration: configuration, group: Self.group, logger: Logger(label: "hostile"))
        let inbox = Inbox()
        runtime.setDelivery(inbox)
        return (runtime, try await runtime.start(), inbox)
    }

    /// A raw TCP connection that notes when the server closes it.
    final class Raw: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let closed = NIOLockedValueBox(false)
        func channelInactive(context: ChannelHandlerContext) { closed.withLockedValue { $0 = true } }
    }

    func connect(to port: Int, from host: String = "127.0.0.1") async throws -> (any Channel, Raw) {
        let raw = Raw()
        let channel = try await ClientBootstrap(group: Self.group)
            .channelInitializer { $0.pipeline.addHandler(raw) }
            .bind(to: try SocketAddress(ipAddress: host, port: 0))
            .connect(host: "127.0.0.1", port: port)
            .get()
        return (channel, raw)
    }

    func eventually(_ what: String, timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting for \(what)")
    }

    @Test func beforeAuthenticationNoFrameLongerThanAHandshakeFrameIsRead() async throws {
        var limits = MeshLinkLimits()
        limits.handshakeTimeout = .seconds(10)
        let (runtime, port, _) = try await node(links: limits)
        #expect(LinkFrame.maxEncodedSize == 161)
        for declared in [UInt32(LinkFrame.maxEncodedSize + 1), 1 << 20, .max] {
            let (channel, raw) = try await connect(to: port)
            var buffer = channel.allocator.buffer(capacity: 4100)
            buffer.writeInteger(declared)
            buffer.writeRepeatingByte(0x11, count: 4096)
            try await channel.writeAndFlush(buffer)
            // Closed at once, long before the handshake timeout.
            try await eventually("a \(declared)-byte frame closes the link", timeout: .seconds(2)) {
                raw.closed.withLockedValue { $0 }
            }
        }
        // A frame of handshake size that is not a handshake frame: refused too.
        let (channel, raw) = try await connect(to: port)
        var buffer = channel.allocator.buffer(capacity: 165)
        buffer.writeInteger(UInt32(LinkFrame.maxEncodedSize))
        buffer.writeRepeatingByte(0x11, count: LinkFrame.maxEncodedSize)
        try await channel.writeAndFlush(buffer)
        try await eventually("a garbage challenge closes the link", timeout: .seconds(2)) {
            raw.closed.withLockedValue { $0 }
        }
        try await eventually("no handshake left open") { runtime.transport.unauthenticatedLinks == 0 }
        await runtime.stop()
    }

    @Test func unauthenticatedLinksAreCappedPerIPAndInAllAndTimeOut() async throws {
        var limits = MeshLinkLimits()
        limits.maxUnauthenticatedLinksPerIP = 3
        limits.maxUnauthenticatedLinks = 5
        limits.handshakeTimeout = .milliseconds(1500)
        let (runtime, port, _) = try await node(links: limits)
        var first: [(any Channel, Raw)] = []
        for _ in 0..<6 { first.append(try await connect(to: port, from: "127.0.0.1")) }
        try await eventually("three over the per-IP cap closed") {
            first.filter { $0.1.closed.withLockedValue { $0 } }.count == 3
        }
        #expect(runtime.transport.unauthenticatedLinks == 3)
        var second: [(any Channel, Raw)] = []
        for _ in 0..<3 { second.append(try await connect(to: port, from: "127.0.0.2")) }
        try await eventually("one over the total cap closed") {
            second.filter { $0.1.closed.withLockedValue { $0 } }.count == 1
        }
        #expect(runtime.transport.unauthenticatedLinks == 5)
        // Silent connections are closed at the handshake timeout, and give their slots back.
        try await eventually("handshakes time out", timeout: .seconds(4)) {
            (first + second).allSatisfy { $0.1.closed.withLockedValue { $0 } }
        }
        try await eventually("slots released") { runtime.transport.unauthenticatedLinks == 0 }
        // An honest node still joins.
        let (honest, _, _) = try await node(links: limits, seeds: [port])
        try await eventually("the honest node joins") {
            runtime.liveMembers.count == 2 && honest.liveMembers.count == 2
        }
        await honest.stop()
        await runtime.stop()
    }

    @Test func aMemberRelayingForAPeerItDoesNotHostIsDisconnectedAndRefused() async throws {
        let (victim, port, inbox) = try await node()
        victim.connect(peer: "bob")
        let identity = NodeIdentity.seeded(61)
        let attacker = try MeshTransport(
            identity: identity,
            secret: Self.secret,
            tls: nil,
            group: Self.group,
            logger: Logger(label: "attacker")
        )
        let linkDowns = NIOLockedValueBox(0)
        attacker.setHandlers(
            message: { _, _ in },
            linkDown: { _ in linkDowns.withLockedValue { $0 += 1 } },
            address: { _ in "127.0.0.1:\(port)" }
        )
        #expect(try await attacker.dial("127.0.0.1:\(port)").get() == victim.id)
        // "alice" is not the attacker's peer: it vouches for mallory and signs a signal from alice.
        var forged = MeshSignal(
            origin: identity.id,
            id: 1,
            from: "alice",
            target: .peer("bob"),
            route: .direct,
            hops: 1,
            payload: Array("{}".utf8)
        )
        let mallory = LocationRecord(
            subject: .peer("mallory"),
            host: identity.id,
            sequence: 1,
            expiresAt: .max / 2,
            present: true
        )
        forged.credential = SignalCredential.sign(forged, sender: mallory.signed(by: identity).signed, as: identity)
        attacker.send(.signal(forged), to: victim.id)
        try await eventually("the victim closes the link") { linkDowns.withLockedValue { $0 } >= 1 }
        #expect(victim.transport.isBanned(identity.id))
        // While banned, even a valid signal does not get through: its link is refused.
        let valid = MeshSignal(
            origin: identity.id,
            id: 2,
            from: "mallory",
            target: .peer("bob"),
            route: .direct,
            hops: 1,
            payload: Array("{}".utf8)
        )
        .vouched(by: identity)
        attacker.send(.signal(valid), to: victim.id)
        try await Task.sleep(for: .milliseconds(500))
        #expect(inbox.delivered.withLockedValue { $0.isEmpty })
        await attacker.close()
        await victim.stop()
    }
}
