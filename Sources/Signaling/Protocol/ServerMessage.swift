import Foundation
import NIOCore

/// Builders for server → client messages. Messages that carry a `seq` are built as a prefix ending in
/// `"seq":` so one prefix serves every recipient of a broadcast; ``sequenced(_:seq:)`` completes it.
public enum ServerMessage {
    private static let allocator = ByteBufferAllocator()

    /// Completes a sequenced prefix with `seq` and the closing brace.
    public static func sequenced(_ prefix: ByteBuffer, seq: UInt64) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: prefix.readableBytes + 21)
        buffer.writeImmutableBuffer(prefix)
        buffer.writeDecimal(seq)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    /// The relayed form of a signal: the client's members, then `"from":…,"seq":`.
    public static func signalPrefix(_ envelope: SignalEnvelope, from peer: String) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: signalPrefixLength(envelope.members, from: peer))
        buffer.writeImmutableBuffer(envelope.members)
        buffer.writeStaticString(",\"from\":")
        buffer.writeJSONName(peer)
        buffer.writeStaticString(",\"seq\":")
        return buffer
    }

    /// The length of ``signalPrefix(_:from:)``'s result for a signal's `members`, without building it.
    public static func signalPrefixLength(_ members: ByteBuffer, from peer: String) -> Int {
        members.readableBytes + 15 + ByteBuffer.jsonNameLength(peer)
    }

    /// The relayed form of an addressed signal with its `seq`, built in one buffer: the client's
    /// `members`, then `,"from":…,"seq":N}`. The same bytes as ``sequenced(_:seq:)`` of
    /// ``signalPrefix(_:from:)``, without the intermediate copy.
    public static func relayed(_ members: ByteBuffer, from peer: String, seq: UInt64) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: members.readableBytes + 38 + peer.utf8.count)
        buffer.writeImmutableBuffer(members)
        buffer.writeStaticString(",\"from\":")
        buffer.writeJSONName(peer)
        buffer.writeStaticString(",\"seq\":")
        buffer.writeDecimal(seq)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    public static func peerJoinedPrefix(room: String, peer: String, meta: ByteBuffer?) -> ByteBuffer {
        presencePrefix("{\"type\":\"peer-joined\",\"room\":", room: room, peer: peer, meta: meta)
    }

    /// `{"type":"peer-updated","room":…,"peer":…,"meta":{…},"seq":` (**extension**): a member changed its
    /// `meta` (an `update`, or a re-join with another `meta`). Names leave the hub as their tenant sees them.
    public static func peerUpdatedPrefix(room: String, peer: String, meta: ByteBuffer?) -> ByteBuffer {
        presencePrefix("{\"type\":\"peer-updated\",\"room\":", room: room, peer: peer, meta: meta)
    }

    /// `head` (the type, up to `"room":`), then the room, `peer`, `meta` and `"seq":`.
    private static func presencePrefix(_ head: StaticString, room: String, peer: String, meta: ByteBuffer?)
        -> ByteBuffer
    {
        var buffer = allocator.buffer(capacity: 96 + (meta?.readableBytes ?? 0))
        buffer.writeStaticString(head)
        buffer.writeJSONName(room)
        buffer.writeStaticString(",\"peer\":")
        buffer.writeJSONName(peer)
        buffer.writeStaticString(",\"meta\":")
        writeMeta(meta, to: &buffer)
        buffer.writeStaticString(",\"seq\":")
        return buffer
    }

    /// A volatile signal as its recipients get it (**extension**): the client's `members`, then
    /// `,"from":…}` — no `seq`, since it is never sequenced or kept for a resume.
    public static func volatileRelayed(_ members: ByteBuffer, from peer: String) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: members.readableBytes + 10 + ByteBuffer.jsonNameLength(peer))
        buffer.writeImmutableBuffer(members)
        buffer.writeStaticString(",\"from\":")
        buffer.writeJSONName(peer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    /// A signal prefix (``signalPrefix(_:from:)``, ending in `,"seq":`) completed without a `seq`: what a
    /// volatile signal that arrived from another node as a prefix looks like to its recipient (the same
    /// bytes as ``volatileRelayed(_:from:)``). Nil when `prefix` does not end in `,"seq":`.
    public static func unsequenced(_ prefix: ByteBuffer) -> ByteBuffer? {
        let suffix = ",\"seq\":"
        let length = prefix.readableBytes - suffix.utf8.count
        guard length > 0, prefix.getString(at: prefix.readerIndex + length, length: suffix.utf8.count) == suffix else {
            return nil
        }
        var buffer = allocator.buffer(capacity: length + 1)
        buffer.writeImmutableBuffer(prefix.getSlice(at: prefix.readerIndex, length: length)!)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    public static func peerLeftPrefix(room: String, peer: String) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 80)
        buffer.writeStaticString("{\"type\":\"peer-left\",\"room\":")
        buffer.writeJSONName(room)
        buffer.writeStaticString(",\"peer\":")
        buffer.writeJSONName(peer)
        buffer.writeStaticString(",\"seq\":")
        return buffer
    }

    public static func expiredPrefix(id: String?, to: String, signal: SignalType) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 96)
        buffer.writeStaticString("{\"type\":\"expired\"")
        if let id {
            buffer.writeStaticString(",\"id\":")
            buffer.writeJSONString(id)
        }
        buffer.writeStaticString(",\"to\":")
        buffer.writeJSONName(to)
        buffer.writeStaticString(",\"signal\":")
        buffer.writeJSONString(signal.rawValue)
        buffer.writeStaticString(",\"seq\":")
        return buffer
    }

    public static func ack(id: String?, queued: Bool) -> ByteBuffer {
        let ack = Ack(id: id, queued: queued)
        var buffer = allocator.buffer(capacity: ack.length)
        ack.write(to: &buffer)
        return buffer
    }

    /// The length of ``ack(id:queued:)``'s message, so it can be written straight into a frame.
    public static func ackLength(id: String?, queued: Bool) -> Int {
        var length = 13 + 1  // {"type":"ack" and }
        if let id { length += 6 + ByteBuffer.jsonStringLength(id) }
        if queued { length += 14 }
        return length
    }

    /// An `ack` kept as its fields (no buffer) with its length worked out once, so a connection can write
    /// it straight into its outgoing frames.
    public struct Ack: Sendable {
        public let id: String?
        public let queued: Bool
        /// The message's length in bytes (``ServerMessage/ackLength(id:queued:)``).
        public let length: Int

        public init(id: String?, queued: Bool) {
            self.id = id
            self.queued = queued
            self.length = ServerMessage.ackLength(id: id, queued: queued)
        }

        /// Writes the message (``ServerMessage/ack(id:queued:)``) into `buffer`.
        public func write(to buffer: inout ByteBuffer) {
            buffer.writeStaticString("{\"type\":\"ack\"")
            ServerMessage.writeID(id, to: &buffer)
            if queued { buffer.writeStaticString(",\"queued\":true") }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    public static func error(_ code: ErrorCode, _ message: String, id: String?) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64 + message.utf8.count)
        buffer.writeStaticString("{\"type\":\"error\",\"code\":")
        buffer.writeJSONString(code.rawValue)
        buffer.writeStaticString(",\"message\":")
        buffer.writeJSONString(message)
        writeID(id, to: &buffer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    public static func error(_ error: ProtocolError) -> ByteBuffer {
        Self.error(error.code, error.message, id: error.requestID)
    }

    public static func pong(id: String?) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 32)
        buffer.writeStaticString("{\"type\":\"pong\"")
        writeID(id, to: &buffer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    /// The answer to an accepted `auth`: the session now lasts until `expires` (Unix seconds).
    public static func authed(expires: Int64, id: String?) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 48)
        buffer.writeStaticString("{\"type\":\"authed\",\"expires\":")
        buffer.writeString(String(expires))
        writeID(id, to: &buffer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    public static func left(room: String, id: String?) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 48)
        buffer.writeStaticString("{\"type\":\"left\",\"room\":")
        buffer.writeJSONName(room)
        writeID(id, to: &buffer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    /// The answer to an `update` (**extension**): `{"type":"updated","room":…,"id":…}`.
    public static func updated(room: String, id: String?) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 48)
        buffer.writeStaticString("{\"type\":\"updated\",\"room\":")
        buffer.writeJSONName(room)
        writeID(id, to: &buffer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    public static func joined(room: String, peers: [(peer: String, meta: ByteBuffer?)], id: String?) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64 + peers.count * 48)
        buffer.writeStaticString("{\"type\":\"joined\",\"room\":")
        buffer.writeJSONName(room)
        buffer.writeStaticString(",\"peers\":[")
        for (index, member) in peers.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeStaticString("{\"peer\":")
            buffer.writeJSONName(member.peer)
            buffer.writeStaticString(",\"meta\":")
            writeMeta(member.meta, to: &buffer)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
        buffer.writeInteger(UInt8(ascii: "]"))
        writeID(id, to: &buffer)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    fileprivate static func writeID(_ id: String?, to buffer: inout ByteBuffer) {
        if let id {
            buffer.writeStaticString(",\"id\":")
            buffer.writeJSONString(id)
        }
    }

    private static func writeMeta(_ meta: ByteBuffer?, to buffer: inout ByteBuffer) {
        if let meta {
            buffer.writeImmutableBuffer(meta)
        } else {
            buffer.writeStaticString("{}")
        }
    }
}

