import NIOCore
import SignalRedis

// The replies of ``ClusterScripts``, decoded once into typed values (each `init?` is nil for a reply the
// script never gives). The shapes are documented on each script.

/// One sequenced message from a session's buffer (scripts return them as flat `seq, message` pairs).
struct BufferedMessage: Equatable, Sendable {
    var seq: UInt64
    var bytes: ByteBuffer

    /// Flat `{seq, message, seq, message, …}`; entries that are not a number and a string are skipped.
    static func list(_ value: RESPValue) -> [BufferedMessage]? {
        guard let flat = value.array else { return nil }
        var result: [BufferedMessage] = []
        result.reserveCapacity(flat.count / 2)
        var index = 0
        while index + 1 < flat.count {
            if let seq = flat[index].string.flatMap({ UInt64($0) }), let bytes = flat[index + 1].buffer {
                result.append(BufferedMessage(seq: seq, bytes: bytes))
            }
            index += 2
        }
        return result
    }
}

/// A signal that left a buffer unread: whom to send `expired` (`sender|type|request id`).
struct ExpiredOrigin: Equatable, Sendable {
    var sender: String
    var type: SignalType
    var id: String?

    init(sender: String, type: SignalType, id: String?) {
        self.sender = sender
        self.type = type
        self.id = id
    }

    init?(_ text: String) {
        let fields = text.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, !fields[0].isEmpty, let type = SignalType(rawValue: String(fields[1])) else {
            return nil
        }
        self.init(sender: String(fields[0]), type: type, id: fields[2].isEmpty ? nil : String(fields[2]))
    }

    /// A script's list of origins (unreadable ones skipped).
    static func list(_ value: RESPValue?) -> [ExpiredOrigin] {
        value?.array?.compactMap { $0.string.flatMap(ExpiredOrigin.init) } ?? []
    }
}

/// What an ended session leaves for the node to do on other keys: leave its rooms (the others get
/// `peer-left`) and tell the senders of still-queued signals (`expired`).
struct EndedSession: Equatable, Sendable {
    var rooms: [String]
    var origins: [ExpiredOrigin]

    init(rooms: [String], origins: [ExpiredOrigin]) {
        self.rooms = rooms
        self.origins = origins
    }

    /// `rooms` (comma-separated) and `origins` (a list).
    init(rooms: RESPValue, origins: RESPValue) {
        self.init(rooms: Self.rooms(rooms.string ?? ""), origins: ExpiredOrigin.list(origins))
    }

    static func rooms(_ text: String) -> [String] {
        text.split(separator: ",").map(String.init)
    }
}

/// ``ClusterScripts/create``: `{'created'}`, `{'taken'}` or `{'took-over', rooms, origins}`.
enum CreateReply: Equatable, Sendable {
    case created
    /// The id has a live session and takeover was not asked for.
    case taken
    /// The older session ended (its connection is told to close with 4009).
    case tookOver(EndedSession)

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("created", 1): self = .created
        case ("taken", 1): self = .taken
        case ("took-over", 3): self = .tookOver(EndedSession(rooms: parts[1], origins: parts[2]))
        default: return nil
        }
    }
}

/// ``ClusterScripts/resume``: `{'unknown'}` or `{'resumed', gap, seq, rooms, grant, {seq, message, …}}`.
enum ResumeReply: Equatable, Sendable {
    case unknown
    case resumed(ResumedSession)

    struct ResumedSession: Equatable, Sendable {
        /// Messages after the client's `last` were lost (or `last` was beyond the session's `seq`).
        var gap: Bool
        /// The session's highest `seq`.
        var seq: UInt64
        var rooms: [String]
        var grant: RoomGrant
        /// Every buffered message after `last` (or every queued one when `last` was beyond `seq`).
        var replay: [BufferedMessage]
    }

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("unknown", 1):
            self = .unknown
        case ("resumed", 6):
            guard let gap = parts[1].int, let seq = parts[2].string.flatMap({ UInt64($0) }),
                let replay = BufferedMessage.list(parts[5])
            else { return nil }
            self = .resumed(
                ResumedSession(
                    gap: gap == 1,
                    seq: seq,
                    rooms: EndedSession.rooms(parts[3].string ?? ""),
                    grant: RoomGrant(clusterString: parts[4].string ?? "*"),
                    replay: replay
                )
            )
        default:
            return nil
        }
    }
}

