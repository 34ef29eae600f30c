import NIOCore
import Testing

@testable import SignalRedis

/// The RESP decoder and encoder on their own: no sockets.
@Suite struct RedisRESPCodecTests {
    /// Decodes every complete value in `bytes`, asserting that nothing is left over.
    func decodeAll(_ bytes: String, limits: RESPDecoder.Limits = .init()) throws -> [RESPValue] {
        var decoder = RESPDecoder(limits: limits)
        var buffer = ByteBuffer(string: bytes)
        var values: [RESPValue] = []
        while let value = try decoder.decode(&buffer) {
            values.append(value)
        }
        #expect(buffer.readableBytes == 0, "left over: \(String(buffer: buffer).debugDescription)")
        #expect(decoder.isBetweenValues)
        return values
    }

    /// Feeds `bytes` in pieces of `chunk` bytes, like a socket delivering it in several reads.
    func decodeChunked(_ bytes: [UInt8], chunk: Int) throws -> [RESPValue] {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer()
        var values: [RESPValue] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + chunk, bytes.count)
            buffer.writeBytes(bytes[offset..<end])
            offset = end
            while let value = try decoder.decode(&buffer) {
                values.append(value)
            }
            buffer.discardReadBytes()
        }
        #expect(buffer.readableBytes == 0)
        return values
    }

    func bulk(_ text: String) -> RESPValue { .bulkString(ByteBuffer(string: text)) }
    func simple(_ text: String) -> RESPValue { .simpleString(ByteBuffer(string: text)) }

    @Test func decodesTheRESP2Types() throws {
        let values = try decodeAll(
            "+OK\r\n-ERR unknown command 'FOO'\r\n:-42\r\n:0\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
        )
        #expect(
            values == [
                simple("OK"), .error(ByteBuffer(string: "ERR unknown command 'FOO'")), .integer(-42), .integer(0),
                bulk("hello"), bulk(""), .null, .null, .array([]),
            ]
        )
        #expect(values[1].errorMessage == "ERR unknown command 'FOO'")
        #expect(values[4].string == "hello")
        #expect(values[6].isNull && values[7].isNull)
    }

    @Test func bulkStringsAreBinarySafe() throws {
        let values = try decodeAll("$7\r\na\r\nb\0c\r\r\n")
        #expect(values == [.bulkString(ByteBuffer(bytes: Array("a\r\nb\0c\r".utf8)))])
    }

    @Test func decodesNestedArraysWithNullsAndErrors() throws {
        let wire = "*3\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n*2\r\n-WRONGTYPE bad\r\n*0\r\n"
        let values = try decodeAll(wire)
        #expect(
            values == [
                .array([
                    .array([.integer(1), .array([bulk("x")])]),
                    .null,
                    .array([.error(ByteBuffer(string: "WRONGTYPE bad")), .array([])]),
                ])
            ]
        )
    }

    @Test func decodesTheRESP3Types() throws {
        let wire =
            "_\r\n#t\r\n#f\r\n,3.25\r\n,-inf\r\n(12345678901234567890123\r\n!9\r\nSYNTAX no\r\n=8\r\ntxt:abcd\r\n"
            + "%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n~2\r\n:1\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
            + "|1\r\n+key-popularity\r\n%0\r\n:7\r\n"
        let values = try decodeAll(wire)
        #expect(values.count == 12)
        #expect(values[0] == .null)
        #expect(values[1] == .boolean(true) && values[2] == .boolean(false))
        #expect(values[3] == .double(3.25) && values[4] == .double(-.infinity))
        #expect(values[5] == .bigNumber(ByteBuffer(string: "12345678901234567890123")))
        #expect(values[6].errorMessage == "SYNTAX no")
        #expect(values[7] == bulk("abcd"))
        #expect(values[8] == .map([simple("a"): .integer(1), simple("b"): .array([.integer(2)])]))
        #expect(values[9] == .set([.integer(1), .integer(2)]))
        #expect(values[10] == .push([bulk("message"), bulk("ch"), bulk("hi")]))
        // The attribute is dropped; the value it annotates remains.
        #expect(values[11] == .integer(7))
    }

    @Test func incompleteInputReturnsNilAndConsumesNothingOfAScalar() throws {
        var decoder = RESPDecoder()
        for partial in ["", "+", "+OK", "+OK\r", ":12", "$5\r\nhel", "$5\r\nhello", "$5\r\nhello\r", "$5"] {
            var buffer = ByteBuffer(string: partial)
            #expect(try decoder.decode(&buffer) == nil, "\(partial.debugDescription)")
            #expect(buffer.readableBytes == partial.utf8.count, "\(partial.debugDescription) consumed bytes")
        }
    }

    @Test func everySplitPointOfAMixedStreamDecodesTheSame() throws {
        let wire = Array(
            "*4\r\n$3\r\nfoo\r\n:99\r\n*2\r\n$-1\r\n+PONG\r\n-ERR x\r\n$11\r\nhello world\r\n%1\r\n+k\r\n~1\r\n#t\r\n"
                .utf8
        )
        let whole = try decodeChunked(wire, chunk: wire.count)
        #expect(whole.count == 3)
        for chunk in 1..<wire.count {
            #expect(try decodeChunked(wire, chunk: chunk) == whole, "chunk size \(chunk)")
        }
    }

    @Test func aLargeArrayArrivingInPiecesIsKeptBetweenReads() throws {
        var wire = ByteBuffer()
        RESPEncoder().encode(.array((0..<10_000).map { bulk("member-\($0)") }), into: &wire)
        var decoder = RESPDecoder()
        var buffer = ByteBuffer()
        var result: RESPValue?
        var reads = 0
        while wire.readableBytes > 0 {
            var chunk = wire.readSlice(length: min(1000, wire.readableBytes))!
            buffer.writeBuffer(&chunk)
            reads += 1
            if let value = try decoder.decode(&buffer) {
                result = value
            } else {
                // Finished elements are consumed at once: at most one element's bytes stay behind.
                #expect(buffer.readableBytes < 32)
                #expect(!decoder.isBetweenValues)
            }
        }
        #expect(reads > 100)
        #expect(result?.array?.count == 10_000)
        #expect(result?.array?.last == bulk("member-9999"))
    }

    @Test func aBigBulkStringIsDecodedWhole() throws {
        let payload = (0..<(5 * 1024 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var wire = ByteBuffer()
        RESPEncoder().encode(.bulkString(ByteBuffer(bytes: payload)), into: &wire)
        var decoder = RESPDecoder()
        var buffer = ByteBuffer()
        var value: RESPValue?
        while wire.readableBytes > 0 {
            var chunk = wire.readSlice(length: min(64 * 1024, wire.readableBytes))!
            buffer.writeBuffer(&chunk)
            if let decoded = try decoder.decode(&buffer) { value = decoded }
        }
        #expect(value?.buffer?.readableBytes == payload.count)
        #expect(value?.buffer.map { Array(buffer: $0) == payload } == true)
    }

    @Test(arguments: [
        "?what\r\n",  // unknown type byte
        ":12a\r\n",  // not an integer
        ":\r\n",  // empty integer
        ":99999999999999999999\r\n",  // integer overflow
        "$3\r\nabcd\r\n",  // bulk longer than announced
        "$-5\r\n",  // negative length
        "*-2\r\n",  // negative aggregate length
        "+OK\rX",  // CR without LF
        "#x\r\n",  // bad boolean
        ",abc\r\n",  // bad double
        "_x\r\n",  // null with content
        "(12x\r\n",  // bad big number
    ])
    func rejectsMalformedInput(_ wire: String) {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer(string: wire)
        #expect {
            _ = try decoder.decode(&buffer)
        } throws: { error in
            (error as? RedisError)?.code == .protocolError
        }
    }

    @Test func enforcesItsLimits() throws {
        var limits = RESPDecoder.Limits()
        limits.maxBulkLength = 10
        limits.maxAggregateLength = 3
        limits.maxDepth = 2
        limits.maxLineLength = 8
        for wire in ["$11\r\n", "*4\r\n", "*1\r\n*1\r\n*1\r\n:1\r\n", "+0123456789", "-0123456789\r\n"] {
            var decoder = RESPDecoder(limits: limits)
            var buffer = ByteBuffer(string: wire)
            #expect(throws: RedisError.self, "\(wire.debugDescription)") { try decoder.decode(&buffer) }
        }
        var decoder = RESPDecoder(limits: limits)
        var fine = ByteBuffer(string: "$10\r\n0123456789\r\n*1\r\n*3\r\n:1\r\n:2\r\n:3\r\n+01234567\r\n")
        #expect(try decoder.decode(&fine)?.buffer?.readableBytes == 10)
        #expect(try decoder.decode(&fine) == .array([.array([.integer(1), .integer(2), .integer(3)])]))
        #expect(try decoder.decode(&fine) == simple("01234567"))
    }

    @Test func encodesCommandsAsArraysOfBulkStrings() {
        var buffer = ByteBuffer()
        let value = ByteBuffer(bytes: [0, 13, 10, 255])
        RESPEncoder().encodeCommand(["SET", "ké", value, 42, -1.5, Substring("sub")], into: &buffer)
        let expected: [UInt8] =
            Array("*6\r\n$3\r\nSET\r\n$3\r\nké\r\n$4\r\n".utf8) + [0, 13, 10, 255]
            + Array("\r\n$2\r\n42\r\n$4\r\n-1.5\r\n$3\r\nsub\r\n".utf8)
        #expect(Array(buffer: buffer) == expected)
    }

    @Test(arguments: [0, 7, 9, 10, 99, 100, 12_345, -1, -10, -987_654, Int.max, Int.min])
    func integersAreWrittenInDecimal(_ number: Int) {
        var buffer = ByteBuffer()
        number.writeRESPBulkString(into: &buffer)
        let text = String(number)
        #expect(String(buffer: buffer) == "$\(text.utf8.count)\r\n\(text)\r\n")
        buffer.clear()
        RESPEncoder.writeHeader(UInt8(ascii: ":"), number, into: &buffer)
        #expect(String(buffer: buffer) == ":\(text)\r\n")
    }

    @Test func encodedValuesDecodeToThemselves() throws {
        let values: [RESPValue] = [
            simple("OK"), .error(ByteBuffer(string: "ERR x")), .integer(.min), .integer(.max), bulk(""),
            bulk("a\r\nb"), .null, .array([]), .array([.integer(1), .array([bulk("x"), .null])]),
            .double(1.5), .double(.infinity), .boolean(true), .bigNumber(ByteBuffer(string: "-123456789012345678901")),
            .map([bulk("k"): .set([.integer(1)])]), .push([bulk("message")]),
        ]
        var buffer = ByteBuffer()
        let encoder = RESPEncoder()
        for value in values { encoder.encode(value, into: &buffer) }
        var decoder = RESPDecoder()
        var decoded: [RESPValue] = []
        while let value = try decoder.decode(&buffer) { decoded.append(value) }
        #expect(decoded == values)
        #expect(buffer.readableBytes == 0)
    }

    @Test func convertsReplies() {
        #expect(String(resp: bulk("x")) == "x")
        #expect(String(resp: .null) == nil)
        #expect(Int(resp: bulk("17")) == 17)
        #expect(Int(resp: .integer(3)) == 3)
        #expect(Int(resp: bulk("x")) == nil)
        #expect(Double(resp: bulk("2.5")) == 2.5)
        #expect(Bool(resp: .integer(1)) == true)
        #expect(Bool(resp: bulk("1")) == nil)
        #expect(ByteBuffer(resp: simple("OK")) == ByteBuffer(string: "OK"))
    }
}
