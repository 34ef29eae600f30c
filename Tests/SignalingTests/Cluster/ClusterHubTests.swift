import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RedisTestSupport
import Testing

@testable import Signaling

/// A connection without a socket: records what a hub writes to its outbox, as text.
final class RecordingConnection: Sendable {
    private let written = NIOLockedValueBox<[String]>([])
    private let box = NIOLockedValueBox<Outbox?>(nil)

    init() {
        let outbox = Outbox(limit: 1 << 20) { [written, box] in Self.drain(box, into: written) }
        box.withLockedValue { $0 = outbox }
    }

    var outbox: Outbox { box.withLockedValue { $0! } }

    /// Everything written so far (`close CODE` for a close).
    var log: [String] {
        Self.drain(box, into: written)
        return written.withLockedValue { $0 }
    }

    func messages(_ type: String) -> [[String: Any]] {
        log.compactMap { text in
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                object["type"] as? String == type
            else { return nil }
            return object
        }
    }

    private static func drain(_ box: NIOLockedValueBox<Outbox?>, into written: NIOLockedValueBox<[String]>) {
        guard let outbox = box.withLockedValue({ $0 }) else { return }
        let items = outbox.take().items
        written.withLockedValue { log in
            for item in items {
                switch item {
                case .text(let buffer): log.append(String(buffer: buffer))
                case .ack(let ack): log.append(#"{"type":"ack","id":"\#(ack.id ?? "")"}"#)
                case .close(let code, _): log.append("close \(code.rawValue)")
                }
            }
        }
    }
}

/// Two ``ClusterHub`` nodes on a real redis-server, driven through ``SessionHub`` with recording outboxes:
/// `run()` hosts the work, a signal crosses nodes, and cancelling `run()` closes Redis and returns.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterHubTests {
    func node(_ server: RedisTestServer, _ id: String) throws -> ClusterHub {
        var configuration = ClusterConfiguration(redis: try server.configuration(), nodeID: id)
        configuration.keyPrefix = "hubtest"
        configuration.refreshInterval = .milliseconds(200)
        configuration.sweepInterval = .milliseconds(100)
        var limits = HubLimits()
        limits.resumeGraceNanos = 2_000_000_000
        return try ClusterHub(
            configuration: configuration,
            limits: limits,
            welcome: WelcomeTemplate(
                heartbeatInterval: 25,
                heartbeatTimeout: 60,
                iceServersJSON: "[]",
                limitsJSON: "{}"
            ),
            metrics: HubMetrics(factory: NOOPMetricsHandler.instance),
            clusterMetrics: ClusterMetrics(factory: NOOPMetricsHandler.instance),
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
    }

    func message(_ text: String) -> ClientMessage {
        guard case .success(let message) = MessageDecoder().decode(ByteBuffer(string: text)) else {
            fatalError("not a valid message: \(text)")
        }
        return message
    }

    func waitFor(_ what: Comment, _ condition: @escaping @Sendable () -> Bool) async throws {
        let met = try await eventually(timeout: .seconds(10)) { condition() }
        #expect(met, what)
    }

    @Test func aSignalCrossesNodesAndCancellingRunClosesRedis() async throws {
        let server = try await RedisTestServer()
        let a = try node(server, "a")
        let b = try node(server, "b")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await a.run() }
            group.addTask { try await b.run() }
            try await waitFor("both nodes ready") { a.isReady && b.isReady }

            let alice = RecordingConnection()
            let bob = RecordingConnection()
            let aliceID = a.makeConnectionID()
            let bobID = b.makeConnectionID()
            #expect(
                a.open(aliceID, outbox: alice.outbox, request: .fresh(peer: "alice", subject: nil, grant: .all))
                    == .pending
            )
            #expect(
                b.open(bobID, outbox: bob.outbox, request: .fresh(peer: "bob", subject: nil, grant: .all)) == .pending
            )
            try await waitFor("welcomes") { !alice.messages("welcome").isEmpty && !bob.messages("welcome").isEmpty }

            a.receive(aliceID, message(#"{"type":"join","room":"r","id":"j1"}"#))
            try await waitFor("alice joined") { !alice.messages("joined").isEmpty }
            b.receive(bobID, message(#"{"type":"join","room":"r","id":"j2"}"#))
            try await waitFor("bob joined, alice told") {
                !alice.messages("peer-joined").isEmpty && !bob.messages("joined").isEmpty
            }
            #expect(bob.messages("joined").first?["peers"] as? [[String: Any]] != nil)

            for n in 1...5 {
                a.receive(aliceID, message(#"{"type":"message","to":"bob","data":\#(n),"id":"m\#(n)"}"#))
            }
            try await waitFor("five signals delivered in order") { bob.messages("message").count == 5 }
            #expect(bob.messages("message").map { $0["data"] as? Int } == [1, 2, 3, 4, 5])
            let seqs = bob.messages("message").compactMap { $0["seq"] as? Int }
            #expect(seqs == seqs.sorted() && Set(seqs).count == 5)
            try await waitFor("five acks") { alice.messages("ack").count == 5 }
            #expect(a.crossNodeSignals == 5)

            // Alice leaves for good: bob sees her go.
            a.closed(aliceID, keepSession: false)
            try await waitFor("peer-left") { !bob.messages("peer-left").isEmpty }

            group.cancelAll()
            try await group.waitForAll()
        }
        // `run()` returned, and closed both of its Redis connections on the way out.
        for hub in [a, b] {
            #expect(hub.redis.stateDescription == "closed")
            guard case .single(let subscriber) = hub.subscriber else { Issue.record("not one Redis"); continue }
            #expect(subscriber.state == .closed)
        }
        #expect(!a.isReady)
    }

    @Test func everyScriptIsLoadedOnceRedisAnswers() async throws {
        let server = try await RedisTestServer()
        let a = try node(server, "a")
        let redis = try server.connection()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await a.run() }
            try await waitFor("ready") { a.isReady }
            let shas = ClusterScripts.all.map(\.sha1)
            let loaded = try await eventually(timeout: .seconds(10)) {
                let exists = try? await redis.send(["SCRIPT", "EXISTS"] + shas)
                return exists?.array?.allSatisfy { $0.int == 1 } == true
            }
            #expect(loaded, "every script is in Redis's cache before any request needed it")
            group.cancelAll()
            try await group.waitForAll()
        }
        await redis.close()
    }

    @Test func aSessionWhoseSocketClosedInTheDrainIsDetachedBeforeRunCloses() async throws {
        let server = try await RedisTestServer()
        let hub = try node(server, "drain")
        let client = RecordingConnection()
        let id = hub.makeConnectionID()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run() }
            try await waitFor("ready") { hub.isReady }
            _ = hub.open(id, outbox: client.outbox, request: .fresh(peer: "carol", subject: nil, grant: .all))
            try await waitFor("welcome") { !client.messages("welcome").isEmpty }
            // The server's drain closes the socket with 1001 and cancels the backend right after.
            hub.closed(id, keepSession: true)
            group.cancelAll()
            try await group.waitForAll()
        }
        let redis = try server.connection()
        // Detached: kept for a resume elsewhere, with the grace period as its deadline.
        #expect(try await redis.send(["HGET", "hubtest:{carol}:s", "away"]).string == "1")
        await redis.close()
    }

    @Test func aConnectionsRequestsAreRefusedPastTheBoundWhileRedisStalls() async throws {
        let server = try await RedisTestServer(["--enable-debug-command", "yes"])
        var configuration = ClusterConfiguration(redis: try server.configuration(), nodeID: "stall")
        configuration.keyPrefix = "stalltest"
        configuration.maxPendingRequests = 64
        configuration.maxPendingBytes = 16 * 1024
        configuration.maxPendingRefusals = 8
        let hub = try ClusterHub(
            configuration: configuration,
            limits: HubLimits(),
            welcome: WelcomeTemplate(
                heartbeatInterval: 25,
                heartbeatTimeout: 60,
                iceServersJSON: "[]",
                limitsJSON: "{}"
            ),
            metrics: HubMetrics(factory: NOOPMetricsHandler.instance),
            clusterMetrics: ClusterMetrics(factory: NOOPMetricsHandler.instance),
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run() }
            try await waitFor("ready") { hub.isReady }
            let client = RecordingConnection()
            let id = hub.makeConnectionID()
            _ = hub.open(id, outbox: client.outbox, request: .fresh(peer: "flooder", subject: nil, grant: .all))
            try await waitFor("welcome") { !client.messages("welcome").isEmpty }
            // Redis blocks for two seconds; meanwhile the client sends 4 KiB messages as fast as it can.
            let sleeper = try server.connection()
            let started = ContinuousClock.now
            let stall = Task { try await sleeper.send(["DEBUG", "SLEEP", "2"], timeout: .seconds(5)) }
            try await Task.sleep(for: .milliseconds(100))
            let data = String(repeating: "x", count: 4000)
            for n in 0..<40 {
                hub.receive(id, message(#"{"type":"message","to":"nobody","data":"\#(data)","id":"f\#(n)"}"#))
            }
            let errors = client.messages("error")
            // 16 KiB hold three of them (each counted with its overhead); eight more are refused, then 1013.
            #expect(errors.count == 8)
            #expect(errors.allSatisfy { $0["code"] as? String == "unavailable" })
            #expect(client.log.contains("close 1013"))
            #expect(try await stall.value.string == "OK")
            #expect(ContinuousClock.now - started >= .seconds(1.5), "Redis was stalled all along")
            // Once Redis answers, the three requests that were admitted are answered too.
            try await waitFor("the admitted requests answered") { client.messages("error").count == 11 }
            await sleeper.close()
            group.cancelAll()
            try await group.waitForAll()
        }
    }
}
