/// Everything one mesh node sends another over an authenticated link.
public enum MeshMessage: Hashable, Sendable {
    case membership(MembershipMessage)
    /// Signed location / room records for a home node; answered by `storeAck(batch)`.
    case store(batch: UInt32, records: [SignedRecord])
    case storeAck(batch: UInt32)
    case signal(MeshSignal)
    /// The answer to one hop of a signal. `location` is the target's signed record when the sender
    /// may want to cache it (a home node's answer), so later signals go directly.
    case hopAck(SignalKey, HopStatus, location: SignedRecord?)
    /// A home node accepted the signal but could not reach the host: tell the sending peer.
    case undeliverable(SignalKey)

    /// Whether this message is control traffic (membership and records) rather than signal routing.
    public var isControl: Bool {
        switch self {
        case .membership, .store, .storeAck: true
        case .signal, .hopAck, .undeliverable: false
        }
    }

    /// Bytes on the wire: a 4-byte frame length, a type byte, then the fields.
    public var wireSize: Int {
        let body: Int
        switch self {
        case .membership(let message): body = message.wireSize
        case .store(_, let records): body = 4 + records.reduce(2) { $0 + $1.wireSize }
        case .storeAck: body = 4
        case .signal(let signal): body = signal.wireSize
        case .hopAck(_, _, let location): body = 40 + 1 + 1 + (location?.wireSize ?? 0)
        case .undeliverable: body = 40
        }
        return 4 + 1 + body
    }
}

/// What the next node did with one hop of a signal.
public enum HopStatus: UInt8, Hashable, Sendable {
    /// Delivered to the target peer(s) hosted there.
    case delivered = 0
    /// A home node took the signal on and forwards it (it reports `undeliverable` if that fails).
    case accepted = 1
    /// The receiver does not host the target (a stale cached location).
    case notHere = 2
    /// A home node with no present record of the target.
    case notFound = 3
}
