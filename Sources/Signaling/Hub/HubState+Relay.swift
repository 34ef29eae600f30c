import NIOCore

extension HubState {
    // MARK: Relay

    /// Routes one signal and returns the reply for its sender (`ack` or `error`).
    mutating func relay(
        _ envelope: SignalEnvelope,
        from peer: String,
        at senderIndex: Dictionary<String, Session>.Index,
        id: String?,
        actions: inout [HubAction]
    ) -> Answer {
        let senderRooms = self.session(at: senderIndex) { $0.rooms }
        if let refusal = policy.send(room: envelope.room, senderRooms: senderRooms) {
            return .message(self.errorReply(refusal, id: id))
        }
        guard let target = envelope.to else {
            if envelope.volatile { return self.broadcastVolatile(envelope, from: peer, actions: &actions) }
            // Room broadcast (`message` with `room` only): every other member.
            // A member that is away queues it (bounded; past the bound it misses it) and its expiry is
            // reported to the sender like an addressed signal's.
            let room = envelope.room!
            let prefix = ServerMessage.signalPrefix(envelope, from: peer)
            let origin = QueuedOrigin(sender: peer, id: id, type: envelope.type)
            var queued = false
            for member in rooms[room] ?? [] where member.peer != peer {
                if self.deliver(to: member.peer, .prefix(prefix), origin: origin, actions: &actions) == .queued {
                    queued = true
                }
            }
            counters.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1
            return .ack(queued: queued)
        }
        let targetIndex = sessions.index(forKey: target)
        let recipientRooms = targetIndex.map { sessions.values[$0].rooms }
        if let refusal = policy.deliver(
            to: target,
            from: peer,
            room: envelope.room,
            recipientRooms: recipientRooms,
            senderRooms: senderRooms
        ) {
            return .message(self.errorReply(refusal, id: id))
        }
        guard let targetIndex else { return .message(self.errorReply(.peerUnavailable(target), id: id)) }
        if envelope.volatile {
            return self.relayVolatile(envelope, from: peer, to: targetIndex, id: id, actions: &actions)
        }
        let origin = QueuedOrigin(sender: peer, id: id, type: envelope.type)
        let delivery = self.deliver(
            at: targetIndex,
            .signal(members: envelope.members, from: peer),
            origin: origin,
            actions: &actions
        )
        if delivery != .queueFull { counters.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1 }
        switch delivery {
        case .delivered: return .ack(queued: false)
        case .queued: return .ack(queued: true)
        case .queueFull:
            return .message(self.errorReply(.queueFull(target), id: id))
        }
    }

    // MARK: Volatile signals

    /// A volatile addressed signal that passed the policy: written to the recipient's connection without a
    /// `seq` and kept nowhere; refused when the recipient is away (nothing is queued for it).
    mutating func relayVolatile(
        _ envelope: SignalEnvelope,
        from peer: String,
        to targetIndex: Dictionary<String, Session>.Index,
        id: String?,
        actions: inout [HubAction]
    ) -> Answer {
        let (target, connection) = self.session(at: targetIndex) { ($0.peer, $0.connection) }
        if let refusal = policy.deliverVolatile(to: target, connected: connection != nil) {
            return .message(self.errorReply(refusal, id: id))
        }
        actions.append(.send(connection!, ServerMessage.volatileRelayed(envelope.members, from: peer)))
        counters.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1
        return .ack(queued: false)
    }

    /// A volatile message that arrived complete from elsewhere (another mesh node) for local `peer`, after
    /// the routing checks: written to its connection, or refused when it is away. Counted by its sender's hub.
    mutating func deliverVolatile(_ message: ByteBuffer, to peer: String, actions: inout [HubAction]) -> Refusal? {
        let connection = sessions[peer]?.connection
        if let refusal = policy.deliverVolatile(to: peer, connected: connection != nil) { return refusal }
        actions.append(.send(connection!, message))
        return nil
    }

    /// A volatile room broadcast: one message (no `seq`) for every other member connected now; away members
    /// miss it. The sender's `ack` never says `queued`.
    mutating func broadcastVolatile(
        _ envelope: SignalEnvelope,
        from peer: String,
        actions: inout [HubAction]
    ) -> Answer {
        var message: ByteBuffer? = nil
        for member in rooms[envelope.room!] ?? [] where member.peer != peer {
            guard let connection = sessions[member.peer]?.connection else { continue }
            if message == nil { message = ServerMessage.volatileRelayed(envelope.members, from: peer) }
            actions.append(.send(connection, message!))
        }
        counters.signals[SignalType.allCases.firstIndex(of: envelope.type)!] += 1
        return .ack(queued: false)
    }

    /// Gives a sequenced message to a session: written to its socket when connected, queued when it is
    /// away, and kept in its resume buffer either way. While away, a signal (`origin` set) is refused
    /// past the queue bound; a presence event pushes the oldest entries out instead (a gap on resume).
    /// The `expired` notices owed to senders on other nodes since the last call (bounded).
    public mutating func takeRemoteExpiries() -> [RemoteExpiry] {
        defer { remoteExpiries = [] }
        return remoteExpiries
    }

