import Crypto
import Foundation
import NIOCore
import Testing

@testable import Signaling

/// The WebSocket fast path's reading of a request head: what it answers itself, and that everything
/// else falls back to the HTTP pipeline.
struct WebSocketHandshakeReaderTests {
    private static let rules = WebSocketHandshakeReader.Rules(
        webSocketPaths: ["/ws", "/echo"],
        originPolicy: OriginPolicy(allowedOrigins: ["https://app.example"]),
        maxHeaderCount: 10,
        maxHeaderBytes: 1024
    )

    private static let upgrade = [
        "GET /ws HTTP/1.1",
        "Host: 127.0.0.1:8080",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]

    private static func head(_ lines: [String]) -> String {
        lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    private static func read(
        _ text: String,
        rules: WebSocketHandshakeReader.Rules = rules
    ) -> WebSocketHandshakeReader.Outcome {
        var reader = WebSocketHandshakeReader(rules: rules)
        return Array(text.utf8).withUnsafeBytes { reader.read($0) }
    }

    private static func accepted(_ text: String) -> (UpgradeRequest, String, Int)? {
        guard case .upgrade(let request, let accept, let length) = read(text) else { return nil }
        var buffer = ByteBuffer()
        WebSocketHandshakeReader.writeSwitchingProtocols(accept: accept, into: &buffer)
        return (request, String(buffer: buffer), length)
    }

    private static func fallsBack(_ text: String) -> Bool {
        if case .fallBack = read(text) { return true }
        return false
    }

    @Test func answersAWellFormedUpgradeAsNIODoes() throws {
        let text = Self.head(Self.upgrade)
        let (request, response, length) = try #require(Self.accepted(text + "\u{81}\u{80}"))
        #expect(request.path == "/ws")
        #expect(request.host == "127.0.0.1:8080")
        #expect(request.origin == nil)
        #expect(length == text.utf8.count, "the bytes after the head are frames")
        #expect(
            response
                == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nConnection: upgrade\r\n\r\n",
            "RFC 6455's sample key and accept value"
        )
    }

    @Test func acceptValuesMatchSHA1AndBase64() {
        for _ in 0..<20 {
            let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let expected = Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
                .base64EncodedString()
            var lines = Self.upgrade
            lines[4] = "Sec-WebSocket-Key: \(key)"
            let response = Self.accepted(Self.head(lines))?.1
            #expect(response?.contains("Sec-WebSocket-Accept: \(expected)\r\n") == true, "\(key)")
        }
    }

    @Test func readsTheQueryOriginAndBearerToken() throws {
        var lines = Self.upgrade
        lines[0] = "GET /ws?peer=alice&token=abc%2Fd HTTP/1.1"
        lines += ["Origin: https://app.example", "authorization: Bearer  xyz ", "User-Agent: test/1.0"]
        let (request, _, _) = try #require(Self.accepted(Self.head(lines)))
        #expect(request.path == "/ws")
        #expect(request.query == ["peer": "alice", "token": "abc/d"])
        #expect(request.origin == "https://app.example")
        #expect(request.bearer == "xyz")
        #expect(request.token == "abc/d")
    }

    @Test func forwardedForIsReadOnlyForATrustedProxysConnection() throws {
        let text = Self.head(
            Self.upgrade + ["X-Forwarded-For: 198.51.100.9, 192.0.2.1", "x-forwarded-FOR:10.0.0.1 ", "X-Forwarded: x"]
        )
        var reader = WebSocketHandshakeReader(rules: Self.rules, readsForwardedFor: true)
        guard case .upgrade(let request, _, _) = Array(text.utf8).withUnsafeBytes({ reader.read($0) }) else {
            Issue.record("not answered by the fast path")
            return
        }
        #expect(request.forwardedFor == ["198.51.100.9, 192.0.2.1", "10.0.0.1"], "every line, in order")
        #expect(request.client == nil, "the server picks the client")
        let ignored = try #require(Self.accepted(text)).0
        #expect(ignored.forwardedFor.isEmpty, "anyone else's header is ignored")
    }

    @Test func headerNamesAndTokensAreCaseInsensitive() {
        let lines = [
            "GET /echo HTTP/1.1", "HOST: x", "upgrade: WebSocket", "CONNECTION: keep-alive, Upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==", "SEC-WEBSOCKET-VERSION:13",
        ]
        #expect(Self.accepted(Self.head(lines))?.0.path == "/echo")
    }

    @Test func aHeadInPiecesIsReadWhenComplete() throws {
        let bytes = Array(Self.head(Self.upgrade).utf8) + [0x81]
        var reader = WebSocketHandshakeReader(rules: Self.rules)
        for count in 1..<(bytes.count - 1) {
            let outcome = bytes[..<count].withUnsafeBytes { reader.read($0) }
            guard case .needMore = outcome else {
                Issue.record("\(count) bytes: \(outcome)")
                return
            }
        }
        let outcome = bytes.withUnsafeBytes { reader.read($0) }
        guard case .upgrade(_, _, let length) = outcome else {
            Issue.record("\(outcome)")
            return
        }
        #expect(length == bytes.count - 1)
    }

