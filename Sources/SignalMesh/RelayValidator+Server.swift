import NIOCore
import PeerMesh
import Signaling

/// Server API calls another node relays (``ServerRequest``, ``ServerAnswer``), checked as strictly as a
/// peer's signals:
///
/// - the mesh's sender must be the API peer of the node the signal came from (``MeshBridge/apiPeer(of:)``
///   of its origin, whose credential the mesh checked: only a member with a valid link and its own key
///   can send one, and only under its own API peer), and the signal addressed;
/// - a request goes to the peer it is about (a message, kick or session read) or to this node's API peer
///   (a room message, a listing), with a nonzero ticket and valid qualified names;
/// - a message's prefix, completed with a `seq`, must decode with the hub's own ``MessageDecoder`` as a
///   non-volatile `message` without an `id`, to the local recipient it is delivered to (`to`, its displayed
///   name) or to the room the request names (`room`, no `to`), with exactly one `from`, `@server`
///   (``ServerMessage/serverSender``: no peer id can take it), and `seq` last — so a hostile member
///   cannot make a message look as if a peer sent it;
/// - an answer goes to this node's API peer; its names must be valid, its `meta` JSON objects within the
///   contract's 1 KiB. Which call it answers (the ticket) the bridge checks.
extension RelayValidator {
    enum ServerRelayed: Equatable, Sendable {
        case request(ServerRequest)
        case answer(ServerAnswer)
    }

    /// The most entries a server answer may carry (rooms, members, or a session's rooms).
    static let maxServerEntries = 65_535

    func validateServer(
        _ bytes: [UInt8],
        from sender: String,
        origin: MeshKey,
        to recipient: String,
        addressed: Bool,
        localAPIPeer: String
    ) -> ServerRelayed? {
        guard addressed, sender == MeshBridge.apiPeer(of: origin), sender != localAPIPeer,
            let payload = BridgePayload(bytes)
        else { return nil }
        switch payload {
        case .server(let request):
            return self.isValid(request, to: recipient, localAPIPeer: localAPIPeer) ? .request(request) : nil
        case .serverAnswer(let answer):
            guard recipient == localAPIPeer, answer.ticket != 0, answer.entries.count <= Self.maxServerEntries,
                answer.entries.allSatisfy({ self.isValid($0) })
            else { return nil }
            return .answer(answer)
        case .signal, .presence, .answer:
            return nil
        }
    }

    private func isValid(_ request: ServerRequest, to recipient: String, localAPIPeer: String) -> Bool {
        guard request.ticket != 0 else { return false }
        if request.isAboutPeer {
            guard request.name == recipient, Identifier.isValidQualified(recipient) else { return false }
        } else {
            guard recipient == localAPIPeer else { return false }
        }
        switch request.operation {
        case .messagePeer:
            return self.isServerMessage(request.prefix, to: String(Tenant.display(recipient)), room: nil)
        case .messageRoom:
            guard let room = request.name, Identifier.isValidQualified(room) else { return false }
            return self.isServerMessage(request.prefix, to: nil, room: String(Tenant.display(room)))
        case .kick, .session:
            return request.prefix.isEmpty
        case .listRooms:
            return request.name == nil && request.prefix.isEmpty
        case .members:
            guard let room = request.name, Identifier.isValidQualified(room) else { return false }
            return request.prefix.isEmpty
        }
    }

    /// A server message's prefix as ``ServerMessage/serverMessagePrefix(data:to:room:)`` builds it.
    private func isServerMessage(_ prefix: [UInt8], to: String?, room: String?) -> Bool {
        let message = Self.completed(prefix)
        guard case .success(let decoded) = MessageDecoder().decode(message), decoded.id == nil,
            case .signal(let envelope) = decoded.request, envelope.type == .message, !envelope.volatile,
            envelope.to == to, envelope.room == room
        else { return false }
        return Self.serverMembers(of: message, prefixLength: prefix.count) { field, value in
            field != "from" || value == ServerMessage.serverSender
        } == ["from", "seq"]
    }

    private func isValid(_ entry: ServerAnswer.Entry) -> Bool {
        guard Identifier.isValidQualified(entry.name) else { return false }
        guard let meta = entry.meta else { return true }
        guard meta.count <= maxMetaBytes else { return false }
        return meta.withUnsafeBytes { bytes in
            (try? JSONScanner.objectFields(in: bytes, maxDepth: 32)) != nil
        }
    }
}
