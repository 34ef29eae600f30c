import Foundation
import NIOCore
import NIOPosix
import RedisTestSupport
import Testing

@testable import Signaling

/// The node-channel message format, without sockets.
@Suite struct NodeMessageTests {
    @Test func parsesDeliveriesAndCloses() {
        let delivery = NodeMessage(ByteBuffer(string: "D 42 7 {\"type\":\"offer\",\"seq\":7}"))
        #expect(
            delivery
                == .deliver(
                    NodeMessage.Delivery(
                        connection: ConnectionID(42),
                        seq: 7,
                        bytes: ByteBuffer(string: "{\"type\":\"offer\",\"seq\":7}")
                    )
                )
        )
        #expect(NodeMessage(ByteBuffer(string: "K 3 4009")) == .close(ConnectionID(3), .idTaken))
        // A volatile message travels with seq 0.
        #expect(
            NodeMessage(ByteBuffer(string: "D 5 0 {}"))
                == .deliver(NodeMessage.Delivery(connection: ConnectionID(5), seq: 0, bytes: ByteBuffer(string: "{}")))
        )
        for junk in ["", "D", "D 1", "D 1 2", "X 1 2 {}", "K 1 9999", "D x 1 {}", "D 1 99999999999999999999 {}"] {
            #expect(NodeMessage(ByteBuffer(string: junk)) == nil, "\(junk)")
        }
    }

    @Test func parsesBatchesWhoseMessagesHoldSpacesAndNewlines() {
        let batch = NodeMessage(ByteBuffer(string: "N 4 9 8 {\"a\": 1} 5 1 5 {\n  }"))
        #expect(
            batch
                == .deliverMany([
                    NodeMessage.Delivery(connection: ConnectionID(4), seq: 9, bytes: ByteBuffer(string: "{\"a\": 1}")),
                    NodeMessage.Delivery(connection: ConnectionID(5), seq: 1, bytes: ByteBuffer(string: "{\n  }")),
                ])
        )
        for junk in ["N", "N ", "N 1 2", "N 1 2 10 {}", "N 1 2 0 ", "N 1 2 2 {}x", "N1 2 2 {}"] {
            #expect(NodeMessage(ByteBuffer(string: junk)) == nil, "\(junk)")
        }
    }
}

