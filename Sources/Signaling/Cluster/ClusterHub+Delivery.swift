import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// What ``ClusterScripts/deliver`` is asked to give one recipient: a signal (`signal`, with its sender,
/// request id, type, room and — when a shared room is required — the sender's rooms) or a presence event
/// or notice (`prefix` only). A `volatile` signal's `prefix` is the whole message (no `seq`).
struct DeliveryRequest: Sendable {
    var prefix: ByteBuffer
    var sender = ""
    var id: String? = nil
    var type: SignalType? = nil
    var room: String? = nil
    var shared: [String]? = nil
    var signal: Bool
    var volatile = false

    /// The script's `mode` argument.
    var mode: String { volatile ? "v" : (signal ? "1" : "0") }

    /// ``ClusterScripts/deliver``'s ARGV for this request.
    func deliverArguments(maxMessages: Int, maxBytes: Int, channelPrefix: String) -> [any RESPEncodable] {
        [
            prefix, sender, id ?? "", type?.rawValue ?? "", room ?? "", shared.map { $0.joined(separator: ",") } ?? "-",
            maxMessages, maxBytes, mode, channelPrefix,
        ]
    }

    /// Writes its arguments of ``ClusterScripts/deliverBatch``: mode, prefix, type, `sender|id` (the sender
    /// alone without an id: a peer id has no `|`, a request id may), then the room and the sender's rooms
    /// (or `-`) — except for an addressed signal with neither (mode `s`, four arguments: nearly every
    /// signal).
    func writeBatchArguments(into argv: inout RESPArguments) {
        let plain = signal && !volatile && room == nil && shared == nil
        argv.append(plain ? "s" : mode)
        argv.append(prefix)
        argv.append(type?.rawValue ?? "")
        if let id, !id.isEmpty {
            argv.append(concatenating: sender, "|", id)
        } else {
            argv.append(sender)
        }
        guard !plain else { return }
        argv.append(room ?? "")
        if let shared {
            argv.append(shared.joined(separator: ","))
        } else {
            argv.append("-")
        }
    }
}

/// Delivery through ``ClusterScripts/deliver``, presence announcements, `expired` notices and rooms.
extension ClusterHub {
    /// Runs ``ClusterScripts/deliver`` for one recipient and handles what it reports back (messages its
    /// buffer bound pushed out become `expired` notices to their senders).
    @discardableResult
    func deliver(_ request: DeliveryRequest, to recipient: String) async throws(RedisError) -> DeliveryResult {
        let reply = try await redis.run(
            ClusterScripts.deliver,
            keys: keys.session(recipient),
            arguments: request.deliverArguments(
                maxMessages: limits.resumeBufferMessages,
                maxBytes: limits.resumeBufferBytes,
                channelPrefix: keys.channelPrefix
            )
        )
        return self.interpret(reply, recipient: recipient, signal: request.signal)
    }

    /// Reads `deliver`'s reply; counts it, and has ``run()`` send the `expired` notices it asks for.
    func interpret(_ reply: RESPValue, recipient: String, signal: Bool) -> DeliveryResult {
        guard let delivery = DeliverReply(reply) else { return .unavailable }
        if !delivery.duplicate, signal {
            if delivery.result == .delivered || delivery.result == .queued, delivery.node != nodeName {
                self.count(crossNode: 1)
            }
            if delivery.result == .queued { self.count { $0.queued += 1 } }
        }
        if !delivery.expired.isEmpty {
            jobs.continuation.yield(.notifyExpired(delivery.expired, recipient: recipient))
        }
        return delivery.result
    }

    /// Sends a presence event to each of `peers` (errors are logged: presence is best effort when Redis is
    /// unreachable, and a resume with `gap` tells the client).
    func announce(_ prefix: ByteBuffer, to peers: [String]) async {
        await withTaskGroup(of: Void.self) { group in
            for member in peers {
                group.addTask {
                    do throws(RedisError) {
                        try await self.deliver(DeliveryRequest(prefix: prefix, signal: false), to: member)
                    } catch {
                        self.logger.debug(
                            "presence not delivered",
                            metadata: ["peer.id": "\(member)", "error": "\(error)"]
                        )
                    }
                }
            }
        }
    }

    /// `expired` notices for signals that left `recipient`'s buffer unread.
    func notifyExpired(_ origins: [ExpiredOrigin], recipient: String) async {
        self.count { $0.expired += origins.count }
        for origin in origins {
            await self.announce(
                ServerMessage.expiredPrefix(id: origin.id, to: recipient, signal: origin.type),
                to: [origin.sender]
            )
        }
    }

    /// Takes `peer` out of `room`; returns the members left.
    func leave(_ room: String, peer: String) async throws(RedisError) -> [String] {
        let reply = try await redis.run(ClusterScripts.leaveRoom, keys: [keys.room(room)], arguments: [peer])
        let remaining = LeaveReply(reply)?.remaining ?? []
        let tenant = Tenant.of(room)
        if remaining.isEmpty, countsRooms(of: tenant) {
            // The room is gone: it no longer counts against its tenant.
            _ = try await release([room], of: tenant)
        }
        return remaining
    }
}
