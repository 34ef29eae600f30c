import NIOCore

/// Validates UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF) incrementally, so a
/// text message can be checked fragment by fragment as it arrives (RFC 6455 §8.1: fail fast) and a
/// code point split across two fragments is still checked as one.
struct UTF8StreamValidator: Sendable {
    /// Continuation bytes the current code point still needs.
    private var pending = 0
    /// Range the next continuation byte must fall in (narrower than 80…BF right after E0, ED, F0, F4).
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF

    init() {}

    /// Whether the bytes consumed so far end on a code point boundary (a message may only end there).
    var isAtBoundary: Bool { pending == 0 }

    /// Consumes the next bytes of the stream; false as soon as they cannot be part of valid UTF-8.
    mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            if pending == 0 {
                // Fast path: 8 ASCII bytes at a time.
                while index + 8 <= count {
                    let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                    if word & 0x8080_8080_8080_8080 != 0 { break }
                    index += 8
                }
                guard index < count else { break }
                let byte = bytes[index]
                index += 1
                if byte < 0x80 { continue }
                lower = 0x80
                upper = 0xBF
                switch byte {
                case 0xC2...0xDF: pending = 1
                case 0xE0:
                    pending = 2
                    lower = 0xA0
                case 0xE1...0xEC, 0xEE...0xEF: pending = 2
                case 0xED:
                    pending = 2
                    upper = 0x9F
                case 0xF0:
                    pending = 3
                    lower = 0x90
                case 0xF1...0xF3: pending = 3
                case 0xF4:
                    pending = 3
                    upper = 0x8F
                default: return false
                }
            } else {
                let byte = bytes[index]
                guard byte >= lower && byte <= upper else { return false }
                index += 1
                pending -= 1
                lower = 0x80
                upper = 0xBF
            }
        }
        return true
    }
}

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF).
    var isValidUTF8: Bool {
        self.withUnsafeReadableBytes { bytes in
            var validator = UTF8StreamValidator()
            return validator.consume(bytes) && validator.isAtBoundary
        }
    }
}
