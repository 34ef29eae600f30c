/// The kind of a JSON value found by ``JSONScanner``.
public enum JSONKind: Sendable, Equatable {
    case object, array, string, number, bool, null
}

/// Why a byte sequence is not acceptable JSON.
public struct JSONSyntaxError: Error, Sendable, Equatable {
    /// Human-readable reason, safe to send back to a client.
    public var reason: String
    /// Byte offset at which the problem was found.
    public var offset: Int
}

/// One member of a JSON object: the byte ranges of its key (quotes included) and of its value.
public struct JSONField: Sendable, Equatable {
    /// The decoded key.
    public var key: String
    /// Offset of the key's opening quote.
    public var keyStart: Int
    /// Offset of the value's first byte.
    public var valueStart: Int
    /// Offset one past the value's last byte.
    public var valueEnd: Int
    /// The value's kind.
    public var kind: JSONKind
    /// Whether a string value contains escape sequences (and so cannot be read as raw bytes).
    public var hasEscapes: Bool
}

/// A strict, allocation-light JSON validator and scanner (RFC 8259).
///
/// It validates a whole document in one pass, bounds nesting depth, and records the byte ranges of an
/// object's members so a relay can copy them verbatim instead of decoding and re-encoding them.
/// UTF-8 validity of the input is the caller's concern (the WebSocket layer checks every text message).
public struct JSONScanner {
    private let bytes: UnsafeRawBufferPointer
    private var index: Int
    private let maxDepth: Int

    /// Scans `bytes` (which must hold exactly one JSON object, surrounded by optional whitespace) and
    /// returns its members in order. Throws on invalid JSON, nesting deeper than `maxDepth`, or a
    /// duplicated member name (compared after unescaping).
    public static func objectFields(
        in bytes: UnsafeRawBufferPointer,
        maxDepth: Int = 32
    ) throws(JSONSyntaxError) -> [JSONField] {
        var scanner = JSONScanner(bytes: bytes, index: 0, maxDepth: maxDepth)
        scanner.skipWhitespace()
        guard scanner.peek() == UInt8(ascii: "{") else {
            throw JSONSyntaxError(reason: "message must be a JSON object", offset: scanner.index)
        }
        let fields = try scanner.scanObjectFields(depth: 1)
        scanner.skipWhitespace()
        guard scanner.index == bytes.count else {
            throw JSONSyntaxError(reason: "trailing data after the JSON object", offset: scanner.index)
        }
        return fields
    }

    /// Validates that `bytes` holds exactly one JSON value and returns its kind.
    public static func validate(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = 32) throws(JSONSyntaxError) -> JSONKind
    {
        var scanner = JSONScanner(bytes: bytes, index: 0, maxDepth: maxDepth)
        scanner.skipWhitespace()
        let kind = try scanner.scanValue(depth: 0)
        scanner.skipWhitespace()
        guard scanner.index == bytes.count else {
            throw JSONSyntaxError(reason: "trailing data after the JSON value", offset: scanner.index)
        }
        return kind
    }

