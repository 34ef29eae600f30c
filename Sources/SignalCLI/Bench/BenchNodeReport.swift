import Foundation

/// One server's part of a run with several `--url`s (the nodes of a cluster): `nodes` in the JSON
/// summary, one line each in the text.
struct BenchNodeReport: Encodable, Sendable {
    var url: String
    /// Connections to this node that became ready.
    var connections: Int
    /// Measured messages its connections sent.
    var sent: Int
    /// Measured deliveries its connections received.
    var signals: Int
    var signalsPerSec: Double
    var errors: Int
    var errorDetail: ErrorDetail
    var serverPid: Int32?
    /// This node's CPU seconds over the same window as the total's.
    var serverCpuSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case url, connections, sent, signals
        case signalsPerSec = "signals_per_sec"
        case errors
        case errorDetail = "error_detail"
        case serverPid = "server_pid"
        case serverCpuSeconds = "server_cpu_seconds"
    }

    init(url: String, stats: BenchNodeStats, window: Double) {
        self.url = url
        self.connections = stats.ready
        self.sent = stats.sent
        self.signals = stats.received
        self.signalsPerSec = window > 0 ? (Double(stats.received) / window).rounded() : 0
        self.errors = stats.errors
        self.errorDetail = ErrorDetail(
            errorMessages: stats.errorMessages,
            connectFailed: stats.connectFailed,
            closed: stats.closed,
            lost: nil,
            firstError: nil
        )
    }

    var text: String {
        var line = "  node          \(url): \(connections) connections, sent \(sent), received \(signals)"
        line += String(format: " (%.0f/s)", signalsPerSec)
        if let serverCpuSeconds { line += String(format: ", server CPU %.2f s", serverCpuSeconds) }
        if let serverPid { line += " (pid \(serverPid))" }
        line += ", errors \(errors)"
        if errors > 0 {
            line +=
                " (error messages \(errorDetail.errorMessages), connect failed \(errorDetail.connectFailed),"
                + " closed \(errorDetail.closed))"
        }
        return line
    }
}
