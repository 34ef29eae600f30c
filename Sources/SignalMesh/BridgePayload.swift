import PeerMesh
import Signaling

/// What one hub's bridge hands another through the mesh (the payload of a ``MeshSignal``):
///
/// - a **signal**: the relayed message's prefix (ending in `"seq":`), with what the recipient's node needs
///   to apply the routing policy (the room it names, and the sender's rooms when the shared-room rule needs
///   them) and to answer for it (the request's `id`, its type, and the sender's node's `ticket`);
/// - **presence** (`peer-joined`, `peer-updated`, `peer-left`): the prefix only;
/// - an **answer** from the recipient's node back to the sender: what became of a signal (delivered,
///   queued, refused and why), or later that a queued one expired unread.
///
/// Layout (integers big-endian, strings as ``ByteWriter`` writes them: a UInt16 length and UTF-8):
/// - signal (4): type index, ticket UInt64, id?, room?, sender-room count UInt8 and the names, prefix
///   length UInt32, prefix;
/// - presence (2): the prefix (the rest of the payload);
/// - answer (5): outcome, type index, ticket UInt64, id?, recipient, room? (of a `not-in-room` outcome);
/// - server request (6) and server answer (7): a server API call made on another node and its answer
///   (``ServerRequest``, ``ServerAnswer``; layouts in BridgePayload+Server.swift).
///
/// An optional string is a byte 0 (absent) or 1 followed by the string. Kinds 1 and 3 were the signal and
/// notice of the first layout (before the recipient's node applied the policy); they are not decoded.
enum BridgePayload: Equatable, Sendable {
    struct Signal: Equatable, Sendable {
        var type: SignalType
        /// The sender's node's number for this signal; the answer names it (0: no answer wanted).
        var ticket: UInt64
        var id: String?
        var room: String?
        /// The sender's rooms, when the recipient's node needs them (``RoutingPolicy/needsSenderRooms(room:to:from:)``).
        var senderRooms: [String]
        var prefix: [UInt8]
        /// The signal says `"volatile":true` (its recipient's node reads it from the prefix while
        /// validating it: ``RelayValidator``); not a field of the layout.
        var volatile = false
    }

    /// What became of a signal, reported by the recipient's node.
    enum Outcome: Equatable, Sendable {
        case delivered
        case queued
        /// Queued for an away session that ended without reading it (sent later, with ticket 0).
        case expired
        case refused(Refusal)
    }

    struct Answer: Equatable, Sendable {
        var outcome: Outcome
        var type: SignalType
        var ticket: UInt64
        var id: String?
        /// The signal's recipient: the peer the answer comes from.
        var recipient: String
    }

    case signal(Signal)
    case presence(prefix: [UInt8])
    case answer(Answer)
    /// A server API call for a peer or a node here, from another node's API (``MeshBridge/apiPeer(of:)``).
    case server(ServerRequest)
    /// What a node did with a ``ServerRequest``, back to the node whose API asked.
    case serverAnswer(ServerAnswer)

    enum Kind: UInt8 {
        case presence = 2
        case signal = 4
        case answer = 5
        case server = 6
        case serverAnswer = 7
    }

    /// Outcome bytes. Refusals the recipient's side can give; any other travels as ``Refusal/unavailable``.
    private enum OutcomeCode: UInt8 {
        case delivered = 1, queued, expired, peerUnavailable, queueFull, recipientNotInRoom, noSharedRoom, unavailable
        /// A volatile signal's recipient is away (``Refusal/recipientAway(_:)``).
        case recipientAway
    }

