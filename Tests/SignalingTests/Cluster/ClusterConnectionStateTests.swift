import NIOCore
import Testing

@testable import Signaling

/// A cluster connection's decisions, without sockets or Redis: held messages during the open, the
/// highest `seq` written, detaching closes, and the bound on pending requests.
@Suite struct ClusterConnectionStateTests {
    static let limits = ClusterConnectionState.Limits(maxPendingRequests: 4, maxPendingBytes: 4096, maxRefusals: 3)
    let alice = ClusterConnectionState.Session(peer: "alice", rooms: ["lobby"])

    func message(_ text: String) -> ClientMessage {
        guard case .success(let message) = MessageDecoder().decode(ByteBuffer(string: text)) else {
            fatalError("not a valid message: \(text)")
        }
        return message
    }

    func entry(_ seq: UInt64) -> BufferedMessage {
        BufferedMessage(seq: seq, bytes: ByteBuffer(string: "m\(seq)"))
    }

    func texts(_ buffers: [ByteBuffer]?) -> [String]? {
        buffers?.map { String(buffer: $0) }
    }

    // MARK: Sequenced messages

    @Test func messagesPublishedDuringTheOpenAreHeldThenWrittenAfterTheReplayOnceEach() {
        var state = ClusterConnectionState(limits: Self.limits)
        // Published while the resume is with Redis, out of order and overlapping the replay.
        #expect(state.published(seq: 7, bytes: ByteBuffer(string: "m7")) == .hold)
        #expect(state.published(seq: 5, bytes: ByteBuffer(string: "m5")) == .hold)
        #expect(state.published(seq: 6, bytes: ByteBuffer(string: "m6")) == .hold)
        let writes = state.opened(alice, replay: [entry(4), entry(5)], through: 5)
        #expect(texts(writes) == ["m4", "m5", "m6", "m7"])
        #expect(state.lastWritten == 7)
        #expect(state.session == alice)
    }

    /// `received` only records: a refresh trims through the highest confirmed, once, and a confirmation
    /// below it (out of order, or repeated) asks for nothing new.
    @Test func confirmationsWaitForTheNextRefreshAndAreTrimmedOnce() {
        var state = ClusterConnectionState(limits: Self.limits)
        #expect(state.trimDue == 0)
        state.confirm(5)
        state.confirm(3)
        #expect(state.trimDue == 5)
        state.trimmed(through: 5)
        #expect(state.trimDue == 0)
        state.confirm(4)
        #expect(state.trimDue == 0)
        state.confirm(9)
        state.trimmed(through: 7)  // a refresh that took 7 answered after 9 arrived: 9 is still due
        #expect(state.trimDue == 9)
    }

    @Test func aFreshSessionWritesEverythingHeldInSeqOrder() {
        var state = ClusterConnectionState(limits: Self.limits)
        #expect(state.published(seq: 2, bytes: ByteBuffer(string: "m2")) == .hold)
        #expect(state.published(seq: 1, bytes: ByteBuffer(string: "m1")) == .hold)
        #expect(texts(state.opened(alice, replay: [], through: 0)) == ["m1", "m2"])
    }

