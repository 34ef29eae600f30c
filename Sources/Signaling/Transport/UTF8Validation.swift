import NIOCore

extension ByteBuffer {
    /// Whether the readable bytes are valid UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF).
    var isValidUTF8: Bool {
        self.withUnsafeReadableBytes { bytes in
            var index = 0
            let count = bytes.count
            // Fast path: 8 ASCII bytes at a time.
            while index + 8 <= count {
                let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                if word & 0x8080_8080_8080_8080 != 0 { break }
                index += 8
            }
            while index < count {
                let byte = bytes[index]
                if byte < 0x80 {
                    index += 1
                    continue
                }
                let length: Int
                var lower: UInt8 = 0x80
                var upper: UInt8 = 0xBF
                switch byte {
                case 0xC2...0xDF: length = 2
                case 0xE0:
                    length = 3
                    lower = 0xA0
                case 0xE1...0xEC, 0xEE...0xEF: length = 3
                case 0xED:
                    length = 3
                    upper = 0x9F
                case 0xF0:
                    length = 4
                    lower = 0x90
                case 0xF1...0xF3: length = 4
                case 0xF4:
                    length = 4
                    upper = 0x8F
                default: return false
                }
                guard index + length <= count else { return false }
                let second = bytes[index + 1]
                guard second >= lower && second <= upper else { return false }
                for k in 2..<length where bytes[index + k] & 0xC0 != 0x80 {
                    return false
                }
                index += length
            }
            return true
        }
    }
}
