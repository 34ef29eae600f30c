import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PeerMesh
import Signaling
import Testing

@testable import SignalMesh

/// One mesh node for the bridge tests: a real in-memory ``Hub`` and a real ``MeshRuntime`` on loopback,
/// joined by a ``MeshBridge``. Clients are the hub's own connection interface (an ``Outbox`` per
/// connection), without WebSockets: the bridge sees exactly what a server's connections hand it.
final class MeshTestNode: Sendable {
    static let secret = try! MeshSecret(bytes: Array("the signal mesh test secret, 32+ bytes long".utf8))
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    let bridge: MeshBridge
    let runtime: MeshRuntime
    let port: Int

    private init(bridge: MeshBridge, runtime: MeshRuntime, port: Int) {
        self.bridge = bridge
        self.runtime = runtime
        self.port = port
    }

    /// Starts a node that joins through `seed` (a port; none: a new mesh).
    static func start(seed: Int? = nil, limits: HubLimits = HubLimits()) async throws -> MeshTestNode {
        var configuration = MeshRuntimeConfiguration(
            listenHost: "127.0.0.1",
            listenPort: 0,
            seeds: seed.map { ["127.0.0.1:\($0)"] } ?? [],
            secret: secret
        )
        configuration.mesh.membership.probeInterval = 200_000_000
        let runtime = try MeshRuntime(configuration: configuration, group: group, logger: Logger(label: "mesh-test"))
        let hub = Hub(
            limits: limits,
            welcome: WelcomeTemplate(
                heartbeatInterval: 25,
                heartbeatTimeout: 60,
                iceServersJSON: "[]",
                limitsJSON: "{}"
            ),
            metrics: HubMetrics(factory: NOOPMetricsHandler.instance)
        )
        let bridge = MeshBridge(hub: hub, runtime: runtime, answerTimeout: .seconds(5))
        let port = try await runtime.start()
        return MeshTestNode(bridge: bridge, runtime: runtime, port: port)
    }

    /// Opens a session for `peer` on this node (with `subject`: as the holder of a token for it).
    func connect(_ peer: String, subject: String? = nil) -> TestClient {
        let client = TestClient(peer: peer, connection: bridge.makeConnectionID())
        let outcome = bridge.open(
            client.connection,
            outbox: client.outbox,
            request: .fresh(peer: peer, subject: subject, grant: .all)
        )
        #expect(outcome == .opened(peer: peer, resumed: false, gap: false, replayed: 0))
        client.takeWelcome()
        return client
    }

    /// The client's connection drops (its session is kept) and it resumes on a new connection.
    func resume(_ client: TestClient) -> TestClient {
        bridge.closed(client.connection, keepSession: true)
        let resumed = TestClient(peer: client.peer, connection: bridge.makeConnectionID())
        let outcome = bridge.open(
            resumed.connection,
            outbox: resumed.outbox,
            request: .resume(token: client.session, last: 0, subject: nil)
        )
        #expect(outcome == .opened(peer: client.peer, resumed: true, gap: false, replayed: 0))
        resumed.takeWelcome()
        return resumed
    }

    func send(_ client: TestClient, _ json: String) {
        switch MessageDecoder().decode(ByteBuffer(string: json)) {
        case .success(let message): bridge.receive(client.connection, message)
        case .failure(let error): Issue.record("test message does not decode: \(error)")
        }
    }

    func stop() async { await runtime.stop() }
}

/// One connection's side: everything the hub or the bridge appended to its outbox, as JSON text.
final class TestClient: Sendable {
    let peer: String
    let connection: ConnectionID
    let outbox = Outbox(limit: 1 << 20, wake: {})
    private let received = NIOLockedValueBox<[String]>([])
    private let token = NIOLockedValueBox("")

    /// The session's resume token (from its welcome).
    var session: String { token.withLockedValue { $0 } }

    init(peer: String, connection: ConnectionID) {
        self.peer = peer
        self.connection = connection
    }

    /// Takes the welcome out of the outbox and keeps its resume token.
    func takeWelcome() {
        let (items, _) = outbox.take()
        guard case .text(let buffer)? = items.first else {
            Issue.record("no welcome")
            return
        }
        let welcome = String(buffer: buffer)
        let marker = #""session":""#
        guard let start = welcome.range(of: marker)?.upperBound,
            let end = welcome[start...].firstIndex(of: "\"")
        else {
            Issue.record("no session in \(welcome)")
            return
        }
        token.withLockedValue { $0 = String(welcome[start..<end]) }
    }

    /// Every message so far (taking what the outbox holds).
    func messages() -> [String] {
        let (items, _) = outbox.take()
        let texts = items.compactMap { item -> String? in
            switch item {
            case .text(let buffer): return String(buffer: buffer)
            case .ack(let ack):
                var buffer = ByteBufferAllocator().buffer(capacity: ack.length)
                ack.write(to: &buffer)
                return String(buffer: buffer)
            case .close: return nil
            }
        }
        return received.withLockedValue {
            $0.append(contentsOf: texts)
            return $0
        }
    }

    func contains(_ fragment: String) -> Bool { messages().contains { $0.contains(fragment) } }
}

/// Waits until `condition` holds (records an issue after `timeout`).
func eventually(
    _ what: String,
    timeout: Duration = .seconds(10),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out waiting for \(what)", sourceLocation: sourceLocation)
}

/// Two nodes that see each other live.
func twoNodes(limits: HubLimits = HubLimits()) async throws -> (MeshTestNode, MeshTestNode) {
    let a = try await MeshTestNode.start(limits: limits)
    let b = try await MeshTestNode.start(seed: a.port, limits: limits)
    try await eventually("the two nodes see each other") {
        a.runtime.liveMembers.count == 2 && b.runtime.liveMembers.count == 2
    }
    return (a, b)
}

/// A MeshDelivery that drops everything: a node that never answers.
final class SilentDelivery: MeshDelivery {
    func deliver(_ payload: [UInt8], from sender: String, to peer: String, addressed: Bool) {}
    func unavailable(_ key: SignalKey, peer: String) {}
}