/// The static part of every `welcome`: what the server tells clients about itself.
public struct WelcomeTemplate: Sendable {
    public var heartbeatInterval: Int
    public var heartbeatTimeout: Int
    /// Raw JSON array of ICE servers handed to clients.
    public var iceServersJSON: String
    /// Raw JSON object of the limits a client can count on.
    public var limitsJSON: String
    /// Mints each session's short-lived TURN credentials (`--turn-secret`), appended to the static
    /// ``iceServersJSON``; nil: none.
    public var turn: TurnCredentialIssuer?

    public init(
        heartbeatInterval: Int,
        heartbeatTimeout: Int,
        iceServersJSON: String,
        limitsJSON: String,
        turn: TurnCredentialIssuer? = nil
    ) {
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTimeout = heartbeatTimeout
        self.iceServersJSON = iceServersJSON
        self.limitsJSON = limitsJSON
        self.turn = turn
    }

    /// The `iceServers` array for `peer`: the static entries, then (with ``turn``) credentials minted now.
    public func iceServers(peer: String, now: Date = Date()) -> String {
        guard let turn else { return iceServersJSON }
        let minted = turn.iceServer(peer: peer, now: now).json
        let staticEntries = iceServersJSON.dropLast()  // "[…" without its "]"
        return staticEntries + (staticEntries.count > 1 ? "," : "") + minted + "]"
    }

