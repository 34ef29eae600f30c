import Foundation
import Histogram

/// The result of one `signal bench` run: printed as text, or as JSON with `--json`.
struct BenchReport: Encodable, Sendable {
    var mode: String
    /// The server's URL (the first, with several).
    var url: String
    /// With several `--url`s: all of them, in order.
    var urls: [String]?
    var threads: Int
    var connections: Int
    var pairs: Int?
    var rooms: Int?
    var roomSize: Int?
    /// `connect`: whether the sessions confirmed their presence events (`received`), as the SDK does.
    var confirmed: Bool?
    var rate: String?
    var sizeBytes: Int?
    var inflight: Int?
    var durationS: Double
    var sent: Int
    /// Measured deliveries (relayed signals, room deliveries, echoes, probe messages).
    var signals: Int
    var signalsPerSec: Double
    var broadcastsPerSec: Double?
    var latencyMs: LatencySummary
    var errors: Int
    var errorDetail: ErrorDetail
    var connectsPerSec: Double?
    var connectLatencyMs: LatencySummary?
    var serverPid: Int32?
    /// With several servers measured: their pids (the server figures are sums over all of them).
    var serverPids: [Int32]?
    /// With `--redis-pid`: the redis-server processes, their CPU seconds over the measured window and
    /// those per measured delivery, in microseconds.
    var redisPids: [Int32]?
    var redisCpuSeconds: Double?
    var redisCpuMicrosecondsPerSignal: Double?
    /// With several `--redis-pid`s (a Redis Cluster's shards): each one's CPU per measured delivery, in
    /// the order given (their sum is ``redisCpuMicrosecondsPerSignal``).
    var redisCpuMicrosecondsPerSignalEach: [Double]?
    /// Server CPU seconds (user + system) over the measured window (connect: while connecting).
    var serverCpuSeconds: Double?
    var signalsPerServerCpuSec: Double?
    var connectsPerServerCpuSec: Double?
    var serverRssBytes: Int?
    var serverRssBytesPerConnection: Double?
    /// With `--server-malloc-counters`: live heap growth per connection, allocations per connect and
    /// per measured delivery.
    var serverHeapBytesPerConnection: Double?
    var serverAllocationsPerConnect: Double?
    var serverAllocationsPerSignal: Double?
    var generatorCpuSeconds: Double
    /// With several `--url`s: each one's share, in `--url` order.
    var nodes: [BenchNodeReport]?

    enum CodingKeys: String, CodingKey {
        case mode, url, urls, threads, connections, pairs, rooms
        case roomSize = "room_size"
        case confirmed
        case rate
        case sizeBytes = "size_bytes"
        case inflight
        case durationS = "duration_s"
        case sent, signals
        case signalsPerSec = "signals_per_sec"
        case broadcastsPerSec = "broadcasts_per_sec"
        case latencyMs = "latency_ms"
        case errors
        case errorDetail = "error_detail"
        case connectsPerSec = "connects_per_sec"
        case connectLatencyMs = "connect_latency_ms"
        case serverPid = "server_pid"
        case serverPids = "server_pids"
        case redisPids = "redis_pids"
        case redisCpuSeconds = "redis_cpu_seconds"
        case redisCpuMicrosecondsPerSignal = "redis_cpu_us_per_signal"
        case redisCpuMicrosecondsPerSignalEach = "redis_cpu_us_per_signal_each"
        case serverCpuSeconds = "server_cpu_seconds"
        case signalsPerServerCpuSec = "signals_per_server_cpu_sec"
        case connectsPerServerCpuSec = "connects_per_server_cpu_sec"
        case serverRssBytes = "server_rss_bytes"
        case serverRssBytesPerConnection = "server_rss_bytes_per_connection"
        case serverHeapBytesPerConnection = "server_heap_bytes_per_connection"
        case serverAllocationsPerConnect = "server_allocations_per_connect"
        case serverAllocationsPerSignal = "server_allocations_per_signal"
        case generatorCpuSeconds = "generator_cpu_seconds"
        case nodes
    }

