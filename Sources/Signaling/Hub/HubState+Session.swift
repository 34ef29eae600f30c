import NIOCore

extension HubState {
    /// One entry of a resume buffer (48 bytes: it is kept for every sequenced message until confirmed).
    struct Buffered {
        var seq: UInt64
        /// The message as sent, or — when `awaitsSeq` — the prefix every recipient of a broadcast or
        /// presence event shares (ending in `"seq":`), completed again if it is replayed. Sharing it keeps
        /// one copy per event instead of one per recipient.
        var stored: ByteBuffer
        var awaitsSeq: Bool
        /// Whether it arrived while the session was away (so it is part of the bounded queue).
        var queued: Bool
        /// Set for a signal queued while its recipient was away: whom to tell if it expires.
        var queuedFrom: QueuedOriginBox?

        /// The message's length in bytes.
        var size: Int {
            awaitsSeq ? stored.readableBytes + decimalDigits(seq) + 1 : stored.readableBytes
        }

        /// The message as sent.
        var message: ByteBuffer {
            awaitsSeq ? ServerMessage.sequenced(stored, seq: seq) : stored
        }
    }

    struct QueuedOrigin {
        var sender: String
        var id: String?
        var type: SignalType
        /// The sender is on another node (PeerMesh): its `expired` goes out through ``takeRemoteExpiries()``.
        var remote = false
    }

    /// A queued signal from a sender on another node that its recipient never read.
    public struct RemoteExpiry: Sendable, Equatable {
        public var sender: String
        public var id: String?
        public var signal: SignalType
        public var recipient: String
    }

    /// A ``QueuedOrigin`` kept in a resume buffer entry, boxed so the entries of the (rarely away)
    /// sessions stay small.
    final class QueuedOriginBox: Sendable {
        let origin: QueuedOrigin
        init(_ origin: QueuedOrigin) { self.origin = origin }
    }

    /// The answer to a request, remembered by request id so a resend is answered again (not redone).
    enum Answer {
        /// An `ack`: two fields rather than its bytes.
        case ack(queued: Bool)
        /// Any other answer (an `error`, `left`).
        case message(ByteBuffer)

        func action(_ connection: ConnectionID, id: String?) -> HubAction {
            switch self {
            case .ack(let queued): return .ack(connection, id: id, queued: queued)
            case .message(let buffer): return .send(connection, buffer)
            }
        }
    }

    /// One session. A class, so the sessions table holds 24-byte entries (key and reference) rather than
    /// whole sessions: a table sits at up to 2.7 buckets per entry after it grows (2.6 at 100,000
    /// sessions), and every bucket of an inline table would take a session's size. Only `HubState` holds
    /// sessions, under its owner's lock (hence `@unchecked Sendable`); a copy of a `HubState` would share
    /// them, so a `HubState` is never copied.
    final class Session: @unchecked Sendable {
        let peer: String
        var token: SessionToken
        var connection: ConnectionID?
        var rooms: [String] = []
        var grant: RoomGrant
        /// The address its current (or last) connection came from: sessions waiting to resume are
        /// bounded per address too.
        var client: String?
        var nextSeq: UInt64 = 1
        var buffer = ResumeRing<Buffered>()
        var bufferBytes = 0
        /// What only some sessions need (a detached one, one that sent requests with ids), created on first
        /// use: kept out of line, it keeps every session 56 bytes smaller.
        fileprivate var rare: Rare? = nil

        init(peer: String, token: SessionToken, connection: ConnectionID?, grant: RoomGrant) {
            self.peer = peer
            self.token = token
            self.connection = connection
            self.grant = grant
        }

        /// The fields of ``Session`` most sessions never set (only its session refers to it).
        fileprivate final class Rare {
            var resumeState = ResumeState()
            var answers: [(id: String, answer: Answer)] = []
            var answersStart = 0
            var previousAnswers: [String: Answer] = [:]
            var previousOrder: [String] = []
        }

        /// What a session keeps for being away and resuming, beyond its buffer.
        struct ResumeState: Equatable {
            /// When a detached session ends (uptime nanoseconds).
            var detachedUntil: UInt64 = 0
            /// Entries that arrived while away; the queue bound applies to these only, so messages the
            /// client was sent but has not confirmed never make a signal to it bounce.
            var queuedCount = 0
            var queuedBytes = 0
            /// Highest seq dropped from the buffer before the client confirmed it.
            var droppedThrough: UInt64 = 0
        }

        private func rareForWriting() -> Rare {
            if let rare { return rare }
            let created = Rare()
            rare = created
            return created
        }

        /// Kept in `rare`: all zero until set, and setting all zero on a session without `rare` creates
        /// nothing.
        var resumeState: ResumeState {
            get { rare?.resumeState ?? ResumeState() }
            set { if rare != nil || newValue != ResumeState() { rareForWriting().resumeState = newValue } }
        }

        /// The answer given to request `id` on an earlier connection of this session.
        func previousAnswer(for id: String) -> Answer? {
            guard let rare, !rare.previousAnswers.isEmpty else { return nil }
            return rare.previousAnswers[id]
        }

        /// Moves the current connection's answers to the previous ones, keeping the newest `limit`.
        func archiveAnswers(limit: Int) {
            guard let rare else { return }
            for offset in rare.answers.indices {
                let (id, reply) = rare.answers[(rare.answersStart + offset) % rare.answers.count]
                if rare.previousAnswers.updateValue(reply, forKey: id) == nil { rare.previousOrder.append(id) }
            }
            rare.answers = []
            rare.answersStart = 0
            if rare.previousOrder.count > limit {
                for id in rare.previousOrder.prefix(rare.previousOrder.count - limit) { rare.previousAnswers[id] = nil }
                rare.previousOrder.removeFirst(rare.previousOrder.count - limit)
            }
        }

        /// Remembers the answer to request `id` on the current connection (a ring of at most `limit`, oldest
        /// at `answersStart` once full, so remembering one is O(1)), forgetting the oldest past `limit`.
        func remember(_ answer: Answer, for id: String, limit: Int) {
            let rare = rareForWriting()
            if rare.answers.count < limit {
                rare.answers.append((id, answer))
            } else {
                rare.answers[rare.answersStart] = (id, answer)
                rare.answersStart = (rare.answersStart + 1) % limit
            }
        }

        var lastSeq: UInt64 { nextSeq - 1 }
    }

    /// A sequenced message before its `seq` is known.
    enum Sequenced {
        /// A prefix ending in `"seq":`, shared by every recipient (presence, broadcasts, notices).
        case prefix(ByteBuffer)
        /// An addressed signal: its members and sender, completed in one buffer.
        case signal(members: ByteBuffer, from: String)

        /// The length of the message without its `seq` digits and closing brace.
        var prefixLength: Int {
            switch self {
            case .prefix(let prefix): return prefix.readableBytes
            case .signal(let members, let from): return ServerMessage.signalPrefixLength(members, from: from)
            }
        }

        func complete(seq: UInt64) -> ByteBuffer {
            switch self {
            case .prefix(let prefix): return ServerMessage.sequenced(prefix, seq: seq)
            case .signal(let members, let from): return ServerMessage.relayed(members, from: from, seq: seq)
            }
        }
    }

    struct Member {
        var peer: String
        var meta: ByteBuffer?
    }

    enum Delivery {
        case delivered, queued, queueFull
    }

}

/// The number of decimal digits of `value` (what `ByteBuffer.writeDecimal` writes).
func decimalDigits(_ value: UInt64) -> Int {
    var digits = 1
    var rest = value
    while rest >= 10 {
        rest /= 10
        digits += 1
    }
    return digits
}
