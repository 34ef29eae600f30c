import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Signaling

/// A real `SignalServer` on a free loopback port, for integration tests.
final class TestHub: Sendable {
    let server: SignalServer
    let port: Int
    private let backendTask: Task<Void, Never>

    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    init(_ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.threads = 2
        configure(&configuration)
        var logger = Logger(label: "test-hub")
        logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG"] == nil ? .warning : .debug
        server = try await SignalServer(inMemory: configuration, logger: logger)
        port = try await server.start()
        // The backend's background work (the grace-period tick), stopped after the server in `stop()`.
        let backend = server.backend
        backendTask = Task { try? await backend.run() }
    }

    var url: String { "ws://127.0.0.1:\(port)/ws" }

    func connect(_ query: String = "", headers: [(String, String)] = []) async throws -> TestPeer {
        let client = try await WebSocketClient.connect(
            to: try WebSocketURL(url + (query.isEmpty ? "" : "?" + query)),
            headers: headers,
            group: Self.group
        )
        return TestPeer(client)
    }

    /// Connects and waits for `welcome`.
    func peer(_ id: String? = nil, query: String = "", headers: [(String, String)] = []) async throws -> TestPeer {
        var parts: [String] = []
        if let id { parts.append("peer=\(id)") }
        if !query.isEmpty { parts.append(query) }
        let peer = try await connect(parts.joined(separator: "&"), headers: headers)
        let welcome = try await peer.next("welcome")
        peer.id = welcome["peer"] as? String ?? ""
        peer.session = welcome["session"] as? String ?? ""
        return peer
    }

    func stop() async {
        await server.shutdown()
        backendTask.cancel()
    }
}

/// One WebSocket client with helpers to wait for messages by type.
final class TestPeer: @unchecked Sendable {
    private struct Inbox {
        var messages: [[String: Any]] = []
        var closed = false
        var closeCode: UInt16?
    }

    let client: WebSocketClient
    var id = ""
    var session = ""
    private let inbox = NIOLockedValueBox(Inbox())

    init(_ client: WebSocketClient) {
        self.client = client
        let inbox = self.inbox
        Task {
            for await event in client.events {
                switch event {
                case .text(let text):
                    let object =
                        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [
                            "type": "<invalid>", "raw": text,
                        ]
                    inbox.withLockedValue { $0.messages.append(object) }
                case .closed(let code, _):
                    inbox.withLockedValue {
                        $0.closed = true
                        $0.closeCode = code
                    }
                case .binary:
                    continue
                }
            }
        }
    }

    func send(_ text: String) {
        client.send(text)
    }

    /// Removes and returns the first received message matching `predicate`, waiting up to `timeout`.
    func next(
        timeout: Double = 5,
        sourceLocation: SourceLocation = #_sourceLocation,
        where predicate: @escaping ([String: Any]) -> Bool
    ) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let (found, closed) = inbox.withLockedValue { inbox -> ([String: Any]?, Bool) in
                if let index = inbox.messages.firstIndex(where: predicate) {
                    return (inbox.messages.remove(at: index), inbox.closed)
                }
                return (nil, inbox.closed)
            }
            if let found { return found }
            if closed || Date() > deadline {
                let seen = inbox.withLockedValue { $0.messages.map { $0["type"] as? String ?? "?" } }
                Issue.record(
                    "expected message not received (closed: \(closed)); pending: \(seen)",
                    sourceLocation: sourceLocation
                )
                throw CancellationError()
            }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
    }

    /// The next message of `type` (others stay queued).
    func next(_ type: String, timeout: Double = 5, sourceLocation: SourceLocation = #_sourceLocation) async throws
        -> [String: Any]
    {
        try await next(timeout: timeout, sourceLocation: sourceLocation) { $0["type"] as? String == type }
    }

    /// Waits for the connection to close; returns the server's close code (nil when dropped without one).
    func closed(timeout: Double = 5, sourceLocation: SourceLocation = #_sourceLocation) async throws -> UInt16? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (closed, code) = inbox.withLockedValue { ($0.closed, $0.closeCode) }
            if closed { return code }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        Issue.record("connection did not close within \(timeout)s", sourceLocation: sourceLocation)
        throw CancellationError()
    }

    var isClosed: Bool { inbox.withLockedValue { $0.closed } }

    /// Received messages of `type` not yet consumed.
    func pending(_ type: String) -> [[String: Any]] {
        inbox.withLockedValue { $0.messages.filter { $0["type"] as? String == type } }
    }
}