    /// Decodes the JSON string whose quotes are at `start` and `end - 1`.
    public static func decodeString(_ bytes: UnsafeRawBufferPointer, start: Int, end: Int, hasEscapes: Bool) -> String {
        let body = UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<(end - 1)])
        if !hasEscapes {
            return String(decoding: body, as: UTF8.self)
        }
        var utf8: [UInt8] = []
        utf8.reserveCapacity(body.count)
        var i = 0
        var pendingHigh: UInt32? = nil
        func flushPendingHigh() {
            if pendingHigh != nil {
                utf8.append(contentsOf: [0xEF, 0xBF, 0xBD])
                pendingHigh = nil
            }
        }
        func appendScalar(_ value: UInt32) {
            let scalar = Unicode.Scalar(value) ?? "\u{FFFD}"
            utf8.append(contentsOf: Array(String(scalar).utf8))
        }
        while i < body.count {
            let byte = body[i]
            if byte != UInt8(ascii: "\\") {
                flushPendingHigh()
                utf8.append(byte)
                i += 1
                continue
            }
            let escape = body[i + 1]
            i += 2
            switch escape {
            case UInt8(ascii: "u"):
                var value: UInt32 = 0
                for k in 0..<4 { value = value << 4 | UInt32(hexValue(body[i + k])) }
                i += 4
                if (0xD800...0xDBFF).contains(value) {
                    flushPendingHigh()
                    pendingHigh = value
                } else if (0xDC00...0xDFFF).contains(value), let high = pendingHigh {
                    pendingHigh = nil
                    appendScalar(0x10000 + ((high - 0xD800) << 10) + (value - 0xDC00))
                } else {
                    flushPendingHigh()
                    appendScalar(value)
                }
            default:
                flushPendingHigh()
                switch escape {
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                default: utf8.append(escape)  // \" \\ \/
                }
            }
        }
        flushPendingHigh()
        return String(decoding: utf8, as: UTF8.self)
    }

    // MARK: - Scanning

    private func peek() -> UInt8? {
        self.index < self.bytes.count ? self.bytes[self.index] : nil
    }

    private mutating func skipWhitespace() {
        while self.index < self.bytes.count {
            switch self.bytes[self.index] {
            case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
            default: return
            }
        }
    }

    private func error(_ reason: String) -> JSONSyntaxError {
        JSONSyntaxError(reason: reason, offset: self.index)
    }

    private mutating func scanObjectFields(depth: Int) throws(JSONSyntaxError) -> [JSONField] {
        var fields: [JSONField] = []
        fields.reserveCapacity(8)
        // Small objects (every protocol message) check duplicates by a linear scan; past 16 members a
        // set keeps an object with thousands of members linear instead of quadratic.
        var seen: Set<String>? = nil
        self.index += 1  // {
        self.skipWhitespace()
        if self.peek() == UInt8(ascii: "}") {
            self.index += 1
            return fields
        }
        while true {
            self.skipWhitespace()
            guard self.peek() == UInt8(ascii: "\"") else { throw self.error("expected a member name") }
            let keyStart = self.index
            let keyEscaped = try self.scanString()
            let key = JSONScanner.decodeString(self.bytes, start: keyStart, end: self.index, hasEscapes: keyEscaped)
            if seen != nil {
                guard seen!.insert(key).inserted else { throw self.error("duplicate member \"\(key.prefix(64))\"") }
            } else {
                for existing in fields where existing.key == key {
                    throw self.error("duplicate member \"\(existing.key.prefix(64))\"")
                }
                if fields.count == 15 { seen = Set(fields.map(\.key) + [key]) }
            }
            self.skipWhitespace()
            guard self.peek() == UInt8(ascii: ":") else { throw self.error("expected ':' after a member name") }
            self.index += 1
            self.skipWhitespace()
            let valueStart = self.index
            let isString = self.peek() == UInt8(ascii: "\"")
            var escaped = false
            let kind: JSONKind
            if isString {
                escaped = try self.scanString()
                kind = .string
            } else {
                kind = try self.scanValue(depth: depth)
            }
            fields.append(
                JSONField(
                    key: key,
                    keyStart: keyStart,
                    valueStart: valueStart,
                    valueEnd: self.index,
                    kind: kind,
                    hasEscapes: escaped
                )
            )
            self.skipWhitespace()
            switch self.peek() {
            case UInt8(ascii: ","): self.index += 1
            case UInt8(ascii: "}"):
                self.index += 1
                return fields
            default: throw self.error("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func scanValue(depth: Int) throws(JSONSyntaxError) -> JSONKind {
        guard let byte = self.peek() else { throw self.error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"):
            guard depth < self.maxDepth else { throw self.error("nesting deeper than \(self.maxDepth) levels") }
            _ = try self.scanObjectFields(depth: depth + 1)
            return .object
        case UInt8(ascii: "["):
            guard depth < self.maxDepth else { throw self.error("nesting deeper than \(self.maxDepth) levels") }
            self.index += 1
            self.skipWhitespace()
            if self.peek() == UInt8(ascii: "]") {
                self.index += 1
                return .array
            }
            while true {
                self.skipWhitespace()
                _ = try self.scanValue(depth: depth + 1)
                self.skipWhitespace()
                switch self.peek() {
                case UInt8(ascii: ","): self.index += 1
                case UInt8(ascii: "]"):
                    self.index += 1
                    return .array
                default: throw self.error("expected ',' or ']' in an array")
                }
            }
        case UInt8(ascii: "\""):
            _ = try self.scanString()
            return .string
        case UInt8(ascii: "t"):
            try self.scanLiteral("true")
            return .bool
        case UInt8(ascii: "f"):
            try self.scanLiteral("false")
            return .bool
        case UInt8(ascii: "n"):
            try self.scanLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try self.scanNumber()
            return .number
        default:
            throw self.error("unexpected character")
        }
    }

    private mutating func scanLiteral(_ literal: StaticString) throws(JSONSyntaxError) {
        let count = literal.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count else { throw self.error("unexpected end of input") }
        let base = literal.utf8Start
        for k in 0..<count where self.bytes[self.index + k] != base[k] {
            throw self.error("invalid literal")
        }
        self.index += count
    }

    private mutating func scanDigits() throws(JSONSyntaxError) {
        let start = self.index
        while let b = self.peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { self.index += 1 }
        guard self.index > start else { throw self.error("expected a digit") }
    }

    private mutating func scanNumber() throws(JSONSyntaxError) {
        if self.peek() == UInt8(ascii: "-") { self.index += 1 }
        if self.peek() == UInt8(ascii: "0") {
            self.index += 1
        } else {
            try self.scanDigits()
        }
        if self.peek() == UInt8(ascii: ".") {
            self.index += 1
            try self.scanDigits()
        }
        if let b = self.peek(), b == UInt8(ascii: "e") || b == UInt8(ascii: "E") {
            self.index += 1
            if let s = self.peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { self.index += 1 }
            try self.scanDigits()
        }
    }

    /// Scans a string starting at its opening quote; returns whether it contains escapes.
    private mutating func scanString() throws(JSONSyntaxError) -> Bool {
        self.index += 1
        var escaped = false
        while self.index < self.bytes.count {
            // Fast path: skip 8 plain bytes at a time (no quote, backslash or control character; bytes
            // of multi-byte UTF-8 sequences are all ≥ 0x80 and plain).
            while self.index + 8 <= self.bytes.count {
                let word = self.bytes.loadUnaligned(fromByteOffset: self.index, as: UInt64.self)
                guard !Self.hasSpecialByte(word) else { break }
                self.index += 8
            }
            guard self.index < self.bytes.count else { break }
            let byte = self.bytes[self.index]
            switch byte {
            case UInt8(ascii: "\""):
                self.index += 1
                return escaped
            case UInt8(ascii: "\\"):
                escaped = true
                guard self.index + 1 < self.bytes.count else { throw self.error("unterminated string") }
                switch self.bytes[self.index + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                    UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    self.index += 2
                case UInt8(ascii: "u"):
                    guard self.index + 6 <= self.bytes.count else { throw self.error("unterminated string") }
                    for k in 2..<6 where hexValue(self.bytes[self.index + k]) == 0xFF {
                        throw self.error("invalid \\u escape")
                    }
                    self.index += 6
                default:
                    throw self.error("invalid escape sequence")
                }
            case 0x00..<0x20:
                throw self.error("control character in string")
            default:
                self.index += 1
            }
        }
        throw self.error("unterminated string")
    }
}

extension JSONScanner {
    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// Whether any byte of `word` is `"`, `\\` or below 0x20 (SWAR: a byte is zero after XOR-ing with the
    /// byte searched for; bytes ≥ 0x80 never match).
    @inline(__always)
    fileprivate static func hasSpecialByte(_ word: UInt64) -> Bool {
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let zeroQuote = (quote &- ones) & ~quote
        let zeroBackslash = (backslash &- ones) & ~backslash
        let control = (word &- ones &* 0x20) & ~word
        return (zeroQuote | zeroBackslash | control) & highBits != 0
    }
}

@inline(__always)
private func hexValue(_ byte: UInt8) -> UInt8 {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return 0xFF
    }
}
