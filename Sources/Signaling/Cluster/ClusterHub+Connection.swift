import Logging
import NIOConcurrencyHelpers
import NIOCore
import SignalRedis

/// One connection's task (a child of ``ClusterHub/run()``) and everything the node writes to a
/// connection's outbox.
extension ClusterHub {
    /// Serves one connection: opens (or resumes) its session, then carries out its requests in the order
    /// they were read until its socket closed, then detaches or ends its session. Addressed signals are
    /// pipelined (each one's script queued on the Redis connection at once, in order, and answered when
    /// its reply comes, at most ``maxPipelined`` at a time); any other request first waits for them.
    func serve(_ new: NewConnection) async {
        let connection = new.id
        await Self.inChildTask { await self.open(connection, new.request) }
        var doorbell = new.doorbell.makeAsyncIterator()
        var inFlight = CircularBuffer<EventLoopFuture<Void>>()
        while true {
            switch self.next(of: connection) {
            case .request(let message, let cost):
                if case .signal(let envelope) = message.request, envelope.to != nil {
                    if inFlight.count >= Self.maxPipelined, let oldest = inFlight.popFirst() { try? await oldest.get() }
                    if let pending = self.relayPipelined(envelope, id: message.id, on: connection) {
                        pending.whenComplete { _ in self.finished(connection, cost: cost) }
                        inFlight.append(pending)
                    } else {
                        self.finished(connection, cost: cost)
                    }
                    continue
                }
                while let pending = inFlight.popFirst() { try? await pending.get() }
                if let session = self.session(of: connection) {
                    await Self.inChildTask { await self.receive(message, on: connection, session: session) }
                }
                self.finished(connection, cost: cost)
            case .wait:
                // Nil once `run()` is cancelled (the server has drained): a socket that closed just before
                // still gets its session detached or ended.
                if await doorbell.next() == nil {
                    if case .finish(let close) = self.next(of: connection) {
                        await self.finish(connection, close, inFlight: &inFlight)
                    }
                    return
                }
            case .finish(let close):
                await self.finish(connection, close, inFlight: &inFlight)
                return
            }
        }
    }

    /// Runs `work` in a child task of its own and waits for it. A connection's task lives as long as the
    /// connection, and a task keeps every slab its task-local allocator ever took until it ends, so the
    /// deepest chain of calls it awaited once (an open, a join: each a few Redis round trips deep) would
    /// stay allocated for the life of the session; a child task gives its slabs back when it returns.
    private static func inChildTask(_ work: @escaping @Sendable () async -> Void) async {
        await withDiscardingTaskGroup { group in group.addTask(operation: work) }
    }

    /// After the socket closed and every request before the close was taken: once the pipelined ones are
    /// answered, the connection is forgotten and its session detached or ended.
    private func finish(
        _ connection: ConnectionID,
        _ close: ClusterConnectionState.SessionClose,
        inFlight: inout CircularBuffer<EventLoopFuture<Void>>
    ) async {
        while let pending = inFlight.popFirst() { try? await pending.get() }
        state.withLockedValue { state in
            state.locals[connection] = nil
            state.iceRefresh?.remove(connection)
        }
        await self.closeSession(close, connection: connection)
        await self.stopListening(on: connection)
        state.withLockedValue { $0.closingSessions -= 1 }
    }

    private func next(of connection: ConnectionID) -> ClusterConnectionState.Next {
        state.withLockedValue { state in
            guard state.locals[connection] != nil else { return .finish(.none) }
            return state.locals[connection]!.connection.next()
        }
    }

    private func finished(_ connection: ConnectionID, cost: Int) {
        state.withLockedValue { state in
            guard state.locals[connection] != nil else { return }
            state.locals[connection]!.connection.finished(cost: cost)
        }
    }

    /// The connection's session, while it serves one.
    func session(of connection: ConnectionID) -> ClusterConnectionState.Session? {
        state.withLockedValue { $0.locals[connection]?.connection.session }
    }

    func updateSession(_ connection: ConnectionID, _ change: (inout ClusterConnectionState.Session) -> Void) {
        state.withLockedValue { state in
            guard state.locals[connection] != nil else { return }
            state.locals[connection]!.connection.updateSession(change)
        }
    }

    // MARK: Output

    /// Writes the welcome, the replay, then whatever was published meanwhile and not replayed.
    func opened(
        _ connection: ConnectionID,
        session: ClusterConnectionState.Session,
        welcome: ByteBuffer,
        replay: [BufferedMessage],
        through seq: UInt64
    ) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard state.locals[connection] != nil,
                let writes = state.locals[connection]!.connection.opened(session, replay: replay, through: seq)
            else { return nil }
            let outbox = state.locals[connection]!.outbox
            state.iceRefresh?.add(connection, peer: session.peer, now: NIODeadline.now().uptimeNanoseconds)
            _ = outbox.append(.text(welcome))
            for bytes in writes { _ = outbox.append(.text(bytes)) }
            return outbox
        }
        outbox?.wakeOwner()
    }

    /// Writes sequenced message `seq` to a connection once: held until its open or resume is complete,
    /// skipped when the connection already has it (a replay and the live stream can overlap).
    func write(_ bytes: ByteBuffer, seq: UInt64, to connection: ConnectionID) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard state.locals[connection] != nil,
                state.locals[connection]!.connection.published(seq: seq, bytes: bytes) == .write
            else { return nil }
            let outbox = state.locals[connection]!.outbox
            return outbox.append(.text(bytes)) ? outbox : nil
        }
        outbox?.wakeOwner()
    }

    /// Writes what a catch-up read for a connection, with the live messages it held meanwhile, in order.
    func caughtUp(_ connection: ConnectionID, missed: [BufferedMessage]) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard state.locals[connection] != nil else { return nil }
            let writes = state.locals[connection]!.connection.endCatchUp(missed: missed)
            let outbox = state.locals[connection]!.outbox
            var wake = false
            for bytes in writes {
                if outbox.append(.text(bytes)) { wake = true }
            }
            return wake ? outbox : nil
        }
        outbox?.wakeOwner()
    }

    func reply(_ connection: ConnectionID, _ buffer: ByteBuffer) {
        let outbox = state.withLockedValue { $0.locals[connection]?.outbox }
        if let outbox, outbox.append(.text(buffer)) { outbox.wakeOwner() }
    }

    func replyError(_ connection: ConnectionID, _ refusal: Refusal, id: String?) {
        self.count { $0.errors[ErrorCode.allCases.firstIndex(of: refusal.code)!] += 1 }
        self.reply(connection, refusal.errorMessage(id: id))
    }

    /// Refuses a connection's session: its `error` (when the refusal sends one) and its close.
    func refuse(_ connection: ConnectionID, _ refusal: Refusal) {
        let close = refusal.close
        if close.sendsError { self.replyError(connection, refusal, id: nil) }
        self.closeConnection(connection, close.code, reason: refusal.message)
    }

    /// Closes a connection; unless the code keeps the session, the session is no longer this
    /// connection's business (``ClusterConnectionState/closing(_:)``).
    func closeConnection(_ connection: ConnectionID, _ code: CloseCode, reason: String) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard state.locals[connection] != nil else { return nil }
            state.locals[connection]!.connection.closing(code)
            let outbox = state.locals[connection]!.outbox
            return outbox.append(.close(code, reason: reason)) ? outbox : nil
        }
        outbox?.wakeOwner()
    }
}
