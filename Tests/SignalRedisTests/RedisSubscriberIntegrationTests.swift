import NIOConcurrencyHelpers
import NIOCore
import RedisTestSupport
import Testing

@testable import SignalRedis

/// `RedisSubscriber` against a real `redis-server` on loopback.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RedisSubscriberIntegrationTests {
    /// Collects a subscriber's events in the background.
    final class Collector: Sendable {
        private let events = NIOLockedValueBox<[RedisPubSubEvent]>([])
        private let task: Task<Void, Never>

        init(_ subscriber: RedisSubscriber) {
            let events = self.events
            task = Task {
                for await event in subscriber.events {
                    events.withLockedValue { $0.append(event) }
                }
            }
        }

        var all: [RedisPubSubEvent] { events.withLockedValue { $0 } }

        var messages: [RedisPubSubMessage] {
            all.compactMap { if case .message(let message) = $0 { return message } else { return nil } }
        }

        /// Waits until the stream finished (after `close()`).
        func finished() async { await task.value }
    }

    @Test func deliversMessagesFromChannelsAndPatternsInOrder() async throws {
        let server = try await RedisTestServer()
        let subscriber = try server.subscriber()
        let events = Collector(subscriber)
        let publisher = try server.connection()
        try await subscriber.subscribe(["room:{lobby}", "other"])
        try await subscriber.psubscribe(["node:*"])
        #expect(subscriber.isConnected)

        let count = 1_000
        for n in 0..<count {
            #expect(try await publisher.publish("m\(n)", to: "room:{lobby}") == 1)
        }
        #expect(try await publisher.publish(ByteBuffer(bytes: [0, 1, 255]), to: "node:b") == 1)
        #expect(try await publisher.publish("x", to: "unrelated") == 0)
        #expect(try await eventually { events.messages.count == count + 1 })
        let messages = events.messages
        #expect(messages.prefix(count).map(\.text) == (0..<count).map { "m\($0)" })
        #expect(messages.prefix(count).allSatisfy { $0.channel == "room:{lobby}" && $0.pattern == nil })
        #expect(
            messages.last
                == RedisPubSubMessage(channel: "node:b", pattern: "node:*", payload: ByteBuffer(bytes: [0, 1, 255]))
        )

        try await subscriber.unsubscribe(["room:{lobby}"])
        try await subscriber.punsubscribe(["node:*"])
        #expect(try await publisher.publish("gone", to: "room:{lobby}") == 0)
        #expect(try await publisher.publish("gone", to: "node:b") == 0)
        #expect(try await publisher.publish("still", to: "other") == 1)
        #expect(try await eventually { events.messages.last?.text == "still" })

        await subscriber.close()
        await events.finished()
        #expect(subscriber.state == .closed)
        await publisher.close()
    }

    @Test func resubscribesByItselfAfterTheServerIsRestarted() async throws {
        let server = try await RedisTestServer()
        let states = RedisConnectionIntegrationTests.StateLog()
        let subscriber = try server.subscriber(onStateChange: states.record)
        let events = Collector(subscriber)
        let publisher = try server.connection()
        try await subscriber.subscribe(["node:{a}"])
        try await subscriber.psubscribe(["room:*"])
        #expect(try await publisher.publish("before", to: "node:{a}") == 1)
        #expect(try await eventually { events.messages.count == 1 })

        await server.kill()
        #expect(try await eventually { !subscriber.isConnected })
        #expect(try await eventually { events.all.contains { if case .disconnected = $0 { true } else { false } } })
        // Subscribing while Redis is down completes once it is back.
        let later = Task { try await subscriber.subscribe(["added-while-down"], timeout: .seconds(20)) }
        try await Task.sleep(for: .milliseconds(300))
        try await server.restart()
        try await later.value
        try await subscriber.waitUntilConnected(timeout: .seconds(5))
        #expect(subscriber.reconnects == 1)
        #expect(states.sawReconnecting)

        // No new subscribe call for these: the subscriber re-subscribed on its own.
        #expect(try await eventually { try await publisher.publish("after", to: "node:{a}") == 1 })
        #expect(try await publisher.publish("in a room", to: "room:7") == 1)
        #expect(try await publisher.publish("new", to: "added-while-down") == 1)
        #expect(try await eventually { events.messages.count == 4 })
        #expect(events.messages.map(\.text) == ["before", "after", "in a room", "new"])
        #expect(events.messages[2].pattern == "room:*")

        // The gap is marked in order: message, disconnected, reconnected, messages.
        let kinds = events.all.map { event -> String in
            switch event {
            case .message: return "message"
            case .disconnected: return "disconnected"
            case .reconnected: return "reconnected"
            case .unsubscribedByServer: return "unsubscribed"
            }
        }
        #expect(kinds == ["message", "disconnected", "reconnected", "message", "message", "message"])
        await subscriber.close()
        await publisher.close()
    }

    @Test func subscribingBeforeAnyConnectionStartsIt() async throws {
        let server = try await RedisTestServer(["--requirepass", "pw"])
        let subscriber = try server.subscriber { $0.password = "pw" }
        #expect(subscriber.state == .idle)
        try await subscriber.subscribe(["c"])
        #expect(subscriber.isConnected)
        await subscriber.close()
        await #expect {
            try await subscriber.subscribe(["d"])
        } throws: { error in
            (error as? RedisError)?.code == .shutdown
        }
    }

    @Test func anIdleSubscriberNoticesAStalledServer() async throws {
        let server = try await RedisTestServer(["--enable-debug-command", "local"])
        let subscriber = try server.subscriber {
            $0.healthCheckInterval = .milliseconds(100)
            $0.commandTimeout = .milliseconds(300)
        }
        let events = Collector(subscriber)
        try await subscriber.subscribe(["c"])
        let sleeper = try server.connection()
        let slept = Task { try await sleeper.send(["DEBUG", "SLEEP", "2"], timeout: .seconds(10)) }
        #expect(try await eventually(timeout: .seconds(3)) { !subscriber.isConnected })
        _ = try await slept.value
        #expect(try await eventually { subscriber.isConnected })
        let publisher = try server.connection()
        #expect(try await eventually { try await publisher.publish("hi", to: "c") == 1 })
        #expect(try await eventually { events.messages.map(\.text) == ["hi"] })
        #expect(events.all.contains(.reconnected))
        for connection in [sleeper, publisher] { await connection.close() }
        await subscriber.close()
    }
}
