import NIOCore
import Testing

@testable import Signaling

@Suite struct JSONScannerTests {
    func fields(_ text: String, maxDepth: Int = 32) throws -> [JSONField] {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBytes { try JSONScanner.objectFields(in: $0, maxDepth: maxDepth) }
    }

    @Test func readsMembersWithTheirRanges() throws {
        let text = #"{"type":"offer", "to":"bob","n":-1.5e3,"o":{"a":[1,true,null]}}"#
        let found = try fields(text)
        #expect(found.map(\.key) == ["type", "to", "n", "o"])
        #expect(found.map(\.kind) == [.string, .string, .number, .object])
        let bytes = Array(text.utf8)
        let o = found[3]
        #expect(String(decoding: bytes[o.valueStart..<o.valueEnd], as: UTF8.self) == #"{"a":[1,true,null]}"#)
    }

    @Test func rejectsDuplicateKeysEvenWhenEscaped() {
        #expect(throws: JSONSyntaxError.self) { try fields(#"{"from":"a","from":"b"}"#) }
        #expect(throws: JSONSyntaxError.self) { try fields(#"{"from":"a","fr\u006fm":"b"}"#) }
    }

    @Test(arguments: [
        "", "[]", "{", #"{"a"}"#, #"{"a":}"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":"\x"}"#, #"{"a":tru}"#,
        #"{"a":1}x"#, "{\"a\":\"\u{01}\"}", #"{"a":"\u12"}"#, #"{"a":[1,]}"#, #"{"a":1,}"#, #"{'a':1}"#,
    ])
    func rejectsInvalidJSON(_ text: String) {
        #expect(throws: JSONSyntaxError.self) { try fields(text) }
    }

    @Test func boundsNestingDepth() throws {
        let deep = "{\"a\":" + String(repeating: "[", count: 1000) + String(repeating: "]", count: 1000) + "}"
        #expect(throws: JSONSyntaxError.self) { try fields(deep) }
        let fine = "{\"a\":" + String(repeating: "[", count: 10) + String(repeating: "]", count: 10) + "}"
        #expect(try fields(fine).count == 1)
    }

    @Test func decodesEscapes() {
        let text = #""a\"b\\c\n\u00e9\ud83d\ude00""#
        let bytes = Array(text.utf8)
        let decoded = bytes.withUnsafeBytes {
            JSONScanner.decodeString($0, start: 0, end: bytes.count, hasEscapes: true)
        }
        #expect(decoded == "a\"b\\c\né😀")
    }

    @Test func writerEscapesWhatItMust() {
        var buffer = ByteBuffer()
        buffer.writeJSONString("a\"b\\c\n\u{01}é")
        #expect(String(buffer: buffer) == #""a\"b\\c\n\u0001é""#)
        var number = ByteBuffer()
        number.writeDecimal(0)
        number.writeDecimal(18_446_744_073_709_551_615)
        #expect(String(buffer: number) == "018446744073709551615")
    }
}