/// ``ClusterScripts/deliver``: `{'unavailable'}`, `{'not-in-room'}`, `{'not-shared'}`, `{'queue-full'}`,
/// `{'away'}`, `{'dup', status}` (a resent request id: answered as the first delivery was), or
/// `{'delivered' | 'queued', node, {expired origins}}`.
struct DeliverReply: Equatable, Sendable {
    var result: DeliveryResult
    /// A resent request id, not delivered again.
    var duplicate = false
    /// The node the message was published to (empty when it was queued for an away session).
    var node = ""
    /// Senders of queued signals the buffer bound pushed out (they get `expired`).
    var expired: [ExpiredOrigin] = []

    init(result: DeliveryResult, duplicate: Bool = false, node: String = "", expired: [ExpiredOrigin] = []) {
        self.result = result
        self.duplicate = duplicate
        self.node = node
        self.expired = expired
    }

    init?(_ reply: RESPValue) {
        if case .bulkString(let text) = reply {
            self.init(flat: text)
            return
        }
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("dup", 2):
            self.init(result: parts[1].string == "queued" ? .queued : .delivered, duplicate: true)
        case ("delivered", 3), ("queued", 3):
            self.init(
                result: status == "queued" ? .queued : .delivered,
                node: parts[1].string ?? "",
                expired: ExpiredOrigin.list(parts[2])
            )
        case (_, 1):
            guard let result = DeliveryResult(rawValue: status), result != .delivered, result != .queued else {
                return nil
            }
            self.init(result: result)
        default:
            return nil
        }
    }

    /// The one-string form: `dup <status>`, `<status> <node>`, or a refusal alone. Read from the reply's
    /// bytes (once per signal): only the node becomes a `String`.
    private init?(flat text: ByteBuffer) {
        let bytes = text.readableBytesView
        guard let space = bytes.firstIndex(of: UInt8(ascii: " ")) else {
            guard let result = DeliveryResult(rawValue: String(buffer: text)), result != .delivered,
                result != .queued
            else { return nil }
            self.init(result: result)
            return
        }
        let head = bytes[..<space]
        let rest = bytes[(space + 1)...]
        if head.elementsEqual("delivered".utf8) || head.elementsEqual("queued".utf8) {
            guard !rest.isEmpty else { return nil }
            self.init(result: head.count == 6 ? .queued : .delivered, node: String(decoding: rest, as: UTF8.self))
        } else if head.elementsEqual("dup".utf8) {
            self.init(result: rest.elementsEqual("queued".utf8) ? .queued : .delivered, duplicate: true)
        } else {
            return nil
        }
    }
}

/// What ``ClusterScripts/deliver`` did with a message.
enum DeliveryResult: String, Sendable {
    case delivered
    case queued
    case queueFull = "queue-full"
    case notInRoom = "not-in-room"
    case notShared = "not-shared"
    case unavailable
    /// A volatile signal's recipient is away (or its node did not take it): not delivered, kept nowhere.
    case away

    /// The routing policy's refusal this answer stands for (for an undelivered message).
    func refusal(recipient: String, room: String?) -> Refusal {
        switch self {
        case .delivered, .queued, .unavailable: return .peerUnavailable(recipient)
        case .queueFull: return .queueFull(recipient)
        case .notInRoom: return .recipientNotInRoom(peer: recipient, room: room ?? "")
        case .notShared: return .noSharedRoom(recipient)
        case .away: return .recipientAway(recipient)
        }
    }
}

