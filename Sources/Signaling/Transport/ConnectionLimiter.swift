import NIOConcurrencyHelpers

/// Global and per-IP connection caps, checked when a TCP connection is accepted.
final class ConnectionLimiter: Sendable {
    private struct Counts {
        var total = 0
        var perIP: [String: Int] = [:]
    }

    private let counts = NIOLockedValueBox(Counts())
    let maxTotal: Int
    let maxPerIP: Int

    init(maxTotal: Int, maxPerIP: Int) {
        self.maxTotal = maxTotal
        self.maxPerIP = maxPerIP
    }

    /// Takes a slot for `ip`; false when a cap is reached (the caller answers 503).
    func acquire(_ ip: String) -> Bool {
        counts.withLockedValue { counts in
            let current = counts.perIP[ip, default: 0]
            guard counts.total < maxTotal, current < maxPerIP else { return false }
            counts.total += 1
            counts.perIP[ip] = current + 1
            return true
        }
    }

    func release(_ ip: String) {
        counts.withLockedValue { counts in
            counts.total -= 1
            let remaining = counts.perIP[ip, default: 1] - 1
            counts.perIP[ip] = remaining > 0 ? remaining : nil
        }
    }

    var total: Int { counts.withLockedValue { $0.total } }
}
