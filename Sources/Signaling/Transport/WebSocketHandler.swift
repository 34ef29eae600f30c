import CoreMetrics
import Logging
import NIOCore
import NIOWebSocket

/// Reads WebSocket frames (``InboundFrameReader``) and writes them (``ServerFrameEncoding``), and
/// translates them to hub events and hub decisions back to frames, and owns the connection-
/// level protocol: UTF-8 validation, ping/pong, the close handshake, heartbeats, rate limiting and the
/// bounded outbound queue. Every decision about sessions and rooms is the hub's.
final class WebSocketHandler: ChannelInboundHandler, HeartbeatSweep.Member, OutboxDrainer {
    typealias InboundIn = ByteBuffer
    /// Frames are encoded here (``ServerFrameEncoding``), so what goes down the pipeline is bytes.
    typealias OutboundOut = ByteBuffer

    /// Payloads up to this size are copied next to their frame header (one buffer, one write); larger
    /// ones (echoed messages) are written as they are after a header buffer.
    private static let copyLimit = 8192

    /// The hub of a `/ws` session; nil for `/echo`.
    private let hub: (any SessionHub)?
    /// What the session is opened with, until ``handlerAdded(context:)`` has opened it (then let go, so
    /// an open connection does not keep its upgrade request).
    private var opening: Opening?
    private let shared: WebSocketShared
    private var settings: WebSocketSettings { shared.settings }
    private var metrics: HubMetrics { shared.metrics }
    private var logger: Logger { shared.logger }
    private let sweep: HeartbeatSweep
    var sweepSlot: Int?
    private var handshake = CloseHandshake()
    private var reader: InboundFrameReader
    /// After the server's close frame (while the stream can be parsed): looks for the client's close frame.
    private var closingScanner: ClosingFrameScanner?
    private var lastInbound = NIODeadline.now()
    private var lastPing = NIODeadline.now()
    /// Between a `channelRead` and its `channelReadComplete`: flushes wait for the end of the batch.
    private var reading = false
    private var flushPending = false
    /// After the server's close frame: when the handshake next decides whether to close the socket.
    private var closeTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var connection: ConnectionID?
    private var peer: String?
    private var outbox: Outbox?
    private var rate: RateLimiter
    /// Bytes the handler wrote itself (error replies, echoes) since the socket stopped being writable.
    private var unwritableBytes = 0
    /// The payload of the latest ping not answered yet because the socket was not writable.
    private var pendingPong: ByteBuffer?
    /// Released when the handler is removed (the connection closed), if it holds the connection's slot.
    private var connectionSlot: ConnectionLimiter?

    init(
        role: WebSocketRole,
        shared: WebSocketShared,
        sweep: HeartbeatSweep,
        connectionSlot: ConnectionLimiter? = nil
    ) {
        let settings = shared.settings
        switch role {
        case .echo:
            self.hub = nil
        case .session(let hub, let request, let refusal):
            self.hub = hub
            self.opening = Opening(request: request, refusal: refusal)
        }
        self.shared = shared
        self.sweep = sweep
        self.connectionSlot = connectionSlot
        self.reader = InboundFrameReader(
            maxFrameSize: settings.maxFrameBytes,
            maxMessageBytes: settings.maxMessageBytes,
            maxFragments: settings.maxFragments
        )
        self.rate = RateLimiter(policy: shared.ratePolicy, now: NIODeadline.now().uptimeNanoseconds)
    }

    private final class Opening {
        let request: OpenRequest
        let refusal: Refusal?

