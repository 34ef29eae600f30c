import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Signaling

struct PeerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Connect as a peer: print every incoming message as a JSON line, send commands read from stdin.",
        discussion: """
            Commands, one per line (or any raw JSON protocol message starting with '{'):
              join ROOM [META-JSON]     leave ROOM
              update ROOM META-JSON     (your meta in ROOM; the others get peer-updated)
              offer TO SDP-FILE         answer TO SDP-FILE
              candidate TO JSON         bye TO
              msg TO TEXT               say ROOM TEXT
              vmsg TO TEXT              vsay ROOM TEXT   (volatile: only to connected peers, never replayed)
              ping                      quit
            Requests get ids c1, c2, … so their ack/error can be matched. Status lines go to stderr, among
            them the ICE servers of each welcome and ice-servers refresh (TURN username and expiry).
            After a dropped connection the peer resumes its session by itself (backoff with jitter).
            Exit status: 0 on quit or end of input, 1 when the connection is refused or the session ends
            with a close code other than 1000.
            """
    )

    @Option(help: "Hub WebSocket URL.") var url = "ws://127.0.0.1:8080/ws"
    @Option(help: "Ask for this peer id.") var peer: String?
    @Option(help: "Client token (JWT).") var token: String?
    @Option(help: "Join this room on connect (repeatable).") var room: [String] = []
    @Flag(help: "Do not resume after a dropped connection.") var noResume = false
    @Option(help: "PEM file of a private CA to trust for wss:// (default: the system trust store).") var ca: String?
    @Flag(help: "Do not verify the server's certificate (insecure; for debugging only).") var insecure = false
    @Option(help: "Seconds to wait for outstanding answers after the end of input.") var linger = 2.0

    func run() async throws {
        var options = SignalClient.Options(url: try WebSocketURL(url), peer: peer, token: token)
        options.autoResume = !noResume
        options.tls = ClientTLSOptions(caFile: ca, insecure: insecure)
        if insecure {
            FileHandle.standardError.write(
                Data("# warning: --insecure: the server's certificate is not verified\n".utf8)
            )
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = SignalClient(options: options, group: group)
        do {
            try await client.start()
        } catch {
            FileHandle.standardError.write(Data("signal peer: cannot connect to \(url): \(error)\n".utf8))
            throw ExitCode(1)
        }
        let output = Task { () -> Int32 in
            for await event in client.events {
                switch event {
                case .message(let text):
                    FileHandle.standardOutput.write(Data((text + "\n").utf8))
                    if let summary = IceServersSummary.line(for: text) {
                        FileHandle.standardError.write(Data("# \(summary)\n".utf8))
                    }
                case .status(let text):
                    FileHandle.standardError.write(Data("# \(text)\n".utf8))
                case .ended(let code, let reason):
                    FileHandle.standardError.write(
                        Data("# session ended: \(code.map(String.init) ?? "dropped") \(reason)\n".utf8)
                    )
                    if code != 1000 { Foundation.exit(1) }  // the session is over: stop reading stdin
                    return 0
                }
            }
            return 0
        }
        var counter = 0
        func nextID() -> String {
            counter += 1
            return "c\(counter)"
        }
        for name in room {
            let id = nextID()
            await client.send(#"{"type":"join","room":\#(jsonString(name)),"id":"\#(id)"}"#, id: id)
        }
        let input = StandardInputLines()
        inputLoop: for await line in input.lines {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            if trimmed == "quit" { break inputLoop }
            do {
                let id = nextID()
                let message = try PeerCommandLine.parse(trimmed, id: id)
                await client.send(message, id: message.contains("\"id\":\"\(id)\"") ? id : nil)
            } catch {
                FileHandle.standardError.write(Data("# \(error)\n".utf8))
            }
        }
        try? await Task.sleep(nanoseconds: UInt64(linger * 1e9))
        await client.close()
        let status = await output.value
        try? await group.shutdownGracefully()
        if status != 0 { throw ExitCode(status) }
    }
}

/// Turns one command line into a protocol message.
enum PeerCommandLine {
    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    static func parse(_ line: String, id: String) throws -> String {
        if line.hasPrefix("{") { return line }
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true).map(String.init)
        func arg(_ index: Int, _ name: String) throws -> String {
            guard index < parts.count else { throw Problem(description: "usage: \(parts[0]) needs \(name)") }
            return parts[index]
        }
        let idField = "\"id\":\"\(id)\""
        switch parts[0] {
        case "join":
            let meta = parts.count > 2 ? ",\"meta\":\(parts[2])" : ""
            return #"{"type":"join","room":\#(jsonString(try arg(1, "ROOM")))\#(meta),\#(idField)}"#
        case "update":
            let room = jsonString(try arg(1, "ROOM"))
            return #"{"type":"update","room":\#(room),"meta":\#(try arg(2, "META-JSON")),\#(idField)}"#
        case "leave":
            return #"{"type":"leave","room":\#(jsonString(try arg(1, "ROOM"))),\#(idField)}"#
        case "offer", "answer":
            let path = try arg(2, "SDP-FILE")
            guard let sdp = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw Problem(description: "cannot read SDP file \(path)")
            }
            return
                #"{"type":"\#(parts[0])","to":\#(jsonString(try arg(1, "TO"))),"sdp":\#(jsonString(sdp)),\#(idField)}"#
        case "candidate":
            return
                #"{"type":"candidate","to":\#(jsonString(try arg(1, "TO"))),"candidate":\#(try arg(2, "JSON")),\#(idField)}"#
        case "bye":
            return #"{"type":"bye","to":\#(jsonString(try arg(1, "TO"))),\#(idField)}"#
        case "msg":
            return
                #"{"type":"message","to":\#(jsonString(try arg(1, "TO"))),"data":\#(jsonString(try arg(2, "TEXT"))),\#(idField)}"#
        case "say":
            return
                #"{"type":"message","room":\#(jsonString(try arg(1, "ROOM"))),"data":\#(jsonString(try arg(2, "TEXT"))),\#(idField)}"#
        case "vmsg":
            let to = jsonString(try arg(1, "TO"))
            return
                #"{"type":"message","to":\#(to),"data":\#(jsonString(try arg(2, "TEXT"))),"volatile":true,\#(idField)}"#
        case "vsay":
            let room = jsonString(try arg(1, "ROOM"))
            return
                #"{"type":"message","room":\#(room),"data":\#(jsonString(try arg(2, "TEXT"))),"volatile":true,\#(idField)}"#
        case "ping":
            return #"{"type":"ping",\#(idField)}"#
        default:
            throw Problem(description: "unknown command \"\(parts[0])\" (see signal peer --help)")
        }
    }
}

