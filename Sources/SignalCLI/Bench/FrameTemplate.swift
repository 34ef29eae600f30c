import NIOCore

/// A client text frame encoded once — header, mask key and masked payload — and stamped on every send.
///
/// The payload may hold two fixed-width hex slots: the send time (16 digits, nanoseconds of the
/// monotonic clock) and a request id (8 digits). Stamping overwrites only those 24 bytes, masked with
/// the frame's key, so a send is one `memcpy` into the connection's outbound buffer plus a few stores:
/// the generator stays cheap next to the server it measures. Each template has its own random key
/// (RFC 6455 §5.3 wants client frames masked; the server cannot tell a reused key from a fresh one).
struct FrameTemplate {
    private(set) var bytes: [UInt8]
    private let payloadStart: Int
    private let key: (UInt8, UInt8, UInt8, UInt8)
    /// Payload offset of the 16 hex digits of the send time, if the message carries one.
    private let stampOffset: Int?
    /// Payload offset of the 8 hex digits of the request id, if the message carries one.
    private let idOffset: Int?

    /// Masks `payload` into a text frame. The slots must hold ASCII digits in `payload` already.
    init(payload: [UInt8], stampOffset: Int? = nil, idOffset: Int? = nil, opcode: UInt8 = 0x1) {
        var frame: [UInt8] = []
        frame.reserveCapacity(payload.count + 14)
        frame.append(0x80 | opcode)
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame.append(0x80 | 126)
            frame.append(UInt8(payload.count >> 8))
            frame.append(UInt8(payload.count & 0xFF))
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) {
                frame.append(UInt8((UInt64(payload.count) >> UInt64(shift)) & 0xFF))
            }
        }
        let key = (
            UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255)
        )
        frame.append(contentsOf: [key.0, key.1, key.2, key.3])
        let payloadStart = frame.count
        for (index, byte) in payload.enumerated() {
            frame.append(byte ^ Self.maskByte(key, index))
        }
        self.bytes = frame
        self.payloadStart = payloadStart
        self.key = key
        self.stampOffset = stampOffset
        self.idOffset = idOffset
    }

    /// A close frame with `code` (masked, no reason).
    static func close(code: UInt16) -> FrameTemplate {
        FrameTemplate(payload: [UInt8(code >> 8), UInt8(code & 0xFF)], opcode: 0x8)
    }

    /// Appends the frame to `buffer`, stamped with `stamp` and `id` where the payload has slots.
    func write(to buffer: inout ByteBuffer, stamp: UInt64, id: UInt32) {
        let start = buffer.writerIndex
        buffer.writeBytes(self.bytes)
        guard stampOffset != nil || idOffset != nil else { return }
        let relative = start - buffer.readerIndex + payloadStart
        buffer.withUnsafeMutableReadableBytes { raw in
            if let stampOffset {
                self.writeHex(stamp, digits: 16, at: stampOffset, base: relative, into: raw)
            }
            if let idOffset {
                self.writeHex(UInt64(id), digits: 8, at: idOffset, base: relative, into: raw)
            }
        }
    }

    private func writeHex(
        _ value: UInt64,
        digits: Int,
        at offset: Int,
        base: Int,
        into raw: UnsafeMutableRawBufferPointer
    ) {
        for digit in 0..<digits {
            let nibble = Int((value >> UInt64(4 * (digits - 1 - digit))) & 0xF)
            let position = offset + digit
            raw[base + position] = Self.hexDigits[nibble] ^ Self.maskByte(key, position)
        }
    }

    @inline(__always)
    private static func maskByte(_ key: (UInt8, UInt8, UInt8, UInt8), _ index: Int) -> UInt8 {
        switch index & 3 {
        case 0: return key.0
        case 1: return key.1
        case 2: return key.2
        default: return key.3
        }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