        init(request: OpenRequest, refusal: Refusal?) {
            self.request = request
            self.refusal = refusal
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.lastInbound = .now()
        self.lastPing = .now()
        // Visited once per check period (at least every quarter of the timeout, and at every ping
        // interval) by the event loop's sweep, so a dead connection is dropped within about
        // timeout + timeout/4.
        sweep.add(self)
        metrics.connectionsOpened.increment()

        guard let hub, let opening = self.opening.take() else { return }
        let (request, refusal) = (opening.request, opening.refusal)
        let outbox = Outbox(limit: settings.outboundQueueBytes, drainer: self, on: context.eventLoop)
        self.outbox = outbox
        if let refusal {
            metrics.errors[refusal.code]?.increment()
            self.write(refusal.errorMessage(id: nil))
            self.initiateClose(refusal.close.code, reason: refusal.message)
            return
        }
        let connection = hub.makeConnectionID()
        self.connection = connection
        let outcome = hub.open(connection, outbox: outbox, request: request)
        switch outcome {
        case .opened(let peer, let resumed, let gap, let replayed):
            self.peer = peer
            logger.debug(
                "session open",
                metadata: self.logMetadata([
                    "resumed": "\(resumed)", "gap": "\(gap)", "replayed": "\(replayed)",
                    "client.address": "\(request.client ?? "unknown")",
                ])
            )
        case .refused(let code):
            logger.debug(
                "session refused",
                metadata: self.logMetadata([
                    "close.code": "\(code.rawValue)", "client.address": "\(request.client ?? "unknown")",
                ])
            )
        case .pending:
            logger.debug(
                "session opening",
                metadata: self.logMetadata(["client.address": "\(request.client ?? "unknown")"])
            )
        }
        self.drainOutbox()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stopTimers()
        self.context = nil
        // The outbox's wake-up refers to this handler: letting go of the outbox here breaks that cycle,
        // or every closed connection's handler and outbox would stay in memory.
        self.outbox = nil
        connectionSlot.take()?.release(for: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stopTimers()
        self.handshake.socketClosed()
        let keep: Bool
        if let code = handshake.serverCode {
            keep = code.keepsSession
            metrics.recordClose(code.rawValue)
        } else if handshake.clientClosed {
            keep = false
            metrics.recordClose(handshake.clientCode ?? 1000)
        } else {
            keep = true
            metrics.recordClose(1006)
        }
        if let hub, let connection {
            hub.closed(connection, keepSession: keep)
            logger.debug("connection closed", metadata: self.logMetadata(["session.kept": "\(keep)"]))
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            unwritableBytes = 0
            if let payload = pendingPong, case .open = handshake.state {
                pendingPong = nil
                self.writeFrame(.pong, payload, flush: true)
            }
            self.drainOutbox()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            self.initiateClose(.goingAway, reason: "server shutting down")
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let violation = WebSocketViolation(error) else {
            // I/O errors: the connection is gone; the session waits for a resume.
            logger.debug("connection error", metadata: self.logMetadata(["error": "\(error)"]))
            context.close(promise: nil)
            return
        }
        self.receivedViolation(violation)
    }

    private func receivedViolation(_ violation: WebSocketViolation) {
        logger.debug(
            "protocol violation",
            metadata: self.logMetadata([
                "close.code": "\(violation.code.rawValue)", "close.reason": "\(violation.reason)",
            ])
        )
        self.initiateClose(violation.code, reason: violation.reason, inboundUsable: violation.inboundUsable)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.reading = true
        guard case .open = handshake.state else {
            self.readWhileClosing(Self.unwrapInboundIn(data))
            return
        }
        reader.append(Self.unwrapInboundIn(data))
        // The reader has unmasked every frame and checked it (masking, reserved bits and opcodes,
        // fragmentation, size, UTF-8 of text), and joined the fragments of each message.
        while context.channel.isActive, let event = reader.next(allocator: context.channel.allocator) {
            switch event {
            case .message(let opcode, let payload), .control(let opcode, let payload):
                self.receivedFrame(opcode, payload, context: context)
            case .violation(let violation):
                self.receivedViolation(violation)
            case .dropped:
                break  // a data frame after a violation: the server's close frame is out, nothing is processed
            }
        }
    }

    /// What arrives after the server's close frame is not processed, only read (see `CloseHandshake`): for
    /// the client's close frame while the stream can be parsed, else just for when it arrived.
    private func readWhileClosing(_ bytes: ByteBuffer) {
        switch handshake.state {
        case .closing:
            guard let scanner = closingScanner else { return }
            switch scanner.scan(bytes) {
            case .needMore:
                break
            case .close(let payload):
                closingScanner = nil
                self.receivedClose(payload)
            case .unreadable:
                closingScanner = nil
                self.initiateClose(.protocolError, reason: "invalid frame", inboundUsable: false)
            }
        case .draining:
            handshake.receivedBytes(now: NIODeadline.now().uptimeNanoseconds)
        case .open, .closed:
            break
        }
    }

    private func receivedFrame(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        self.lastInbound = .now()
        if opcode == .connectionClose {
            self.receivedClose(payload)
            return
        }
        // After the server's close frame, frames are read only to find the client's: the rest is dropped.
        guard case .open = handshake.state else { return }
        switch opcode {
        case .text:
            metrics.bytesIn.increment(by: payload.readableBytes)
            guard payload.readableBytes <= settings.maxMessageBytes else {
                self.initiateClose(.messageTooBig, reason: "message too big")
                return
            }
            self.receivedText(payload)
        case .binary:
            if hub == nil {
                self.sendDirect(.binary, payload)
            } else {
                self.initiateClose(.unsupportedData, reason: "binary frames are not accepted")
            }
        case .ping:
            // A client that pings without reading must not pile up pongs: while the socket is not
            // writable only the latest ping is remembered and answered later (RFC 6455 §5.5.3 allows it).
            if context.channel.isWritable {
                self.writeFrame(.pong, payload, flush: true)
            } else {
                pendingPong = payload
            }
        case .pong:
            break
        default:
            self.initiateClose(.protocolError, reason: "unexpected frame")
        }
    }

    private func receivedText(_ text: ByteBuffer) {
        guard let hub, let connection else {
            self.sendDirect(.text, text)
            return
        }
        metrics.messagesIn.increment()
        // Decoded first so that even a refusal names the request it refuses.
        let decoded = settings.decoder.decode(text)
        switch rate.take(now: NIODeadline.now().uptimeNanoseconds, policy: shared.ratePolicy) {
        case .allow: break
        case .refuse:
            let id: String?
            switch decoded {
            case .success(let message): id = message.id
            case .failure(let error): id = error.requestID
            }
            metrics.errors[.rateLimited]?.increment()
            self.sendDirect(.text, Refusal.rateLimited(perSecond: settings.ratePerSecond).errorMessage(id: id))
            return
        case .disconnect:
            self.initiateClose(.policyViolation, reason: "rate limit exceeded")
            return
        }
        switch decoded {
        case .success(let message):
            hub.receive(connection, message)
            self.drainOutbox()
        case .failure(let error):
            metrics.errors[error.code]?.increment()
            self.sendDirect(.text, ServerMessage.error(error))
        }
    }

    /// A close frame from the client: the handshake decides whether to answer it; then the socket closes.
    private func receivedClose(_ payload: ByteBuffer) {
        guard let context else { return }
        switch handshake.receivedClose(payload) {
        case .reply(let code):
            var data = context.channel.allocator.buffer(capacity: 2)
            if let code { data.writeInteger(code) }
            self.writeCloseFrame(data, context: context, thenClose: true)
        case .closeSocket:
            closeTimer?.cancel()
            closeTimer = nil
            context.close(promise: nil)
        case .ignore:
            break
        }
    }

    /// Sends a close frame and stops processing messages, but keeps reading (and discarding) what the
    /// client sends until its close frame or the close timeout — also after a framing error, when no close
    /// frame can be read any more and the socket closes once the client is quiet. Closing a socket that
    /// still holds unread data would reset the connection and throw away the errors and the close frame the
    /// client has not read yet (see `CloseHandshake`).
    func initiateClose(_ code: CloseCode, reason: String, inboundUsable: Bool = true) {
        guard let context else { return }
        let action = handshake.initiate(
            code,
            reason: reason,
            inboundUsable: inboundUsable,
            now: NIODeadline.now().uptimeNanoseconds,
            closeTimeout: UInt64(max(0, settings.closeTimeout.nanoseconds))
        )
        if case .send(let code, let reason) = action {
            var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
            data.writeInteger(code.rawValue)
            data.writeString(reason)
            self.writeCloseFrame(data, context: context, thenClose: false)
        }
        self.scheduleCloseCheck(context: context)
        guard case .closing = handshake.state, closingScanner == nil, case .send = action else { return }
        // From here on the stream is only scanned for the client's close frame, starting with whatever the
        // reader had not parsed yet (the rest of this read, a partial frame).
        let scanner = ClosingFrameScanner()
        closingScanner = scanner
        if let rest = reader.takeUnparsed() {
            self.readWhileClosing(rest)
        }
    }

    /// Asks the handshake again at its next check (the close timeout, or the end of a quiet period).
    private func scheduleCloseCheck(context: ChannelHandlerContext) {
        guard let next = handshake.nextCheck else { return }
        closeTimer?.cancel()
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        closeTimer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(next)) {
            loopBound.value.closeCheckDue()
        }
    }

    private func closeCheckDue() {
        closeTimer = nil
        guard let context else { return }
        switch handshake.tick(now: NIODeadline.now().uptimeNanoseconds) {
        case .closeSocket:
            context.close(promise: nil)
        case .checkAgain:
            self.scheduleCloseCheck(context: context)
        case .none:
            break
        }
    }

    private func writeCloseFrame(_ data: ByteBuffer, context: ChannelHandlerContext, thenClose: Bool) {
        var frame = context.channel.allocator.buffer(
            capacity: ServerFrameEncoding.frameLength(payload: data.readableBytes)
        )
        ServerFrameEncoding.writeFrame(.connectionClose, payload: data, to: &frame)
        guard thenClose else {
            context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
            return
        }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(Self.wrapOutboundOut(frame)).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }

    /// Writes what the hub queued for this connection.
    func drainOutbox() {
        guard let outbox, let context, case .open = handshake.state else { return }
        if outbox.isOverflowed {
            self.initiateClose(.tryAgainLater, reason: "slow consumer: outbound queue full")
            return
        }
        guard context.channel.isWritable else { return }
        var items: [Outbox.Item] = []
        swap(&items, &sweep.drainScratch)
        defer {
            items.removeAll(keepingCapacity: true)
            swap(&items, &sweep.drainScratch)
        }
        if outbox.take(swapping: &items) {
            self.initiateClose(.tryAgainLater, reason: "slow consumer: outbound queue full")
            return
        }
        guard !items.isEmpty else { return }
        // Every message up to the first close goes out as one buffer of frames (one write).
        var batchBytes = 0
        var payloadBytes = 0
        for item in items {
            guard let size = item.size else { break }
            payloadBytes += size
            batchBytes += ServerFrameEncoding.frameLength(payload: size)
        }
        if batchBytes > 0 {
            var batch = context.channel.allocator.buffer(capacity: batchBytes)
            frames: for item in items {
                switch item {
                case .text(let buffer):
                    ServerFrameEncoding.writeFrame(.text, payload: buffer, to: &batch)
                case .ack(let ack):
                    ServerFrameEncoding.writeHeader(.text, payload: ack.length, to: &batch)
                    ack.write(to: &batch)
                case .close:
                    break frames
                }
            }
            metrics.bytesOut.increment(by: payloadBytes)
            context.write(Self.wrapOutboundOut(batch), promise: nil)
        }
        for item in items {
            if case .close(let code, let reason) = item {
                self.flush()
                self.initiateClose(code, reason: reason)
                return
            }
        }
        self.flush()
    }

    func heartbeatTick() {
        guard let context, case .open = handshake.state else { return }
        let now = NIODeadline.now()
        if now - lastInbound > settings.heartbeatTimeout {
            logger.debug("heartbeat timeout", metadata: self.logMetadata())
            context.close(promise: nil)  // a dead peer cannot take a close frame: treat as a drop
            return
        }
        guard now - lastPing >= settings.heartbeatInterval else { return }
        lastPing = now
        self.writeFrame(.ping, ByteBuffer(), flush: true)
    }

    /// Writes a reply the handler makes itself (error replies, echoes), outside the hub's bounded outbox.
    /// While the socket is not writable these count against the same budget as the outbox
    /// (`outboundQueueBytes`); past it the client is a slow consumer and is closed with 1013, so a client
    /// that sends without reading cannot make the server buffer replies without bound.
    private func sendDirect(_ opcode: WebSocketOpcode, _ data: ByteBuffer) {
        guard let context, case .open = handshake.state else { return }
        if !context.channel.isWritable {
            unwritableBytes += data.readableBytes
            guard unwritableBytes <= settings.outboundQueueBytes else {
                self.initiateClose(.tryAgainLater, reason: "slow consumer: outbound queue full")
                return
            }
        }
        metrics.bytesOut.increment(by: data.readableBytes)
        self.writeFrame(opcode, data, flush: true)
    }

    private func write(_ text: ByteBuffer) {
        metrics.bytesOut.increment(by: text.readableBytes)
        self.writeFrame(.text, text, flush: false)
    }

    /// Flushes now, or — while a batch of reads is being handled — once at the end of the batch, so a
    /// client's burst of requests is answered with one `writev` instead of one per reply.
    private func flush() {
        guard let context else { return }
        guard reading else {
            context.flush()
            return
        }
        if !flushPending {
            flushPending = true
            // Runs once the event loop has handled every socket that was ready in this round (see
            // `channelReadComplete`), also for frames delivered without a `channelReadComplete` (e.g.
            // replayed by the upgrader).
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute { loopBound.value.drainOutboxAfterWake() }
        }
    }

    /// A wake-up from the hub runs between read batches: any flush deferred by a batch whose
    /// `channelReadComplete` never came (e.g. frames replayed by the upgrader) goes out now too.
    func drainOutboxAfterWake() {
        reading = false
        drainOutbox()
        if flushPending {
            flushPending = false
            context?.flush()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A pending flush is not done here but by the task `flush()` scheduled, which runs once the event
        // loop has handled every socket that was ready: what this connection is sent by the others in the
        // same round (relayed signals) then goes out in the same `writev` as its own acks.
        reading = false
        context.fireChannelReadComplete()
    }

    private func writeFrame(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, flush: Bool) {
        guard let context else { return }
        let length = payload.readableBytes
        if length <= Self.copyLimit {
            var frame = context.channel.allocator.buffer(capacity: ServerFrameEncoding.frameLength(payload: length))
            ServerFrameEncoding.writeFrame(opcode, payload: payload, to: &frame)
            context.write(Self.wrapOutboundOut(frame), promise: nil)
        } else {
            var header = context.channel.allocator.buffer(capacity: ServerFrameEncoding.headerLength(payload: length))
            ServerFrameEncoding.writeHeader(opcode, payload: length, to: &header)
            context.write(Self.wrapOutboundOut(header), promise: nil)
            context.write(Self.wrapOutboundOut(payload), promise: nil)
        }
        if flush { self.flush() }
    }

    /// `connection.id` and `peer.id` (once known) with `extra`, for a log line about this connection.
    private func logMetadata(_ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        var metadata = extra
        if let connection { metadata["connection.id"] = "\(connection)" }
        if let peer { metadata["peer.id"] = "\(peer)" }
        return metadata
    }

    private func stopTimers() {
        sweep.remove(self)
        closeTimer?.cancel()
        closeTimer = nil
        closingScanner = nil
    }
}
