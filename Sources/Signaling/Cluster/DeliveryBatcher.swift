import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// Gathers a node's pipelined signal deliveries into ``ClusterScripts/deliverBatch`` calls (laid out by
/// ``DeliveryBatch``), so Redis runs one script (and publishes once per destination node) for many signals
/// instead of one per signal.
///
/// A delivery submitted while fewer than ``Limits/maxInFlight`` batches are with Redis leaves at once —
/// alone at low load, so batching adds no latency there; otherwise it waits, and everything that waited
/// leaves as the next batch the moment a batch comes back (group commit). Batches are queued on the
/// event loop under the batcher's lock, in the order their deliveries were submitted, and handed from
/// there to the node's one Redis connection, which Redis serves in order: a sender's signals are decided in the order it sent
/// them, exactly as with one script per signal. Each delivery gets ``ClusterScripts/deliver``'s reply
/// for it; a failed batch (Redis unreachable, timeout) fails each of its deliveries, whose senders are
/// told `unavailable`.
///
/// On a Redis Cluster a script may touch only the keys its primary serves, so deliveries are gathered per
/// primary (``RedisClient/shard(of:)``), each primary's batches in flight and waiting on their own, and
/// go as ``ClusterScripts/deliverShardBatch``. A recipient's deliveries always gather at the primary of its
/// slot, so they keep their order as on one Redis. A batch that finds a recipient's slot no longer served
/// there (`moved`: a failover or resharding the slot map has not caught up with) did nothing; its
/// deliveries are then sent one by one with ``ClusterScripts/deliver``, which follows the redirect.
final class DeliveryBatcher: Sendable {
    struct Limits: Sendable {
        /// Batches with Redis at once (per primary on a Redis Cluster): one being run while the next is on
        /// the wire.
        var maxInFlight = 2
        /// Deliveries in one batch.
        var maxBatch = 128
    }

    /// What a delivery's submitter is called with: ``ClusterScripts/deliver``'s reply for it, or the
    /// batch's failure.
    typealias Completion = @Sendable (Result<RESPValue, any Error>) -> Void

    private struct Item {
        var keys: [String]
        var arguments: [any RESPEncodable]
        var completion: Completion
    }

    /// The deliveries of one Redis server (one Redis Cluster primary): waiting, and batches in flight.
    private struct Shard {
        var waiting: [Item] = []
        var inFlight = 0

        /// The next batch, if one may go now (counted as in flight).
        mutating func take(_ limits: Limits) -> [Item]? {
            guard inFlight < limits.maxInFlight, !waiting.isEmpty else { return nil }
            inFlight += 1
            if waiting.count <= limits.maxBatch {
                defer { waiting.removeAll(keepingCapacity: true) }
                return waiting
            }
            defer { waiting.removeFirst(limits.maxBatch) }
            return Array(waiting.prefix(limits.maxBatch))
        }
    }

    private struct State {
        var shards: [String: Shard] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let redis: any RedisClient
    private let eventLoop: any EventLoop
    /// The batch's leading arguments: max messages, max bytes, channel prefix.
    private let common: [any RESPEncodable]
    /// True on a Redis Cluster: batches per primary, as ``ClusterScripts/deliverShardBatch``.
    private let sharded: Bool
    let limits: Limits

    init(
        redis: any RedisClient,
        eventLoop: any EventLoop,
        common: [any RESPEncodable],
        sharded: Bool = false,
        limits: Limits = Limits()
    ) {
        self.redis = redis
        self.eventLoop = eventLoop
        self.common = common
        self.sharded = sharded
        self.limits = limits
    }

    /// Queues one delivery: the four session keys of its recipient and its seven per-delivery arguments
    /// (see ``ClusterScripts/deliverBatch``). `completion` gets ``ClusterScripts/deliver``'s reply for it
    /// (on the event loop; a plain callback, not a future: this is once per signal).
    func submit(keys: [String], arguments: [any RESPEncodable], completion: @escaping Completion) {
        guard let shard = redis.shard(of: keys[0]) else {
            // No slot map yet: alone, routed (and redirected) by the cluster client.
            return self.single(keys: keys, arguments: arguments, completion: completion)
        }
        let sent = state.withLockedValue { state in
            state.shards[shard, default: Shard()].waiting.append(
                Item(keys: keys, arguments: arguments, completion: completion)
            )
            return self.sendNext(shard, &state)
        }
        sent?.whenComplete { _ in self.finished(shard) }
    }

    /// One delivery as its own ``ClusterScripts/deliver`` call.
    private func single(keys: [String], arguments: [any RESPEncodable], completion: @escaping Completion) {
        // deliver's ARGV: prefix, sender, id, type, room, shared, max messages, max bytes, signal, channels.
        var single = Array(arguments.prefix(6))
        single += [common[0], common[1], arguments[6], common[2]]
        redis.submit(ClusterScripts.deliver, keys: keys, arguments: single).whenComplete(completion)
    }

    /// Under the lock: hands `shard`'s next batch to Redis if one may go; returns the future of its reply,
    /// on which the caller (outside the lock) waits.
    private func sendNext(_ shard: String, _ state: inout State) -> EventLoopFuture<Void>? {
        // Taken in place (`?.`), so the waiting list is not copied.
        guard let batch = state.shards[shard]?.take(limits) else { return nil }
        let layout = DeliveryBatch(
            recipients: batch.map(\.keys),
            deliveries: batch.map(\.arguments),
            common: common,
            sharded: sharded
        )
        let script = sharded ? ClusterScripts.deliverShardBatch : ClusterScripts.deliverBatch
        let (keys, arguments) = (layout.keys, layout.arguments)
        // Always through the event loop's task queue, even when already on it: batches taken under the
        // lock from other threads are queued there in the same order, and a batch handed over directly
        // from the loop (when one came back) would overtake them.
        let reply = eventLoop.makePromise(of: RESPValue.self)
        let redis = self.redis
        eventLoop.execute {
            redis.submit(script, keys: keys, arguments: arguments).cascade(to: reply)
        }
        return reply.futureResult.map { reply in
            if self.sharded, reply.string == "moved" {
                // A recipient's slot is served elsewhere now; the batch did nothing.
                for item in batch {
                    self.single(keys: item.keys, arguments: item.arguments, completion: item.completion)
                }
                return
            }
            let replies = reply.array ?? []
            for (position, index) in layout.order.enumerated() {
                let item = batch[index]
                if position < replies.count {
                    item.completion(.success(replies[position]))
                } else {
                    item.completion(
                        .failure(RedisError(.protocolError, "deliverBatch answered \(replies.count) of \(batch.count)"))
                    )
                }
            }
        }.recover { error in
            for item in batch { item.completion(.failure(error)) }
        }
    }

    private func finished(_ shard: String) {
        let next = state.withLockedValue { state -> EventLoopFuture<Void>? in
            state.shards[shard]?.inFlight -= 1
            if let queue = state.shards[shard], queue.inFlight == 0, queue.waiting.isEmpty {
                // A primary gone in a failover leaves no entry behind.
                state.shards[shard] = nil
                return nil
            }
            return self.sendNext(shard, &state)
        }
        next?.whenComplete { _ in self.finished(shard) }
    }
}
