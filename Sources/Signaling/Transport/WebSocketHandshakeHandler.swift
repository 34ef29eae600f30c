import Crypto
import NIOCore

/// What the fast path needs from the server: the HTTP pipeline to fall back to, the count of a trusted
/// proxy's client and the WebSocket handler to install.
protocol WebSocketHandshakeHost: AnyObject, Sendable {
    /// Adds the HTTP pipeline (decoder, encoder, gatekeeper, upgrader, router) at the end of the
    /// pipeline; its handshake timeout fires at `deadline`. `overCapacity`: the connection is over a
    /// connection cap, and its request is answered 503.
    func addHTTPHandlers(_ channel: any Channel, overCapacity: Bool, deadline: NIODeadline) throws
    /// For a trusted proxy's connection: the client its request names (`forwardedFor`, the request's
    /// `X-Forwarded-For` values; ``TrustedProxies``), counted against the per-IP cap until the connection
    /// closes. Nil when the cap refuses that client: the request is answered 503.
    func admitForwardedClient(_ channel: any Channel, forwardedFor: [String]) -> String?
    /// Adds the WebSocket handler for `request` at the end of the pipeline: now (nil), or once its token
    /// is checked (the future). The handler releases `connectionSlot` (when given) as it is removed.
    func upgrade(
        _ channel: any Channel,
        _ request: UpgradeRequest,
        connectionSlot: ConnectionLimiter?
    ) throws -> EventLoopFuture<Void>?
}

/// First handler of a connection (behind TLS, if any): a well-formed WebSocket upgrade
/// (``WebSocketHandshakeReader``) is answered with `101` here, and the handler swaps itself for
/// ``WebSocketHandler``: one handler added and removed per connection instead of NIO's five HTTP ones.
/// Anything else goes to the HTTP pipeline exactly as before: the handler installs it behind itself,
/// passes on every byte received so far and leaves. Until then it keeps the handshake timeout and closes
/// the connection when the server starts to quiesce.
///
/// It holds the connection's ``ConnectionLimiter`` slot and hands it on: to the ``WebSocketHandler``
/// once that is added, to a close-future callback when it falls back to HTTP, and releases it itself
/// when the connection closes before either. On a trusted proxy's connection (`proxied`) that slot is the
/// total's alone: the client the upgrade request names is counted before the `101`
/// (``WebSocketHandshakeHost/admitForwardedClient(_:forwardedFor:)``), and a client at its per-IP cap gets
/// the HTTP pipeline's 503 instead.
final class WebSocketHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler, NIOScheduledCallbackHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum Phase {
        /// Reading the request head.
        case reading
        /// `101` sent; waiting for the WebSocket handler (a token being checked); frames are kept.
        case upgrading
        /// Handed over (or closed): passing everything on until removed.
        case done
    }

    private let host: any WebSocketHandshakeHost
    private var reader: WebSocketHandshakeReader
    private let deadline: NIODeadline
    private var phase = Phase.reading
    /// What arrived and is not handed on yet: a head that came in pieces, frames sent during `upgrading`.
    private var received: ByteBuffer?
    /// The handshake timeout (a scheduled callback: no promise or closure per connection).
    private var timer: NIOScheduledCallback?
    private var context: ChannelHandlerContext?
    /// The connection's slot while this handler holds it (nil once handed on).
    private var connectionSlot: ConnectionLimiter?
    /// A trusted proxy's connection: its client is read from the request and counted at the upgrade.
    private let proxied: Bool

    init(
        host: any WebSocketHandshakeHost,
        rules: WebSocketHandshakeReader.Rules,
        deadline: NIODeadline,
        limiter: ConnectionLimiter?,
        proxied: Bool = false
    ) {
        self.host = host
        self.reader = WebSocketHandshakeReader(rules: rules, readsForwardedFor: proxied)
        self.deadline = deadline
        self.connectionSlot = limiter
        self.proxied = proxied
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        do {
            timer = try context.eventLoop.assumeIsolated().scheduleCallback(at: deadline, handler: self)
        } catch {
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimer()
        self.context = nil
        // Still held: the connection closed before the slot was handed on.
        connectionSlot.take()?.release(for: context.channel)
    }

    func handleScheduledCallback(eventLoop: some EventLoop) {
        timer = nil
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch phase {
        case .done:
            context.fireChannelRead(data)
        case .upgrading:
            self.keep(Self.unwrapInboundIn(data))
        case .reading:
            self.keep(Self.unwrapInboundIn(data))
            let outcome = received!.withUnsafeReadableBytes { reader.read($0) }
            switch outcome {
            case .needMore:
                break
            case .fallBack:
                self.fallBack(context: context, overCapacity: false)
            case .upgrade(var request, let accept, let headLength):
                if proxied {
                    guard let client = host.admitForwardedClient(context.channel, forwardedFor: request.forwardedFor)
                    else {
                        // The client is at its per-IP cap: the HTTP pipeline answers the request 503, as it
                        // answers a connection refused at accept.
                        return self.fallBack(context: context, overCapacity: true)
                    }
                    request.client = client
                }
                received!.moveReaderIndex(forwardBy: headLength)
                self.upgrade(context: context, request: request, accept: accept)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Like the HTTP gatekeeper: a connection that has not sent a whole request yet is closed.
        if event is ChannelShouldQuiesceEvent, phase == .reading {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func keep(_ bytes: ByteBuffer) {
        if received == nil {
            received = bytes
        } else {
            var bytes = bytes
            received!.writeBuffer(&bytes)
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    /// Installs the HTTP pipeline, gives it what was read and leaves.
    private func fallBack(context: ChannelHandlerContext, overCapacity: Bool) {
        phase = .done
        self.cancelTimer()
        if let slot = connectionSlot.take() {
            let key = slot.key(for: context.channel)
            context.channel.closeFuture.whenComplete { _ in slot.release(key) }
        }
        do {
            try host.addHTTPHandlers(context.channel, overCapacity: overCapacity, deadline: deadline)
        } catch {
            context.close(promise: nil)
            return
        }
        if let bytes = received {
            received = nil
            context.fireChannelRead(Self.wrapInboundOut(bytes))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func upgrade(context: ChannelHandlerContext, request: UpgradeRequest, accept: Insecure.SHA1Digest) {
        phase = .upgrading
        self.cancelTimer()
        var response = context.channel.allocator.buffer(capacity: 129)
        WebSocketHandshakeReader.writeSwitchingProtocols(accept: accept, into: &response)
        // Not flushed yet: a session's `welcome` goes out in the same write.
        context.write(NIOAny(response), promise: nil)
        let pending: EventLoopFuture<Void>?
        do {
            pending = try host.upgrade(context.channel, request, connectionSlot: connectionSlot)
        } catch {
            return self.upgraded(context: context, result: .failure(error), afterRead: false)
        }
        guard let pending else {
            return self.upgraded(context: context, result: .success(()), afterRead: false)
        }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        pending.whenComplete { result in
            loopBound.value.upgraded(context: contextBound.value, result: result, afterRead: true)
        }
    }

    /// `afterRead`: not called from `channelRead`, so no `channelReadComplete` follows by itself.
    private func upgraded(context: ChannelHandlerContext, result: Result<Void, any Error>, afterRead: Bool) {
        phase = .done
        context.flush()
        guard case .success = result else {
            context.close(promise: nil)
            return
        }
        // The WebSocket handler is in the pipeline and releases the slot from now on.
        connectionSlot = nil
        if let frames = received {
            received = nil
            if frames.readableBytes > 0 {
                context.fireChannelRead(Self.wrapInboundOut(frames))
                if afterRead { context.fireChannelReadComplete() }
            }
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
