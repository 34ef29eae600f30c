import Foundation
import NIOCore

/// A protocol-v1 client that resumes by itself: after a drop (or the server's 1001/1011/1013) it
/// reconnects with exponential backoff and jitter, resumes with `resume`/`last`, drops replayed
/// duplicates, re-sends requests that were never answered (the server answers those from memory instead
/// of delivering twice), and confirms what it processed with `received`.
public actor SignalClient {
    public struct Options: Sendable {
        public var url: WebSocketURL
        public var peer: String?
        public var token: String?
        public var autoResume = true
        public var initialBackoff: Double = 0.05
        public var maxBackoff: Double = 5
        /// Give up resuming after this many seconds without a successful reconnect.
        public var resumeDeadline: Double = 60
        /// Send `received` after this many sequenced messages.
        public var confirmEvery = 32
        public var headers: [(String, String)] = []
        /// How `wss://` servers are verified.
        public var tls = ClientTLSOptions()

        public init(url: WebSocketURL, peer: String? = nil, token: String? = nil) {
            self.url = url
            self.peer = peer
            self.token = token
        }
    }

    public enum Event: Sendable {
        /// A protocol message (JSON text), in order, each sequenced message exactly once.
        case message(String)
        /// Something about the connection worth telling a human.
        case status(String)
        /// The session is over: the server's close code (nil if the connection just dropped) and why.
        case ended(code: UInt16?, reason: String)
    }

    public nonisolated let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let options: Options
    private let group: any EventLoopGroup
    private var connection: WebSocketClient?
    private var session: String?
    private var lastSeq: UInt64 = 0
    private var unconfirmed = 0
    private var pending: [(id: String, text: String)] = []
    private var outbox: [String] = []
    private var runner: Task<Void, Never>?
    private var closing = false
    public private(set) var peer: String?
    /// Resumes completed: `welcome`s with `resumed: true` received.
    public private(set) var resumes = 0

    public init(options: Options, group: any EventLoopGroup) {
        self.options = options
        self.group = group
        (events, continuation) = AsyncStream<Event>.makeStream()
    }

    /// Connects (the first attempt's failure is thrown) and starts delivering events.
    public func start() async throws {
        let client = try await self.connect(resume: false)
        self.connection = client
        self.runner = Task { await self.run(client) }
    }

    /// Sends a request. One with an `id` is remembered until answered and re-sent after a resume.
    public func send(_ text: String, id: String? = nil) {
        if let id { pending.append((id, text)) }
        if let connection {
            connection.send(text)
        } else if id == nil {
            outbox.append(text)
        }
    }

    /// Closes the session for good (close 1000).
    public func close() async {
        closing = true
        if let connection {
            connection.close(code: 1000)
            _ = await connection.closed()
        } else {
            runner?.cancel()
        }
        await runner?.value
    }

    /// Drops the current socket without a close frame (tests use this to simulate a network failure).
    public func dropConnection() {
        connection?.abort()
    }

    private func connect(resume: Bool) async throws -> WebSocketClient {
        var query: [String] = []
        func encoded(_ value: String) -> String {
            value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
                ?? value
        }
        if resume, let session {
            query.append("resume=\(encoded(session))")
            query.append("last=\(lastSeq)")
        } else if let peer = options.peer {
            query.append("peer=\(encoded(peer))")
        }
        if let token = options.token { query.append("token=\(encoded(token))") }
        let url = query.isEmpty ? options.url : options.url.appendingQuery(query.joined(separator: "&"))
        return try await WebSocketClient.connect(to: url, headers: options.headers, group: group, tls: options.tls)
    }

    private func run(_ first: WebSocketClient) async {
        var client = first
        while true {
            let (code, reason) = await self.pump(client)
            connection = nil
            let resumable = code == nil || code == 1001 || code == 1011 || code == 1013
            guard options.autoResume, resumable, session != nil, !closing, !Task.isCancelled else {
                continuation.yield(.ended(code: code, reason: reason))
                continuation.finish()
                return
            }
            continuation.yield(.status("connection lost (\(code.map(String.init) ?? "no close frame")); resuming"))
            guard let next = await self.reconnect() else {
                continuation.yield(.ended(code: code, reason: "could not resume"))
                continuation.finish()
                return
            }
            client = next
        }
    }

    private func reconnect() async -> WebSocketClient? {
        var delay = options.initialBackoff
        let deadline = Date().addingTimeInterval(options.resumeDeadline)
        while Date() < deadline, !Task.isCancelled {
            let jittered = delay * Double.random(in: 0.5...1.0)
            try? await Task.sleep(nanoseconds: UInt64(jittered * 1e9))
            if let client = try? await self.connect(resume: true) {
                connection = client
                return client
            }
            delay = min(options.maxBackoff, delay * 2)
        }
        return nil
    }

    /// Reads one connection until it ends; returns its close code and reason.
    private func pump(_ client: WebSocketClient) async -> (UInt16?, String) {
        for await event in client.events {
            switch event {
            case .text(let text):
                self.handle(text, on: client)
            case .binary:
                continue
            case .closed(let code, let reason):
                return (code, reason)
            }
        }
        return (nil, "")
    }

    private func handle(_ text: String, on client: WebSocketClient) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            continuation.yield(.message(text))
            return
        }
        let type = object["type"] as? String
        if type == "welcome" {
            session = object["session"] as? String
            peer = object["peer"] as? String
            if object["resumed"] as? Bool == true {
                // Counted when this welcome (and its new session token) arrives, not when the socket
                // connects: the hub retires the previous token as soon as it takes the resume.
                resumes += 1
                if object["gap"] as? Bool == true {
                    continuation.yield(.status("resumed with a gap: some messages were lost; renegotiate"))
                }
                // Re-send what was never answered, then anything written while away.
                for request in pending { client.send(request.text) }
                for text in outbox { client.send(text) }
                outbox.removeAll()
            }
        }
        if let seq = (object["seq"] as? NSNumber)?.uint64Value {
            if seq <= lastSeq { return }  // replayed twice: already delivered
            lastSeq = seq
            unconfirmed += 1
            if unconfirmed >= options.confirmEvery {
                unconfirmed = 0
                client.send("{\"type\":\"received\",\"seq\":\(seq)}")
            }
        } else if let id = object["id"] as? String,
            ["ack", "error", "joined", "updated", "left", "pong"].contains(type ?? "")
        {
            pending.removeAll { $0.id == id }
        }
        continuation.yield(.message(text))
    }
}
