import NIOCore

/// One connection's part of the cluster, as a value with no I/O: what a cluster node decides for a
/// connection it serves, with actions out. ``ClusterHub`` keeps one per connection under its lock and
/// carries out what it returns; tests drive it without sockets or Redis.
///
/// It decides:
/// - **Ordering of sequenced messages** (volatile ones, published with `seq` 0, are written at once). Messages published for the connection before its open or resume
///   is complete are held, then written after the replay; a message is written only when its `seq` is
///   above the highest one written (a replay and the live stream overlap; the channel may repeat one).
///   While the node catches the connection up after its subscription was lost or moved, live messages are
///   held too, and written with what the catch-up read from Redis, in `seq` order.
/// - **Whose session it is.** A close that ends the session or hands it elsewhere (4009 resumed or taken
///   over elsewhere, 4002 ended) detaches the connection: from then on nothing it does touches the
///   session (its socket's close neither detaches nor ends it in Redis).
/// - **Pending requests, bounded.** Requests wait in the connection's queue, in the order read, until the
///   connection's task has carried them out with Redis. While Redis does not answer they pile up, so
///   the queue is bounded in count and bytes (``Limits``): a request beyond the bound is refused at once
///   (``Refusal/unavailable``), and a client that keeps sending is closed with 1013. Queued requests are
///   dropped when the socket closes while Redis is unreachable (their client had no answer, and resends
///   them after it resumes); otherwise they are still carried out, in order, before the session is
///   detached or ended.
struct ClusterConnectionState {
    /// The bounds on a connection's pending requests (``ClusterConfiguration``).
    struct Limits: Sendable, Equatable {
        /// Requests queued or being carried out.
        var maxPendingRequests: Int
        /// Their bytes (``ClusterConnectionState/cost(of:)``).
        var maxPendingBytes: Int
        /// Requests refused over the bound (without one accepted in between) before a 1013 close.
        var maxRefusals: Int
    }

    /// The session a connection serves once it is open.
    struct Session: Equatable {
        var peer: String
        var rooms: [String] = []
        var grant: RoomGrant = .all
        /// The address its connection is counted under (for `--max-detached-per-ip`), when known.
        var client: String? = nil
    }

    enum Phase: Equatable {
        /// The open or resume is with Redis: published messages are held.
        case opening
        /// Serving `session`.
        case open(Session)
        /// Not this connection's session (never opened, ended or moved elsewhere).
        case detached
    }

    /// A request waiting for the connection's task, with what it costs against the bound.
    struct Pending {
        var message: ClientMessage
        var cost: Int
    }

    let limits: Limits
    private(set) var phase: Phase = .opening
    /// Highest `seq` written to the connection.
    private(set) var lastWritten: UInt64 = 0
    /// Messages published while ``Phase/opening``, or while catching up.
    private var held: [BufferedMessage] = []
    /// The node's subscription was lost or is moving (``beginCatchUp()``): live messages wait for
    /// ``endCatchUp(missed:)``, so that none is written before an older one the catch-up brings.
    private(set) var catchingUp = false
    /// Small at first: most connections have one request at a time in it.
    private var queue = CircularBuffer<Pending>(initialCapacity: 2)
    /// Requests queued or being carried out, and their cost.
    private(set) var pendingRequests = 0
    private(set) var pendingBytes = 0
    /// Requests refused in a row over the bound.
    private var refusals = 0
    /// A 1013 close for overflow was asked for: what the client sends after it is ignored.
    private var overflowed = false
    /// Set when the socket closed: whether the session is kept for a resume.
    private(set) var socketClosed: Bool?
    /// The connection's task is carrying out a request it took with ``next()`` (a signal: until it has
    /// handed it to Redis). Requests read meanwhile queue behind it.
    private(set) var busy = false
    /// Addressed signals handed to Redis and not answered yet (pipelined; ``signalAnswered(cost:)``).
    private(set) var pipelined = 0
    /// The task waits until fewer signals are pipelined (``mayGoOn(below:)``): wake it at each answer.
    private var taskWaits = false
    /// The highest `seq` the client confirmed with `received`, and the highest a refresh has trimmed the
    /// session's buffer through (``confirm(_:)``, ``trimDue``).
    private(set) var confirmed: UInt64 = 0
    private var trimmedThrough: UInt64 = 0

    init(limits: Limits) {
        self.limits = limits
    }

    /// The session, while the connection serves one.
    var session: Session? {
        if case .open(let session) = phase { return session }
        return nil
    }

    // MARK: Confirmations

    /// The client confirmed every message up to `seq` (`received`). Nothing is sent to Redis for it: the
    /// node's next refresh trims the session's buffer through the highest confirmed (``trimDue``), so a
    /// client's confirmations cost Redis nothing of their own, and a burst of them (every client of a
    /// node confirming its presence events at once) adds nothing to the refresh's calls.
    mutating func confirm(_ seq: UInt64) {
        confirmed = max(confirmed, seq)
    }

