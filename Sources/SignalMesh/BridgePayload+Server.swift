import PeerMesh
import Signaling

/// A server API call made on one node for sessions another node holds (``MeshBridge``'s
/// ``ServerAPIBackend``). It travels as a mesh signal from the asking node's API peer
/// (``MeshBridge/apiPeer(of:)``): to the peer it is about (a message, a kick, a session read: the mesh
/// routes it to the peer's node by its location records), or to another node's API peer (a room message
/// or a listing, asked of every live node). The node that takes it answers the asking node's API peer with
/// a ``ServerAnswer`` naming the same ticket.
///
/// Layout (after the kind byte 6): operation UInt8, ticket UInt64, name? (the peer or room, qualified),
/// prefix length UInt32, prefix (the server message up to its `seq`; empty for the other operations).
struct ServerRequest: Equatable, Sendable {
    enum Operation: UInt8, Sendable {
        /// `POST /v1/peers/{peer}/messages`: the peer named gets the server message.
        case messagePeer = 1
        /// `POST /v1/rooms/{room}/messages`: the node's members of the room named get it.
        case messageRoom = 2
        /// `DELETE /v1/peers/{peer}`.
        case kick = 3
        /// `GET /v1/peers/{peer}`.
        case session = 4
        /// `GET /v1/rooms`: the node's rooms with their member counts.
        case listRooms = 5
        /// `GET /v1/rooms/{room}`: the node's members of the room with their `meta`.
        case members = 6
    }

    var operation: Operation
    /// The asking node's number for the call, random so that no other node can guess it.
    var ticket: UInt64
    var name: String?
    var prefix: [UInt8] = []

    /// Whether the request goes to the peer it names (else to a node's API peer).
    var isAboutPeer: Bool {
        switch operation {
        case .messagePeer, .kick, .session: true
        case .messageRoom, .listRooms, .members: false
        }
    }

    func write(to writer: inout ByteWriter) {
        writer.write(operation.rawValue)
        writer.write(ticket)
        BridgePayload.write(name, to: &writer)
        writer.write(UInt32(prefix.count))
        writer.write(raw: prefix)
    }

    init(operation: Operation, ticket: UInt64, name: String?, prefix: [UInt8] = []) {
        self.operation = operation
        self.ticket = ticket
        self.name = name
        self.prefix = prefix
    }

    init(reading reader: inout ByteReader) throws(MeshDecodingError) {
        guard let operation = Operation(rawValue: try reader.readByte()) else {
            throw MeshDecodingError("unknown server operation")
        }
        self.operation = operation
        self.ticket = try reader.readUInt64()
        self.name = try BridgePayload.readOptional(&reader)
        let length = Int(try reader.readUInt32())
        self.prefix = try reader.read(count: length)
    }
}

/// A node's answer to a ``ServerRequest``.
///
/// Layout (after the kind byte 7): ticket UInt64, flags UInt8 (1: found, 2: connected), delivered UInt32,
/// queued UInt32, entry count UInt16, entries (name, count UInt32, meta? as a byte 0 or 1 then a UInt32
/// length and the JSON object).
struct ServerAnswer: Equatable, Sendable {
    /// A room with its member count (`listRooms`), a member with its `meta` (`members`), or a room of the
    /// peer's session (`session`, count 0).
    struct Entry: Equatable, Sendable {
        var name: String
        var count: UInt32 = 0
        var meta: [UInt8]?
    }

    var ticket: UInt64
    /// The peer has a session here (peer operations), or the room has members here (room operations).
    var found: Bool
    /// A session read: a connection holds the session now.
    var connected = false
    var delivered: UInt32 = 0
    var queued: UInt32 = 0
    var entries: [Entry] = []

    func write(to writer: inout ByteWriter) {
        writer.write(ticket)
        writer.write(UInt8((found ? 1 : 0) | (connected ? 2 : 0)))
        writer.write(delivered)
        writer.write(queued)
        writer.write(UInt16(min(entries.count, Int(UInt16.max))))
        for entry in entries.prefix(Int(UInt16.max)) {
            writer.write(string: entry.name)
            writer.write(entry.count)
            if let meta = entry.meta {
                writer.write(UInt8(1))
                writer.write(UInt32(meta.count))
                writer.write(raw: meta)
            } else {
                writer.write(UInt8(0))
            }
        }
    }

    init(
        ticket: UInt64,
        found: Bool,
        connected: Bool = false,
        delivered: UInt32 = 0,
        queued: UInt32 = 0,
        entries: [Entry] = []
    ) {
        self.ticket = ticket
        self.found = found
        self.connected = connected
        self.delivered = delivered
        self.queued = queued
        self.entries = entries
    }

    init(reading reader: inout ByteReader) throws(MeshDecodingError) {
        self.ticket = try reader.readUInt64()
        let flags = try reader.readByte()
        guard flags & ~3 == 0 else { throw MeshDecodingError("unknown server answer flags") }
        self.found = flags & 1 != 0
        self.connected = flags & 2 != 0
        self.delivered = try reader.readUInt32()
        self.queued = try reader.readUInt32()
        let count = Int(try reader.readUInt16())
        var entries: [Entry] = []
        for _ in 0..<count {
            var entry = Entry(name: try reader.readString(), count: try reader.readUInt32())
            switch try reader.readByte() {
            case 0: break
            case 1: entry.meta = try reader.read(count: Int(try reader.readUInt32()))
            default: throw MeshDecodingError("bad optional flag")
            }
            entries.append(entry)
        }
        self.entries = entries
    }
}
