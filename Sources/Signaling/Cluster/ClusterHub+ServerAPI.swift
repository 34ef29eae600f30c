import NIOCore
import SignalRedis

/// The server API on a cluster node: everything is read from and written to Redis, so a call on any node
/// acts on every node's sessions. A server message goes through ``ClusterScripts/deliver`` with the
/// reserved sender (sequenced, buffered and published to the node holding the recipient, like a presence
/// event); a kick runs ``ClusterScripts/kick``, which ends the session and tells its node to close the
/// connection with 4003.
extension ClusterHub: ServerAPIBackend {
    public func publish(_ prefix: ByteBuffer, toPeer peer: String) async throws(APIBackendError) -> APIPublishCount? {
        let result = try await Self.api { () async throws(RedisError) in
            try await self.deliver(DeliveryRequest(prefix: prefix, signal: false), to: peer)
        }
        switch result {
        case .delivered: return APIPublishCount(delivered: 1)
        case .queued, .queueFull: return APIPublishCount(queued: 1)
        case .unavailable, .notInRoom, .notShared, .away: return nil
        }
    }

    public func publish(_ prefix: ByteBuffer, toRoom room: String) async throws(APIBackendError) -> APIPublishCount? {
        let members = try await Self.api { () async throws(RedisError) in
            try await self.redis.send(["HKEYS", self.keys.room(room)]).array?.compactMap(\.string) ?? []
        }
        guard !members.isEmpty else { return nil }
        let results = await withTaskGroup(of: Result<DeliveryResult, RedisError>.self) { group in
            for member in members {
                group.addTask { () async -> Result<DeliveryResult, RedisError> in
                    do throws(RedisError) {
                        return .success(
                            try await self.deliver(DeliveryRequest(prefix: prefix, signal: false), to: member)
                        )
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var all: [Result<DeliveryResult, RedisError>] = []
            for await result in group { all.append(result) }
            return all
        }
        var count = APIPublishCount()
        for result in results {
            switch result {
            case .success(.delivered): count.delivered += 1
            case .success(.queued), .success(.queueFull): count.queued += 1
            case .success: break  // the member's session ended meanwhile
            case .failure: throw APIBackendError.unavailable
            }
        }
        return count
    }

    /// Every room key (`SCAN`; on a Redis Cluster, of every primary), then each room's size (`HLEN`, on
    /// the room key's own slot). At most ``maxListedRooms`` rooms.
    public func listRooms() async throws(APIBackendError) -> [APIRoomSummary] {
        let prefix = keys.room("")  // `prefix:room:{}`
        let head = String(prefix.dropLast())  // `prefix:room:{`
        let pattern = Self.escapeGlob(head) + "*}"
        return try await Self.api { () async throws(RedisError) in
            let found = try await self.redis.scan(matching: pattern, limit: Self.maxListedRooms)
            let rooms = Set(
                found.lazy.filter { $0.hasPrefix(head) }.map { String($0.dropFirst(head.count).dropLast()) }
            )
            return try await self.sizes(of: rooms.sorted()).filter { $0.members > 0 }
        }
    }

    /// Each room's `HLEN`, up to 32 at once (on a Redis Cluster they go to different primaries).
    func sizes(of rooms: [String]) async throws(RedisError) -> [APIRoomSummary] {
        var summaries: [APIRoomSummary] = []
        summaries.reserveCapacity(rooms.count)
        var start = 0
        while start < rooms.count {
            let chunk = rooms[start..<min(rooms.count, start + 32)]
            start += chunk.count
            let sizes = await withTaskGroup(of: (Int, Result<Int, RedisError>).self) { group in
                for (offset, room) in chunk.enumerated() {
                    group.addTask { () async -> (Int, Result<Int, RedisError>) in
                        do throws(RedisError) {
                            return (
                                offset, .success(try await self.redis.send(["HLEN", self.keys.room(room)]).int ?? 0)
                            )
                        } catch {
                            return (offset, .failure(error))
                        }
                    }
                }
                var sizes = [Result<Int, RedisError>](repeating: .success(0), count: chunk.count)
                for await (offset, size) in group { sizes[offset] = size }
                return sizes
            }
            for (room, size) in zip(chunk, sizes) {
                summaries.append(APIRoomSummary(room: room, members: try size.get()))
            }
        }
        return summaries
    }

    /// How many room keys `GET /v1/rooms` reads at most.
    static let maxListedRooms = 100_000

    public func members(ofRoom room: String) async throws(APIBackendError) -> [APIRoomMember]? {
        let reply = try await Self.api { () async throws(RedisError) in
            try await self.redis.send(["HGETALL", self.keys.room(room)])
        }
        let members = RoomMembersReply(reply).members
        return members.isEmpty ? nil : members
    }

    public func session(ofPeer peer: String) async throws(APIBackendError) -> APIPeerSession? {
        let reply = try await Self.api { () async throws(RedisError) in
            try await self.redis.send(["HMGET", self.keys.sessionHash(peer), "node", "away", "rooms"])
        }
        return SessionInfoReply(reply).map {
            APIPeerSession(peer: peer, connected: $0.connected, rooms: $0.rooms, node: $0.node)
        }
    }

    public func kick(_ peer: String) async throws(APIBackendError) -> Bool {
        let reply = try await Self.api { () async throws(RedisError) in
            try await self.redis.run(
                ClusterScripts.kick,
                keys: self.keys.session(peer),
                arguments: [self.keys.channelPrefix]
            )
        }
        guard case .ended(let ended) = EndReply(reply) else { return false }
        _ = try? await redis.send(["ZREM", keys.deadlines, peer])
        await self.cleanUp(peer: peer, ended)
        self.emit(.sessionEnded(peer: peer, reason: .kicked))
        return true
    }

    /// Runs a Redis step of an API call; a Redis failure is `unavailable` (503).
    private static func api<Result>(_ body: () async throws(RedisError) -> Result) async throws(APIBackendError)
        -> Result
    {
        do throws(RedisError) {
            return try await body()
        } catch {
            throw APIBackendError.unavailable
        }
    }

    /// `pattern` with Redis glob characters escaped.
    static func escapeGlob(_ pattern: String) -> String {
        var escaped = ""
        for character in pattern {
            if "*?[]\\".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }
}

/// `HGETALL` of a room: `peer, meta, …` (an empty meta is none).
struct RoomMembersReply: Equatable, Sendable {
    var members: [APIRoomMember] = []

    init(_ reply: RESPValue) {
        let flat = reply.array ?? []
        var index = 0
        while index + 1 < flat.count {
            if let peer = flat[index].string {
                members.append(
                    APIRoomMember(peer: peer, meta: flat[index + 1].buffer.flatMap { $0.readableBytes > 0 ? $0 : nil })
                )
            }
            index += 2
        }
    }
}

/// `HMGET` of a session's `node`, `away` and `rooms`; nil when there is no session.
struct SessionInfoReply: Equatable, Sendable {
    var node: String
    var connected: Bool
    var rooms: [String]

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, parts.count == 3, let node = parts[0].string else { return nil }
        // `ID#incarnation`: the API shows the node's id (`--node-id`).
        self.node = node.lastIndex(of: "#").map { String(node[..<$0]) } ?? node
        self.connected = parts[1].string == "0"
        self.rooms = (parts[2].string ?? "").split(separator: ",").map(String.init)
    }
}
