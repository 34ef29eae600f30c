import NIOCore

/// One write to a Redis connection: the encoded bytes of one or more commands and what to do with their
/// replies. Commands are encoded by the caller (off the event loop) so the pipeline only moves bytes.
struct RedisRequest: Sendable {
    /// Where the replies go.
    enum Responder: Sendable {
        /// One reply (error replies included, as values).
        case one(EventLoopPromise<RESPValue>)
        /// `replies` replies, in order.
        case many(EventLoopPromise<[RESPValue]>)
        /// Replies are read and dropped (health-check `PING`).
        case discard

        func fail(_ error: RedisError) {
            switch self {
            case .one(let promise): promise.fail(error)
            case .many(let promise): promise.fail(error)
            case .discard: break
            }
        }
    }

    var bytes: ByteBuffer
    /// How many replies the commands in `bytes` produce. Zero for pub/sub commands, whose
    /// confirmations arrive as pushes.
    var replies: Int
    var responder: Responder
    /// When the caller gives up: the reply (or the connection, while Redis is unreachable) must come
    /// before this.
    var deadline: NIODeadline
    /// The timeout that set `deadline`, for error messages.
    var timeout: TimeAmount
}

/// Writes requests and matches replies to them in order (RESP has no request ids: the n-th reply
/// answers the n-th command), so any number of commands can be in flight on one connection.
///
/// It enforces deadlines with a single timer set to the earliest deadline in flight. When a command's
/// deadline passes, it fails with ``RedisError/Code/timeout`` but keeps its place in the queue: its reply
/// may still come, and must not be taken for the next command's, so it is read and dropped when it does.
/// The commands behind it keep their own deadlines (a server that is busy for a moment fails only the
/// commands it was too slow for). Only when a timed-out command's reply is still missing `lateReplyWait`
/// after its deadline, or the idle health check's `PING` times out, is the connection taken for dead: everything in flight fails with
/// ``RedisError/Code/connectionClosed``, the connection is closed and the owner reconnects.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct InFlight {
        var responder: RedisRequest.Responder
        var remaining: Int
        var values: [RESPValue]
        var sentAt: NIODeadline
        var deadline: NIODeadline
        var timeout: TimeAmount
        /// Timed out: its caller was answered; its replies are read and dropped.
        var abandoned = false

        /// When the timer must next look at this entry.
        func due(lateReplyWait: TimeAmount) -> NIODeadline {
            abandoned ? deadline + lateReplyWait : deadline
        }
    }

    private let address: String
    private let lateReplyWait: TimeAmount
    private let onRoundTrip: (@Sendable (Duration) -> Void)?
    /// Sees every value first, with whether a request is waiting for a reply, and returns true when it
    /// consumed the value (pub/sub messages and confirmations, which answer no queued request).
    private let onPush: ((RESPValue, Bool) -> Bool)?

    private var queue = CircularBuffer<InFlight>(initialCapacity: 16)
    private var closed = false
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private weak var context: ChannelHandlerContext?

    /// When the last bytes arrived from the server (for the idle health check).
    private(set) var lastRead = NIODeadline.uptimeNanoseconds(0)

    /// True when no reply is outstanding.
    var isIdle: Bool { queue.isEmpty }

    init(
        address: String,
        lateReplyWait: TimeAmount = .seconds(10),
        onRoundTrip: (@Sendable (Duration) -> Void)?,
        onPush: ((RESPValue, Bool) -> Bool)? = nil
    ) {
        self.address = address
        self.lateReplyWait = lateReplyWait
        self.onRoundTrip = onRoundTrip
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastRead = context.eventLoop.now
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(closedError())
        self.context = nil
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = Self.unwrapOutboundIn(data)
        guard !closed else {
            request.responder.fail(
                RedisError(
                    .notConnected,
                    "the connection to Redis at \(address) closed before the command was sent; it was not sent"
                )
            )
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if request.replies > 0 {
            var values: [RESPValue] = []
            if case .many = request.responder { values.reserveCapacity(request.replies) }
            queue.append(
                InFlight(
                    responder: request.responder,
                    remaining: request.replies,
                    values: values,
                    sentAt: onRoundTrip == nil ? request.deadline : context.eventLoop.now,
                    deadline: request.deadline,
                    timeout: request.timeout
                )
            )
            armTimer(for: request.deadline, context: context)
        }
        context.write(Self.wrapOutboundOut(request.bytes), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = Self.unwrapInboundIn(data)
        if let onPush, onPush(value, !queue.isEmpty) { return }
        guard var head = queue.popFirst() else {
            fail(
                context: context,
                .protocolError("Redis at \(address) sent a reply that no command was waiting for: \(value)")
            )
            return
        }
        head.remaining -= 1
        if head.abandoned {
            // The late reply of a command that timed out: its caller has its answer already.
            if head.remaining > 0 { queue.prepend(head) }
            return
        }
        switch head.responder {
        case .one(let promise):
            complete(head, context: context)
            promise.succeed(value)
        case .many(let promise):
            head.values.append(value)
            if head.remaining > 0 {
                queue.prepend(head)
            } else {
                complete(head, context: context)
                promise.succeed(head.values)
            }
        case .discard:
            if head.remaining > 0 {
                queue.prepend(head)
            } else {
                complete(head, context: context)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        lastRead = context.eventLoop.now
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(closedError())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let redisError =
            error as? RedisError
            ?? RedisError(
                .connectionClosed,
                "the connection to Redis at \(address) failed before the reply arrived (\(error)); "
                    + "the command may or may not have run",
                cause: "\(error)"
            )
        fail(context: context, redisError)
    }

    private func complete(_ entry: InFlight, context: ChannelHandlerContext) {
        if let onRoundTrip {
            onRoundTrip(.nanoseconds((context.eventLoop.now - entry.sentAt).nanoseconds))
        }
    }

    private func closedError() -> RedisError {
        RedisError(
            .connectionClosed,
            "the connection to Redis at \(address) closed before the reply arrived; the command may or may not have run",
            cause: "the connection was closed"
        )
    }

    /// Fails everything in flight with `error` and closes the connection.
    private func fail(context: ChannelHandlerContext, _ error: RedisError) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        closed = true
        timer?.cancel()
        timer = nil
        timerDeadline = nil
        while let entry = queue.popFirst() {
            // A timed-out command's caller was answered already.
            if !entry.abandoned { entry.responder.fail(error) }
        }
    }

    // MARK: - Deadlines

    private func armTimer(for deadline: NIODeadline, context: ChannelHandlerContext) {
        if let timerDeadline, timerDeadline <= deadline { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            self?.timerFired()
        }
    }

    private func timerFired() {
        timer = nil
        timerDeadline = nil
        guard !closed, let context else { return }
        let now = context.eventLoop.now
        var earliest: NIODeadline?
        var dead = false
        // Callers are answered after the pass over the queue: an answer runs the caller's callbacks at
        // once, and one that sends or closes would change the queue under the loop's indices.
        var timedOut: [(RedisRequest.Responder, RedisError)] = []
        defer { for (responder, error) in timedOut { responder.fail(error) } }
        for index in queue.indices {
            if queue[index].abandoned {
                if queue[index].deadline + lateReplyWait <= now {
                    dead = true
                    break
                }
            } else if queue[index].deadline <= now {
                let entry = queue[index]
                if case .discard = entry.responder {
                    // The idle health check's PING: a server that does not answer it is taken for gone.
                    dead = true
                    break
                }
                queue[index].abandoned = true
                timedOut.append(
                    (
                        entry.responder,
                        RedisError(
                            .timeout,
                            "no reply from Redis at \(address) within \(RedisConnectionCore.format(entry.timeout)); "
                                + "the command may or may not have run"
                        )
                    )
                )
            }
            let due = queue[index].due(lateReplyWait: lateReplyWait)
            earliest = min(earliest ?? due, due)
        }
        guard dead else {
            if let earliest { armTimer(for: earliest, context: context) }
            return
        }
        fail(
            context: context,
            RedisError(
                .connectionClosed,
                "the connection to Redis at \(address) was closed: a command's reply was still missing "
                    + "\(RedisConnectionCore.format(lateReplyWait)) after its deadline; the commands in flight "
                    + "may or may not have run"
            )
        )
    }
}
