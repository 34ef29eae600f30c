import NIOConcurrencyHelpers
import NIOCore

/// Global and per-IP connection caps, checked when a TCP connection is accepted.
///
/// A slot is taken when a connection is accepted and given back when it closes, by whichever handler
/// holds it then: the handshake handler, the ``WebSocketHandler`` it hands the slot to, or (for plain
/// HTTP) a callback on the channel's close future. Holding the slot in the handler instead of a close-future
/// callback for every connection saves that callback's closure and list entry (~140 B per session).
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

    /// The key a connection is counted under: its remote IP address. A channel keeps its addresses until
    /// its handlers have been removed, so a handler's `handlerRemoved` gets the same key as the accept.
    static func key(_ channel: any Channel) -> String {
        channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Takes a slot for `channel`'s address (see ``acquire(_:)``).
    func acquire(for channel: any Channel) -> Bool {
        self.acquire(Self.key(channel))
    }

    /// Gives back `channel`'s slot; called by whichever handler holds it as it is removed.
    func release(for channel: any Channel) {
        self.release(Self.key(channel))
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
