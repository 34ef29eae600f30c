import Logging
import NIOCore

/// The longest frame a link reads now: ``LinkFrame/maxEncodedSize`` until the handshake is done, then
/// ``MeshWire/maxFrameBytes``. Shared by a link's frame decoder and its handler (one event loop).
final class FrameLimit {
    var maxBytes = LinkFrame.maxEncodedSize
}

/// Splits a byte stream into frames of a 4-byte big-endian length and that many bytes. A declared
/// length over the link's current limit closes the link before any of the frame is buffered.
struct MeshFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    struct FrameTooLarge: Error {
        var length: UInt32
        var limit: Int
    }

    let limit: FrameLimit

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= limit.maxBytes else { throw FrameTooLarge(length: length, limit: limit.maxBytes) }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// Runs a link's handshake, then turns frames into mesh messages for the transport.
final class MeshLinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let transport: MeshTransport
    private let role: LinkAuthenticator.Role
    private var handshake: LinkHandshake
    private var hello: [UInt8]?
    private var established: EventLoopPromise<MeshKey>?
    private var peer: MeshKey?
    private var timeout: Scheduled<Void>?
    private let limit: FrameLimit
    /// The remote IP whose handshake slot this link holds until it authenticates or closes (accepted
    /// links only).
    private var slot: String?
    private var closing = false

    init(
        transport: MeshTransport,
        role: LinkAuthenticator.Role,
        established: EventLoopPromise<MeshKey>?,
        limit: FrameLimit,
        slot: String?
    ) {
        self.transport = transport
        self.role = role
        self.established = established
        self.limit = limit
        self.slot = slot
        if role == .initiator {
            let (handshake, hello) = LinkHandshake.initiator(transport.authenticator)
            self.handshake = handshake
            self.hello = hello
        } else {
            self.handshake = LinkHandshake.responder(transport.authenticator)
        }
    }

    private func releaseSlot() {
        if let slot {
            transport.release(ip: slot)
            self.slot = nil
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let transport = self.transport
        timeout = context.eventLoop.scheduleTask(in: transport.limits.handshakeTimeout) {
            transport.refused(.timeout, remote: channel.remoteAddress)
            channel.close(promise: nil)
        }
        if let hello {
            context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: hello)), promise: nil)
            self.hello = nil
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        guard !closing else { return }
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        if let peer {
            do {
                transport.received(try MeshWire.decode(bytes), from: peer, bytes: bytes.count)
            } catch {
                transport.logger.warning(
                    "unreadable mesh message; closing the link",
                    metadata: ["node": "\(peer)", "error": "\(error)"]
                )
                closing = true
                context.close(promise: nil)
            }
            return
        }
        switch handshake.receive(bytes) {
        case .send(let frame):
            context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
        case .established(let node, let frame):
            timeout?.cancel()
            if let frame {
                context.writeAndFlush(
                    Self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)),
                    promise: nil
                )
            }
            guard transport.linkUp(node, context.channel) else {
                established?.fail(MeshIdentityError("the node at this address is banned for sending invalid data"))
                established = nil
                closing = true
                context.close(promise: nil)
                return
            }
            peer = node
            limit.maxBytes = MeshWire.maxFrameBytes
            releaseSlot()
            established?.succeed(node)
            established = nil
        case .failed(let reason):
            transport.refused(.handshake, remote: context.remoteAddress, detail: reason)
            established?.fail(MeshIdentityError(reason))
            established = nil
            closing = true
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        releaseSlot()
        established?.fail(MeshIdentityError("the link closed before it was authenticated"))
        established = nil
        if let peer { transport.linkClosed(peer, context.channel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if peer == nil, !closing {
            if let tooLarge = error as? MeshFrameDecoder.FrameTooLarge {
                transport.refused(
                    .frameTooLarge,
                    remote: context.remoteAddress,
                    detail: "\(tooLarge.length) bytes declared, at most \(tooLarge.limit) before authentication"
                )
            } else {
                transport.refused(.handshake, remote: context.remoteAddress, detail: "\(error)")
            }
        }
        closing = true
        context.close(promise: nil)
    }
}
