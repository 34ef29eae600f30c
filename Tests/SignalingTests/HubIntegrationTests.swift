import Foundation
import JWTKit
import NIOCore
import NIOPosix
import NIOWebSocket
import Testing

@testable import Signaling

/// The hub over real loopback sockets: a `SignalServer` and WebSocket clients.
@Suite(.serialized) struct HubIntegrationTests {
    @Test func twoPeersNegotiateThroughARoom() async throws {
        let hub = try await TestHub()
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        let bob = try await hub.peer("bob")
        alice.send(#"{"type":"join","room":"call","meta":{"name":"Alice"},"id":"j1"}"#)
        let joinedA = try await alice.next("joined")
        #expect(joinedA["id"] as? String == "j1")
        #expect((joinedA["peers"] as? [Any])?.isEmpty == true)
        bob.send(#"{"type":"join","room":"call","id":"j2"}"#)
        let joinedB = try await bob.next("joined")
        let peers = try #require(joinedB["peers"] as? [[String: Any]])
        #expect(peers.first?["peer"] as? String == "alice")
        #expect((peers.first?["meta"] as? [String: Any])?["name"] as? String == "Alice")
        let announced = try await alice.next("peer-joined")
        #expect(announced["peer"] as? String == "bob")
        #expect(announced["seq"] as? Int == 1)

        alice.send(#"{"type":"offer","to":"bob","sdp":"v=0 offer","from":"mallory","seq":999,"id":"o1"}"#)
        let offer = try await bob.next("offer")
        #expect(offer["from"] as? String == "alice", "a forged from is overwritten")
        #expect(offer["sdp"] as? String == "v=0 offer")
        #expect(offer["seq"] as? Int == 1)
        #expect(try await alice.next("ack")["id"] as? String == "o1")

        bob.send(#"{"type":"answer","to":"alice","sdp":"v=0 answer","id":"a1"}"#)
        let answer = try await alice.next("answer")
        #expect(answer["from"] as? String == "bob")
        #expect(answer["seq"] as? Int == 2)
        #expect(try await bob.next("ack")["id"] as? String == "a1")

        for n in 0..<3 {
            alice.send(
                #"{"type":"candidate","to":"bob","candidate":{"candidate":"candidate:\#(n) 1 udp 2122260223 192.0.2.1 5000\#(n) typ host","sdpMid":"0","sdpMLineIndex":0},"id":"c\#(n)"}"#
            )
        }
        alice.send(#"{"type":"candidate","to":"bob","candidate":null,"id":"cend"}"#)
        for n in 0..<3 {
            let candidate = try await bob.next("candidate")
            #expect(candidate["seq"] as? Int == 2 + n)
            #expect(try await alice.next("ack")["id"] as? String == "c\(n)")
        }
        let end = try await bob.next("candidate")
        #expect(end["candidate"] is NSNull)

        alice.send(#"{"type":"message","room":"call","data":{"chat":"hello"},"id":"m1"}"#)
        let chat = try await bob.next("message")
        #expect((chat["data"] as? [String: Any])?["chat"] as? String == "hello")
        #expect(chat["room"] as? String == "call")

        bob.send(#"{"type":"leave","room":"call","id":"l1"}"#)
        #expect(try await bob.next("left")["id"] as? String == "l1")
        let left = try await alice.next("peer-left")
        #expect(left["peer"] as? String == "bob")

        bob.send(#"{"type":"join","room":"call"}"#)
        _ = try await alice.next("peer-joined")
        bob.client.close(code: 1000)
        #expect(try await alice.next("peer-left")["peer"] as? String == "bob", "closing ends the session at once")
    }

    @Test func errorsLeaveTheConnectionUsable() async throws {
        let hub = try await TestHub()
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        _ = try await hub.peer("bob")
        let cases: [(String, String)] = [
            ("not json", "bad-message"),
            (#"{"type":"zap","id":"1"}"#, "unknown-type"),
            (#"{"type":"offer","to":"bob","id":"2"}"#, "bad-message"),
            (#"{"type":"offer","to":5,"sdp":"x","id":"3"}"#, "bad-message"),
            (#"{"type":"offer","to":"nobody","sdp":"x","id":"4"}"#, "peer-unavailable"),
            (#"{"type":"offer","to":"bob","sdp":"x","room":"r","id":"5"}"#, "not-in-room"),
            (
                #"{"type":"join","room":"r","meta":{"x":"\#(String(repeating: "x", count: 2000))"},"id":"6"}"#,
                "too-large"
            ),
        ]
        for (text, code) in cases {
            alice.send(text)
            let error = try await alice.next("error")
            #expect(error["code"] as? String == code, "\(text.prefix(40))")
        }
        alice.send(#"{"type":"ping","id":"p"}"#)
        #expect(try await alice.next("pong")["id"] as? String == "p")
    }

    @Test func targetNotInScopedRoomIsRefused() async throws {
        let hub = try await TestHub()
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        let bob = try await hub.peer("bob")
        alice.send(#"{"type":"join","room":"a-only"}"#)
        _ = try await alice.next("joined")
        bob.send(#"{"type":"join","room":"b-only"}"#)
        _ = try await bob.next("joined")
        alice.send(#"{"type":"offer","to":"bob","sdp":"x","room":"a-only","id":"x"}"#)
        let error = try await alice.next("error")
        #expect(error["code"] as? String == "not-in-room")
        #expect(error["id"] as? String == "x")
    }

    @Test func oversizedMessageCloses1009AndBinaryCloses1003() async throws {
        let hub = try await TestHub { $0.maxMessageBytes = 4096 }
        defer { Task { await hub.stop() } }
        let big = try await hub.peer()
        big.send(#"{"type":"ping","pad":""# + String(repeating: "x", count: 5000) + #""}"#)
        #expect(try await big.closed() == 1009)
        let binary = try await hub.peer()
        binary.client.send(frame: WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: [1, 2, 3])))
        #expect(try await binary.closed() == 1003)
        let invalid = try await hub.peer()
        invalid.client.send(
            frame: WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: [0x7B, 0xC3, 0x28, 0x7D]))
        )
        #expect(try await invalid.closed() == 1007)
    }

    @Test func idTakenWhileAnotherSessionHoldsIt() async throws {
        let hub = try await TestHub()
        defer { Task { await hub.stop() } }
        let first = try await hub.peer("alice")
        let second = try await hub.connect("peer=alice")
        #expect(try await second.next("error")["code"] as? String == "id-taken")
        #expect(try await second.closed() == 4009)
        first.send(#"{"type":"ping","id":"still"}"#)
        #expect(try await first.next("pong")["id"] as? String == "still")
        let bad = try await hub.connect("peer=bad%20id")
        #expect(try await bad.closed() == 1008)
    }

    @Test func jwtAuthentication() async throws {
        let secret = "test-secret-0123456789-0123456789-abcdef"
        let hub = try await TestHub { $0.jwtSecret = secret }
        defer { Task { await hub.stop() } }
        let signer = await TokenVerifier(secret: secret)
        func token(_ sub: String, rooms: [String]? = nil, ttl: Double = 60) async throws -> String {
            try await signer.sign(SignalTokenPayload(sub: sub, exp: Date(timeIntervalSinceNow: ttl), rooms: rooms))
        }

        let missing = try await hub.connect()
        #expect(try await missing.next("error")["code"] as? String == "unauthorized")
        #expect(try await missing.closed() == 4001)

        let expired = try await hub.connect("token=\(try await token("alice", ttl: -10))")
        #expect(try await expired.closed() == 4001)

        let wrongKey = await TokenVerifier(secret: "another-secret-0123456789-0123456789")
        let forged = try await wrongKey.sign(SignalTokenPayload(sub: "alice", exp: Date(timeIntervalSinceNow: 60)))
        let bad = try await hub.connect("token=\(forged)")
        #expect(try await bad.closed() == 4001)

        // alg "none" is refused even though its claims are fine.
        let parts = try await token("alice").split(separator: ".")
        let noneHeader = Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(
                of: "/",
                with: "_"
            )
        let none = try await hub.connect("token=\(noneHeader).\(parts[1]).")
        #expect(try await none.closed() == 4001)

        let alice = try await hub.peer(query: "token=\(try await token("alice", rooms: ["lobby"]))")
        #expect(alice.id == "alice")
        alice.send(#"{"type":"join","room":"vip","id":"v"}"#)
        #expect(try await alice.next("error")["code"] as? String == "forbidden")
        alice.send(#"{"type":"join","room":"lobby","id":"l"}"#)
        _ = try await alice.next("joined")

        let bearer = try await hub.peer(headers: [("Authorization", "Bearer \(try await token("bob"))")])
        #expect(bearer.id == "bob")
        bearer.send(#"{"type":"offer","to":"alice","sdp":"x","id":"o"}"#)
        #expect(try await bearer.next("error")["code"] as? String == "not-in-room", "auth turns on require-shared-room")

        let tab = try await hub.peer(query: "peer=alice~tab2&token=\(try await token("alice"))")
        #expect(tab.id == "alice~tab2")
        let takeover = try await hub.peer(query: "token=\(try await token("alice"))")
        #expect(takeover.id == "alice")
        #expect(try await alice.closed() == 4009, "the token's owner takes the id over")
    }

    @Test func disallowedOriginGets403() async throws {
        let hub = try await TestHub { $0.allowedOrigins = ["https://app.example"] }
        defer { Task { await hub.stop() } }
        await #expect(throws: WebSocketClientError.upgradeRefused(status: 403)) {
            _ = try await hub.connect(headers: [("Origin", "https://evil.example")])
        }
        _ = try await hub.peer(headers: [("Origin", "https://app.example")])
        _ = try await hub.peer(headers: [("Origin", "http://127.0.0.1:\(hub.port)")])
        _ = try await hub.peer()
    }

    @Test func floodingIsRateLimitedByIDThenClosed1008() async throws {
        let hub = try await TestHub {
            $0.rateBurst = 5
            $0.ratePerSecond = 1
            $0.rateMaxStrikes = 10
        }
        defer { Task { await hub.stop() } }
        let flooder = try await hub.peer()
        for n in 0..<8 { flooder.send(#"{"type":"ping","id":"f\#(n)"}"#) }
        let limited = try await flooder.next("error")
        #expect(limited["code"] as? String == "rate-limited")
        #expect(limited["id"] as? String == "f5", "the refusal names the refused request")
        for n in 8..<40 { flooder.send(#"{"type":"ping","id":"f\#(n)"}"#) }
        #expect(try await flooder.closed() == 1008)
    }

    @Test func connectionCapsAnswer503() async throws {
        let hub = try await TestHub { $0.maxConnectionsPerIP = 2 }
        defer { Task { await hub.stop() } }
        let a = try await hub.peer()
        _ = try await hub.peer()
        await #expect(throws: WebSocketClientError.upgradeRefused(status: 503)) {
            _ = try await hub.connect()
        }
        a.send(#"{"type":"ping","id":"ok"}"#)
        _ = try await a.next("pong")
    }

    /// Each way a connection can go (a session, a refused session, an echo, plain HTTP, a request cut off
    /// half-way) gives its connection slot back when it closes.
    @Test func everyClosedConnectionGivesItsSlotBack() async throws {
        let secret = "test-secret-0123456789-0123456789-abcdef"
        let hub = try await TestHub {
            $0.maxConnectionsPerIP = 2
            $0.echo = true
            $0.jwtSecret = secret
        }
        defer { Task { await hub.stop() } }
        func slotsReturned(sourceLocation: SourceLocation = #_sourceLocation) async throws {
            for _ in 0..<200 where hub.server.admittedConnections > 0 {
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(hub.server.admittedConnections == 0, sourceLocation: sourceLocation)
        }
        let token = try await TokenVerifier(secret: secret).sign(
            SignalTokenPayload(sub: "alice", exp: Date(timeIntervalSinceNow: 60))
        )
        for _ in 0..<3 {
            // A session opened once its token is checked, closed by the client.
            let alice = try await hub.peer(query: "token=\(token)")
            #expect(hub.server.admittedConnections == 1)
            alice.client.close()
            _ = try await alice.closed()
            try await slotsReturned()
            // A session refused (no token), closed by the server.
            let refused = try await hub.connect()
            #expect(try await refused.closed() == 4001)
            try await slotsReturned()
            // An echo connection.
            let echo = try await WebSocketClient.connect(
                to: try WebSocketURL("ws://127.0.0.1:\(hub.port)/echo"),
                group: TestHub.group
            )
            echo.close()
            _ = await echo.closed()
            try await slotsReturned()
            // Plain HTTP (the fallback to NIO's HTTP pipeline).
            #expect(try await httpGet(port: hub.port, path: "/healthz").0 == 200)
            try await slotsReturned()
            // A request head that never ends, cut off by the client.
            try await sendAndClose(port: hub.port, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            try await slotsReturned()
        }
        // The cap still admits two.
        let bobToken = try await TokenVerifier(secret: secret).sign(
            SignalTokenPayload(sub: "bob", exp: Date(timeIntervalSinceNow: 60))
        )
        let a = try await hub.peer(query: "token=\(token)")
        let b = try await hub.peer(query: "token=\(bobToken)")
        a.send(#"{"type":"ping","id":"a"}"#)
        _ = try await a.next("pong")
        b.send(#"{"type":"ping","id":"b"}"#)
        _ = try await b.next("pong")
    }

    @Test func slowConsumerIsClosed1013WhileOthersKeepFlowing() async throws {
        let hub = try await TestHub {
            $0.outboundQueueBytes = 128 * 1024
            $0.rateBurst = 100_000
            $0.ratePerSecond = 100_000
        }
        defer { Task { await hub.stop() } }
        let client = try await WebSocketClient.connect(
            to: try WebSocketURL(hub.url + "?peer=sleepy"),
            group: TestHub.group
        ) { channel in
            try channel.syncOptions?.setOption(.socketOption(.so_rcvbuf), value: 4096)
        }
        try await client.channel.setOption(.autoRead, value: false).get()
        let alice = try await hub.peer("alice")
        let bob = try await hub.peer("bob")
        let payload = String(repeating: "x", count: 60_000)
        for n in 0..<200 {
            alice.send(#"{"type":"message","to":"sleepy","data":"\#(payload)","id":"s\#(n)"}"#)
            if n % 20 == 0 {
                bob.send(#"{"type":"message","to":"alice","data":\#(n),"id":"b\#(n)"}"#)
                _ = try await alice.next("message")
            }
        }
        // The hub gave up on the sleeper with 1013. (The close frame sits behind everything the sleeper
        // never read, so the server's own count is the reliable witness.)
        let deadline = Date().addingTimeInterval(10)
        var metrics = ""
        while Date() < deadline {
            metrics = try await httpGet(port: hub.port, path: "/metrics").1
            if metrics.contains(#"signal_closes_total{code="1013"} 1"#) { break }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        #expect(metrics.contains(#"signal_closes_total{code="1013"} 1"#))
        try await client.channel.setOption(.autoRead, value: true).get()
        for await _ in client.events {}
        bob.send(#"{"type":"offer","to":"alice","sdp":"x","id":"after"}"#)
        _ = try await alice.next("offer")
        #expect(try await bob.next { $0["type"] as? String == "ack" && $0["id"] as? String == "after" }["id"] != nil)
    }

    @Test func halfOpenConnectionIsCleanedUpByTheHeartbeat() async throws {
        let hub = try await TestHub {
            $0.heartbeatInterval = 1
            $0.heartbeatTimeout = 2
            $0.limits.resumeGraceNanos = 500_000_000
        }
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        let ghost = try await hub.peer("ghost")
        alice.send(#"{"type":"join","room":"r"}"#)
        _ = try await alice.next("joined")
        ghost.send(#"{"type":"join","room":"r"}"#)
        _ = try await ghost.next("joined")
        _ = try await alice.next("peer-joined")
        // The ghost stops reading: its pings go unanswered, as with a peer whose network vanished.
        try await ghost.client.channel.setOption(.autoRead, value: false).get()
        let left = try await alice.next("peer-left", timeout: 8)
        #expect(left["peer"] as? String == "ghost")
    }

    @Test func drainClosesClientsWith1001() async throws {
        let hub = try await TestHub()
        let a = try await hub.peer()
        let b = try await hub.peer()
        await hub.stop()
        #expect(try await a.closed() == 1001)
        #expect(try await b.closed() == 1001)
    }

    @Test func healthAndMetricsEndpoints() async throws {
        let hub = try await TestHub()
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        _ = try await hub.peer("bob")
        alice.send(#"{"type":"offer","to":"bob","sdp":"x","id":"o"}"#)
        _ = try await alice.next("ack")
        let (status, _) = try await httpGet(port: hub.port, path: "/healthz")
        #expect(status == 200)
        let (metricsStatus, metrics) = try await httpGet(port: hub.port, path: "/metrics")
        #expect(metricsStatus == 200)
        #expect(metrics.contains(#"signal_signals_relayed_total{type="offer"} 1"#))
        #expect(metrics.contains("signal_connections 2"))
        let (missing, _) = try await httpGet(port: hub.port, path: "/nope")
        #expect(missing == 404)
    }
}

/// A minimal HTTP/1.1 GET over a raw socket.
func httpGet(port: Int, path: String) async throws -> (Int, String) {
    // Blocking socket calls run on a thread of their own, never on the cooperative pool.
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try blockingGet(port: port, path: path) })
        }
    }
}

/// Connects over a raw socket, sends `text` and closes (without reading).
func sendAndClose(port: Int, _ text: String) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        Thread.detachNewThread {
            continuation.resume(
                with: Result {
                    let fd = try blockingConnect(port: port)
                    defer { close(fd) }
                    _ = text.withCString { send(fd, $0, strlen($0), 0) }
                }
            )
        }
    }
}

private func blockingConnect(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else {
        close(fd)
        throw CancellationError()
    }
    return fd
}

private func blockingGet(port: Int, path: String) throws -> (Int, String) {
    try {
        let fd = try blockingConnect(port: port)
        defer { close(fd) }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var response = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { break }
            response.append(contentsOf: chunk[0..<n])
        }
        let text = String(decoding: response, as: UTF8.self)
        let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }()
}