/// The cluster's Lua scripts against a real redis-server: the decisions every node relies on.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterScriptsTests {
    let keys = ClusterKeys(prefix: "t")

    func create(_ redis: RedisConnection, _ peer: String, token: String, node: String = "n#1", conn: String = "1")
        async throws -> String?
    {
        let reply = try await redis.run(
            ClusterScripts.create,
            keys: keys.session(peer),
            arguments: [token, node, conn, 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
        )
        return reply.array?.first?.string
    }

    /// A session's byte count (`bb`, -1 when unreadable) and the bytes its buffer holds.
    func bufferBytes(_ redis: RedisConnection, _ peer: String) async throws -> (counted: Int, stored: Int) {
        let session = keys.session(peer)
        let messages = try await redis.send(["LRANGE", session[1], 0, -1]).array ?? []
        let counted = Int(try await redis.send(["HGET", session[0], "bb"]).string ?? "") ?? -1
        return (counted, messages.reduce(0) { $0 + ($1.string?.utf8.count ?? 0) })
    }

    func deliver(
        _ redis: RedisConnection,
        to peer: String,
        from sender: String = "alice",
        id: String = "",
        room: String = "",
        shared: String = "-",
        signal: Bool = true,
        max: Int = 4
    ) async throws -> [RESPValue] {
        let prefix = ByteBuffer(string: "{\"type\":\"message\",\"data\":\"\(id)\",\"from\":\"\(sender)\",\"seq\":")
        return try await redis.run(
            ClusterScripts.deliver,
            keys: keys.session(peer),
            arguments: [
                prefix, sender, id, "message", room, shared, max, 1 << 20, signal ? "1" : "0", keys.channelPrefix,
            ]
        ).deliveryParts
    }

    /// One delivery's seven batch arguments: a `message` from alice with data `id` + `padding` (mode `v`:
    /// the whole message, without `seq`).
    func batchItem(
        _ id: String,
        room: String = "",
        mode: String = "1",
        padding: String = "",
        shared: String? = nil
    ) -> DeliveryRequest {
        let text = "{\"type\":\"message\",\"data\":\"\(id)\(padding)\",\"from\":\"alice\""
        return DeliveryRequest(
            prefix: ByteBuffer(string: mode == "v" ? text + "}" : text + ",\"seq\":"),
            sender: mode == "0" ? "" : "alice",
            id: id,
            type: .message,
            room: room.isEmpty ? nil : room,
            shared: shared.map { $0.split(separator: ",").map(String.init) },
            signal: mode != "0",
            volatile: mode == "v"
        )
    }

    /// ``ClusterScripts/deliverBatch`` laid out by ``DeliveryBatch`` as a node sends it; its replies in the
    /// order of `recipients` (the peer of each delivery) and `deliveries`.
    func runBatch(
        _ redis: RedisConnection,
        _ recipients: [String],
        _ deliveries: [DeliveryRequest],
        max: Int
    ) async throws -> [RESPValue] {
        var common = RESPArguments()
        common.append(max)
        common.append(1 << 20)
        common.append(keys.channelPrefix)
        let layout = DeliveryBatch(recipients: recipients, deliveries: deliveries, keys: keys, common: common)
        let replies =
            try await redis.run(ClusterScripts.deliverBatch, keys: [layout.key], arguments: [layout.arguments])
            .array ?? []
        try #require(replies.count == recipients.count)
        var inOrder = replies
        for (position, index) in layout.order.enumerated() { inOrder[index] = replies[position] }
        return inOrder
    }

    @Test func deliveryIsSequencedPublishedDeduplicatedAndScoped() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])

        #expect(try await deliver(redis, to: "bob").first?.string == "unavailable")
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await create(redis, "bob", token: "bob.t2") == "taken")

        let first = try await deliver(redis, to: "bob", id: "r1")
        #expect(first.first?.string == "delivered")
        #expect(first[1].string == "n#1")
        var events = subscriber.events.makeAsyncIterator()
        guard case .message(let message) = await events.next() else {
            Issue.record("no message published")
            return
        }
        #expect(message.text == "D 1 1 {\"type\":\"message\",\"data\":\"r1\",\"from\":\"alice\",\"seq\":1}")

        // A resent request id is not delivered again.
        #expect(try await deliver(redis, to: "bob", id: "r1").map(\.string) == ["dup", "delivered"])
        #expect(try await deliver(redis, to: "bob", id: "r2").first?.string == "delivered")
        guard case .message(let second) = await events.next() else { return }
        #expect(second.text.hasPrefix("D 1 2 "))

        // Room scoping and the shared-room rule are checked against the recipient's rooms.
        #expect(try await deliver(redis, to: "bob", room: "lobby").first?.string == "not-in-room")
        #expect(try await deliver(redis, to: "bob", shared: "lobby,x").first?.string == "not-shared")
        _ = try await redis.run(
            ClusterScripts.sessionRooms,
            keys: [keys.session("bob")[0]],
            arguments: ["add", "lobby"]
        )
        #expect(try await deliver(redis, to: "bob", room: "lobby").first?.string == "delivered")
        #expect(try await deliver(redis, to: "bob", shared: "x,lobby").first?.string == "delivered")
        await subscriber.close()
        await redis.close()
    }

    /// A request id is any string: one with `|` in it, even last, is remembered like any other, alone and in
    /// a batch; a signal without one is remembered nowhere, and when it waits for an away peer its
    /// descriptor names its sender as an earlier build's did (whom to tell if it expires).
    @Test func requestIdsWithABarAreRememberedAndSignalsWithoutOneAreNot() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await deliver(redis, to: "bob", id: "a|").first?.string == "delivered")
        #expect(try await deliver(redis, to: "bob", id: "a|").map(\.string) == ["dup", "delivered"])
        #expect(try await deliver(redis, to: "bob", id: "|").first?.string == "delivered")
        #expect(try await deliver(redis, to: "bob", id: "|").map(\.string) == ["dup", "delivered"])
        #expect(try await deliver(redis, to: "bob").first?.string == "delivered")
        #expect(try await deliver(redis, to: "bob").first?.string == "delivered")
        for plan in [["b|", "c"], ["b|", "c", "b|"]] {
            var items = plan.map { batchItem($0) }
            items.append(DeliveryRequest(prefix: ByteBuffer(string: "{\"seq\":"), sender: "alice", signal: true))
            let replies = try await runBatch(redis, Array(repeating: "bob", count: items.count), items, max: 64)
            let statuses = replies.compactMap { DeliverReply($0) }.map { $0.duplicate ? "dup" : "\($0.result)" }
            #expect(
                statuses
                    == (plan.count == 2
                        ? ["delivered", "delivered", "delivered"] : ["dup", "dup", "dup", "delivered"])
            )
        }
        let remembered = try await redis.send(["ZRANGE", keys.session("bob")[3], 0, -1]).array?.compactMap(\.string)
        #expect(Set(remembered ?? []) == ["alice|a|", "alice||", "alice|b|", "alice|c"])
        await subscriber.close()
        // Nobody listens now: queued, with the sender in its descriptor and no id.
        #expect(try await deliver(redis, to: "bob").first?.string == "queued")
        let meta = try await redis.send(["LINDEX", keys.session("bob")[2], -1]).string ?? ""
        #expect(meta.hasSuffix("|1|message|alice|"))
        await redis.close()
    }

    /// ``ClusterScripts/deliverBatch``: each delivery decided as ``ClusterScripts/deliver`` decides it, in
    /// order, and one `N` message per node for the batch.
    @Test func aBatchDecidesEachDeliveryInOrderAndPublishesOncePerNode() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await create(redis, "carol", token: "carol.t1", conn: "2") == "created")
        // dave's node has no subscriber: his signal waits in his buffer.
        #expect(try await create(redis, "dave", token: "dave.t1", node: "n#2", conn: "3") == "created")
        let recipients = ["bob", "carol", "bob", "dave", "bob", "nobody", "bob"]
        let items = ["b1", "c1", "b2", "d1", "b1", "n1"].map { batchItem($0) } + [batchItem("b3", room: "x")]
        let reply = try await runBatch(redis, recipients, items, max: 4)
        let statuses = reply.map { $0.deliveryParts.first?.string ?? "?" }
        #expect(statuses == ["delivered", "delivered", "delivered", "queued", "dup", "unavailable", "not-in-room"])
        var events = subscriber.events.makeAsyncIterator()
        guard case .message(let message) = await events.next() else {
            Issue.record("no message published")
            return
        }
        let b1 = "{\"type\":\"message\",\"data\":\"b1\",\"from\":\"alice\",\"seq\":1}"
        let c1 = "{\"type\":\"message\",\"data\":\"c1\",\"from\":\"alice\",\"seq\":1}"
        let b2 = "{\"type\":\"message\",\"data\":\"b2\",\"from\":\"alice\",\"seq\":2}"
        // Each recipient's messages together, in `seq` order (the batch is decided per recipient).
        #expect(message.text == "N 1 1 \(b1.utf8.count) \(b1) 1 2 \(b2.utf8.count) \(b2) 2 1 \(c1.utf8.count) \(c1)")
        // The same state as single deliveries: bob's buffer holds both, in order; dave's signal waits.
        #expect(try await redis.send(["LRANGE", keys.session("bob")[1], 0, -1]).array?.map(\.string) == [b1, b2])
        #expect(try await redis.send(["HGET", keys.session("dave")[0], "qn"]).string == "1")
        // Its request id is remembered as queued (claimed as delivered, then its node did not take it).
        #expect(try await redis.send(["ZSCORE", keys.session("dave")[3], "alice|d1"]).string == "11")
        #expect(try await redis.send(["PTTL", keys.session("bob")[1]]).int ?? 0 > 0)
        await subscriber.close()
        await redis.close()
    }

    /// A batch of one delivery (a signal alone, at low load) is published as ``ClusterScripts/deliver``
    /// publishes it, `D conn seq message`, and decided the same: queued when nobody listens on the node.
    @Test func aBatchOfOneIsPublishedAsOneDeliveryIs() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await create(redis, "dave", token: "dave.t1", node: "n#2", conn: "3") == "created")
        var events = subscriber.events.makeAsyncIterator()
        let first = try await runBatch(redis, ["bob"], [batchItem("b1")], max: 4)
        #expect(first.first?.deliveryParts.map(\.string) == ["delivered", "n#1"])
        guard case .message(let published) = await events.next() else {
            Issue.record("nothing published")
            return
        }
        #expect(published.text == "D 1 1 {\"type\":\"message\",\"data\":\"b1\",\"from\":\"alice\",\"seq\":1}")
        let volatile = try await runBatch(redis, ["bob"], [batchItem("v1", mode: "v")], max: 4)
        #expect(volatile.first?.deliveryParts.first?.string == "delivered")
        guard case .message(let fleeting) = await events.next() else { return }
        #expect(fleeting.text == "D 1 0 {\"type\":\"message\",\"data\":\"v1\",\"from\":\"alice\"}")
        // Nobody listens on n#2: queued in dave's buffer, as one deliver would.
        let queued = try await runBatch(redis, ["dave"], [batchItem("d1")], max: 4)
        #expect(queued.first?.deliveryParts.map(\.string) == ["queued", "n#2"])
        #expect(try await redis.send(["HGET", keys.session("dave")[0], "qn"]).string == "1")
        #expect(
            try await runBatch(redis, ["bob"], [batchItem("b1")], max: 4).first?.deliveryParts.first?
                .string
                == "dup"
        )
        await subscriber.close()
        await redis.close()
    }

    /// A node's messages of one batch beyond ~6 KB go in several `N` messages (Lua then builds each in one
    /// buffer): together they hold every message once, each recipient's in `seq` order.
    @Test func aLargeBatchReachesANodeInSeveralMessagesInOrder() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await create(redis, "carol", token: "carol.t1", conn: "2") == "created")
        let padding = String(repeating: "x", count: 1000)
        let plan = (1...12).flatMap { index in [("bob", "b\(index)"), ("carol", "c\(index)")] }
        let replies = try await runBatch(
            redis,
            plan.map(\.0),
            plan.map { batchItem($0.1, padding: padding) },
            max: 64
        )
        #expect(replies.allSatisfy { $0.deliveryParts.first?.string == "delivered" })
        var events = subscriber.events.makeAsyncIterator()
        var received: [NodeMessage.Delivery] = []
        var messages = 0
        while received.count < plan.count, case .message(let message) = await events.next() {
            messages += 1
            guard case .deliverMany(let deliveries) = NodeMessage(ByteBuffer(string: message.text)) else {
                Issue.record("not an N message: \(message.text.prefix(40))")
                return
            }
            received += deliveries
        }
        #expect(messages >= 4)
        for (connection, peer) in [(ConnectionID(1), "b"), (ConnectionID(2), "c")] {
            let mine = received.filter { $0.connection == connection }
            #expect(mine.map(\.seq) == Array(1...12))
            #expect(
                mine.map { String(buffer: $0.bytes).contains("\"data\":\"\(peer)\($0.seq)x") }
                    == Array(repeating: true, count: 12)
            )
        }
        await subscriber.close()
        await redis.close()
    }

    /// Bounds kept in chunks: a connected session's buffer goes back to `maxn` messages once it holds an
    /// eighth more; the request ids back to the newest `maxn` every 32nd message, and their set gets the
    /// session's expiry. A resent id still remembered is answered, not delivered again.
    /// ``ClusterScripts/deliverBatch`` decides a recipient's deliveries together (one read, one push per
    /// list, one write): its replies and the state it leaves are those of one ``ClusterScripts/deliver``
    /// per delivery, in order — checks, duplicates (also within the batch), volatile and presence
    /// messages, and the bounds (4 messages here, pushed past them).
    @Test func aBatchLeavesTheSameRepliesAndStateAsOneDeliveryAtATime() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        for world in ["a", "s"] {
            #expect(try await create(redis, "\(world)bob", token: "\(world)bob.t1") == "created")
            #expect(try await create(redis, "\(world)carol", token: "\(world)carol.t1", conn: "2") == "created")
            _ = try await redis.run(
                ClusterScripts.sessionRooms,
                keys: [keys.session("\(world)bob")[0]],
                arguments: ["add", "lobby"]
            )
        }
        // (recipient, request id, room, mode)
        let plan: [(String, String, String, String)] = [
            ("bob", "b1", "", "1"), ("carol", "c1", "", "1"), ("bob", "b2", "", "1"), ("bob", "b1", "", "1"),
            ("bob", "v1", "", "v"), ("bob", "", "", "0"), ("bob", "b3", "lobby", "1"), ("bob", "b4", "x", "1"),
            ("carol", "c2", "lobby", "1"), ("bob", "b5", "", "1"), ("bob", "v1", "", "v"), ("bob", "b6", "", "1"),
            ("carol", "c1", "", "1"), ("bob", "b7", "", "1"), ("bob", "b8", "", "1"), ("carol", "c3", "", "1"),
        ]
        // The shared-room rule for two of them: bob is in lobby, carol in no room.
        let sharedRooms = ["b8": "x,lobby", "c3": "x"]
        func request(_ id: String, _ room: String, _ mode: String) -> DeliveryRequest {
            batchItem(id, room: room, mode: mode, shared: sharedRooms[id])
        }
        let batch = try await runBatch(
            redis,
            plan.map { "a" + $0.0 },
            plan.map { request($0.1, $0.2, $0.3) },
            max: 4
        )
        var single: [RESPValue] = []
        for (peer, id, room, mode) in plan {
            single.append(
                try await redis.run(
                    ClusterScripts.deliver,
                    keys: keys.session("s" + peer),
                    arguments: request(id, room, mode).deliverArguments(
                        maxMessages: 4,
                        maxBytes: 1 << 20,
                        channelPrefix: keys.channelPrefix
                    )
                )
            )
        }
        let batchReplies = batch.map { $0.deliveryParts.compactMap(\.string) }
        #expect(batchReplies == single.map { $0.deliveryParts.compactMap(\.string) })
        #expect(batchReplies.map { $0.first ?? "" }.contains("not-in-room"))
        #expect(batchReplies.map { $0.first ?? "" }.contains("not-shared"))
        #expect(batchReplies.filter { $0.first == "dup" }.count == 3)
        for peer in ["bob", "carol"] {
            func state(_ world: String) async throws -> [String] {
                let k = keys.session(world + peer)
                var out: [String] = []
                for list in [k[1], k[2]] {
                    out += (try await redis.send(["LRANGE", list, 0, -1]).array ?? []).compactMap(\.string)
                }
                out += (try await redis.send(["HMGET", k[0], "seq", "bb", "qn", "qb", "dropped"]).array ?? [])
                    .map { $0.string ?? "-" }
                // The newest `maxn` request ids (older ones are forgotten in chunks, at different points).
                out += (try await redis.send(["ZRANGE", k[3], -4, -1, "WITHSCORES"]).array ?? []).compactMap(\.string)
                return out
            }
            let batched = try await state("a")
            let sequential = try await state("s")
            #expect(batched == sequential)
            #expect(batched.count > 8)
        }
        await subscriber.close()
        await redis.close()
    }

    @Test func buffersAndRequestIdsAreTrimmedInChunks() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        let session = keys.session("bob")
        var lengths: [Int] = []
        for index in 1...64 {
            #expect(try await deliver(redis, to: "bob", id: "r\(index)", max: 16).first?.string == "delivered")
            lengths.append(try await redis.send(["LLEN", session[1]]).int ?? -1)
        }
        // 16 messages, up to 18 (16 + 16 / 8), and back to 16 with the 19th.
        #expect(lengths.max() == 18)
        #expect(lengths[17] == 18 && lengths[18] == 16)
        #expect(lengths[63] == 16)
        #expect(try await redis.send(["LLEN", session[2]]).int == 16)
        #expect(
            try await redis.send(["HMGET", session[0], "seq", "dropped", "qn"]).array?.map(\.string) == [
                "64", "48", "0",
            ]
        )
        // Trimmed at seq 32 and 64: the newest 16 ids are remembered, the set expires with the session.
        #expect(try await redis.send(["ZCARD", session[3]]).int == 16)
        #expect(try await redis.send(["PTTL", session[3]]).int ?? 0 > 0)
        #expect(try await deliver(redis, to: "bob", id: "r49", max: 16).map(\.string) == ["dup", "delivered"])
        #expect(try await deliver(redis, to: "bob", id: "r48", max: 16).first?.string == "delivered")
        await subscriber.close()
        await redis.close()
    }

    /// A delivered message's descriptor carries its length (`seq|2|length||`), so trimming reads no message
    /// back; entries of an earlier build (`seq|0|||`) and queued ones are counted by their message, and a
    /// buffer mixing both keeps its byte count exact through the bound and through a confirmation.
    @Test func trimmingCountsBytesFromDescriptorsAndFromMessagesOfEarlierBuilds() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        let session = keys.session("bob")
        // Six entries as an earlier build wrote them, one of them the length of no descriptor of ours.
        var bytes = 0
        for seq in 1...6 {
            let message =
                "{\"type\":\"message\",\"data\":\"old\(String(repeating: "x", count: seq * 7))\",\"seq\":\(seq)}"
            bytes += message.utf8.count
            _ = try await redis.send(["RPUSH", session[1], message])
            _ = try await redis.send(["RPUSH", session[2], "\(seq)|0|||"])
        }
        _ = try await redis.send(["HSET", session[0], "seq", 6, "bb", bytes])
        func consistent() async throws -> Bool {
            let (counted, stored) = try await bufferBytes(redis, "bob")
            return counted == stored
        }
        // New deliveries write their length; the bound (8, trimmed back from 9) then takes out old and new.
        for index in 1...12 {
            #expect(try await deliver(redis, to: "bob", id: "n\(index)", max: 8).first?.string == "delivered")
            #expect(try await consistent())
        }
        let metas = try await redis.send(["LRANGE", session[2], 0, -1]).array?.compactMap(\.string) ?? []
        #expect(metas.count == 8 && metas.allSatisfy { $0.contains("|2|") })
        let first = try #require(metas.first?.split(separator: "|", omittingEmptySubsequences: false))
        let message = try await redis.send(["LINDEX", session[1], 0]).string ?? ""
        #expect(first.count == 5 && Int(first[2]) == message.utf8.count)
        // Old entries again, then a confirmation through part of them: the touch counts both kinds.
        let old = "{\"old\":1,\"seq\":10}"
        _ = try await redis.send(["LPUSH", session[1], old])
        _ = try await redis.send(["LPUSH", session[2], "10|0|||"])
        _ = try await redis.send(["HINCRBY", session[0], "bb", old.utf8.count])
        #expect(try await consistent())
        let touched = try await redis.run(
            ClusterScripts.touchBatch,
            keys: [session[0]],
            arguments: ["n#1", 123_456, 600_000, "0", session[0], "1", 13]
        )
        #expect(touched.array?.first.flatMap { TouchReply($0) } == .refreshed)
        #expect(try await redis.send(["LLEN", session[1]]).int == 5)
        #expect(try await consistent())
        _ = try await redis.run(
            ClusterScripts.touchBatch,
            keys: [session[0]],
            arguments: ["n#1", 123_456, 600_000, "0", session[0], "1", 15]
        )
        #expect(try await redis.send(["LLEN", session[1]]).int == 3)
        #expect(try await consistent())
        await subscriber.close()
        await redis.close()
    }

    /// ``ClusterScripts/touchBatch``: each session answered as ``ClusterScripts/touch`` answers it, the
    /// deadline written, and the keys' expiry renewed only once half of it is gone.
    @Test func aBatchTouchRefreshesOwnSessionsAndRenewsExpiryOnlyWhenHalfIsGone() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        #expect(try await create(redis, "bob", token: "bob.t1", conn: "1") == "created")
        #expect(try await create(redis, "carol", token: "carol.t1", conn: "2") == "created")
        #expect(try await create(redis, "dave", token: "dave.t1", conn: "3") == "created")
        let ttl = 600_000
        _ = try await redis.send(["PEXPIRE", keys.session("bob")[0], 1_000])
        _ = try await redis.send(["PEXPIRE", keys.session("carol")[0], 400_000])
        var arguments: [any RESPEncodable] = ["n#1", 123_456, ttl, "0"]
        for (peer, conn) in [("bob", "1"), ("carol", "2"), ("dave", "9"), ("nobody", "4")] {
            arguments += [keys.session(peer)[0], conn, 0]
        }
        let reply = try await redis.run(
            ClusterScripts.touchBatch,
            keys: [keys.session("bob")[0]],
            arguments: arguments
        )
        #expect(reply.array?.map { TouchReply($0) } == [.refreshed, .refreshed, .movedElsewhere, .gone])
        #expect(try await redis.send(["HGET", keys.session("bob")[0], "dl"]).string == "123456")
        #expect(try await redis.send(["HGET", keys.session("dave")[0], "dl"]).string != "123456")
        // bob's keys had less than half their lifetime left: renewed; carol's had more: left alone.
        #expect(try await redis.send(["PTTL", keys.session("bob")[0]]).int ?? 0 > 500_000)
        #expect(try await redis.send(["PTTL", keys.session("carol")[0]]).int ?? .max <= 400_000)
        await redis.close()
    }

    /// `received` costs Redis nothing of its own: the refresh's touch (or the detach) trims the buffer
    /// through what the client confirmed, stopping at a queued entry, keeping the buffer's byte count,
    /// only for the connection that owns the session.
    @Test func aRefreshTrimsTheBufferThroughWhatTheClientConfirmed() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        for index in 1...4 {
            #expect(try await deliver(redis, to: "bob", id: "d\(index)").first?.string == "delivered")
        }
        await subscriber.close()
        // Nobody listens now: the fifth waits in the buffer as queued.
        #expect(try await deliver(redis, to: "bob", id: "q5").first?.string == "queued")
        func buffer() async throws -> (seqs: [String], bytes: Int, stored: Int) {
            let metas = try await redis.send(["LRANGE", keys.session("bob")[2], 0, -1]).array ?? []
            let seqs = metas.compactMap { $0.string?.split(separator: "|").first.map(String.init) }
            let (bytes, stored) = try await bufferBytes(redis, "bob")
            return (seqs, bytes, stored)
        }
        func touchBatch(conn: String, through: Int) async throws -> TouchReply? {
            let reply = try await redis.run(
                ClusterScripts.touchBatch,
                keys: [keys.session("bob")[0]],
                arguments: ["n#1", 123_456, 600_000, "0", keys.session("bob")[0], conn, through]
            )
            return reply.array?.first.flatMap { TouchReply($0) }
        }
        #expect(try await buffer().seqs == ["1", "2", "3", "4", "5"])
        // Another connection's refresh trims nothing; nothing new (0) trims nothing.
        #expect(try await touchBatch(conn: "9", through: 3) == .movedElsewhere)
        #expect(try await touchBatch(conn: "1", through: 0) == .refreshed)
        #expect(try await buffer().seqs.count == 5)
        // Through 2: two entries go, and the byte count follows what is left.
        #expect(try await touchBatch(conn: "1", through: 2) == .refreshed)
        var left = try await buffer()
        #expect(left.seqs == ["3", "4", "5"])
        #expect(left.bytes == left.stored)
        // A touch alone (a Redis Cluster slot that moved) trims the same way.
        let touched = try await redis.run(
            ClusterScripts.touch,
            keys: keys.session("bob"),
            arguments: ["n#1", "1", 123_456, 600_000, 3]
        )
        #expect(TouchReply(touched) == .refreshed)
        #expect(try await buffer().seqs == ["4", "5"])
        // A drop before the next refresh: the detach trims. Beyond everything, the delivered ones go and
        // the queued fifth stays.
        let detached = try await redis.run(
            ClusterScripts.detach,
            keys: keys.session("bob"),
            arguments: ["n#1", "1", 123_456, 600_000, 99]
        )
        #expect(detached.int == 1)
        left = try await buffer()
        #expect(left.seqs == ["5"])
        #expect(left.bytes == left.stored)
        await redis.close()
    }

    @Test func awayPeerQueuesBoundedAndResumesAnywhereWithReplay() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await deliver(redis, to: "bob", id: "live").first?.string == "queued")  // nobody subscribed
        #expect(
            try await redis.run(ClusterScripts.detach, keys: keys.session("bob"), arguments: ["n#1", "1", 1, 600_000])
                .int == 1
        )
        for index in 0..<3 {
            #expect(try await deliver(redis, to: "bob", id: "q\(index)").first?.string == "queued")
        }
        // Four queued (the first one too: no node took it) is the bound: the next signal is refused.
        #expect(try await deliver(redis, to: "bob", id: "over").first?.string == "queue-full")
        // A resent queued signal is answered with its status; a refused one was not remembered.
        #expect(try await deliver(redis, to: "bob", id: "q1").map(\.string) == ["dup", "queued"])
        #expect(try await deliver(redis, to: "bob", id: "over").first?.string == "queue-full")
        #expect(try await redis.send(["ZSCORE", keys.session("bob")[3], "alice|over"]) == .null)

        // A presence event pushes the oldest out instead; its sender is reported for an `expired`.
        let presence = try await deliver(redis, to: "bob", from: "", signal: false)
        #expect(
            DeliverReply(.array(presence))
                == DeliverReply(
                    result: .queued,
                    node: "n#1",
                    expired: [ExpiredOrigin(sender: "alice", type: .message, id: "live")]
                )
        )

        // Resume on another node: the wrong token is refused, the right one replays after `last`.
        let wrong = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session("bob"),
            arguments: ["bob.nope", "bob.t2", "n#2", "9", 0, 1, 600_000, keys.channelPrefix]
        )
        #expect(ResumeReply(wrong) == .unknown)
        let resumed = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session("bob"),
            arguments: ["bob.t1", "bob.t2", "n#2", "9", 0, 1, 600_000, keys.channelPrefix]
        )
        guard case .resumed(let session) = ResumeReply(resumed) else {
            Issue.record("not resumed: \(resumed)")
            return
        }
        #expect(session.gap)  // seq 1 was pushed out
        #expect(session.seq == 5)
        #expect(session.replay.map(\.seq) == [2, 3, 4, 5])
        #expect(session.rooms.isEmpty && session.grant == .all)
        // Used tokens are spent; the queue no longer counts what was replayed.
        let again = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session("bob"),
            arguments: ["bob.t1", "bob.t3", "n#3", "9", 0, 1, 600_000, keys.channelPrefix]
        )
        #expect(ResumeReply(again) == .unknown)
        #expect(try await redis.send(["HGET", keys.session("bob")[0], "qn"]).string == "0")
        // The old connection no longer owns it; the new one does.
        let oldOwner = try await redis.run(
            ClusterScripts.touch,
            keys: keys.session("bob"),
            arguments: ["n#1", "1", 1, 600_000]
        )
        #expect(TouchReply(oldOwner) == .movedElsewhere)
        let newOwner = try await redis.run(
            ClusterScripts.touch,
            keys: keys.session("bob"),
            arguments: ["n#2", "9", 1, 600_000]
        )
        #expect(TouchReply(newOwner) == .refreshed)
        await redis.close()
    }

    @Test func expiryEndsOnlyDueSessionsAndNamesWhomToTell() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        _ = try await redis.run(ClusterScripts.sessionRooms, keys: [keys.session("bob")[0]], arguments: ["add", "a"])
        _ = try await redis.run(ClusterScripts.sessionRooms, keys: [keys.session("bob")[0]], arguments: ["add", "b"])
        #expect(
            try await redis.run(
                ClusterScripts.detach,
                keys: keys.session("bob"),
                arguments: ["n#1", "1", 1_000, 600_000]
            ).int == 1
        )
        #expect(try await deliver(redis, to: "bob", from: "carol", id: "x").first?.string == "queued")

        let early = try await redis.run(
            ClusterScripts.end,
            keys: keys.session("bob"),
            arguments: ["expire", "", "", 999, keys.channelPrefix]
        )
        #expect(EndReply(early) == .alive)
        // A close by a connection that does not own the session changes nothing.
        let stranger = try await redis.run(
            ClusterScripts.end,
            keys: keys.session("bob"),
            arguments: ["close", "n#9", "1", 0, keys.channelPrefix]
        )
        #expect(EndReply(stranger) == .gone)
        let ended = try await redis.run(
            ClusterScripts.end,
            keys: keys.session("bob"),
            arguments: ["expire", "", "", 1_000, keys.channelPrefix]
        )
        #expect(
            EndReply(ended)
                == .ended(
                    EndedSession(rooms: ["a", "b"], origins: [ExpiredOrigin(sender: "carol", type: .message, id: "x")])
                )
        )
        #expect(try await redis.send(["EXISTS"] + keys.session("bob")).int == 0)
        await redis.close()
    }

    /// The sweeper's `expire` with the live nodes: a connected session of a node seen alive is `protected`
    /// for one more live period after its deadline; one of a node not seen, or older than that, ends.
    @Test func aConnectedSessionOfALiveNodeIsProtectedForOneLivePeriod() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        for peer in ["bob", "carol", "dave"] {
            #expect(try await create(redis, peer, token: peer + ".t1") == "created")
            let touched = try await redis.run(
                ClusterScripts.touch,
                keys: keys.session(peer),
                arguments: ["n#1", "1", 1_000, 600_000]
            )
            #expect(TouchReply(touched) == .refreshed)
        }
        func expire(_ peer: String, live: String, oldest: Int) async throws -> EndReply? {
            EndReply(
                try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(peer),
                    arguments: ["expire", "", "", 2_000, keys.channelPrefix, live, oldest]
                )
            )
        }
        #expect(try await expire("bob", live: " n#2 n#1 ", oldest: 500) == .protected)
        #expect(try await redis.send(["EXISTS", keys.session("bob")[0]]).int == 1)
        if case .ended = try await expire("carol", live: " n#2 ", oldest: 500) {
        } else {
            Issue.record("a session of a node not seen alive must end")
        }
        if case .ended = try await expire("dave", live: " n#1 ", oldest: 1_500) {
        } else {
            Issue.record("a session past its deadline for more than a live period must end")
        }
        await redis.close()
    }

    /// A volatile signal (mode `v`): checked like a signal, published with `seq` 0 to a connected session
    /// only, and kept nowhere (no `seq` taken, nothing in the buffer); an away session refuses it.
    @Test func volatileSignalsReachOnlyAConnectedSessionAndAreKeptNowhere() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let subscriber = try server.subscriber()
        try await subscriber.subscribe([keys.channel(of: "n#1")])
        #expect(try await create(redis, "bob", token: "bob.t1") == "created")
        #expect(try await create(redis, "dave", token: "dave.t1", node: "n#2") == "created")
        func volatile(to peer: String, id: String = "", room: String = "") async throws -> [RESPValue] {
            let message = ByteBuffer(string: #"{"type":"message","data":"\#(id)","volatile":true,"from":"alice"}"#)
            return try await redis.run(
                ClusterScripts.deliver,
                keys: keys.session(peer),
                arguments: [message, "alice", id, "message", room, "-", 4, 1 << 20, "v", keys.channelPrefix]
            ).deliveryParts
        }
        let delivered = try await volatile(to: "bob", id: "v1")
        #expect(delivered.first?.string == "delivered" && delivered[1].string == "n#1")
        var events = subscriber.events.makeAsyncIterator()
        guard case .message(let message) = await events.next() else {
            Issue.record("no message published")
            return
        }
        #expect(message.text == #"D 1 0 {"type":"message","data":"v1","volatile":true,"from":"alice"}"#)
        #expect(try await redis.send(["HGET", keys.session("bob")[0], "seq"]).string == "0")
        #expect(try await redis.send(["LLEN", keys.session("bob")[1]]).int == 0)
        // Remembered like any request id; scoped like any signal.
        #expect(try await volatile(to: "bob", id: "v1").map(\.string) == ["dup", "delivered"])
        #expect(try await volatile(to: "bob", room: "lobby").first?.string == "not-in-room")
        #expect(try await volatile(to: "nobody").first?.string == "unavailable")
        // No node takes it (dave's node is not subscribed): away, as when the session is detached.
        #expect(try await volatile(to: "dave").first?.string == "away")
        _ = try await redis.run(
            ClusterScripts.detach,
            keys: keys.session("bob"),
            arguments: ["n#1", "1", 9_999_999_999_999, 600_000]
        )
        #expect(try await volatile(to: "bob", id: "v2").first?.string == "away")
        // Not delivered, so not remembered: a resend may still be delivered.
        #expect(try await redis.send(["ZSCORE", keys.session("bob")[3], "alice|v2"]) == .null)
        #expect(try await redis.send(["LLEN", keys.session("bob")[1]]).int == 0)
        // A normal signal is queued for the away session meanwhile, and takes seq 1.
        #expect(try await deliver(redis, to: "bob", id: "n1").first?.string == "queued")
        #expect(try await redis.send(["HGET", keys.session("bob")[0], "seq"]).string == "1")
        await subscriber.close()
        await redis.close()
    }

    /// `update` (``ClusterScripts/updateMeta``) and re-joins: a member's meta is replaced and the members
    /// come back for `peer-updated`; a re-join with no meta after `{}` (or the reverse) changes nothing.
    @Test func updatesReplaceMetaAndRejoinsCompareIt() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let room = keys.room("lobby")
        let absent = try await redis.run(ClusterScripts.updateMeta, keys: [room], arguments: ["alice", "{\"x\":1}"])
        #expect(UpdateReply(absent) == .absent)
        _ = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["alice", "", 4])
        let braces = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["alice", "{}", 4])
        #expect(
            JoinReply(braces)
                == .joined(
                    isNew: false,
                    changed: false,
                    members: [RoomMember(peer: "alice", meta: ByteBuffer(string: "{}"))]
                )
        )
        _ = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["bob", "", 4])
        let updated = try await redis.run(ClusterScripts.updateMeta, keys: [room], arguments: ["alice", "{\"x\":1}"])
        guard case .updated(let members) = UpdateReply(updated) else {
            Issue.record("not updated: \(updated)")
            return
        }
        #expect(Set(members) == ["alice", "bob"])
        #expect(try await redis.send(["HGET", room, "alice"]).string == "{\"x\":1}")
        await redis.close()
    }

    @Test func roomsAreBoundedAndReportTheirMembers() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let room = keys.room("lobby")
        let first = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["alice", "{\"n\":1}", 2])
        let alice1 = RoomMember(peer: "alice", meta: ByteBuffer(string: "{\"n\":1}"))
        #expect(JoinReply(first) == .joined(isNew: true, changed: false, members: [alice1]))
        // The same meta again (a resent join): nothing changed.
        let same = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["alice", "{\"n\":1}", 2])
        #expect(JoinReply(same) == .joined(isNew: false, changed: false, members: [alice1]))
        // Another meta: a change the others hear of (`peer-updated`).
        let again = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["alice", "{\"n\":2}", 2])
        #expect(
            JoinReply(again)
                == .joined(
                    isNew: false,
                    changed: true,
                    members: [RoomMember(peer: "alice", meta: ByteBuffer(string: "{\"n\":2}"))]
                )
        )
        _ = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["bob", "", 2])
        let full = try await redis.run(ClusterScripts.joinRoom, keys: [room], arguments: ["carol", "", 2])
        #expect(JoinReply(full) == .full)
        let left = try await redis.run(ClusterScripts.leaveRoom, keys: [room], arguments: ["alice"])
        #expect(LeaveReply(left) == LeaveReply(removed: true, remaining: ["bob"]))
        await redis.close()
    }
}

