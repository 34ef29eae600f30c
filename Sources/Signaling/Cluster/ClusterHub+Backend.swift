import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// The cluster hub as a server's backend: ``run()`` hosts all of its background work as child tasks, and
/// the server cancels it once it has drained.
extension ClusterHub: SignalBackend {
    /// Connects to Redis and runs, until cancelled, every background job of the node as a child task:
    /// the node channel (its subscription, retried until it succeeds, and its messages), maintenance
    /// (refresh, sweep, partition watch), `ice-servers` refreshes with TURN, and one task per connection that opens its session, carries out
    /// its requests in order and detaches or ends the session after its socket closed. On cancellation
    /// it lets the sessions being detached or ended finish (for at most a command timeout), then closes
    /// both Redis connections (what still waits for Redis fails at once) and returns once every child has.
    public func run() async throws {
        redis.start()
        subscriber.start()
        await withDiscardingTaskGroup { group in
            group.addTask { await self.subscribe() }
            group.addTask { await self.consumeChannel() }
            group.addTask { await self.maintain() }
            group.addTask { await self.refreshIceServers() }
            group.addTask {
                // When the group is cancelled: sessions whose sockets closed in the server's drain are
                // being detached (kept for a resume elsewhere); give them up to a command timeout, then
                // close Redis, so children still waiting for a reply stop waiting.
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                let deadline =
                    NIODeadline.now()
                    + TimeAmount.nanoseconds(
                        Int64(Self.nanoseconds(self.configuration.redis.commandTimeout))
                    )
                while self.state.withLockedValue({ $0.closingSessions > 0 }) && NIODeadline.now() < deadline {
                    try? await self.eventLoop.scheduleTask(in: .milliseconds(10)) {}.futureResult.get()
                }
                await self.subscriber.close()
                await self.redis.close()
            }
            for await job in jobs.stream {
                switch job {
                case .serve(let connection):
                    group.addTask { await self.serve(connection) }
                case .notifyExpired(let origins, let recipient):
                    group.addTask { await self.notifyExpired(origins, recipient: recipient) }
                }
            }
        }
        // Closing is idempotent; this covers a run whose group ended before the closer ran.
        await subscriber.close()
        await redis.close()
    }

    public func setEventSink(_ sink: @escaping HubEventSink) {
        state.withLockedValue { $0.eventSink = sink }
    }

    /// True while both Redis connections are up: `/readyz` reports not-ready otherwise.
    public var isReady: Bool { redis.isConnected && subscriber.isConnected }
}
