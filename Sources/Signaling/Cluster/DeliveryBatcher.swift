import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// Gathers a node's pipelined signal deliveries into ``ClusterScripts/deliverBatch`` calls, so Redis runs
/// one script (and publishes once per destination node) for many signals instead of one per signal.
///
/// A delivery submitted while fewer than ``Limits/maxInFlight`` batches are with Redis leaves at once —
/// alone at low load, so batching adds no latency there; otherwise it waits, and everything that waited
/// leaves as the next batch the moment a batch comes back (group commit). Batches are queued on the
/// event loop under the batcher's lock, in the order their deliveries were submitted, and handed from
/// there to the node's one Redis connection, which Redis serves in order: a sender's signals are decided in the order it sent
/// them, exactly as with one script per signal. Each delivery gets ``ClusterScripts/deliver``'s reply
/// for it; a failed batch (Redis unreachable, timeout) fails each of its deliveries, whose senders are
/// told `unavailable`.
final class DeliveryBatcher: Sendable {
    struct Limits: Sendable {
        /// Batches with Redis at once: one being run while the next is on the wire.
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

    private struct State {
        var waiting: [Item] = []
        var inFlight = 0
    }

    private let state = NIOLockedValueBox(State())
    private let redis: any RedisClient
    private let eventLoop: any EventLoop
    /// The batch's leading arguments: max messages, max bytes, channel prefix.
    private let common: [any RESPEncodable]
    /// False on a Redis Cluster, where a batch's recipients live in different slots and one script may
    /// touch one slot only: each delivery is then its own ``ClusterScripts/deliver`` call, queued at once
    /// (a sender's signals to one recipient go to one primary, in order).
    private let batches: Bool
    let limits: Limits

    init(
        redis: any RedisClient,
        eventLoop: any EventLoop,
        common: [any RESPEncodable],
        batches: Bool = true,
        limits: Limits = Limits()
    ) {
        self.redis = redis
        self.eventLoop = eventLoop
        self.common = common
        self.batches = batches
        self.limits = limits
    }

    /// Queues one delivery: the four session keys of its recipient and its seven per-delivery arguments
    /// (see ``ClusterScripts/deliverBatch``). `completion` gets ``ClusterScripts/deliver``'s reply for it
    /// (on the event loop; a plain callback, not a future: this is once per signal).
    func submit(keys: [String], arguments: [any RESPEncodable], completion: @escaping Completion) {
        guard batches else {
            // deliver's ARGV: prefix, sender, id, type, room, shared, max messages, max bytes, signal, channels.
            var single = Array(arguments.prefix(6))
            single += [common[0], common[1], arguments[6], common[2]]
            redis.submit(ClusterScripts.deliver, keys: keys, arguments: single).whenComplete(completion)
            return
        }
        let sent = state.withLockedValue { state in
            state.waiting.append(Item(keys: keys, arguments: arguments, completion: completion))
            return self.sendNext(&state)
        }
        sent?.whenComplete { result in self.finished(sent: result) }
    }

    /// Under the lock: hands the next batch to Redis if one may go; returns the future of its reply, on
    /// which the caller (outside the lock) waits.
    private func sendNext(_ state: inout State) -> EventLoopFuture<Void>? {
        guard state.inFlight < limits.maxInFlight, !state.waiting.isEmpty else { return nil }
        state.inFlight += 1
        let batch: [Item]
        if state.waiting.count <= limits.maxBatch {
            batch = state.waiting
            state.waiting.removeAll(keepingCapacity: true)
        } else {
            batch = Array(state.waiting.prefix(limits.maxBatch))
            state.waiting.removeFirst(limits.maxBatch)
        }
        var keys: [String] = []
        keys.reserveCapacity(batch.count * 4)
        var arguments = common
        arguments.reserveCapacity(common.count + batch.count * 7)
        for item in batch {
            keys += item.keys
            arguments += item.arguments
        }
        // Always through the event loop's task queue, even when already on it: batches taken under the
        // lock from other threads are queued there in the same order, and a batch handed over directly
        // from the loop (when one came back) would overtake them.
        let reply = eventLoop.makePromise(of: RESPValue.self)
        let (redis, batchKeys, batchArguments) = (self.redis, keys, arguments)
        eventLoop.execute {
            redis.submit(ClusterScripts.deliverBatch, keys: batchKeys, arguments: batchArguments).cascade(to: reply)
        }
        return reply.futureResult.map { reply in
            let replies = reply.array ?? []
            for (index, item) in batch.enumerated() {
                if index < replies.count {
                    item.completion(.success(replies[index]))
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

    private func finished(sent: Result<Void, any Error>) {
        let next = state.withLockedValue { state in
            state.inFlight -= 1
            return self.sendNext(&state)
        }
        next?.whenComplete { result in self.finished(sent: result) }
    }
}
