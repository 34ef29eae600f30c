import Foundation
import PeerMesh

/// Renders a `HarnessReport` as Markdown, JSON or an SVG chart.
public enum ReportRenderer {
    public static func json(_ report: HarnessReport) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(report), as: UTF8.self)
    }

    public static func format(_ value: Double, _ digits: Int = 1) -> String {
        String(format: "%.\(digits)f", value)
    }

    static func percent(_ ratio: Double) -> String {
        ratio >= 0.99995 && ratio < 1 ? "99.99+%" : String(format: "%.2f%%", ratio * 100)
    }

    static func hops(_ figures: BackendFigures) -> String {
        let total = max(1, figures.hops.values.reduce(0, +))
        return figures.hops.keys.sorted().map { "\($0): \(format(100 * Double(figures.hops[$0]!) / Double(total)))%" }
            .joined(separator: ", ")
    }

    /// How the nodes were linked: simulated delay, or loopback (the process backend, delay 0).
    static func links(_ scenario: ScenarioReport) -> String {
        scenario.linkDelayMs > 0 ? "\(format(scenario.linkDelayMs, 0)) ms links" : "processes on loopback"
    }

    public static func markdown(_ report: HarnessReport) -> String {
        let options = report.options
        var lines: [String] = []
        if let setup = report.setup {
            lines.append(setup)
        } else {
            lines.append(
                "Simulation: \(options.nodes) nodes, seed \(options.seed), links \(format(options.linkDelayMs, 0)) ms ± "
                    + "\(format(options.jitterFraction * 100, 0))% jitter, \(options.peersPerNode) peers per node in pairs on different "
                    + "nodes, \(format(options.signalsPerSecondPerNode, 0)) signals/s per node for \(format(options.workloadSeconds, 0)) s, "
                    + "\(options.payloadBytes)-byte payloads."
            )
        }
        lines.append("")
        lines.append(
            "| scenario | backend | delivered | unavailable / silent | p50 ms | p95 ms | p99 ms | stretch p95 | hops | "
                + "msgs / delivered (acks) | bytes / delivered | control B/s/node | suspected ms (median; max) | dead ms (first / all, median; max all) | recovery s |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for scenario in report.scenarios {
            for (name, figures) in [("hub", scenario.hub), ("mesh", scenario.mesh)] {
                let suspected =
                    figures.detection.map { "\(format($0.suspectMedianMs, 0)); \(format($0.suspectMaxMs, 0))" } ?? "–"
                let detection =
                    figures.detection.map {
                        "\(format($0.firstMedianMs, 0)) / \(format($0.allMedianMs, 0)); \(format($0.allMaxMs, 0))"
                    } ?? "–"
                let stretch = name == "mesh" ? format(scenario.stretch["p95"] ?? 0, 2) : ""
                let recovery = figures.recoverySeconds.map { format($0) } ?? "–"
                lines.append(
                    "| \(scenario.scenario) | \(name) | \(percent(figures.deliveryRatio)) (\(figures.delivered)/\(figures.eligible)) | "
                        + "\(figures.reportedUnavailable) / \(figures.silentlyLost) | \(format(figures.latencyMs.p50)) | "
                        + "\(format(figures.latencyMs.p95)) | \(format(figures.latencyMs.p99)) | \(stretch) | \(hops(figures)) | "
                        + "\(format(figures.signalMessagesPerDelivered, 3)) (\(format(figures.ackMessagesPerDelivered, 3))) | "
                        + "\(format(figures.bytesPerDelivered, 0)) | \(format(figures.controlBytesPerSecondPerNode, 0)) | \(suspected) | \(detection) | \(recovery) |"
                )
            }
        }
        lines.append("")
        for scenario in report.scenarios {
            for note in scenario.notes ?? [] { lines.append("- \(scenario.scenario): \(note)") }
        }
        for (name, reason) in (report.skipped ?? [:]).sorted(by: { $0.key < $1.key }) {
            lines.append("- \(name): not run on the \(report.backend) backend — \(reason)")
        }
        if report.scenarios.contains(where: { $0.notes != nil }) || report.skipped != nil { lines.append("") }
        let wall = report.scenarios.reduce(0) { $0 + $1.wallSeconds }
        let what = report.backend == "sim" ? "the simulations" : "the runs (hub and mesh, one after the other)"
        lines.append("Wall time of \(what): \(format(wall, 1)) s.")
        return lines.joined(separator: "\n") + "\n"
    }

    /// Two charts side by side: the latency CDF of hub and mesh in the first scenario that has one,
    /// and delivery over time in the first scenario with a fault.
    public static func svg(_ report: HarnessReport) -> String {
        let width = 1000.0
        let height = 420.0
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>

            """
        let colors = ["hub": "#d62728", "mesh": "#1f77b4"]
        func panel(
            x: Double,
            title: String,
            xLabel: String,
            yLabel: String,
            series: [(String, [[Double]])],
            xMax: Double,
            yMin: Double
        ) {
            let left = x + 60
            let top = 40.0
            let plotWidth = 400.0
            let plotHeight = 300.0
            out += "<text x=\"\(left)\" y=\"24\" font-size=\"14\" font-weight=\"bold\">\(title)</text>\n"
            out +=
                "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#888\"/>\n"
            for tick in 0...4 {
                let fx = Double(tick) / 4
                let tx = left + fx * plotWidth
                let ty = top + plotHeight - fx * plotHeight
                out +=
                    "<text x=\"\(format(tx))\" y=\"\(top + plotHeight + 16)\" text-anchor=\"middle\">\(format(fx * xMax, 0))</text>\n"
                out +=
                    "<text x=\"\(left - 6)\" y=\"\(format(ty + 4))\" text-anchor=\"end\">\(format(yMin + fx * (1 - yMin), 3))</text>\n"
            }
            out +=
                "<text x=\"\(left + plotWidth / 2)\" y=\"\(top + plotHeight + 34)\" text-anchor=\"middle\">\(xLabel)</text>\n"
            out +=
                "<text x=\"\(x + 12)\" y=\"\(top + plotHeight / 2)\" transform=\"rotate(-90 \(x + 12) \(top + plotHeight / 2))\" "
                + "text-anchor=\"middle\">\(yLabel)</text>\n"
            for (index, (name, points)) in series.enumerated() {
                let path = points.map { point -> String in
                    let px = left + min(point[0], xMax) / xMax * plotWidth
                    let py = top + plotHeight - (max(point[1], yMin) - yMin) / (1 - yMin) * plotHeight
                    return "\(format(px)),\(format(py))"
                }.joined(separator: " ")
                out +=
                    "<polyline fill=\"none\" stroke=\"\(colors[name] ?? "#000")\" stroke-width=\"2\" points=\"\(path)\"/>\n"
                out +=
                    "<text x=\"\(left + plotWidth - 60)\" y=\"\(top + 20 + Double(index) * 16)\" fill=\"\(colors[name] ?? "#000")\">\(name)</text>\n"
            }
        }
        if let scenario = report.scenarios.first(where: { !$0.mesh.cdf.isEmpty }) {
            let xMax = max(scenario.hub.latencyMs.p99, scenario.mesh.latencyMs.p99) * 1.2
            panel(
                x: 0,
                title: "Latency CDF (\(scenario.scenario), \(scenario.nodes) nodes, \(links(scenario)))",
                xLabel: "end-to-end latency, ms",
                yLabel: "fraction of delivered signals",
                series: [("hub", scenario.hub.cdf), ("mesh", scenario.mesh.cdf)],
                xMax: max(xMax, 1),
                yMin: 0
            )
        }
        // The fault whose dip is deepest in the mesh run (a partition when there is one).
        let faulted = report.scenarios.filter { $0.faultAtSeconds != nil }
        let deepest = faulted.min {
            ($0.mesh.timeline.map { $0[1] }.min() ?? 1) < ($1.mesh.timeline.map { $0[1] }.min() ?? 1)
        }
        if let scenario = deepest ?? report.scenarios.first {
            let xMax = (scenario.mesh.timeline.last?[0] ?? 30) + 0.5
            let lowest = min(
                scenario.hub.timeline.map { $0[1] }.min() ?? 1,
                scenario.mesh.timeline.map { $0[1] }.min() ?? 1
            )
            panel(
                x: 500,
                title: "Delivery per 500 ms (\(scenario.scenario); fault at \(format(scenario.faultAtSeconds ?? 0)) s)",
                xLabel: "seconds of workload",
                yLabel: "delivery ratio",
                series: [("hub", scenario.hub.timeline), ("mesh", scenario.mesh.timeline)],
                xMax: xMax,
                yMin: max(0, min(0.9, floor(lowest * 10) / 10))
            )
        }
        out += "</svg>\n"
        return out
    }
}
