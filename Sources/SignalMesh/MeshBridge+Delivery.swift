import NIOConcurrencyHelpers
import NIOCore
import PeerMesh
import Signaling

/// The recipient's node: what the mesh brings for local peers. Every payload is validated first
/// (``RelayValidator``); then the routing policy's recipient side decides with this node's hub, and an
/// addressed signal is answered back to its sender's node.
extension MeshBridge {
    public func deliver(_ payload: [UInt8], from sender: String, to peer: String, addressed: Bool) {
        guard let relayed = validator.validate(payload, from: sender, to: peer, addressed: addressed) else {
            return self.countInvalid()
        }
        switch relayed {
        case .signal(let signal):
            self.deliverSignal(signal, from: sender, to: peer, addressed: addressed)
        case .presence(let room, let joined, let prefix):
            let result = hub.deliverRemote(to: peer, prefix: ByteBuffer(bytes: prefix), check: .member(of: room))
            // A newcomer's announcement to the room (an answer to one comes addressed): tell it who is here.
            guard joined, !addressed, result != .refused(.peerUnavailable(peer)), !hub.hasSession(sender),
                hub.isMember(peer, of: room)
            else { return }
            let meta = hub.members(of: room).first { $0.peer == peer }?.meta
            let answer = ServerMessage.peerJoinedPrefix(room: room, peer: peer, meta: meta)
            // Marked as an answer by being addressed (`.peer`), so the newcomer's node does not answer back.
            self.announce(answer, from: peer, to: .peer(sender))
        case .answer(let answer):
            self.receiveAnswer(answer, for: peer)
        }
    }

    /// What the mesh brings, with the node it came from: server API calls (from another node's API peer, or
    /// answers to this node's) are validated against that node (``RelayValidator/validateServer(_:from:origin:to:addressed:localAPIPeer:)``);
    /// everything else goes the peers' way.
    public func deliver(_ payload: [UInt8], from sender: String, origin: MeshKey, to peer: String, addressed: Bool) {
        guard sender.hasPrefix(Self.apiPeerPrefix) || peer == apiPeer else {
            return self.deliver(payload, from: sender, to: peer, addressed: addressed)
        }
        let relayed = validator.validateServer(
            payload,
            from: sender,
            origin: origin,
            to: peer,
            addressed: addressed,
            localAPIPeer: apiPeer
        )
        switch relayed {
        case .request(let request): self.serve(request, from: sender, to: peer)
        case .answer(let answer): self.receiveAPIAnswer(answer, from: sender)
        case nil: self.countInvalid()
        }
    }

    public func unavailable(_ key: SignalKey, peer: String) {
        if peer == apiPeer { return self.apiUnavailable(key) }
        let ticket = state.withLockedValue { $0.tickets[key] }
        guard let ticket, let pending = self.takePending(ticket) else { return }
        self.answer(pending, Refusal.peerUnavailable(pending.target).errorMessage(id: pending.id))
    }

    /// A signal from `sender` (on another node) for local peer `peer`.
    private func deliverSignal(_ signal: BridgePayload.Signal, from sender: String, to peer: String, addressed: Bool) {
        let result = hub.deliverRemote(
            to: peer,
            prefix: ByteBuffer(bytes: signal.prefix),
            origin: (sender, signal.id, signal.type),
            check: addressed
                ? .signal(from: sender, room: signal.room, senderRooms: signal.senderRooms)
                : .member(of: signal.room!),
            volatile: signal.volatile
        )
        // A room leg that finds no member here needs no answer; an addressed signal does.
        guard addressed else { return }
        let outcome: BridgePayload.Outcome
        switch result {
        case .delivered: outcome = .delivered
        case .queued: outcome = .queued
        case .refused(let refusal): outcome = .refused(refusal)
        }
        let answer = BridgePayload.Answer(
            outcome: outcome,
            type: signal.type,
            ticket: signal.ticket,
            id: signal.id,
            recipient: peer
        )
        runtime.send(from: peer, to: .peer(sender), payload: BridgePayload.answer(answer).encoded)
    }

    /// The recipient's node answered about a signal local peer `peer` sent.
    private func receiveAnswer(_ answer: BridgePayload.Answer, for peer: String) {
        if answer.outcome == .expired {
            let prefix = ServerMessage.expiredPrefix(id: answer.id, to: answer.recipient, signal: answer.type)
            hub.deliverRemote(to: peer, prefix: prefix)
            return
        }
        // Late (after the timeout) or not ours: nothing to answer.
        guard let pending = self.takePending(answer.ticket, peer: peer, target: answer.recipient) else { return }
        switch answer.outcome {
        case .delivered, .expired: self.answer(pending, ServerMessage.ack(id: pending.id, queued: false))
        case .queued: self.answer(pending, ServerMessage.ack(id: pending.id, queued: true))
        case .refused(let refusal): self.answer(pending, refusal.errorMessage(id: pending.id))
        }
    }
}