/// ``ClusterScripts/end``: `{'gone'}`, `{'alive'}`, `{'protected'}` or `{'ended', rooms, origins}`.
enum EndReply: Equatable, Sendable {
    /// No session, or not the closing connection's.
    case gone
    /// Its deadline has not passed.
    case alive
    /// Its deadline passed, but it is connected to a node that is alive (its refresh did not get through).
    case protected
    case ended(EndedSession)

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("gone", 1): self = .gone
        case ("alive", 1): self = .alive
        case ("protected", 1): self = .protected
        case ("ended", 3): self = .ended(EndedSession(rooms: parts[1], origins: parts[2]))
        default: return nil
        }
    }
}

/// ``ClusterScripts/since``: `{'gone'}` or `{'ok', {seq, message, …}}`.
enum SinceReply: Equatable, Sendable {
    /// The connection no longer owns its session.
    case gone
    case missed([BufferedMessage])

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("gone", 1): self = .gone
        case ("ok", 2):
            guard let missed = BufferedMessage.list(parts[1]) else { return nil }
            self = .missed(missed)
        default: return nil
        }
    }
}

/// ``ClusterScripts/touch``: 1, 0 or 2.
enum TouchReply: Int, Sendable {
    /// The session is gone (ended while the node could not hear of it).
    case gone = 0
    case refreshed = 1
    /// Another connection owns the session now (resumed elsewhere).
    case movedElsewhere = 2

    init?(_ reply: RESPValue) {
        guard let value = reply.int, let touch = TouchReply(rawValue: value) else { return nil }
        self = touch
    }
}

/// A member of a room and its `meta` (nil for none).
struct RoomMember: Equatable, Sendable {
    var peer: String
    var meta: ByteBuffer?
}

/// ``ClusterScripts/joinRoom``: `{'full'}` or `{'new' | 'again' | 'changed', {peer, meta, …}}`.
enum JoinReply: Equatable, Sendable {
    case full
    /// Joined (`isNew`: not a member before; `changed`: a re-join whose meta differs from the stored one);
    /// every member, the joiner included.
    case joined(isNew: Bool, changed: Bool, members: [RoomMember])

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("full", 1):
            self = .full
        case ("new", 2), ("again", 2), ("changed", 2):
            guard let flat = parts[1].array else { return nil }
            var members: [RoomMember] = []
            var index = 0
            while index + 1 < flat.count {
                if let peer = flat[index].string {
                    let meta = flat[index + 1].buffer.flatMap { $0.readableBytes > 0 ? $0 : nil }
                    members.append(RoomMember(peer: peer, meta: meta))
                }
                index += 2
            }
            self = .joined(isNew: status == "new", changed: status == "changed", members: members)
        default:
            return nil
        }
    }
}

/// ``ClusterScripts/updateMeta``: `{'absent'}` or `{'updated', {members…}}`.
enum UpdateReply: Equatable, Sendable {
    /// The peer is not a member of the room (any more).
    case absent
    /// Every member, the updating peer included.
    case updated(members: [String])

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, let status = parts.first?.string else { return nil }
        switch (status, parts.count) {
        case ("absent", 1): self = .absent
        case ("updated", 2):
            guard let members = parts[1].array else { return nil }
            self = .updated(members: members.compactMap(\.string))
        default: return nil
        }
    }
}

/// ``ClusterScripts/leaveRoom``: `{removed, {remaining members…}}`.
struct LeaveReply: Equatable, Sendable {
    var removed: Bool
    var remaining: [String]

    init(removed: Bool, remaining: [String]) {
        self.removed = removed
        self.remaining = remaining
    }

    init?(_ reply: RESPValue) {
        guard let parts = reply.array, parts.count == 2, let removed = parts[0].int,
            let remaining = parts[1].array
        else { return nil }
        self.init(removed: removed == 1, remaining: remaining.compactMap(\.string))
    }
}

extension RoomGrant {
    /// How a session's grant is kept in Redis: `*` for every room, else the rooms, comma-separated.
    var clusterString: String {
        switch self {
        case .all: return "*"
        case .only(let rooms): return rooms.sorted().joined(separator: ",")
        }
    }

    init(clusterString string: String) {
        self = string == "*" ? .all : .only(Set(string.split(separator: ",").map(String.init)))
    }
}
