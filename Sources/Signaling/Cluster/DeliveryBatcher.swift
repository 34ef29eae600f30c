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

    /// Deliveries in the order submitted, kept as three lists (not one of structs) so a batch hands its
    /// recipients and requests to ``DeliveryBatch`` as they are, and a reply reaches its completion
    /// without copying (and retaining) the rest of its delivery.
    private struct Deliveries {
        /// The peer each is for.
        var recipients: [String] = []
        var requests: [DeliveryRequest] = []
        var completions: [Completion] = []

        var count: Int { recipients.count }

        mutating func append(_ request: DeliveryRequest, to recipient: String, completion: @escaping Completion) {
            recipients.append(recipient)
            requests.append(request)
            completions.append(completion)
        }

        /// The first `limit` of them, taken out.
        mutating func take(upTo limit: Int) -> Deliveries {
            if count <= limit {
                defer { self = Deliveries() }
                return self
            }
            defer {
                recipients.removeFirst(limit)
                requests.removeFirst(limit)
                completions.removeFirst(limit)
            }
            return Deliveries(
                recipients: Array(recipients.prefix(limit)),
                requests: Array(requests.prefix(limit)),
                completions: Array(completions.prefix(limit))
            )
        }
    }

    /// The deliveries of one Redis server (one Redis Cluster primary): waiting, and batches in flight.
    private struct Shard {
        var waiting = Deliveries()
        var inFlight = 0

        /// The next batch, if one may go now (counted as in flight).
        mutating func take(_ limits: Limits) -> Deliveries? {
            guard inFlight < limits.maxInFlight, waiting.count > 0 else { return nil }
            inFlight += 1
            return waiting.take(upTo: limits.maxBatch)
        }
    }

    private struct State {
        var shards: [String: Shard] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let redis: any RedisClient
    private let eventLoop: any EventLoop
    private let keys: ClusterKeys
    /// A recipient's resume buffer bounds (``SignalingLimits/resumeBufferMessages``, `…Bytes`).
    private let maxMessages: Int
    private let maxBytes: Int
    /// The batch's leading arguments: max messages, max bytes, channel prefix.
    private let common: RESPArguments
    /// True on a Redis Cluster: batches per primary, as ``ClusterScripts/deliverShardBatch``.
    private let sharded: Bool
    let limits: Limits

    init(
        redis: any RedisClient,
        eventLoop: any EventLoop,
        keys: ClusterKeys,
        maxMessages: Int,
        maxBytes: Int,
        sharded: Bool = false,
        limits: Limits = Limits()
    ) {
        self.redis = redis
        self.eventLoop = eventLoop
        self.keys = keys
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        var common = RESPArguments(capacity: 64)
        common.append(maxMessages)
        common.append(maxBytes)
        common.append(keys.channelPrefix)
        self.common = common
        self.sharded = sharded
        self.limits = limits
    }

    /// Queues one delivery to `recipient` (see ``ClusterScripts/deliverBatch``). `completion` gets
    /// ``ClusterScripts/deliver``'s reply for it (on the event loop; a plain callback, not a future: this
    /// is once per signal).
    func submit(_ request: DeliveryRequest, to recipient: String, completion: @escaping Completion) {
        // One Redis: one queue (no key to make); a Redis Cluster: one per primary.
        guard let shard = sharded ? redis.shard(of: keys.sessionHash(recipient)) : "" else {
            // No slot map yet: alone, routed (and redirected) by the cluster client.
            return self.single(request, to: recipient, completion: completion)
        }
        let sent = state.withLockedValue { state in
            state.shards[shard, default: Shard()].waiting.append(request, to: recipient, completion: completion)
            return self.sendNext(shard, &state)
        }
        sent?.whenComplete { _ in self.finished(shard) }
    }

    /// One delivery as its own ``ClusterScripts/deliver`` call.
    private func single(_ request: DeliveryRequest, to recipient: String, completion: @escaping Completion) {
        redis.submit(
            ClusterScripts.deliver,
            keys: keys.session(recipient),
            arguments: request.deliverArguments(
                maxMessages: maxMessages,
                maxBytes: maxBytes,
                channelPrefix: keys.channelPrefix
            )
        ).whenComplete(completion)
    }

    /// Under the lock: hands `shard`'s next batch to Redis if one may go; returns the future of its reply,
    /// on which the caller (outside the lock) waits.
    private func sendNext(_ shard: String, _ state: inout State) -> EventLoopFuture<Void>? {
        // Taken in place (`?.`), so the waiting list is not copied.
        guard let batch = state.shards[shard]?.take(limits) else { return nil }
        let layout = DeliveryBatch(
            recipients: batch.recipients,
            deliveries: batch.requests,
            keys: keys,
            common: common
        )
        let script = sharded ? ClusterScripts.deliverShardBatch : ClusterScripts.deliverBatch
        let (keys, arguments) = ([layout.key], [layout.arguments])
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
                for index in 0..<batch.count {
                    self.single(
                        batch.requests[index],
                        to: batch.recipients[index],
                        completion: batch.completions[index]
                    )
                }
                return
            }
            let replies = reply.array ?? []
            for (position, index) in layout.order.enumerated() {
                if position < replies.count {
                    batch.completions[index](.success(replies[position]))
                } else {
                    batch.completions[index](
                        .failure(RedisError(.protocolError, "deliverBatch answered \(replies.count) of \(batch.count)"))
                    )
                }
            }
        }.recover { error in
            for completion in batch.completions { completion(.failure(error)) }
        }
    }

    private func finished(_ shard: String) {
        let next = state.withLockedValue { state -> EventLoopFuture<Void>? in
            state.shards[shard]?.inFlight -= 1
            if let queue = state.shards[shard], queue.inFlight == 0, queue.waiting.count == 0 {
                // A primary gone in a failover leaves no entry behind.
                state.shards[shard] = nil
                return nil
            }
            return self.sendNext(shard, &state)
        }
        next?.whenComplete { _ in self.finished(shard) }
    }
}
