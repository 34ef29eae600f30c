import SignalRedis

/// A batch's deliveries laid out for ``ClusterScripts/deliverBatch`` (or, on a Redis Cluster,
/// ``ClusterScripts/deliverShardBatch``): gathered by recipient, in the order each recipient first
/// appears, each recipient's session keys once and its count, then its deliveries in the order they were
/// submitted. A peer's answer and its trickled candidates are usually in one batch together; their
/// recipient's keys then go to Redis once instead of once per delivery (every argument is a string Redis
/// allocates and its Lua hashes byte by byte). Recipients are independent of each other, so deciding
/// them in this order decides each exactly as submission order would.
struct DeliveryBatch {
    /// The script's KEYS: each recipient's four session keys (``ClusterScripts/deliverBatch``), or the
    /// first recipient's session hash, which routes the call (``ClusterScripts/deliverShardBatch``).
    let keys: [String]
    /// The script's ARGV: `common` (max messages, max bytes, channel prefix), then per recipient (its four
    /// keys first on a Redis Cluster) its count and each delivery's seven arguments.
    let arguments: [any RESPEncodable]
    /// `order[i]`: the submitted delivery the script's `i`-th reply is for.
    let order: [Int]

    /// `recipients[i]`: delivery `i`'s four session keys; `deliveries[i]`: its seven arguments.
    init(
        recipients: [[String]],
        deliveries: [[any RESPEncodable]],
        common: [any RESPEncodable],
        sharded: Bool
    ) {
        precondition(!recipients.isEmpty && recipients.count == deliveries.count)
        var groups: [[Int]] = []
        if recipients.count == 1 {
            groups = [[0]]
        } else {
            var group: [String: Int] = [:]
            group.reserveCapacity(recipients.count)
            for (index, keys) in recipients.enumerated() {
                if let known = group[keys[0]] {
                    groups[known].append(index)
                } else {
                    group[keys[0]] = groups.count
                    groups.append([index])
                }
            }
        }
        var keys: [String] = []
        var arguments = common
        var order: [Int] = []
        order.reserveCapacity(recipients.count)
        arguments.reserveCapacity(common.count + groups.count * 5 + recipients.count * 7)
        if sharded {
            keys = [recipients[groups[0][0]][0]]
        } else {
            keys.reserveCapacity(groups.count * 4)
        }
        for group in groups {
            let recipient = recipients[group[0]]
            if sharded {
                for key in recipient { arguments.append(key) }
            } else {
                keys += recipient
            }
            arguments.append(group.count)
            for index in group {
                arguments += deliveries[index]
                order.append(index)
            }
        }
        self.keys = keys
        self.arguments = arguments
        self.order = order
    }
}