    var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .signal(let signal):
            writer.write(Kind.signal.rawValue)
            writer.write(Self.index(of: signal.type))
            writer.write(signal.ticket)
            Self.write(signal.id, to: &writer)
            Self.write(signal.room, to: &writer)
            writer.write(UInt8(min(signal.senderRooms.count, Int(UInt8.max))))
            for room in signal.senderRooms.prefix(Int(UInt8.max)) { writer.write(string: room) }
            writer.write(UInt32(signal.prefix.count))
            writer.write(raw: signal.prefix)
        case .presence(let prefix):
            writer.write(Kind.presence.rawValue)
            writer.write(raw: prefix)
        case .answer(let answer):
            writer.write(Kind.answer.rawValue)
            let (code, room) = Self.code(of: answer.outcome)
            writer.write(code.rawValue)
            writer.write(Self.index(of: answer.type))
            writer.write(answer.ticket)
            Self.write(answer.id, to: &writer)
            writer.write(string: answer.recipient)
            Self.write(room, to: &writer)
        case .server(let request):
            writer.write(Kind.server.rawValue)
            request.write(to: &writer)
        case .serverAnswer(let answer):
            writer.write(Kind.serverAnswer.rawValue)
            answer.write(to: &writer)
        }
        return writer.bytes
    }

    /// Decodes a payload; nil when it is not one this layout describes, or has bytes left over.
    init?(_ bytes: [UInt8]) {
        guard let first = bytes.first, let kind = Kind(rawValue: first) else { return nil }
        if kind == .presence {
            self = .presence(prefix: Array(bytes.dropFirst()))
            return
        }
        var reader = ByteReader(bytes)
        do {
            _ = try reader.readByte()
            switch kind {
            case .signal:
                let type = try Self.type(reader.readByte())
                let ticket = try reader.readUInt64()
                let id = try Self.readOptional(&reader)
                let room = try Self.readOptional(&reader)
                let count = Int(try reader.readByte())
                var rooms: [String] = []
                rooms.reserveCapacity(count)
                for _ in 0..<count { rooms.append(try reader.readString()) }
                let length = Int(try reader.readUInt32())
                let prefix = try reader.read(count: length)
                self = .signal(
                    Signal(type: type, ticket: ticket, id: id, room: room, senderRooms: rooms, prefix: prefix)
                )
            case .answer:
                guard let code = OutcomeCode(rawValue: try reader.readByte()) else { return nil }
                let type = try Self.type(reader.readByte())
                let ticket = try reader.readUInt64()
                let id = try Self.readOptional(&reader)
                let recipient = try reader.readString()
                let room = try Self.readOptional(&reader)
                guard let outcome = Self.outcome(code, recipient: recipient, room: room) else { return nil }
                self = .answer(Answer(outcome: outcome, type: type, ticket: ticket, id: id, recipient: recipient))
            case .server:
                self = .server(try ServerRequest(reading: &reader))
            case .serverAnswer:
                self = .serverAnswer(try ServerAnswer(reading: &reader))
            case .presence:
                return nil
            }
        } catch {
            return nil
        }
        guard reader.isAtEnd else { return nil }
    }

    // MARK: Fields

    private static func code(of outcome: Outcome) -> (OutcomeCode, room: String?) {
        switch outcome {
        case .delivered: return (.delivered, nil)
        case .queued: return (.queued, nil)
        case .expired: return (.expired, nil)
        case .refused(.peerUnavailable): return (.peerUnavailable, nil)
        case .refused(.queueFull): return (.queueFull, nil)
        case .refused(.recipientNotInRoom(_, let room)): return (.recipientNotInRoom, room)
        case .refused(.noSharedRoom): return (.noSharedRoom, nil)
        case .refused(.recipientAway): return (.recipientAway, nil)
        case .refused: return (.unavailable, nil)
        }
    }

    private static func outcome(_ code: OutcomeCode, recipient: String, room: String?) -> Outcome? {
        switch code {
        case .delivered: return .delivered
        case .queued: return .queued
        case .expired: return .expired
        case .peerUnavailable: return .refused(.peerUnavailable(recipient))
        case .queueFull: return .refused(.queueFull(recipient))
        case .recipientNotInRoom:
            guard let room else { return nil }
            return .refused(.recipientNotInRoom(peer: recipient, room: room))
        case .noSharedRoom: return .refused(.noSharedRoom(recipient))
        case .unavailable: return .refused(.unavailable)
        case .recipientAway: return .refused(.recipientAway(recipient))
        }
    }

    private static func index(of type: SignalType) -> UInt8 { UInt8(SignalType.allCases.firstIndex(of: type)!) }

    private static func type(_ byte: UInt8) throws(MeshDecodingError) -> SignalType {
        guard Int(byte) < SignalType.allCases.count else { throw MeshDecodingError("unknown signal type") }
        return SignalType.allCases[Int(byte)]
    }

    static func write(_ value: String?, to writer: inout ByteWriter) {
        guard let value else { return writer.write(UInt8(0)) }
        writer.write(UInt8(1))
        writer.write(string: value)
    }

    static func readOptional(_ reader: inout ByteReader) throws(MeshDecodingError) -> String? {
        switch try reader.readByte() {
        case 0: return nil
        case 1: return try reader.readString()
        default: throw MeshDecodingError("bad optional flag")
        }
    }
}