extension ClusterScriptsTests {
    /// The sessions waiting for a resume are counted in a sorted set per bound (``ClusterScripts/boundDetached``):
    /// beyond the bound the oldest are taken out, and ``ClusterScripts/end`` in `evict` mode ends one only
    /// while it still waits from that detach (not once resumed, nor detached again since).
    @Test func waitingSessionsBeyondTheBoundAreTheOldestAndEndOnlyIfStillWaiting() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let set = keys.detached
        for (index, peer) in ["p1", "p2", "p3"].enumerated() {
            #expect(try await create(redis, peer, token: "\(peer).t") == "created")
            let deadline = 10_000 + index
            let detached = try await redis.run(
                ClusterScripts.detach,
                keys: keys.session(peer),
                arguments: ["n#1", "1", deadline, 600_000]
            )
            #expect(detached.int == 1)
            let over = try await redis.run(
                ClusterScripts.boundDetached,
                keys: [set],
                arguments: [peer, deadline, 5_000, 2, 600_000]
            )
            // The third is one too many: the oldest (p1, with its deadline) is taken out.
            #expect(over.array?.compactMap(\.string) == (index < 2 ? [] : ["p1", "10000"]))
        }
        #expect(try await redis.send(["ZRANGE", set, 0, -1]).array?.compactMap(\.string) == ["p2", "p3"])
        // Deadlines that passed leave the set (those sessions expire anyway).
        let later = try await redis.run(
            ClusterScripts.boundDetached,
            keys: [set],
            arguments: ["p3", 10_002, 10_001, 2, 600_000]
        )
        #expect(later.array?.isEmpty == true)
        #expect(try await redis.send(["ZRANGE", set, 0, -1]).array?.compactMap(\.string) == ["p3"])
        #expect(try await redis.send(["PTTL", set]).int ?? 0 > 0)

