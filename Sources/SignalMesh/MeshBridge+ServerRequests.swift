import NIOCore
import PeerMesh
import Signaling

/// The node that takes a server API call another node's API made (validated already): it acts on its own
/// hub as its own API would, and answers the asking node's API peer.
extension MeshBridge {
    /// The most bytes of names and `meta` one answer carries (a mesh frame holds 1 MiB); a listing that
    /// would be longer is cut there.
    static let maxAnswerBytes = 900_000

    /// Serves `request` from the API peer `sender` for `peer` (the local peer it is about, or this node's
    /// API peer).
    func serve(_ request: ServerRequest, from sender: String, to peer: String) {
        Task {
            let answer = await self.answer(request, for: peer)
            runtime.send(from: apiPeer, to: .peer(sender), payload: BridgePayload.serverAnswer(answer).encoded)
        }
    }

    private func answer(_ request: ServerRequest, for peer: String) async -> ServerAnswer {
        var answer = ServerAnswer(ticket: request.ticket, found: false)
        let prefix = ByteBuffer(bytes: request.prefix)
        switch request.operation {
        case .messagePeer:
            if let count = try? await hub.publish(prefix, toPeer: peer) { answer.count(count) }
        case .messageRoom:
            if let room = request.name, let count = try? await hub.publish(prefix, toRoom: room) { answer.count(count) }
        case .kick:
            answer.found = (try? await hub.kick(peer)) ?? false
            if answer.found { self.forgetIfEnded(peer) }
        case .session:
            if let session = try? await hub.session(ofPeer: peer) {
                answer.found = true
                answer.connected = session.connected
                answer.add(session.rooms.map { ServerAnswer.Entry(name: $0) })
            }
        case .listRooms:
            let rooms = (try? await hub.listRooms()) ?? []
            answer.found = !rooms.isEmpty
            answer.add(rooms.map { ServerAnswer.Entry(name: $0.room, count: UInt32(clamping: $0.members)) })
        case .members:
            if let room = request.name, let members = try? await hub.members(ofRoom: room) {
                answer.found = true
                answer.add(members.map { ServerAnswer.Entry(name: $0.peer, meta: $0.meta.map { Array(buffer: $0) }) })
            }
        }
        return answer
    }
}

extension ServerAnswer {
    fileprivate mutating func count(_ count: APIPublishCount) {
        found = true
        delivered = UInt32(clamping: count.delivered)
        queued = UInt32(clamping: count.queued)
    }

    /// Adds entries up to ``MeshBridge/maxAnswerBytes``.
    fileprivate mutating func add(_ new: [Entry]) {
        var bytes = 0
        for entry in new.prefix(RelayValidator.maxServerEntries) {
            bytes += entry.name.utf8.count + (entry.meta?.count ?? 0) + 12
            guard bytes <= MeshBridge.maxAnswerBytes else { return }
            entries.append(entry)
        }
    }
}
