import NIOCore

/// When each connection is due fresh TURN credentials (an `ice-servers` message): one period after its
/// `welcome`, then every period, for as long as it is open. Pure (time injected); the ``Hub`` asks it at
/// each tick, under its lock.
///
/// Every connection has the same period, so due times are added in increasing order and a FIFO queue
/// is a priority queue here: a tick looks at the front only. A closed connection leaves its queue entry
/// behind (connection ids are never reused), which is skipped when it comes up.
struct IceRefreshSchedule {
    let periodNanos: UInt64
    private var queue = CircularBuffer<(due: UInt64, connection: ConnectionID)>()
    private var peers: [ConnectionID: String] = [:]

    init(periodNanos: UInt64) {
        self.periodNanos = max(1, periodNanos)
    }

    /// Connections with credentials to refresh.
    var count: Int { peers.count }

    /// `connection` got credentials for `peer` at `now` (its `welcome`).
    mutating func add(_ connection: ConnectionID, peer: String, now: UInt64) {
        peers[connection] = peer
        queue.append((now + periodNanos, connection))
    }

    /// `connection` closed: no more refreshes.
    mutating func remove(_ connection: ConnectionID) {
        peers[connection] = nil
        if peers.isEmpty { queue.removeAll(keepingCapacity: true) }
    }

    /// The connections due fresh credentials at `now`, each with its peer id; each is due again one period
    /// later.
    mutating func due(now: UInt64) -> [(connection: ConnectionID, peer: String)] {
        var result: [(connection: ConnectionID, peer: String)] = []
        while let first = queue.first, first.due <= now {
            queue.removeFirst()
            guard let peer = peers[first.connection] else { continue }
            result.append((first.connection, peer))
            queue.append((now + periodNanos, first.connection))
        }
        return result
    }
}