    @Test func duplicatesAndOldMessagesAreDroppedOnceOpen() {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [entry(1), entry(2)], through: 2)
        #expect(state.published(seq: 2, bytes: ByteBuffer(string: "m2")) == .drop)
        #expect(state.published(seq: 1, bytes: ByteBuffer(string: "m1")) == .drop)
        #expect(state.published(seq: 3, bytes: ByteBuffer(string: "m3")) == .write)
        #expect(state.published(seq: 3, bytes: ByteBuffer(string: "m3")) == .drop)
        #expect(state.published(seq: 5, bytes: ByteBuffer(string: "m5")) == .write)
        #expect(state.lastWritten == 5)
    }

    @Test func aReplayThroughAHigherSeqSkipsWhatWasHeldBelowIt() {
        var state = ClusterConnectionState(limits: Self.limits)
        #expect(state.published(seq: 3, bytes: ByteBuffer(string: "m3")) == .hold)
        // The resume reports seq 9 and replays nothing after `last` (everything was confirmed).
        #expect(texts(state.opened(alice, replay: [], through: 9)) == [])
        #expect(state.published(seq: 9, bytes: ByteBuffer(string: "m9")) == .drop)
        #expect(state.published(seq: 10, bytes: ByteBuffer(string: "m10")) == .write)
    }

    /// After the node's subscription was lost or moved, message 4 was kept `queued` (no subscriber) and 5
    /// arrived live before the catch-up answered: 5 must wait, or the catch-up's 4 would come too late.
    @Test func aCatchUpHoldsLiveMessagesAndWritesEverythingInOrderOnce() {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [entry(1), entry(2), entry(3)], through: 3)
        state.beginCatchUp()
        #expect(state.published(seq: 5, bytes: ByteBuffer(string: "m5")) == .hold)
        #expect(state.published(seq: 6, bytes: ByteBuffer(string: "m6")) == .hold)
        #expect(state.lastWritten == 3)
        #expect(texts(state.endCatchUp(missed: [entry(4), entry(5)])) == ["m4", "m5", "m6"])
        #expect(state.lastWritten == 6 && !state.catchingUp)
        #expect(state.published(seq: 7, bytes: ByteBuffer(string: "m7")) == .write)
        // A catch-up that could not read Redis still releases what it held, in order.
        state.beginCatchUp()
        #expect(state.published(seq: 9, bytes: ByteBuffer(string: "m9")) == .hold)
        #expect(state.published(seq: 8, bytes: ByteBuffer(string: "m8")) == .hold)
        #expect(texts(state.endCatchUp(missed: [])) == ["m8", "m9"])
        // A connection still opening is not caught up: its open holds and orders for it.
        var opening = ClusterConnectionState(limits: Self.limits)
        opening.beginCatchUp()
        #expect(!opening.catchingUp && opening.endCatchUp(missed: [entry(1)]).isEmpty)
    }

    /// `seq` 0 is a volatile message: written at once to an open connection (also while catching up, and
    /// without moving `lastWritten`), never held for an open or kept after the connection let go.
    @Test func volatileMessagesAreWrittenOnlyToAnOpenConnectionAndNeverHeld() {
        var state = ClusterConnectionState(limits: Self.limits)
        #expect(state.published(seq: 0, bytes: ByteBuffer(string: "v")) == .drop, "no welcome written yet")
        #expect(texts(state.opened(alice, replay: [entry(1)], through: 1)) == ["m1"])
        #expect(state.published(seq: 0, bytes: ByteBuffer(string: "v")) == .write)
        #expect(state.published(seq: 0, bytes: ByteBuffer(string: "v")) == .write, "no dedup: it has no seq")
        #expect(state.lastWritten == 1)
        state.beginCatchUp()
        #expect(state.published(seq: 0, bytes: ByteBuffer(string: "v")) == .write)
        #expect(texts(state.endCatchUp(missed: [entry(2)])) == ["m2"])
        state.closing(.idTaken)
        #expect(state.published(seq: 0, bytes: ByteBuffer(string: "v")) == .drop)
    }

    // MARK: Closes

    @Test(arguments: [CloseCode.idTaken, .sessionNotResumable])
    func aSessionResumedElsewhereOrEndedIsNoLongerTheConnections(_ code: CloseCode) {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [], through: 0)
        state.closing(code)
        #expect(state.session == nil)
        #expect(state.published(seq: 1, bytes: ByteBuffer(string: "m1")) == .drop)
        #expect(state.admit(message(#"{"type":"ping"}"#)) == .ignore)
        state.socketDidClose(keepSession: true, redisReachable: true)
        guard case .finish(let close) = state.next() else {
            Issue.record("expected the connection's task to finish")
            return
        }
        #expect(close == ClusterConnectionState.SessionClose.none)
    }

    @Test(arguments: [CloseCode.goingAway, .internalError, .tryAgainLater])
    func closesThatKeepTheSessionLeaveItTheConnections(_ code: CloseCode) {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [], through: 0)
        state.closing(code)
        #expect(state.session == alice)
        state.socketDidClose(keepSession: true, redisReachable: true)
        guard case .finish(let close) = state.next() else {
            Issue.record("expected the connection's task to finish")
            return
        }
        #expect(close == .detach(peer: "alice"))
    }

    @Test func anUnavailableRefusalBeforeTheOpenDetachesAndALateOpenWritesNothing() {
        var state = ClusterConnectionState(limits: Self.limits)
        state.closing(.tryAgainLater)
        #expect(state.phase == .detached)
        #expect(state.opened(alice, replay: [], through: 0) == nil)
    }

    @Test func aSocketCloseEndsOrDetachesTheSessionAfterTheRequestsBeforeIt() {
        for keep in [true, false] {
            var state = ClusterConnectionState(limits: Self.limits)
            #expect(state.admit(message(#"{"type":"join","room":"x","id":"j1"}"#)) == .queued)
            _ = state.opened(alice, replay: [], through: 0)
            state.socketDidClose(keepSession: keep, redisReachable: true)
            #expect(state.admit(message(#"{"type":"ping"}"#)) == .ignore)
            guard case .request(let join, let cost) = state.next() else {
                Issue.record("the join read before the close is still carried out")
                return
            }
            #expect(join.id == "j1")
            state.finished(cost: cost)
            guard case .finish(let close) = state.next() else {
                Issue.record("expected the connection's task to finish")
                return
            }
            #expect(close == (keep ? .detach(peer: "alice") : .end(peer: "alice")))
        }
    }

    @Test func aConnectionThatNeverOpenedTouchesNoSession() {
        var state = ClusterConnectionState(limits: Self.limits)
        state.closing(.sessionNotResumable)
        state.socketDidClose(keepSession: false, redisReachable: true)
        guard case .finish(let close) = state.next() else {
            Issue.record("expected the connection's task to finish")
            return
        }
        #expect(close == ClusterConnectionState.SessionClose.none)
    }

    // MARK: Pending requests

    @Test func requestsWaitInOrderAndAreTakenOnlyOnceOpen() {
        var state = ClusterConnectionState(limits: Self.limits)
        #expect(state.admit(message(#"{"type":"ping","id":"a"}"#)) == .queued)
        #expect(state.admit(message(#"{"type":"ping","id":"b"}"#)) == .queued)
        _ = state.opened(alice, replay: [], through: 0)
        var ids: [String?] = []
        while case .request(let message, let cost) = state.next() {
            ids.append(message.id)
            state.finished(cost: cost)
        }
        #expect(ids == ["a", "b"])
        #expect(state.pendingRequests == 0 && state.pendingBytes == 0)
        guard case .wait = state.next() else {
            Issue.record("nothing queued: the task waits")
            return
        }
    }

    @Test func anAddressedSignalGoesDirectOnlyWhenNothingReadBeforeItWaits() {
        var state = ClusterConnectionState(
            limits: ClusterConnectionState.Limits(
                maxPendingRequests: 16,
                maxPendingBytes: 1 << 20,
                maxRefusals: 3
            )
        )
        let signal = message(#"{"type":"message","to":"bob","data":"x"}"#)
        let cost = ClusterConnectionState.cost(of: signal)
        // Before the open: queued (there is no session yet).
        #expect(state.admit(signal, directSignals: 2) == .queued)
        _ = state.opened(alice, replay: [], through: 0)
        // Something is queued before it: queued behind it, in order.
        #expect(state.admit(signal, directSignals: 2) == .queued)
        guard case .request = state.next() else {
            Issue.record("expected the first signal")
            return
        }
        // The task has taken a request and not handed it on yet: what is read waits behind it.
        #expect(state.admit(signal, directSignals: 2) == .queued)
        state.startPipelined()
        state.doneTaking()
        guard case .request = state.next() else {
            Issue.record("expected the second signal")
            return
        }
        state.startPipelined()
        state.doneTaking()
        guard case .request = state.next() else {
            Issue.record("expected the third signal")
            return
        }
        state.doneTaking()
        state.finished(cost: cost)  // answered at once (say, refused)
        // Two pipelined: at the limit, so the next one queues for the task.
        #expect(state.pipelined == 2)
        #expect(state.admit(signal, directSignals: 2) == .queued)
        guard case .request = state.next() else {
            Issue.record("expected the fourth signal")
            return
        }
        #expect(state.mayGoOn(below: 2) == false)  // the task waits for an answer
        #expect(state.signalAnswered(cost: cost) == true)  // which wakes it
        #expect(state.mayGoOn(below: 2) == true)
        state.startPipelined()
        state.doneTaking()
        #expect(state.signalAnswered(cost: cost) == false)  // nobody waits: no wake
        // Nothing queued, the task idle, one pipelined: direct; a join is never direct.
        #expect(state.admit(signal, directSignals: 2) == .direct(cost: cost))
        #expect(state.pipelined == 2)
        #expect(state.admit(message(#"{"type":"join","room":"x"}"#), directSignals: 2) == .queued)
        #expect(state.admit(signal, directSignals: 2) == .queued)  // behind the join
        _ = state.signalAnswered(cost: cost)
        _ = state.signalAnswered(cost: cost)
        // The join may go on only once every signal before it is answered.
        guard case .request(let join, _) = state.next(), case .join = join.request else {
            Issue.record("expected the join")
            return
        }
        #expect(state.mayGoOn(below: 1) == true)
        #expect(state.pendingRequests == 2)  // the join and the signal behind it
    }

    @Test func pendingRequestsAreBoundedInCountThenRefusedThenClosedWith1013() {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [], through: 0)
        // Redis does not answer: nothing is finished.
        for index in 0..<4 {
            #expect(state.admit(message(#"{"type":"message","to":"bob","data":"\#(index)"}"#)) == .queued)
        }
        #expect(state.pendingRequests == 4)
        for _ in 0..<3 {
            #expect(state.admit(message(#"{"type":"message","to":"bob","data":"x"}"#)) == .refuse)
        }
        #expect(state.admit(message(#"{"type":"message","to":"bob","data":"x"}"#)) == .close)
        // Closed once; what it sends after that is ignored, and nothing more is queued.
        #expect(state.admit(message(#"{"type":"message","to":"bob","data":"x"}"#)) == .ignore)
        #expect(state.pendingRequests == 4)
    }

    @Test func pendingRequestsAreBoundedInBytesAndAnAnswerMakesRoomAgain() {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [], through: 0)
        let big = message(#"{"type":"message","to":"bob","data":"\#(String(repeating: "x", count: 1500))"}"#)
        let cost = ClusterConnectionState.cost(of: big)
        #expect(cost > 1500 && cost < 2048)
        #expect(state.admit(big) == .queued)
        #expect(state.admit(big) == .queued)
        #expect(state.pendingBytes == 2 * cost)
        #expect(state.admit(big) == .refuse)  // 3 × cost > 4096
        #expect(state.admit(message(#"{"type":"ping"}"#)) == .queued)  // a small one still fits
        guard case .request(_, let first) = state.next() else {
            Issue.record("expected a request")
            return
        }
        state.finished(cost: first)
        #expect(state.admit(big) == .queued)
        // Refusals count only in a row: an admitted request resets them.
        for _ in 0..<3 { #expect(state.admit(big) == .refuse) }
        #expect(state.admit(big) == .close)
    }

    @Test func oneRequestIsAlwaysAdmittedWhateverItCosts() {
        var state = ClusterConnectionState(
            limits: ClusterConnectionState.Limits(maxPendingRequests: 4, maxPendingBytes: 10, maxRefusals: 0)
        )
        #expect(state.admit(message(#"{"type":"message","to":"bob","data":"far over ten bytes"}"#)) == .queued)
        #expect(state.admit(message(#"{"type":"ping"}"#)) == .close)
    }

    @Test func aCloseWhileRedisIsUnreachableReleasesEverythingQueuedAtOnce() {
        var state = ClusterConnectionState(limits: Self.limits)
        _ = state.opened(alice, replay: [], through: 0)
        for _ in 0..<4 { #expect(state.admit(message(#"{"type":"message","to":"bob","data":"x"}"#)) == .queued) }
        // The first request is being carried out (it waits for Redis); three wait in the queue.
        guard case .request(_, let inFlight) = state.next() else {
            Issue.record("expected a request")
            return
        }
        state.socketDidClose(keepSession: true, redisReachable: false)
        #expect(state.pendingRequests == 1)
        #expect(state.pendingBytes == inFlight)
        state.finished(cost: inFlight)
        #expect(state.pendingRequests == 0 && state.pendingBytes == 0)
        guard case .finish(let close) = state.next() else {
            Issue.record("expected the connection's task to finish")
            return
        }
        #expect(close == .detach(peer: "alice"))
    }

    @Test func requestsOfADetachedConnectionAreDroppedAndReleased() {
        var state = ClusterConnectionState(limits: Self.limits)
        for _ in 0..<3 { #expect(state.admit(message(#"{"type":"ping"}"#)) == .queued) }
        _ = state.opened(alice, replay: [], through: 0)
        state.closing(.idTaken)
        guard case .wait = state.next() else {
            Issue.record("the queued requests are dropped, not carried out")
            return
        }
        #expect(state.pendingRequests == 0 && state.pendingBytes == 0)
    }
}