    mutating func deliver(
        to peer: String,
        _ message: Sequenced,
        origin: QueuedOrigin?,
        actions: inout [HubAction]
    ) -> Delivery {
        guard let index = sessions.index(forKey: peer) else { return .queueFull }
        return self.deliver(at: index, message, origin: origin, actions: &actions)
    }

    /// Runs `body` on the session at `index` (found once by the caller, so the key is hashed once).
    @inline(__always)
    mutating func session<Result>(
        at index: Dictionary<String, Session>.Index,
        _ body: (inout Session) -> Result
    ) -> Result {
        body(&sessions.values[index])
    }

    mutating func deliver(
        at index: Dictionary<String, Session>.Index,
        _ message: Sequenced,
        origin: QueuedOrigin?,
        actions: inout [HubAction]
    ) -> Delivery {
        let limits = self.limits
        let size = message.prefixLength + 21
        let connection = self.session(at: index) { $0.connection }
        if connection == nil && origin != nil {
            let globalBytes = bufferedBytes
            let policy = self.policy
            let mayQueue = self.session(at: index) {
                policy.mayQueue(
                    size: size,
                    queuedCount: $0.resumeState.queuedCount,
                    queuedBytes: $0.resumeState.queuedBytes,
                    globalBytes: globalBytes
                )
            }
            if !mayQueue { return .queueFull }
        }
        let away = connection == nil
        let seq = self.session(at: index) { session in
            defer { session.nextSeq += 1 }
            return session.nextSeq
        }
        // A signal is kept as sent; a shared prefix is kept as it is and completed only for sending.
        let queuedFrom = away ? origin.map(QueuedOriginBox.init) : nil
        let entry: Buffered
        switch message {
        case .prefix(let prefix):
            entry = Buffered(seq: seq, stored: prefix, awaitsSeq: true, queued: away, queuedFrom: queuedFrom)
            if let connection { actions.append(.send(connection, ServerMessage.sequenced(prefix, seq: seq))) }
        case .signal:
            let bytes = message.complete(seq: seq)
            entry = Buffered(
                seq: seq,
                stored: bytes,
                awaitsSeq: false,
                queued: away,
                queuedFrom: queuedFrom
            )
            if let connection { actions.append(.send(connection, bytes)) }
        }
        let count = entry.size
        self.session(at: index) { session in
            session.buffer.append(entry)
            session.bufferBytes += count
            if away {
                session.resumeState.queuedCount += 1
                session.resumeState.queuedBytes += count
            }
        }
        bufferedBytes += count
        if away && origin != nil { counters.queued += 1 }
        while true {
            let overSession = self.session(at: index) { session -> Bool? in
                guard !session.buffer.isEmpty else { return nil }
                return away
                    ? session.resumeState.queuedCount > limits.resumeBufferMessages
                        || session.resumeState.queuedBytes > limits.resumeBufferBytes
                    : session.buffer.count > limits.resumeBufferMessages
                        || session.bufferBytes > limits.resumeBufferBytes
            }
            guard let overSession else { break }
            guard overSession || bufferedBytes > limits.globalBufferBytes else { break }
            self.dropOldest(at: index, actions: &actions)
        }
        return away ? .queued : .delivered
    }

    mutating func dropOldest(at index: Dictionary<String, Session>.Index, actions: inout [HubAction]) {
        let (dropped, peer) = self.session(at: index) { session in
            let dropped = session.buffer.removeFirst()
            let bytes = dropped.size
            session.bufferBytes -= bytes
            session.resumeState.droppedThrough = max(session.resumeState.droppedThrough, dropped.seq)
            if dropped.queued {
                session.resumeState.queuedCount -= 1
                session.resumeState.queuedBytes -= bytes
            }
            return (dropped, dropped.queuedFrom == nil ? nil : session.peer)
        }
        bufferedBytes -= dropped.size
        if let origin = dropped.queuedFrom, let peer {
            self.notifyExpired(origin.origin, to: peer, actions: &actions)
        }
    }

    mutating func trimBuffer(of peer: String, through seq: UInt64) {
        guard let session = sessions[peer] else { return }
        while let first = session.buffer.first, first.seq <= seq, !first.queued {
            session.buffer.removeFirst()
            session.bufferBytes -= first.size
            bufferedBytes -= first.size
        }
    }

    mutating func notifyExpired(_ origin: QueuedOrigin, to recipient: String, actions: inout [HubAction]) {
        counters.expired += 1
        if origin.remote {
            if remoteExpiries.count < 65_536 {
                remoteExpiries.append(
                    RemoteExpiry(sender: origin.sender, id: origin.id, signal: origin.type, recipient: recipient)
                )
            }
            return
        }
        guard sessions[origin.sender] != nil else { return }
        let prefix = ServerMessage.expiredPrefix(id: origin.id, to: recipient, signal: origin.type)
        _ = self.deliver(to: origin.sender, .prefix(prefix), origin: nil, actions: &actions)
    }

}
