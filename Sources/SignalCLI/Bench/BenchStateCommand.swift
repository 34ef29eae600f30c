import ArgumentParser
import Foundation
import NIOCore
import Signaling

/// `signal bench state`: the hub's own memory per session at any count, without sockets.
struct BenchStateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "The hub's own memory per session (sessions, rooms, tables), in this process, at any count.",
        discussion: """
            Opens --sessions sessions in a HubState (the hub's state machine, no sockets), joins \
            them to rooms of --room-size and confirms their presence events as the SDK does, then \
            reports this process's resident memory growth per session. A served session costs this \
            plus its connection (NIO's channel, the WebSocket handler, the outbox), which does not \
            depend on the count: `bench connect` measures the sum where the open-files limit allows, \
            and this mode shows how the hub's part grows past it (tables grow in powers of two).
            """
    )

    @Option(help: "Sessions to open.") var sessions = 100_000
    @Option(help: "Sessions per room.") var roomSize = 4
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func validate() throws {
        guard sessions >= 1 else { throw ValidationError("--sessions must be at least 1") }
        guard roomSize >= 1 else { throw ValidationError("--room-size must be at least 1") }
    }

    struct Report: Encodable {
        var mode = "state"
        var sessions: Int
        var roomSize: Int
        var rooms: Int
        var hubStateRSSBytesPerSession: Double
        var hubStateRSSBytes: Int

        enum CodingKeys: String, CodingKey {
            case mode, sessions, rooms
            case roomSize = "room_size"
            case hubStateRSSBytesPerSession = "hub_state_rss_bytes_per_session"
            case hubStateRSSBytes = "hub_state_rss_bytes"
        }
    }

    func run() throws {
        let pid = getpid()
        let decoder = MessageDecoder()
        func decode(_ text: String) throws -> ClientMessage {
            try decoder.decode(ByteBuffer(string: text)).get()
        }
        // Messages decoded before measuring, so what they hold is not counted.
        let confirm = try decode(#"{"type":"received","seq":1000}"#)
        let joins = try (0..<(sessions + roomSize - 1) / roomSize).map {
            try decode(#"{"type":"join","room":"room-\#($0)"}"#)
        }
        var actions: [HubAction] = []
        actions.reserveCapacity(4 * roomSize + 8)
        let welcome: (String, String, Bool, Bool) -> ByteBuffer = { _, _, _, _ in ByteBuffer() }

        let before = ServerProbe.residentBytes(pid: pid) ?? 0
        var state = HubState()
        for index in 0..<sessions {
            let connection = ConnectionID(UInt64(index + 1))
            _ = state.open(
                connection,
                .fresh(peer: nil, subject: nil, grant: .all),
                now: 0,
                welcome: welcome,
                actions: &actions
            )
            actions.removeAll(keepingCapacity: true)
            state.receive(connection, joins[index / roomSize], actions: &actions)
            actions.removeAll(keepingCapacity: true)
        }
        for index in 0..<sessions {
            state.receive(ConnectionID(UInt64(index + 1)), confirm, actions: &actions)
            actions.removeAll(keepingCapacity: true)
        }
        let after = ServerProbe.residentBytes(pid: pid) ?? 0
        let report = Report(
            sessions: sessions,
            roomSize: roomSize,
            rooms: joins.count,
            hubStateRSSBytesPerSession: Double(after - before) / Double(sessions),
            hubStateRSSBytes: after - before
        )
        withExtendedLifetime(state) {}
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(
                "\(sessions) sessions in \(joins.count) rooms of \(roomSize): hub state "
                    + "\(report.hubStateRSSBytes) B resident, "
                    + String(format: "%.0f", report.hubStateRSSBytesPerSession) + " B per session"
            )
        }
    }
}
