import NIOCore
import Signaling

/// One load-generator WebSocket connection: a lean client that writes the upgrade request, checks the
/// 101, decodes server frames in place and hands each text message to its ``LoopDriver``.
///
/// Writes go to a per-connection buffer; the driver flushes every connection that wrote something once
/// per event-loop iteration, so a burst of sends costs one `writev` per connection, not one per message.
final class BenchConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase {
        case idle, connecting, upgrading, open, closing, closed
    }

    unowned let driver: LoopDriver
    /// Index in the driver's `connections`.
    let index: Int
    /// Global index across all loops (decides the source address and room).
    let globalIndex: Int
    /// The server it connects to: an index in the plan's `targets`.
    let target: Int
    /// Scenario slot: the pair, room or probe this connection belongs to.
    var slot = -1
    /// Whether this connection starts the scenario's exchanges (the offerer of a pair).
    var initiator = false
    var phase = Phase.idle
    /// Upgraded and, for sessions, welcomed and joined.
    var ready = false
    /// Counted as failed (refused, dropped or closed by the server) — counted once.
    var failed = false
    /// The peer id from `welcome`.
    var peer = ""
    /// The highest `seq` of the presence events received (the connect scenario confirms it), and of every
    /// message when the load confirms (`bench relay --confirm-every`).
    var lastSeq: UInt64 = 0
    /// The highest `seq` this session confirmed with `received`.
    var confirmedSeq: UInt64 = 0
    /// When the connect started (monotonic nanoseconds).
    var startedAt: UInt64 = 0
    /// Templates this connection sends, set by the scenario.
    var templates: [FrameTemplate] = []
    var nextID: UInt32 = 0

    private var context: ChannelHandlerContext?
    private var outbound: ByteBuffer?
    private var inbound: ByteBuffer?
    private var fragments: ByteBuffer?
    private var closeAfterRead = false

    init(driver: LoopDriver, index: Int, globalIndex: Int, target: Int) {
        self.driver = driver
        self.index = index
        self.globalIndex = globalIndex
        self.target = target
    }

    // MARK: Sending

    /// Queues a stamped frame; it goes out with the driver's next flush.
    func send(_ template: FrameTemplate, stamp: UInt64) {
        guard let context, phase == .open else { return }
        if outbound == nil {
            outbound = context.channel.allocator.buffer(capacity: max(1024, template.bytes.count * 4))
            driver.markDirty(self)
        }
        nextID &+= 1
        template.write(to: &outbound!, stamp: stamp, id: nextID)
    }

    /// Writes and flushes what was queued.
    func flush() {
        guard let context, let buffer = outbound else { return }
        outbound = nil
        context.writeAndFlush(Self.wrapOutboundOut(buffer), promise: nil)
    }

    /// Starts the close handshake (code 1000); the server answers and closes the socket.
    func close() {
        guard let context else { return }
        switch phase {
        case .open:
            phase = .closing
            var buffer = context.channel.allocator.buffer(capacity: 8)
            buffer.writeBytes(FrameTemplate.close(code: 1000).bytes)
            if let pending = outbound {
                outbound = nil
                context.write(Self.wrapOutboundOut(pending), promise: nil)
            }
            context.writeAndFlush(Self.wrapOutboundOut(buffer), promise: nil)
        case .connecting, .upgrading:
            phase = .closing
            context.close(promise: nil)
        default:
            break
        }
    }

    // MARK: ChannelInboundHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        phase = .upgrading
        let upgradeRequest = driver.plan.targets[target].upgradeRequest
        var request = context.channel.allocator.buffer(capacity: upgradeRequest.count)
        request.writeBytes(upgradeRequest)
        context.writeAndFlush(Self.wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let wasClosing = phase == .closing
        phase = .closed
        driver.connectionClosed(self, expected: wasClosing)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if phase != .closing { driver.connectionError(self, ClientTLS.describe(error) ?? "\(error)") }
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        var buffer: ByteBuffer
        if var pending = inbound {
            inbound = nil
            pending.writeBuffer(&incoming)
            buffer = pending
        } else {
            buffer = incoming
        }
        if phase == .upgrading {
            guard self.readUpgradeResponse(&buffer) else {
                if phase == .upgrading { inbound = buffer }
                return
            }
        }
        self.readFrames(&buffer)
        if buffer.readableBytes > 0 {
            if buffer.readerIndex > 65536 { buffer.discardReadBytes() }
            inbound = buffer
        }
        if closeAfterRead {
            closeAfterRead = false
            self.flush()
            context.close(promise: nil)
        }
    }

    // MARK: Upgrade

    /// Reads the HTTP response once complete; returns true when the connection is open.
    private func readUpgradeResponse(_ buffer: inout ByteBuffer) -> Bool {
        let verdict: (headLength: Int, refusal: String?)? = buffer.withUnsafeReadableBytes { raw in
            guard let headLength = UpgradeResponse.headLength(raw) else { return nil }
            let head = UnsafeRawBufferPointer(rebasing: raw[..<headLength])
            return (headLength, UpgradeResponse.refusal(head, expectedAccept: ConnectionPlan.expectedAccept))
        }
        guard let verdict else {
            if buffer.readableBytes > 16384 { self.fail("upgrade response too long") }
            return false
        }
        if let refusal = verdict.refusal {
            self.fail(refusal)
            return false
        }
        buffer.moveReaderIndex(forwardBy: verdict.headLength)
        phase = .open
        driver.connectionUpgraded(self)
        return true
    }

    private func fail(_ reason: String) {
        phase = .closing
        driver.connectionError(self, reason)
        context?.close(promise: nil)
    }

    // MARK: Frames

    private func readFrames(_ buffer: inout ByteBuffer) {
        while phase == .open || phase == .closing {
            let header: (length: Int, payload: Int, opcode: UInt8, fin: Bool, masked: Bool)? =
                buffer.withUnsafeReadableBytes { raw in
                    guard raw.count >= 2 else { return nil }
                    let fin = raw[0] & 0x80 != 0
                    let opcode = raw[0] & 0x0F
                    let masked = raw[1] & 0x80 != 0
                    var length = 2
                    var payload = Int(raw[1] & 0x7F)
                    if payload == 126 {
                        guard raw.count >= 4 else { return nil }
                        payload = Int(raw[2]) << 8 | Int(raw[3])
                        length = 4
                    } else if payload == 127 {
                        guard raw.count >= 10 else { return nil }
                        var value = 0
                        for index in 2..<10 { value = value << 8 | Int(raw[index]) }
                        payload = value
                        length = 10
                    }
                    if masked { length += 4 }
                    return (length, payload, opcode, fin, masked)
                }
            guard let header, buffer.readableBytes >= header.length + header.payload else { return }
            if header.masked {
                self.fail("server sent a masked frame")
                return
            }
            buffer.withUnsafeReadableBytes { raw in
                let payload = UnsafeRawBufferPointer(rebasing: raw[header.length..<(header.length + header.payload)])
                self.receivedFrame(opcode: header.opcode, fin: header.fin, payload: payload)
            }
            buffer.moveReaderIndex(forwardBy: header.length + header.payload)
            if closeAfterRead { return }
        }
    }

    private func receivedFrame(opcode: UInt8, fin: Bool, payload: UnsafeRawBufferPointer) {
        switch opcode {
        case 0x1 where fin:
            driver.received(self, payload)
        case 0x1, 0x2:
            fragments = context?.channel.allocator.buffer(bytes: payload)
            if opcode == 0x2 { driver.connectionError(self, "binary frame from server") }
        case 0x0:
            guard var fragments else {
                driver.connectionError(self, "continuation without a first fragment")
                return
            }
            fragments.writeBytes(payload)
            if fin {
                self.fragments = nil
                fragments.withUnsafeReadableBytes { driver.received(self, $0) }
            } else {
                self.fragments = fragments
            }
        case 0x8:
            // A close from the server: answer it (if we did not start it) and close the socket.
            if phase != .closing {
                let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : 1005
                let reason =
                    payload.count > 2
                    ? String(decoding: UnsafeRawBufferPointer(rebasing: payload[2...]), as: UTF8.self) : ""
                driver.connectionError(self, "server closed the connection with \(code) \(reason)")
                if let context {
                    if outbound == nil { outbound = context.channel.allocator.buffer(capacity: 8) }
                    outbound!.writeBytes(FrameTemplate.close(code: code == 1005 ? 1000 : code).bytes)
                }
                phase = .closing
            }
            closeAfterRead = true
        case 0x9:
            // Ping: answer with a pong carrying the same payload.
            let pong = FrameTemplate(payload: Array(payload), opcode: 0xA)
            if let context {
                if outbound == nil {
                    outbound = context.channel.allocator.buffer(capacity: pong.bytes.count)
                    driver.markDirty(self)
                }
                outbound!.writeBytes(pong.bytes)
            }
        case 0xA:
            break
        default:
            self.fail("unknown opcode \(opcode) from server")
        }
    }
}
