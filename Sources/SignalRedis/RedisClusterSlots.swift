/// Redis Cluster's key space: 16,384 hash slots, each served by one shard (a primary and its replicas).
///
/// Pure values, no sockets: the slot of a key (CRC16 of its hash tag), the slot map a node reports
/// (`CLUSTER SHARDS`, or `CLUSTER SLOTS` before Redis 7), and the redirects (`MOVED`, `ASK`) a node answers
/// for a slot it does not serve. ``RedisClusterClient`` carries out what they decide.
public enum RedisClusterSlots {
    /// How many hash slots a Redis Cluster has.
    public static let count = 16_384

    /// The slot of `key`: CRC16 (XMODEM) of its hash tag modulo 16,384. The hash tag is what lies between
    /// the first `{` and the first `}` after it, when that is not empty; otherwise the whole key. Keys with
    /// one hash tag share a slot, which is what lets a script or a sharded channel use them together.
    /// (Redis Cluster specification, "Hash tags".)
    public static func slot(of key: String) -> Int {
        slot(of: Array(key.utf8))
    }

    /// The slot of a key given as bytes.
    public static func slot(of key: [UInt8]) -> Int {
        Int(crc16(hashTag(key)) % UInt16(count))
    }

    /// The part of `key` that is hashed: its non-empty `{…}` tag, or all of it.
    static func hashTag(_ key: [UInt8]) -> ArraySlice<UInt8> {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")),
            close > open + 1
        else { return key[...] }
        return key[(open + 1)..<close]
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection — the one Redis uses.
    /// `crc16("123456789") == 0x31C3`.
    public static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }

    /// The key a command is routed by: the first key of `EVAL`/`EVALSHA`/`FCALL` (after the key count),
    /// nothing for commands without a key (`PING`, `CLUSTER …`, `SCRIPT …`, `WAIT`), and the first argument
    /// for every other command (`GET key`, `ZADD key …`, `HKEYS key`, `SPUBLISH channel …`).
    public static func routingKey(of command: [any RESPEncodable]) -> String? {
        guard let name = (command.first as? String)?.uppercased() else { return nil }
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard command.count > 3, let count = Self.integer(command[2]), count > 0 else { return nil }
            return command[3] as? String
        case "PING", "CLUSTER", "SCRIPT", "WAIT", "INFO", "ASKING", "READONLY", "FUNCTION", "CLIENT", "ECHO":
            return nil
        default:
            return command.count > 1 ? command[1] as? String : nil
        }
    }

    private static func integer(_ value: any RESPEncodable) -> Int? {
        if let value = value as? Int { return value }
        if let value = value as? String { return Int(value) }
        return nil
    }
}

