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
    /// its reply comes, at most ``maxPipelined`` at a time); any other request first waits for them. An
    /// addressed signal read while nothing waits before it does not come here at all: ``receive(_:_:)``
    /// hands it to Redis directly (``ClusterConnectionState/admit(_:directSignals:)``).
    func serve(_ new: NewConnection) async {
        let connection = new.id
        await Self.inChildTask { await self.open(connection, new.request) }
        var doorbell = new.doorbell.makeAsyncIterator()
        while true {
            switch self.next(of: connection) {
            case .request(let message, let cost):
                if case .signal(let envelope) = message.request, envelope.to != nil {
                    await self.waitForPipelined(below: Self.maxPipelined, on: connection, doorbell: &doorbell)
                    self.update(connection) { $0.startPipelined() }
                    self.pipeline(envelope, id: message.id, cost: cost, on: connection)
                    self.update(connection) { $0.doneTaking() }
                    continue
                }
                await self.waitForPipelined(below: 1, on: connection, doorbell: &doorbell)
                if let session = self.session(of: connection) {
                    await Self.inChildTask { await self.receive(message, on: connection, session: session) }
                }
                self.update(connection) {
                    $0.finished(cost: cost)
                    $0.doneTaking()
                }
            case .wait:
                // Nil once `run()` is cancelled (the server has drained): a socket that closed just before
                // still gets its session detached or ended.
                if await doorbell.next() == nil {
                    if case .finish(let close) = self.next(of: connection) {
                        await self.finish(connection, close, doorbell: &doorbell)
                    }
                    return
                }
            case .finish(let close):
                await self.finish(connection, close, doorbell: &doorbell)
                return
            }
        }
    }

    /// Hands one addressed signal (already counted as pipelined) to Redis; its answer is reported to the
    /// connection's state, which wakes the task if it waits for it.
    func pipeline(_ envelope: SignalEnvelope, id: String?, cost: Int, on connection: ConnectionID) {
        self.relayPipelined(envelope, id: id, on: connection) { self.signalAnswered(connection, cost: cost) }
    }

    private func signalAnswered(_ connection: ConnectionID, cost: Int) {
        let doorbell = state.withLockedValue { state -> AsyncStream<Void>.Continuation? in
            guard let local = state.locals[connection], local.connection.signalAnswered(cost: cost) else { return nil }
            return local.doorbell
        }
        doorbell?.yield()
    }

    /// Waits until fewer than `limit` of the connection's signals are with Redis (`limit` 1: all answered).
    /// Once `run()` is cancelled the doorbell rings no more; the answers still come (or fail within the
    /// Redis timeout), so the task then looks again every few milliseconds.
    private func waitForPipelined(
        below limit: Int,
        on connection: ConnectionID,
        doorbell: inout AsyncStream<Void>.AsyncIterator
    ) async {
        var ringing = true
        while true {
            let goOn = state.withLockedValue { state in
                state.locals[connection]?.connection.mayGoOn(below: limit) ?? true
            }
            if goOn { return }
            if ringing, await doorbell.next() == nil { ringing = false }
            if !ringing { try? await Task.sleep(for: .milliseconds(5)) }
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
        doorbell: inout AsyncStream<Void>.AsyncIterator
    ) async {
        await self.waitForPipelined(below: 1, on: connection, doorbell: &doorbell)
        let local = state.withLockedValue { state in
            defer {
                state.locals[connection] = nil
                state.iceRefresh?.remove(connection)
            }
            return state.locals[connection].map { ($0.connection.trimDue, $0.connection.session?.client) }
        }
        await self.closeSession(close, connection: connection, trimDue: local?.0 ?? 0, client: local?.1)
        await self.stopListening(on: connection)
        state.withLockedValue { $0.closingSessions -= 1 }
    }

    private func next(of connection: ConnectionID) -> ClusterConnectionState.Next {
        state.withLockedValue { state in
            state.locals[connection]?.connection.next() ?? .finish(.none)
        }
    }

    private func update(_ connection: ConnectionID, _ change: (inout ClusterConnectionState) -> Void) {
        state.withLockedValue { state in
            guard let local = state.locals[connection] else { return }
            change(&local.connection)
        }
    }

    /// The connection's session, while it serves one.
    func session(of connection: ConnectionID) -> ClusterConnectionState.Session? {
        state.withLockedValue { $0.locals[connection]?.connection.session }
    }

    func updateSession(_ connection: ConnectionID, _ change: (inout ClusterConnectionState.Session) -> Void) {
        state.withLockedValue { $0.locals[connection]?.connection.updateSession(change) }
    }

    /// `received`: no request for Redis; the next refresh trims the buffer
    /// (``ClusterConnectionState/confirm(_:)``).
    func confirm(_ connection: ConnectionID, _ seq: UInt64) {
        state.withLockedValue { $0.locals[connection]?.connection.confirm(seq) }
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
            guard let local = state.locals[connection],
                let writes = local.connection.opened(session, replay: replay, through: seq)
            else { return nil }
            let outbox = local.outbox
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
            guard let local = state.locals[connection], local.connection.published(seq: seq, bytes: bytes) == .write
            else { return nil }
            return local.outbox.append(.text(bytes)) ? local.outbox : nil
        }
        outbox?.wakeOwner()
    }

    /// Writes what a catch-up read for a connection, with the live messages it held meanwhile, in order.
    func caughtUp(_ connection: ConnectionID, missed: [BufferedMessage]) {
        let outbox: Outbox? = state.withLockedValue { state in
            guard let local = state.locals[connection] else { return nil }
            let writes = local.connection.endCatchUp(missed: missed)
            let outbox = local.outbox
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
            guard let local = state.locals[connection] else { return nil }
            local.connection.closing(code)
            return local.outbox.append(.close(code, reason: reason)) ? local.outbox : nil
        }
        outbox?.wakeOwner()
    }
}
