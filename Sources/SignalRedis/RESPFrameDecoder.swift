import NIOCore

/// Turns the bytes a Redis server sends into ``RESPValue``s in a channel pipeline
/// (`ByteToMessageHandler(RESPFrameDecoder())`). It only translates; ``RESPDecoder`` does the parsing.
struct RESPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue

    private var decoder: RESPDecoder

    init(limits: RESPDecoder.Limits = RESPDecoder.Limits()) {
        decoder = RESPDecoder(limits: limits)
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let value = try decoder.decode(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(value))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // A value cut off by the close is lost with the connection; the command handler fails its
        // command with `connectionClosed`.
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}