        func evict(_ peer: String, _ deadline: Int) async throws -> EndReply? {
            EndReply(
                try await redis.run(
                    ClusterScripts.end,
                    keys: keys.session(peer),
                    arguments: ["evict", "", "", deadline, keys.channelPrefix]
                )
            )
        }
        // Detached again since (another deadline): not this detach's session any more.
        #expect(try await evict("p1", 9_999) == .alive)
        // Resumed (connected again): kept.
        let resumed = try await redis.run(
            ClusterScripts.resume,
            keys: keys.session("p2"),
            arguments: ["p2.t", "p2.t2", "n#1", "2", "0", 9_999_999_999_999, 600_000, keys.channelPrefix]
        )
        guard case .resumed = ResumeReply(resumed) else {
            Issue.record("p2 did not resume: \(resumed)")
            return
        }
        #expect(try await evict("p2", 10_001) == .alive)
        // Still waiting from that detach: ended as if its grace period were over.
        guard case .ended = try await evict("p1", 10_000) else {
            Issue.record("p1 was not ended")
            return
        }
        #expect(try await redis.send(["EXISTS", keys.session("p1")[0]]).int == 0)
        #expect(try await evict("p1", 10_000) == .gone)
        await redis.close()
    }
}

/// ``DeliveryBatch``'s layout and the arguments it writes, without Redis.
@Suite struct DeliveryBatchTests {
    /// The arguments `argv` holds, as text (each written as a RESP bulk string).
    func texts(_ argv: RESPArguments) throws -> [String] {
        var bytes = argv.bytes
        var decoder = RESPDecoder()
        var out: [String] = []
        while bytes.readableBytes > 0 {
            let value = try #require(try decoder.decode(&bytes))
            out.append(try #require(value.string))
        }
        #expect(out.count == argv.count)
        return out
    }

    /// Gathered by recipient in the order each first appears, each recipient's session hash once with its
    /// count, its deliveries in submitted order (a plain signal as four arguments); `order` maps the
    /// script's replies back to submitted deliveries.
    @Test func deliveriesAreGatheredByRecipientWithTheirKeysOnce() throws {
        let keys = ClusterKeys(prefix: "t")
        func item(_ name: String) -> DeliveryRequest {
            DeliveryRequest(prefix: ByteBuffer(string: name), sender: "alice", type: .message, signal: true)
        }
        func argv(_ name: String) -> [String] { ["s", name, "message", "alice"] }
        var common = RESPArguments()
        common.append(4)
        common.append(64)
        common.append("ch:")
        let batch = DeliveryBatch(
            recipients: ["bob", "carol", "bob", "bob", "carol"],
            deliveries: ["b1", "c1", "b2", "b3", "c2"].map(item),
            keys: keys,
            common: common
        )
        #expect(batch.key == "t:{bob}:s")
        #expect(batch.order == [0, 2, 3, 1, 4])
        let expected =
            ["4", "64", "ch:", "t:{bob}:s", "3"] + ["b1", "b2", "b3"].flatMap(argv) + ["t:{carol}:s", "2"]
            + ["c1", "c2"].flatMap(argv)
        #expect(try texts(batch.arguments) == expected)

        let one = DeliveryBatch(recipients: ["carol"], deliveries: [item("c1")], keys: keys, common: common)
        #expect(one.key == "t:{carol}:s" && one.order == [0])
        #expect(try texts(one.arguments) == ["4", "64", "ch:", "t:{carol}:s", "1"] + argv("c1"))

        // Shared rooms, a room, a request id and a volatile signal, as deliver takes them.
        var full = item("x")
        (full.id, full.room, full.shared, full.volatile) = ("r1", "lobby", ["a", "b"], true)
        var written = RESPArguments()
        full.writeBatchArguments(into: &written)
        #expect(try texts(written) == ["v", "x", "message", "alice|r1", "lobby", "a,b"])
        let single = full.deliverArguments(maxMessages: 4, maxBytes: 64, channelPrefix: "ch:")
        #expect(single.count == 10)
    }

    /// Several arguments written ahead go out as that many arguments of one command.
    @Test func writtenArgumentsCountAsTheArgumentsTheyHold() throws {
        var argv = RESPArguments(capacity: 1)
        argv.append("bob")
        argv.append(ByteBuffer(string: "é\r\n"))
        argv.append(-42)
        argv.append("")
        argv.append(concatenating: "t:{", "bob", "}:s")
        var bytes = ByteBuffer()
        RESPEncoder().encodeCommand(["EVALSHA", argv, 0], into: &bytes)
        #expect(
            String(buffer: bytes)
                == "*7\r\n$7\r\nEVALSHA\r\n$3\r\nbob\r\n$4\r\né\r\n\r\n$3\r\n-42\r\n$0\r\n\r\n$9\r\nt:{bob}:s\r\n$1\r\n0\r\n"
        )
    }
}