    /// What the next refresh should trim the buffer through: the highest confirmed `seq` when it is
    /// above what a refresh already trimmed through, else 0 (nothing new).
    var trimDue: UInt64 {
        confirmed > trimmedThrough ? confirmed : 0
    }

    /// A refresh trimmed the buffer through `seq` (its touch answered for this connection).
    mutating func trimmed(through seq: UInt64) {
        trimmedThrough = max(trimmedThrough, seq)
    }

    // MARK: Open

    /// The open or resume succeeded: what to write after the welcome, in order (the replay, then whatever
    /// was published meanwhile and not replayed). Nil when the connection no longer wants it (detached).
    mutating func opened(_ session: Session, replay: [BufferedMessage], through seq: UInt64) -> [ByteBuffer]? {
        guard phase == .opening else { return nil }
        phase = .open(session)
        var written = seq
        var writes: [ByteBuffer] = []
        writes.reserveCapacity(replay.count + held.count)
        for entry in replay {
            writes.append(entry.bytes)
            written = max(written, entry.seq)
        }
        for entry in held.sorted(by: { $0.seq < $1.seq }) where entry.seq > written {
            writes.append(entry.bytes)
            written = entry.seq
        }
        held = []
        lastWritten = written
        return writes
    }

    /// The rooms of the session changed (a join or a leave answered).
    mutating func updateSession(_ change: (inout Session) -> Void) {
        guard case .open(var session) = phase else { return }
        change(&session)
        phase = .open(session)
    }

    // MARK: Sequenced messages

    enum Publication: Equatable {
        /// Held until the open is complete.
        case hold
        /// Write it now.
        case write
        /// Already written (or older), or not this connection's business any more.
        case drop
    }

    /// Sequenced message `seq` arrived for this connection (the node channel, or a catch-up). `seq` 0 is a
    /// volatile message (never sequenced, kept nowhere): written at once to a connection that serves its
    /// session, in no order with the sequenced ones and not held while catching up; dropped before the
    /// `welcome` (still opening) and after the connection let go of its session.
    mutating func published(seq: UInt64, bytes: ByteBuffer) -> Publication {
        switch phase {
        case .detached:
            return .drop
        case .opening:
            if seq == 0 { return .drop }
            held.append(BufferedMessage(seq: seq, bytes: bytes))
            return .hold
        case .open:
            if seq == 0 { return .write }
            guard seq > lastWritten else { return .drop }
            if catchingUp {
                held.append(BufferedMessage(seq: seq, bytes: bytes))
                return .hold
            }
            lastWritten = seq
            return .write
        }
    }

    /// The node's subscription was lost or is moving to another Redis node: messages published meanwhile
    /// may be missing, so live ones are held until the catch-up (``endCatchUp(missed:)``).
    mutating func beginCatchUp() {
        guard case .open = phase else { return }
        catchingUp = true
    }

    /// The catch-up read `missed` (every buffered message after ``lastWritten``) from Redis: what to write,
    /// in `seq` order, merged with the live messages held meanwhile, each once.
    mutating func endCatchUp(missed: [BufferedMessage]) -> [ByteBuffer] {
        guard case .open = phase else { return [] }
        let merged = (missed + (catchingUp ? held : [])).sorted { $0.seq < $1.seq }
        if catchingUp { held = [] }
        catchingUp = false
        var writes: [ByteBuffer] = []
        for entry in merged where entry.seq > lastWritten {
            writes.append(entry.bytes)
            lastWritten = entry.seq
        }
        return writes
    }

    // MARK: Closes

    /// The hub closes the connection with `code` (a refusal, the node channel, a refresh that found the
    /// session gone or moved, a partition). Unless the code keeps the session (1001, 1011, 1013 once
    /// open), the session is no longer this connection's: its close must not touch it.
    mutating func closing(_ code: CloseCode) {
        let isOpen = session != nil
        if !code.keepsSession || (code == .tryAgainLater && !isOpen) {
            phase = .detached
            held = []
        }
    }

    /// What closing the socket does to the session, once every request before it is carried out.
    enum SessionClose: Equatable {
        /// Nothing: the connection never held the session, or no longer does.
        case none
        /// The session waits for a resume (in Redis, with a deadline).
        case detach(peer: String)
        /// The session ends everywhere.
        case end(peer: String)
    }

    /// The socket closed. `keepSession`: the close keeps the session for a resume (and a grace period
    /// is configured). While Redis is unreachable, the requests still queued are dropped at once.
    mutating func socketDidClose(keepSession: Bool, redisReachable: Bool) {
        guard socketClosed == nil else { return }
        socketClosed = keepSession
        if !redisReachable { dropQueued() }
    }

    // MARK: Requests