    /// `{"type":"ice-servers","iceServers":[…]}` for `peer` (**Extension**): fresh TURN credentials before
    /// the ones in `welcome` expire.
    public func iceServersMessage(peer: String, now: Date = Date()) -> ByteBuffer {
        let servers = iceServers(peer: peer, now: now)
        var buffer = ByteBufferAllocator().buffer(capacity: 40 + servers.utf8.count)
        buffer.writeStaticString("{\"type\":\"ice-servers\",\"iceServers\":")
        buffer.writeString(servers)
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }

    public func render(peer: String, session: String, resumed: Bool, gap: Bool) -> ByteBuffer {
        let iceServersJSON = self.iceServers(peer: peer)
        var buffer = ByteBufferAllocator().buffer(capacity: 192 + iceServersJSON.utf8.count + limitsJSON.utf8.count)
        buffer.writeStaticString("{\"type\":\"welcome\",\"v\":1,\"peer\":")
        buffer.writeJSONName(peer)
        buffer.writeStaticString(",\"session\":")
        buffer.writeJSONString(session)
        buffer.writeStaticString(",\"heartbeat\":{\"interval\":")
        buffer.writeDecimal(UInt64(heartbeatInterval))
        buffer.writeStaticString(",\"timeout\":")
        buffer.writeDecimal(UInt64(heartbeatTimeout))
        buffer.writeStaticString("},\"iceServers\":")
        buffer.writeString(iceServersJSON)
        buffer.writeStaticString(",\"limits\":")
        buffer.writeString(limitsJSON)
        if resumed { buffer.writeStaticString(",\"resumed\":true") }
        if gap { buffer.writeStaticString(",\"gap\":true") }
        buffer.writeInteger(UInt8(ascii: "}"))
        return buffer
    }
}