    func jsonText() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    var text: String {
        var lines: [String] = []
        var setup = "signal bench \(mode) → \((urls ?? [url]).joined(separator: ", ")): \(connections) connections"
        if let pairs { setup += ", \(pairs) pairs" }
        if let rooms, let roomSize { setup += ", \(rooms) rooms of \(roomSize)" }
        if let rate { setup += ", rate \(rate)" }
        if let sizeBytes { setup += ", \(sizeBytes) B" }
        setup += ", \(threads) generator thread\(threads == 1 ? "" : "s")"
        lines.append(setup)
        if let connectsPerSec {
            lines.append(String(format: "  connects      %.0f sessions/s", connectsPerSec))
            if let connectLatencyMs { lines.append("  connect time  \(connectLatencyMs.text)") }
        }
        lines.append(
            String(format: "  delivered     %d in %.2f s = %.0f/s (sent %d)", signals, durationS, signalsPerSec, sent)
        )
        if let broadcastsPerSec { lines.append(String(format: "  broadcasts    %.0f/s", broadcastsPerSec)) }
        lines.append("  latency       \(latencyMs.text)")
        if let serverCpuSeconds {
            var line = String(format: "  server CPU    %.2f s", serverCpuSeconds)
            if connectsPerServerCpuSec != nil { line += " while connecting" }
            if let serverPids { line += " (\(serverPids.count) servers)" }
            if let signalsPerServerCpuSec {
                line += String(format: " = %.0f signals per server CPU-second", signalsPerServerCpuSec)
            }
            if let connectsPerServerCpuSec {
                line += String(format: " = %.0f connects per server CPU-second", connectsPerServerCpuSec)
            }
            lines.append(line)
        }
        if let redisCpuSeconds {
            var line = String(format: "  Redis CPU     %.2f s", redisCpuSeconds)
            if let redisCpuMicrosecondsPerSignal {
                line += String(format: " = %.2f µs per signal", redisCpuMicrosecondsPerSignal)
            }
            if let each = redisCpuMicrosecondsPerSignalEach, each.count > 1 {
                line += " (" + each.map { String(format: "%.2f", $0) }.joined(separator: " + ") + " per process)"
            }
            lines.append(line)
        }
        if let serverRssBytes {
            var line = String(format: "  server RSS    %.1f MiB", Double(serverRssBytes) / 1_048_576)
            if let serverRssBytesPerConnection {
                line += String(format: ", %.0f bytes per connection", serverRssBytesPerConnection)
            }
            lines.append(line)
        }
        if serverHeapBytesPerConnection != nil || serverAllocationsPerConnect != nil
            || serverAllocationsPerSignal != nil
        {
            var parts: [String] = []
            if let value = serverHeapBytesPerConnection {
                parts.append(String(format: "%.0f heap bytes per connection", value))
            }
            if let value = serverAllocationsPerConnect {
                parts.append(String(format: "%.0f allocations per connect", value))
            }
            if let value = serverAllocationsPerSignal {
                parts.append(String(format: "%.2f allocations per signal", value))
            }
            lines.append("  server heap   " + parts.joined(separator: ", "))
        }
        lines.append(String(format: "  generator CPU %.2f s", generatorCpuSeconds))
        var errorLine = "  errors        \(errors)"
        if errors > 0 {
            errorLine +=
                " (error messages \(errorDetail.errorMessages), connect failed \(errorDetail.connectFailed),"
                + " closed \(errorDetail.closed), lost \(errorDetail.lost ?? 0))"
        }
        lines.append(errorLine)
        if let firstError = errorDetail.firstError { lines.append("  first error   \(firstError)") }
        for node in nodes ?? [] { lines.append(node.text) }
        return lines.joined(separator: "\n")
    }
}