func jsonString(_ value: String) -> String {
    var buffer = ByteBuffer()
    buffer.writeJSONString(value)
    return String(buffer: buffer)
}

/// Lines from standard input, read on a thread of their own so the event loops never block.
final class StandardInputLines: Sendable {
    let lines: AsyncStream<String>

    init() {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        lines = stream
        Thread.detachNewThread {
            while let line = readLine(strippingNewline: true) {
                continuation.yield(line)
            }
            continuation.finish()
        }
    }
}

/// The `# ice servers: …` status line for a `welcome` or an `ice-servers` message: each entry's URLs and,
/// for TURN credentials, the username and when it expires (the credential itself is not repeated).
enum IceServersSummary {
    static func line(for text: String, now: Date = Date()) -> String? {
        guard text.contains("\"iceServers\""),
            let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let type = object["type"] as? String, type == "welcome" || type == "ice-servers",
            let servers = object["iceServers"] as? [[String: Any]], !servers.isEmpty
        else { return nil }
        let entries = servers.map { server -> String in
            let urls = (server["urls"] as? [String]) ?? [(server["urls"] as? String) ?? "?"]
            guard let username = server["username"] as? String else { return urls.joined(separator: " ") }
            var entry = urls.joined(separator: " ") + " (username \(username)"
            if let expiry = username.split(separator: ":").first.flatMap({ Int($0) }) {
                entry += ", expires in \(expiry - Int(now.timeIntervalSince1970)) s"
            }
            return entry + ")"
        }
        return (type == "welcome" ? "ice servers: " : "ice servers refreshed: ") + entries.joined(separator: ", ")
    }
}
