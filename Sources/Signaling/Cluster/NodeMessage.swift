import NIOCore

/// A message on a node's channel.
enum NodeMessage: Equatable {
    /// One sequenced message for a connection; `seq` 0 is a volatile message (never sequenced).
    struct Delivery: Equatable {
        var connection: ConnectionID
        var seq: UInt64
        var bytes: ByteBuffer
    }

    /// `D conn seq message`: a sequenced message for connection `conn` (`seq` 0: a volatile one).
    case deliver(Delivery)
    /// `N` then ` conn seq length message` per message: a batch's messages for this node, in order
    /// (``ClusterScripts/deliverBatch``).
    case deliverMany([Delivery])
    /// `K conn code`: close connection `conn` with `code` (its session ended or moved).
    case close(ConnectionID, CloseCode)

    init?(_ payload: ByteBuffer) {
        var buffer = payload
        guard let kind = buffer.readInteger(as: UInt8.self) else { return nil }
        if kind == UInt8(ascii: "N") {
            var deliveries: [Delivery] = []
            while buffer.readableBytes > 0 {
                guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: " "), let conn = Self.readNumber(&buffer),
                    let seq = Self.readNumber(&buffer), let length = Self.readNumber(&buffer),
                    length > 0, let bytes = buffer.readSlice(length: Int(length))
                else { return nil }
                deliveries.append(Delivery(connection: ConnectionID(conn), seq: seq, bytes: bytes))
            }
            guard !deliveries.isEmpty else { return nil }
            self = .deliverMany(deliveries)
            return
        }
        guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: " "), let conn = Self.readNumber(&buffer) else {
            return nil
        }
        switch kind {
        case UInt8(ascii: "D"):
            guard let seq = Self.readNumber(&buffer), buffer.readableBytes > 0 else { return nil }
            self = .deliver(Delivery(connection: ConnectionID(conn), seq: seq, bytes: buffer))
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
