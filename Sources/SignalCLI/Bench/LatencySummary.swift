import Foundation
import Histogram

/// Latency percentiles in milliseconds.
struct LatencySummary: Encodable, Sendable {
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(_ histogram: Histogram<UInt64>) {
        func ms(_ nanoseconds: UInt64) -> Double { (Double(nanoseconds) / 1e3).rounded() / 1e3 }
        let empty = histogram.totalCount == 0
        p50 = empty ? 0 : ms(histogram.valueAtPercentile(50))
        p90 = empty ? 0 : ms(histogram.valueAtPercentile(90))
        p99 = empty ? 0 : ms(histogram.valueAtPercentile(99))
        p999 = empty ? 0 : ms(histogram.valueAtPercentile(99.9))
        max = empty ? 0 : ms(histogram.max)
        mean = empty ? 0 : (histogram.mean / 1e3).rounded() / 1e3
    }

    var text: String {
        String(format: "p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms", p50, p90, p99, p999, max)
    }
}