/// A node of a Redis Cluster, by the address clients reach it at.
public struct RedisClusterNode: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (the last colon separates the port, so `::1:7000` is IPv6 `::1`); an empty host
    /// (`:7000`, as a redirect says when a node does not know its own address) is `defaultHost`.
    public init?(_ text: Substring, defaultHost: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(host: host.isEmpty ? defaultHost : host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Which shard serves which slot, as one node reported it.
public struct RedisClusterSlotMap: Sendable, Hashable {
    /// A primary and its replicas.
    public struct Shard: Sendable, Hashable {
        public var primary: RedisClusterNode
        /// Replicas in any state.
        public var replicas: [RedisClusterNode]
        /// Replicas the reporting node considers online (`CLUSTER SHARDS` health); every replica when the map
        /// came from `CLUSTER SLOTS`, which lists only reachable ones.
        public var onlineReplicas: Int

        public init(primary: RedisClusterNode, replicas: [RedisClusterNode] = [], onlineReplicas: Int? = nil) {
            self.primary = primary
            self.replicas = replicas
            self.onlineReplicas = onlineReplicas ?? replicas.count
        }
    }

    /// Every shard that serves at least one slot.
    public private(set) var shards: [Shard]
    /// Slot → index into ``shards``; -1 for a slot no shard serves.
    private var owners: [Int16]

    /// A map from (slot range, shard) pairs; later ranges win where they overlap.
    public init(_ assignments: [(ClosedRange<Int>, Shard)]) {
        shards = []
        owners = Array(repeating: -1, count: RedisClusterSlots.count)
        for (range, shard) in assignments {
            let clamped = range.clamped(to: 0...(RedisClusterSlots.count - 1))
            guard !clamped.isEmpty else { continue }
            let index: Int
            if let existing = shards.firstIndex(where: { $0.primary == shard.primary }) {
                index = existing
                shards[index] = shard
            } else {
                index = shards.count
                shards.append(shard)
            }
            for slot in clamped { owners[slot] = Int16(index) }
        }
    }

    /// The shard serving `slot`, if any.
    public func shard(forSlot slot: Int) -> Shard? {
        guard slot >= 0, slot < owners.count, owners[slot] >= 0 else { return nil }
        return shards[Int(owners[slot])]
    }

    /// The primary serving `slot`, if any.
    public func primary(forSlot slot: Int) -> RedisClusterNode? {
        shard(forSlot: slot)?.primary
    }

    /// True when every slot has a shard (what `cluster_state:ok` needs).
    public var coversEverySlot: Bool { !owners.contains(-1) }

    /// Every primary.
    public var primaries: Set<RedisClusterNode> { Set(shards.map(\.primary)) }

    /// The lowest slot of each shard that serves any, in slot order: a keyless command sent to the primary
    /// of each of these slots (``RedisClusterClient`` routes by slot, following failovers) reaches every
    /// primary once.
    public var firstSlots: [Int] {
        var seen = Set<Int16>()
        var slots: [Int] = []
        for (slot, owner) in owners.enumerated() where owner >= 0 && seen.insert(owner).inserted {
            slots.append(slot)
        }
        return slots
    }

    /// After `MOVED slot node`: `slot` is served by `node` now (a new shard with no known replicas when
    /// `node` is not a known primary, until the next refresh says more).
    public mutating func move(slot: Int, to node: RedisClusterNode) {
        guard slot >= 0, slot < owners.count else { return }
        if let index = shards.firstIndex(where: { $0.primary == node }) {
            owners[slot] = Int16(index)
        } else {
            owners[slot] = Int16(shards.count)
            shards.append(Shard(primary: node))
        }
    }

    /// Decodes a `CLUSTER SHARDS` reply (Redis 7+): an array of shards, each a flat key/value array with
    /// `slots` (start, end, start, end, …) and `nodes` (each a flat key/value array with `ip`, `endpoint`,
    /// `port` or `tls-port`, `role` and `health`). Nil for another shape. `tls` picks `tls-port`.
    /// `defaultHost` (the host of the node that answered) stands for an endpoint the node reports as empty
    /// or `?`: a node that has not met another (a one-primary cluster) does not know its own address.
    public init?(clusterShards reply: RESPValue, tls: Bool = false, defaultHost: String) {
        guard let shardReplies = reply.array else { return nil }
        var assignments: [(ClosedRange<Int>, Shard)] = []
        for shardReply in shardReplies {
            guard let fields = Self.fields(shardReply), let slots = fields["slots"]?.array,
                let nodes = fields["nodes"]?.array, slots.count % 2 == 0
            else { return nil }
            var primary: RedisClusterNode?
            var replicas: [RedisClusterNode] = []
            var online = 0
            for nodeReply in nodes {
                guard let node = Self.fields(nodeReply) else { return nil }
                let host =
                    [node["endpoint"]?.string, node["ip"]?.string].compactMap { $0 }
                    .first { !$0.isEmpty && $0 != "?" } ?? defaultHost
                let port = (tls ? node["tls-port"]?.int : nil) ?? node["port"]?.int ?? node["tls-port"]?.int
                guard let port else { continue }
                let address = RedisClusterNode(host: host, port: port)
                if node["role"]?.string == "master" {
                    primary = address
                } else {
                    replicas.append(address)
                    if (node["health"]?.string ?? "online") == "online" { online += 1 }
                }
            }
            guard let primary else { continue }  // a shard whose primary failed and has no successor yet
            let shard = Shard(primary: primary, replicas: replicas, onlineReplicas: online)
            var index = 0
            while index < slots.count {
                guard let start = slots[index].int, let end = slots[index + 1].int, start <= end else { return nil }
                assignments.append((start...end, shard))
                index += 2
            }
        }
        self.init(assignments)
    }

    /// Decodes a `CLUSTER SLOTS` reply (every version): an array of `[start, end, [host, port, id, …],
    /// [replica host, port, id, …]…]`. Nil for another shape. `defaultHost` replaces an empty host.
    public init?(clusterSlots reply: RESPValue, defaultHost: String) {
        guard let ranges = reply.array else { return nil }
        var assignments: [(ClosedRange<Int>, Shard)] = []
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int,
                start <= end
            else { return nil }
            let nodes = parts[2...].compactMap { part -> RedisClusterNode? in
                guard let fields = part.array, fields.count >= 2, let host = fields[0].string,
                    let port = fields[1].int
                else { return nil }
                return RedisClusterNode(host: host.isEmpty || host == "?" ? defaultHost : host, port: port)
            }
            guard let primary = nodes.first else { return nil }
            assignments.append((start...end, Shard(primary: primary, replicas: Array(nodes.dropFirst()))))
        }
        self.init(assignments)
    }

    private static func fields(_ value: RESPValue) -> [String: RESPValue]? {
        if case .map(let map) = value {
            var fields: [String: RESPValue] = [:]
            for (key, value) in map { if let key = key.string { fields[key] = value } }
            return fields
        }
        guard let flat = value.array, flat.count % 2 == 0 else { return nil }
        var fields: [String: RESPValue] = [:]
        var index = 0
        while index < flat.count {
            guard let key = flat[index].string else { return nil }
            fields[key] = flat[index + 1]
            index += 2
        }
        return fields
    }
}

/// A redirect a cluster node answers instead of running a command for a slot it does not serve.
public enum RedisClusterRedirect: Sendable, Hashable {
    /// `MOVED slot host:port`: the slot lives there now; update the map and send it there from now on.
    case moved(slot: Int, to: RedisClusterNode)
    /// `ASK slot host:port`: the slot is being migrated and this key is already there; send `ASKING` and
    /// then the command to that node, this once, without changing the map.
    case ask(slot: Int, to: RedisClusterNode)

    /// Parses an error reply's message; nil for every other error. `defaultHost` is the host of the node
    /// that answered (a redirect may leave its own host out).
    public init?(_ message: String, defaultHost: String) {
        let words = message.split(separator: " ")
        guard words.count == 3, let slot = Int(words[1]), (0..<RedisClusterSlots.count).contains(slot),
            let node = RedisClusterNode(words[2], defaultHost: defaultHost)
        else { return nil }
        switch words[0] {
        case "MOVED": self = .moved(slot: slot, to: node)
        case "ASK": self = .ask(slot: slot, to: node)
        default: return nil
        }
    }
}