    @Test func plainHTTPAndOtherMethodsFallBack() {
        #expect(Self.fallsBack("POST /ws HTTP/1.1\r\n"), "at the first byte that differs")
        #expect(Self.fallsBack("HEAD /healthz HTTP/1.1\r\n"))
        #expect(Self.fallsBack("get /ws HTTP/1.1\r\n"))
        #expect(Self.fallsBack("GET http://x/ws HTTP/1.1\r\n"))
        #expect(Self.fallsBack(Self.head(["GET /healthz HTTP/1.1", "Host: x"])))
        var other = Self.upgrade
        other[0] = "GET /metrics HTTP/1.1"
        #expect(Self.fallsBack(Self.head(other)), "an upgrade to a path that is not a WebSocket path")
    }

    @Test func everyHandshakeRuleFallsBackWhenBroken() {
        let broken: [(String, [String])] = [
            ("HTTP/1.0", ["GET /ws HTTP/1.0"] + Self.upgrade.dropFirst()),
            ("no Upgrade", Self.upgrade.filter { !$0.hasPrefix("Upgrade") }),
            ("another protocol", Self.upgrade.map { $0.hasPrefix("Upgrade") ? "Upgrade: h2c" : $0 }),
            ("no Connection: upgrade", Self.upgrade.map { $0.hasPrefix("Connection") ? "Connection: close" : $0 }),
            ("version 8", Self.upgrade.map { $0.hasPrefix("Sec-WebSocket-Version") ? "Sec-WebSocket-Version: 8" : $0 }),
            ("no version", Self.upgrade.filter { !$0.hasPrefix("Sec-WebSocket-Version") }),
            ("no key", Self.upgrade.filter { !$0.hasPrefix("Sec-WebSocket-Key") }),
            ("two keys", Self.upgrade + ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]),
            ("short key", Self.upgrade.map { $0.hasPrefix("Sec-WebSocket-Key") ? "Sec-WebSocket-Key: abc=" : $0 }),
            (
                "key not base64",
                Self.upgrade.map {
                    $0.hasPrefix("Sec-WebSocket-Key") ? "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!Q==" : $0
                }
            ),
            ("a body", Self.upgrade + ["Content-Length: 5"]),
            ("chunked", Self.upgrade + ["Transfer-Encoding: chunked"]),
            ("two hosts", Self.upgrade + ["Host: other"]),
            ("two origins", Self.upgrade + ["Origin: https://app.example", "Origin: https://app.example"]),
            ("disallowed origin", Self.upgrade + ["Origin: https://evil.example"]),
            ("folded line", Self.upgrade + ["X-A: 1", " continued"]),
            ("no colon", Self.upgrade + ["X-A 1"]),
            ("space before colon", Self.upgrade + ["X-A : 1"]),
            ("non-ASCII value", Self.upgrade + ["X-A: caf\u{e9}"]),
            ("control character", Self.upgrade + ["X-A: a\u{1}b"]),
            ("too many headers", Self.upgrade + (0..<5).map { "X-\($0): 1" } + ["X-Last: 1"]),
            ("space in the target", ["GET /ws x HTTP/1.1"] + Self.upgrade.dropFirst()),
        ]
        for (name, lines) in broken {
            #expect(Self.fallsBack(Self.head(lines)), "\(name)")
        }
        #expect(Self.fallsBack(Self.upgrade.joined(separator: "\n") + "\n\n\r\n\r\n"), "bare line feeds")
        #expect(Self.fallsBack(Self.upgrade.joined(separator: "\r\n") + "\r\n\n\r\n\r\n"), "a bare line feed")
    }

    @Test func theOriginPolicyApplies() {
        #expect(Self.accepted(Self.head(Self.upgrade + ["Origin: https://app.example"])) != nil)
        #expect(Self.accepted(Self.head(Self.upgrade + ["Origin: http://127.0.0.1:8080"])) != nil, "same origin")
        #expect(Self.fallsBack(Self.head(Self.upgrade + ["Origin: http://127.0.0.1:9090"])))
    }

    @Test func aHeadOverTheSizeLimitFallsBackWithoutWaitingForItsEnd() {
        let padding = "X-Padding: " + String(repeating: "a", count: 700)
        #expect(Self.fallsBack(Self.head(Self.upgrade + [padding, padding])), "a whole head over the limit")
        let unfinished = Self.upgrade.joined(separator: "\r\n") + "\r\n" + padding + padding
        #expect(Self.fallsBack(unfinished), "an unfinished head over the limit")
        if case .needMore = Self.read(Self.upgrade.joined(separator: "\r\n") + "\r\n" + padding) {
        } else {
            Issue.record("an unfinished head under the limit waits")
        }
        #expect(Self.accepted(Self.head(Self.upgrade + [String(padding.prefix(500))])) != nil)
    }

    @Test func headLengthFindsTheFirstEmptyLine() {
        func length(_ text: String, from start: Int = 0) -> Int? {
            Array(text.utf8).withUnsafeBytes { WebSocketHandshakeReader.headLength($0, from: start) }
        }
        #expect(length("") == nil)
        #expect(length("\r\n\r\n") == 4)
        #expect(length("a\r\n\r\nb\r\n\r\n") == 5)
        #expect(length("a\r\n\r") == nil)
        #expect(length("a\r\nb\r\n\r\n", from: 3) == 8)
    }
}