    /// What to do with a request the connection read.
    enum Admission: Equatable {
        /// Queued for the connection's task (wake it).
        case queued
        /// An addressed signal with nothing before it: hand it to Redis now, on the thread that read it,
        /// and report ``signalAnswered(cost:)`` when it is answered.
        case direct(cost: Int)
        /// Over the bound: answer ``Refusal/unavailable`` at once.
        case refuse
        /// Over the bound and the client keeps sending: close with 1013 (once).
        case close
        /// Ignored: the socket closed, the connection is detached, or it is being closed for overflow.
        case ignore
    }

    /// A request the connection read. A request is always admitted into an empty queue, whatever it costs.
    ///
    /// An addressed signal is `direct` (no hop through the connection's task) when the session is open,
    /// nothing is queued, the task is not carrying out a request, and fewer than `directSignals` signals
    /// are pipelined: then nothing read before it is still to be handed to Redis, so handing it over at
    /// once keeps the order in which the connection's requests were read.
    mutating func admit(_ message: ClientMessage, directSignals: Int = 0) -> Admission {
        guard socketClosed == nil, !overflowed, phase != .detached else { return .ignore }
        let cost = Self.cost(of: message)
        let fits =
            pendingRequests == 0
            || (pendingRequests < limits.maxPendingRequests && pendingBytes + cost <= limits.maxPendingBytes)
        guard fits else {
            refusals += 1
            if refusals > limits.maxRefusals {
                overflowed = true
                return .close
            }
            return .refuse
        }
        refusals = 0
        pendingRequests += 1
        pendingBytes += cost
        if case .signal(let envelope) = message.request, envelope.to != nil, queue.isEmpty, !busy,
            pipelined < directSignals, session != nil
        {
            pipelined += 1
            return .direct(cost: cost)
        }
        queue.append(Pending(message: message, cost: cost))
        return .queued
    }

    /// What the connection's task does next.
    enum Next {
        /// Carry out this request, then report ``finished(cost:)``.
        case request(ClientMessage, cost: Int)
        /// Nothing queued: wait until woken.
        case wait
        /// The socket closed and every request before the close was taken: close the session so
        /// (after the requests still being carried out are answered), and stop.
        case finish(SessionClose)
    }

    /// The next request for the connection's task (called once the open is complete). Requests of a
    /// connection that is detached are dropped.
    mutating func next() -> Next {
        while let pending = queue.popFirst() {
            guard session != nil else {
                finished(cost: pending.cost)
                continue
            }
            busy = true
            return .request(pending.message, cost: pending.cost)
        }
        guard let keepSession = socketClosed else { return .wait }
        guard let session else { return .finish(.none) }
        return .finish(keepSession ? .detach(peer: session.peer) : .end(peer: session.peer))
    }

    /// A request taken with ``next()`` was answered (or failed): it no longer counts against the bound.
    mutating func finished(cost: Int) {
        pendingRequests -= 1
        pendingBytes -= cost
    }

    /// The task is done with the request it took (a signal: handed to Redis, see ``startPipelined()``):
    /// what is read from now on may go direct again.
    mutating func doneTaking() {
        busy = false
    }

    /// The task hands a queued addressed signal to Redis.
    mutating func startPipelined() {
        pipelined += 1
    }

    /// A pipelined signal (direct or from the task) was answered. True: wake the task, it waits for it.
    mutating func signalAnswered(cost: Int) -> Bool {
        pipelined -= 1
        finished(cost: cost)
        guard taskWaits else { return false }
        taskWaits = false
        return true
    }

    /// Whether the task may go on: fewer than `limit` signals pipelined (0 pipelined for `limit` 1, before
    /// any other request or the close). Otherwise it waits to be woken by an answer.
    mutating func mayGoOn(below limit: Int) -> Bool {
        if pipelined < limit { return true }
        taskWaits = true
        return false
    }

    private mutating func dropQueued() {
        while let pending = queue.popFirst() { finished(cost: pending.cost) }
        held = []
    }

    /// What a waiting request is counted as against ``Limits/maxPendingBytes``: the bytes it keeps alive
    /// (a signal's members are a slice of its frame) plus a fixed overhead for the request itself.
    static func cost(of message: ClientMessage) -> Int {
        var bytes = 128 + (message.id?.utf8.count ?? 0)
        switch message.request {
        case .signal(let envelope):
            bytes += envelope.members.readableBytes + (envelope.to?.utf8.count ?? 0) + (envelope.room?.utf8.count ?? 0)
        case .join(let room, let meta):
            bytes += room.utf8.count + (meta?.readableBytes ?? 0)
        case .update(let room, let meta):
            bytes += room.utf8.count + meta.readableBytes
        case .leave(let room):
            bytes += room.utf8.count
        case .auth(let token):
            bytes += token.utf8.count
        case .ping, .received, .grant:
            break
        }
        return bytes
    }
}
