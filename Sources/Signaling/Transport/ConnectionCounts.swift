/// The connection caps' accounting (`--max-connections`, `--max-connections-per-ip`): connections in
/// all and per client address, with no lock and no channel (``ConnectionLimiter`` holds one under its lock).
///
/// A connection takes one total slot from its accept to its close, and one slot of its client's:
/// - a connection straight from a client is counted under its own address at accept
///   (``acquire(client:)`` with the address, ``release(client:)`` with the same address);
/// - a trusted proxy's connection carries some client that only its request names (`X-Forwarded-For`),
///   so it takes the total slot alone at accept (``acquire(client:)`` with nil) and its client's slot at
///   its upgrade (``acquireClient(_:)``); the two are given back separately (``release(client:)`` with nil,
///   ``releaseClient(_:)``), each once, whichever happens first.
struct ConnectionCounts: Sendable {
    /// Connections held at once (the total).
    let maxTotal: Int
    /// Connections one client address may hold at once.
    let maxPerClient: Int
    private(set) var total = 0
    private(set) var perClient: [String: Int] = [:]

    init(maxTotal: Int, maxPerClient: Int) {
        self.maxTotal = maxTotal
        self.maxPerClient = maxPerClient
    }

    /// A connection at accept: one total slot, and one of `client`'s unless `client` is nil (a trusted
    /// proxy's connection). False, with nothing taken, when a cap is reached (the caller answers 503).
    mutating func acquire(client: String?) -> Bool {
        guard total < maxTotal else { return false }
        if let client {
            guard self.acquireClient(client) else { return false }
        }
        total += 1
        return true
    }

    /// Gives back what ``acquire(client:)`` took with the same `client`.
    mutating func release(client: String?) {
        total -= 1
        if let client { self.releaseClient(client) }
    }

    /// One slot of `client`'s for a connection that already holds its total slot (a trusted proxy's, at
    /// the upgrade that names `client`). False, with nothing taken, at the per-client cap.
    mutating func acquireClient(_ client: String) -> Bool {
        let current = perClient[client, default: 0]
        guard current < maxPerClient else { return false }
        perClient[client] = current + 1
        return true
    }

    /// Gives back a slot of `client`'s (the count of a client with none left is removed).
    mutating func releaseClient(_ client: String) {
        let remaining = perClient[client, default: 1] - 1
        perClient[client] = remaining > 0 ? remaining : nil
    }
}
