import Signaling

/// What one hub's bridge hands another through the mesh, with what the receiving bridge needs to answer
/// for it: a signal carries its sender's request `id` and type (so a failure or an expiry can be
/// reported back), presence carries only the message, and a notice reports back to a sender.
///
/// Layout: a kind byte, then
/// - signal (1): type index, `id` length + 1 (0: no id), `id`, the relayed message's prefix;
/// - presence (2): the prefix;
/// - notice (3): notice kind, type index, `id` length + 1, `id`, the recipient's peer id.
enum BridgePayload: Equatable {
    enum Notice: UInt8 {
        /// No session for the recipient on the node the mesh delivered to.
        case unavailable = 1
        /// The recipient is away and its queue is full.
        case queueFull = 2
        /// The recipient's session ended without reading the queued signal.
        case expired = 3
    }

    case signal(type: SignalType, id: String?, prefix: [UInt8])
    case presence(prefix: [UInt8])
    case notice(Notice, type: SignalType, id: String?, recipient: String)

    var encoded: [UInt8] {
        switch self {
        case .signal(let type, let id, let prefix):
            return [1, Self.index(of: type)] + Self.encode(id) + prefix
        case .presence(let prefix):
            return [2] + prefix
        case .notice(let notice, let type, let id, let recipient):
            return [3, notice.rawValue, Self.index(of: type)] + Self.encode(id) + Array(recipient.utf8)
        }
    }

    init?(_ bytes: [UInt8]) {
        guard let kind = bytes.first else { return nil }
        switch kind {
        case 1:
            guard bytes.count >= 3, let type = Self.type(at: bytes[1]), let (id, rest) = Self.decodeID(bytes, at: 2)
            else { return nil }
            self = .signal(type: type, id: id, prefix: Array(bytes[rest...]))
        case 2:
            self = .presence(prefix: Array(bytes.dropFirst()))
        case 3:
            guard bytes.count >= 4, let notice = Notice(rawValue: bytes[1]), let type = Self.type(at: bytes[2]),
                let (id, rest) = Self.decodeID(bytes, at: 3)
            else { return nil }
            self = .notice(notice, type: type, id: id, recipient: String(decoding: bytes[rest...], as: UTF8.self))
        default:
            return nil
        }
    }

    private static func index(of type: SignalType) -> UInt8 { UInt8(SignalType.allCases.firstIndex(of: type)!) }

    private static func type(at byte: UInt8) -> SignalType? {
        Int(byte) < SignalType.allCases.count ? SignalType.allCases[Int(byte)] : nil
    }

    private static func encode(_ id: String?) -> [UInt8] {
        guard let id else { return [0] }
        let bytes = Array(id.utf8.prefix(254))
        return [UInt8(bytes.count + 1)] + bytes
    }

    private static func decodeID(_ bytes: [UInt8], at index: Int) -> (String?, Int)? {
        let length = Int(bytes[index])
        guard length > 0 else { return (nil, index + 1) }
        let end = index + length
        guard end <= bytes.count else { return nil }
        return (String(decoding: bytes[(index + 1)..<end], as: UTF8.self), end)
    }
}
