import NIOCore

/// A message on a node's channel.
enum NodeMessage: Equatable {
    /// `D conn seq message`: a sequenced message for connection `conn`.
    case deliver(ConnectionID, seq: UInt64, ByteBuffer)
    /// `K conn code`: close connection `conn` with `code` (its session ended or moved).
    case close(ConnectionID, CloseCode)

    init?(_ payload: ByteBuffer) {
        var buffer = payload
        guard let kind = buffer.readInteger(as: UInt8.self), buffer.readInteger(as: UInt8.self) == UInt8(ascii: " "),
            let conn = Self.readNumber(&buffer)
        else { return nil }
        switch kind {
        case UInt8(ascii: "D"):
            guard let seq = Self.readNumber(&buffer), buffer.readableBytes > 0 else { return nil }
            self = .deliver(ConnectionID(conn), seq: seq, buffer)
        case UInt8(ascii: "K"):
            guard let raw = Self.readNumber(&buffer), let code = CloseCode(rawValue: UInt16(truncatingIfNeeded: raw))
            else { return nil }
            self = .close(ConnectionID(conn), code)
        default:
            return nil
        }
    }

    /// Reads decimal digits up to a space (consumed) or the end.
    private static func readNumber(_ buffer: inout ByteBuffer) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        while let byte = buffer.readInteger(as: UInt8.self) {
            if byte == UInt8(ascii: " ") { break }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 19 else { return nil }
            value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}
