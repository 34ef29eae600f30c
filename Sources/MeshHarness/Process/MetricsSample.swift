/// One scrape of a node's `/metrics`: every sample line as series (name with labels, verbatim) → value.
struct MetricsSample: Sendable {
    /// When it was taken, nanoseconds on the script's clock.
    var at: UInt64
    var values: [Substring: Double]

    init(at: UInt64, text: String) {
        self.at = at
        var values: [Substring: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            values[line[..<space]] = value
        }
        self.values = values
    }

    subscript(_ series: String) -> Double { values[Substring(series)] ?? 0 }

    /// `signal_mesh_member_live{node="…"}`-style gauges: node label → value.
    func members(_ name: String) -> [String: Double] {
        let prefix = "\(name){node=\""
        var out: [String: Double] = [:]
        for (series, value) in values where series.hasPrefix(prefix) {
            out[String(series.dropFirst(prefix.count).prefix { $0 != "\"" })] = value
        }
        return out
    }
}
