import NIOCore
import Signaling

/// Checks what another node relays before any client sees it: the bridge payload must decode, and what it
/// carries must be a message this node could have produced itself — a valid v1 signal (offer, answer,
/// candidate, bye, message) or presence event (`peer-joined`, `peer-updated`, `peer-left`) whose `from` (or `peer`) is the
/// peer the mesh says sent it, addressed to the local peer it is delivered to, or an answer about a signal
/// from the peer it names. Anything else is dropped by the bridge and counted.
///
/// A signal's prefix is checked by completing it with a `seq` and decoding it with the hub's own
/// ``MessageDecoder`` (every schema rule a client's message obeys), then checking the members the server
/// owns: exactly one `from`, the sender's, and `seq` last.
struct RelayValidator: Sendable {
    /// The most sender rooms a signal may carry (the hub's ``HubLimits/maxRoomsPerPeer``).
    var maxSenderRooms: Int
    /// Largest request `id` and presence `meta` a client may send (the contract's 64 bytes and 1 KiB).
    var maxIDBytes = 64
    var maxMetaBytes = 1024

    /// What a valid payload asks this node to do.
    enum Relayed: Equatable, Sendable {
        /// A signal for the local peer: addressed (ticket ≠ 0, answered) or a room broadcast's leg.
        case signal(BridgePayload.Signal)
        /// A presence event about the sender in `room`, for a local member of it.
        case presence(room: String, joined: Bool, prefix: [UInt8])
        /// What became of a signal the local peer sent to the answering peer.
        case answer(BridgePayload.Answer)
    }

    /// The validated payload, or nil when it must be dropped. `sender` is the mesh's `from`, `recipient` the
    /// local peer it is delivered to; `addressed` is false for a room broadcast's leg.
    func validate(_ bytes: [UInt8], from sender: String, to recipient: String, addressed: Bool) -> Relayed? {
        // Peers reach only peers of their own tenant (``Tenant``): ids are qualified `tenant/name` inside
        // the hub, and the client-visible bytes carry the names without the tenant.
        guard Identifier.isValidQualified(sender), Identifier.isValidQualified(recipient),
            Tenant.of(sender) == Tenant.of(recipient), let payload = BridgePayload(bytes)
        else {
            return nil
        }
        switch payload {
        case .signal(var signal):
            return self.isValid(&signal, from: sender, to: recipient, addressed: addressed) ? .signal(signal) : nil
        case .presence(let prefix):
            return self.presence(prefix, from: sender, addressed: addressed)
        case .answer(let answer):
            guard addressed, answer.recipient == sender, self.isValidID(answer.id),
                (answer.ticket != 0) == (answer.outcome != .expired)
            else { return nil }
            return .answer(answer)
        case .server, .serverAnswer:
            // Only a node's API peer sends these (``validateServer(_:from:origin:to:addressed:localAPIPeer:)``).
            return nil
        }
    }

    private func isValidID(_ id: String?) -> Bool {
        id.map { $0.utf8.count <= maxIDBytes } ?? true
    }

    private func isValid(
        _ signal: inout BridgePayload.Signal,
        from sender: String,
        to recipient: String,
        addressed: Bool
    )
        -> Bool
    {
        let tenant = Tenant.of(sender)
        let inTenant = { (name: String) in Identifier.isValidQualified(name) && tenant.owns(name) }
        guard self.isValidID(signal.id), signal.room.map(inTenant) ?? true,
            signal.senderRooms.count <= maxSenderRooms, signal.senderRooms.allSatisfy(inTenant),
            addressed ? signal.ticket != 0 : (signal.ticket == 0 && signal.room != nil)
        else { return false }
        let message = Self.completed(signal.prefix)
        guard case .success(let decoded) = MessageDecoder().decode(message), decoded.id == signal.id,
            case .signal(let envelope) = decoded.request, envelope.type == signal.type,
            envelope.room == signal.room.map({ String(Tenant.display($0)) }),
            envelope.to == (addressed ? String(Tenant.display(recipient)) : nil)
        else { return false }
        let from = String(Tenant.display(sender))
        signal.volatile = envelope.volatile
        return Self.serverMembers(of: message, prefixLength: signal.prefix.count) { field, value in
            field != "from" || value == from
        } == ["from", "seq"]
    }

    private func presence(_ prefix: [UInt8], from sender: String, addressed: Bool) -> Relayed? {
        var type: String?
        var room: String?
        var peer: String?
        var metaOK = true
        var keys: [String] = []
        let message = Self.completed(prefix)
        let ok = message.withUnsafeReadableBytes { bytes -> Bool in
            guard let fields = try? JSONScanner.objectFields(in: bytes, maxDepth: 32),
                let last = fields.last, last.key == "seq", last.valueStart == prefix.count
            else { return false }
            for field in fields {
                keys.append(field.key)
                switch field.key {
                case "type", "room", "peer":
                    guard field.kind == .string else { return false }
                    let value = JSONScanner.decodeString(
                        bytes,
                        start: field.valueStart,
                        end: field.valueEnd,
                        hasEscapes: field.hasEscapes
                    )
                    if field.key == "type" {
                        type = value
                    } else if field.key == "room" {
                        room = value
                    } else {
                        peer = value
                    }
                case "meta":
                    metaOK =
                        (field.kind == .object || field.kind == .null)
                        && field.valueEnd - field.valueStart <= maxMetaBytes
                default:
                    break
                }
            }
            return true
        }
        guard ok, metaOK, peer == String(Tenant.display(sender)), let room, Identifier.isValid(room) else {
            return nil
        }
        // The event names the room as the sender's tenant sees it; the bridge finds its members by the
        // qualified name.
        let qualified = Tenant.of(sender).qualify(room)
        switch type {
        case "peer-joined" where keys == ["type", "room", "peer", "meta", "seq"]:
            return .presence(room: qualified, joined: true, prefix: prefix)
        case "peer-left" where keys == ["type", "room", "peer", "seq"] && !addressed:
            return .presence(room: qualified, joined: false, prefix: prefix)
        case "peer-updated" where keys == ["type", "room", "peer", "meta", "seq"] && !addressed:
            return .presence(room: qualified, joined: false, prefix: prefix)
        default:
            return nil
        }
    }

    /// The prefix completed as the hub completes it (`seq` 0 and the closing brace).
    static func completed(_ prefix: [UInt8]) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: prefix.count + 2)
        buffer.writeBytes(prefix)
        buffer.writeStaticString("0}")
        return buffer
    }

    /// The server-owned members (`from`, `seq`) of a completed message in order, or nil when the message is
    /// not one object, `seq` is not its last member (the one the hub completes), or `accept` refuses a
    /// member's string value.
    static func serverMembers(
        of message: ByteBuffer,
        prefixLength: Int,
        accept: (String, String) -> Bool
    ) -> [String]? {
        message.withUnsafeReadableBytes { bytes -> [String]? in
            guard let fields = try? JSONScanner.objectFields(in: bytes, maxDepth: 32),
                let last = fields.last, last.key == "seq", last.valueStart == prefixLength
            else { return nil }
            var owned: [String] = []
            for field in fields where field.key == "from" || field.key == "seq" {
                if field.key == "from" {
                    guard field.kind == .string else { return nil }
                    let value = JSONScanner.decodeString(
                        bytes,
                        start: field.valueStart,
                        end: field.valueEnd,
                        hasEscapes: field.hasEscapes
                    )
                    guard accept(field.key, value) else { return nil }
                }
                owned.append(field.key)
            }
            return owned
        }
    }
}
