/// Checks a server's answer to the generator's upgrade request on its bytes, without building strings
/// (the generator reads one per connection, so this is on its connect path).
enum UpgradeResponse {
    /// The length of the response head up to and including its empty line, if it is all there.
    static func headLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    /// Why `head` does not open the WebSocket (nil: it does): not `HTTP/1.1 101`, or no
    /// `Sec-WebSocket-Accept` header with the expected value.
    static func refusal(_ head: UnsafeRawBufferPointer, expectedAccept: String) -> String? {
        var lineStart = 0
        var first = true
        let name = "sec-websocket-accept:".utf8
        while lineStart < head.count {
            var lineEnd = lineStart
            while lineEnd < head.count, head[lineEnd] != 10 { lineEnd += 1 }
            var line = head[lineStart..<lineEnd]
            if line.last == 13 { line = line.dropLast() }
            lineStart = lineEnd + 1
            if first {
                first = false
                guard line.starts(with: "HTTP/1.1 101".utf8) else {
                    return "upgrade refused: \(String(decoding: line, as: UTF8.self))"
                }
                continue
            }
            guard line.count > name.count,
                line.prefix(name.count).lazy.map({ $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }).elementsEqual(name)
            else { continue }
            let value = line.dropFirst(name.count).drop { $0 == 32 || $0 == 9 }
            if value.elementsEqual(expectedAccept.utf8) { return nil }
        }
        return "upgrade response without the expected Sec-WebSocket-Accept"
    }
}