/// ``DeliveryBatcher`` against a real redis-server: one sender's deliveries, submitted back to back while
/// batches come back on the event loop, are decided in the order submitted (the order of the recipient's
/// buffer), however they were grouped.
@Suite(.serialized, .timeLimit(.minutes(2))) struct DeliveryBatcherTests {
    let keys = ClusterKeys(prefix: "t")

    @Test func oneSendersDeliveriesKeepTheirOrderAcrossBatches() async throws {
        let server = try await RedisTestServer()
        let redis = try server.connection()
        let created = try await redis.run(
            ClusterScripts.create,
            keys: keys.session("bob"),
            arguments: ["bob.t1", "n#1", "1", 9_999_999_999_999, 600_000, "0", "*", keys.channelPrefix]
        )
        #expect(created.array?.first?.string == "created")
        let count = 3000
        let batcher = DeliveryBatcher(
            redis: redis,
            eventLoop: RedisTestServer.group.next(),
            keys: keys,
            maxMessages: count,
            maxBytes: 1 << 24
        )
        var futures: [EventLoopFuture<RESPValue>] = []
        for index in 0..<count {
            let prefix = ByteBuffer(string: "{\"type\":\"message\",\"data\":\(index),\"from\":\"alice\",\"seq\":")
            let promise = RedisTestServer.group.next().makePromise(of: RESPValue.self)
            batcher.submit(
                DeliveryRequest(prefix: prefix, sender: "alice", id: "r\(index)", type: .message, signal: true),
                to: "bob",
                completion: promise.completeWith
            )
            futures.append(promise.futureResult)
            if index % 97 == 0 { await Task.yield() }
        }
        for future in futures { _ = try await future.get() }
        let buffered = try await redis.send(["LRANGE", keys.session("bob")[1], 0, -1]).array ?? []
        let order = buffered.compactMap { $0.string }.map { text -> Int in
            let data = text.split(separator: ",")[1].split(separator: ":")[1]
            return Int(data) ?? -1
        }
        #expect(order == Array(0..<count))
        await redis.close()
    }
}

extension RESPValue {
    /// A delivery reply as a list: the one-string form (`delivered n#1`, `dup queued`, `unavailable`) split
    /// at its first space, or the table form (with expired origins) as it is.
    fileprivate var deliveryParts: [RESPValue] {
        if let parts = array { return parts }
        guard let text = string else { return [] }
        return text.split(separator: " ", maxSplits: 1).map { .bulkString(ByteBuffer(string: String($0))) }
    }
}
