import NIOConcurrencyHelpers
import NIOCore

/// Global and per-IP connection caps (``ConnectionCounts`` under a lock), checked when a TCP connection
/// is accepted, and for a trusted proxy's connection also at its upgrade.
///
/// A slot is taken when a connection is accepted and given back when it closes, by whichever handler
/// holds it then: the handshake handler, the ``WebSocketHandler`` it hands the slot to, or (for plain
/// HTTP) a callback on the channel's close future. Holding the slot in the handler instead of a close-future
/// callback for every connection saves that callback's closure and list entry (~140 B per session).
///
/// A connection from a ``TrustedProxies`` address (``Key/proxy``) takes only the total slot at accept, so
/// its handlers release only that; the client its upgrade request names (`X-Forwarded-For`) is counted by
/// ``acquireClient(_:for:)``, which gives that slot back on the close future itself. Connections from
/// elsewhere (every connection, when no proxy is trusted) are counted as before, under their own address.
final class ConnectionLimiter: Sendable {
    private let counts: NIOLockedValueBox<ConnectionCounts>
    let maxTotal: Int
    let maxPerIP: Int
    /// Whose `X-Forwarded-For` names the client (none by default).
    let trustedProxies: TrustedProxies

    init(maxTotal: Int, maxPerIP: Int, trustedProxies: TrustedProxies = TrustedProxies([])) {
        self.counts = NIOLockedValueBox(ConnectionCounts(maxTotal: maxTotal, maxPerClient: maxPerIP))
        self.maxTotal = maxTotal
        self.maxPerIP = maxPerIP
        self.trustedProxies = trustedProxies
    }

    /// What a connection is counted under from its accept to its close.
    enum Key: Equatable {
        /// Its peer's address (``clientAddress(of:)``), in the total and per IP.
        case address(String)
        /// A trusted proxy's connection: in the total only; its client is counted at its upgrade.
        case proxy
    }

    /// The address a connection's own peer is counted and logged under: normalized (``IPAddress``), or
    /// `unknown` when the channel has none. A channel keeps its addresses until its handlers have been
    /// removed, so a handler's `handlerRemoved` gets the same key as the accept.
    static func clientAddress(of channel: any Channel) -> String {
        channel.remoteAddress.flatMap(IPAddress.init).map(\.description) ?? "unknown"
    }

    /// How `channel` is counted (the same at its accept and at its close).
    func key(for channel: any Channel) -> Key {
        self.isTrustedProxy(channel) ? .proxy : .address(Self.clientAddress(of: channel))
    }

    /// Whether `channel` comes from a trusted proxy (never, when none is configured).
    func isTrustedProxy(_ channel: any Channel) -> Bool {
        guard !trustedProxies.isEmpty, let peer = channel.remoteAddress.flatMap(IPAddress.init) else { return false }
        return trustedProxies.contains(peer)
    }

    /// Takes a slot for a connection counted under `key`; false when a cap is reached (the caller
    /// answers 503).
    func acquire(_ key: Key) -> Bool {
        counts.withLockedValue { $0.acquire(client: key.client) }
    }

    func release(_ key: Key) {
        counts.withLockedValue { $0.release(client: key.client) }
    }

    /// Takes a slot for `channel` (see ``acquire(_:)``).
    func acquire(for channel: any Channel) -> Bool {
        self.acquire(self.key(for: channel))
    }

    /// Gives back `channel`'s slot; called by whichever handler holds it as it is removed.
    func release(for channel: any Channel) {
        self.release(self.key(for: channel))
    }

    /// Counts a trusted proxy's connection under `client` too (the client its upgrade request names),
    /// until `channel` closes; false, with nothing taken, when `client` is at the per-IP cap.
    func acquireClient(_ client: String, for channel: any Channel) -> Bool {
        guard counts.withLockedValue({ $0.acquireClient(client) }) else { return false }
        channel.closeFuture.whenComplete { [self] _ in
            self.counts.withLockedValue { $0.releaseClient(client) }
        }
        return true
    }

    var total: Int { counts.withLockedValue { $0.total } }

    /// Connections per client address (for tests).
    var perClient: [String: Int] { counts.withLockedValue { $0.perClient } }
}

extension ConnectionLimiter.Key {
    fileprivate var client: String? {
        switch self {
        case .address(let address): address
        case .proxy: nil
        }
    }
}
