import NIOCore
import SignalRedis

/// A batch's deliveries laid out for ``ClusterScripts/deliverBatch`` (or, on a Redis Cluster,
/// ``ClusterScripts/deliverShardBatch``): gathered by recipient, in the order each recipient first
/// appears, each recipient's session hash once and its count, then its deliveries in the order they
/// were submitted. A peer's answer and its trickled candidates are usually in one batch together; their
/// recipient's key then goes to Redis once instead of once per delivery (every argument is a string Redis
/// allocates and its Lua hashes byte by byte). Recipients are independent of each other, so deciding
/// them in this order decides each exactly as submission order would.
///
/// The arguments are written as RESP as they are laid out (``RESPArguments``), straight from each
/// ``DeliveryRequest``: no array of boxed arguments and no `String` per key on the way.
struct DeliveryBatch {
    /// The script's one key: the first recipient's session hash (it routes the call on a Redis Cluster).
    let key: String
    /// The script's ARGV: `common` (max messages, max bytes, channel prefix), then per recipient its session
    /// hash, its count and each delivery's arguments (``DeliveryRequest/writeBatchArguments(into:)``).
    let arguments: RESPArguments
    /// `order[i]`: the submitted delivery the script's `i`-th reply is for.
    let order: [Int]

    /// `recipients[i]`: the peer delivery `i` is for; `deliveries[i]`: what it delivers.
    init(recipients: [String], deliveries: [DeliveryRequest], keys: ClusterKeys, common: RESPArguments) {
        precondition(!recipients.isEmpty && recipients.count == deliveries.count)
        // Each recipient's first delivery (`first`, in order of appearance), how many it has (`count`), and
        // each delivery's next one to the same recipient (`next`, -1 after its last): no array per group.
        let total = recipients.count
        var first: [Int] = [0]
        var count: [Int] = [1]
        var next = [Int](repeating: -1, count: total)
        if total > 1 {
            var group: [String: Int] = [recipients[0]: 0]
            group.reserveCapacity(total)
            var last: [Int] = [0]
            for index in 1..<total {
                if let known = group[recipients[index]] {
                    next[last[known]] = index
                    last[known] = index
                    count[known] += 1
                } else {
                    group[recipients[index]] = first.count
                    first.append(index)
                    last.append(index)
                    count.append(1)
                }
            }
        }
        var bytes = common.bytes.readableBytes + first.count * (keys.prefix.utf8.count + 64)
        for delivery in deliveries { bytes += delivery.prefix.readableBytes + 128 }
        var arguments = RESPArguments(capacity: bytes)
        arguments.append(contentsOf: common)
        var order: [Int] = []
        order.reserveCapacity(total)
        for (group, start) in first.enumerated() {
            keys.writeSessionHash(recipients[start], into: &arguments)
            arguments.append(count[group])
            var index = start
            while index >= 0 {
                deliveries[index].writeBatchArguments(into: &arguments)
                order.append(index)
                index = next[index]
            }
        }
        self.key = keys.sessionHash(recipients[0])
        self.arguments = arguments
        self.order = order
    }
}
