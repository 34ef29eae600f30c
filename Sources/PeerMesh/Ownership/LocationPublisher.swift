/// The hosting side of ownership: the signed records of this node's own peers (where each is, which
/// rooms it is in), and which home nodes have been sent each one.
///
/// A record is published to the home nodes of its key when it is created (connect, disconnect, room
/// join or leave), re-signed with a new sequence and re-published `refreshAfter` later (before it
/// expires), and sent to any home node that newly appears after a membership change. Stores are
/// acknowledged; an unacknowledged store is retried.
public struct LocationPublisher: Sendable {
    struct Published: Sendable {
        var location: VerifiedLocation
        var homes: Set<MeshKey>
        var refreshAt: UInt64
    }

    struct PendingStore: Sendable {
        var to: MeshKey
        var records: [SignedRecord]
        var attempts: Int
        var deadline: UInt64
    }

    /// A store to send (or, when `to` is this node, to put in its own directory).
    public struct Store: Sendable {
        public var to: MeshKey
        public var batch: UInt32
        public var records: [SignedRecord]
    }

    let identity: NodeIdentity
    let configuration: MeshConfiguration
    var published: [LocationRecord.Subject: Published] = [:]
    var pending: [UInt32: PendingStore] = [:]
    var nextBatch: UInt32 = 0
    var lastSequence: UInt64 = 0

    init(identity: NodeIdentity, configuration: MeshConfiguration) {
        self.identity = identity
        self.configuration = configuration
    }

    /// Peers hosted here.
    public private(set) var localPeers: Set<String> = []

    func record(of subject: LocationRecord.Subject) -> VerifiedLocation? {
        published[subject]?.location
    }

    /// Creates, signs and publishes a record for `subject`. A tombstone (`present: false`) is published
    /// once and then forgotten here; home nodes keep it until it expires.
    mutating func announce(_ subject: LocationRecord.Subject, present: Bool, live: [MeshKey], now: UInt64) -> [Store] {
        lastSequence = max(lastSequence + 1, now)
        let record = LocationRecord(
            subject: subject,
            host: identity.id,
            sequence: lastSequence,
            expiresAt: now + configuration.recordLifetime,
            present: present
        )
        let location = record.signed(by: identity)
        let homes = Set(Ownership.closest(to: subject.key, among: live, replicas: configuration.replicas))
        if case .peer(let peer) = subject {
            if present { localPeers.insert(peer) } else { localPeers.remove(peer) }
        }
        if present {
            published[subject] = Published(
                location: location,
                homes: homes,
                refreshAt: now + configuration.recordRefresh
            )
        } else {
            published[subject] = nil
        }
        return homes.sorted().map { makeStore(to: $0, records: [location.signed], now: now) }
    }

    /// After a membership change: every record goes to the home nodes it has not been sent to yet,
    /// batched per home node.
    mutating func rehome(live: [MeshKey], now: UInt64) -> [Store] {
        var batches: [MeshKey: [SignedRecord]] = [:]
        for (subject, entry) in published {
            let homes = Set(Ownership.closest(to: subject.key, among: live, replicas: configuration.replicas))
            for home in homes.subtracting(entry.homes) {
                batches[home, default: []].append(entry.location.signed)
            }
            published[subject]?.homes = homes
        }
        return batches.keys.sorted().map { makeStore(to: $0, records: batches[$0]!, now: now) }
    }

    /// Refreshes records due for it and retries unacknowledged stores.
    mutating func tick(live: [MeshKey], now: UInt64) -> [Store] {
        var stores: [Store] = []
        let due = published.filter { $0.value.refreshAt <= now }
        for (subject, _) in due.sorted(by: { $0.value.location.record.sequence < $1.value.location.record.sequence }) {
            stores += announce(subject, present: true, live: live, now: now)
        }
        for (batch, store) in pending.filter({ $0.value.deadline <= now }).sorted(by: { $0.key < $1.key }) {
            if store.attempts >= configuration.storeAttempts || !live.contains(store.to) {
                pending[batch] = nil
                continue
            }
            pending[batch]?.attempts += 1
            pending[batch]?.deadline = now + configuration.storeRetryInterval
            stores.append(Store(to: store.to, batch: batch, records: store.records))
        }
        return stores
    }

    mutating func acknowledged(_ batch: UInt32) {
        pending[batch] = nil
    }

    var nextDeadline: UInt64 {
        min(
            published.values.map(\.refreshAt).min() ?? .max,
            pending.values.map(\.deadline).min() ?? .max
        )
    }

    private mutating func makeStore(to home: MeshKey, records: [SignedRecord], now: UInt64) -> Store {
        nextBatch &+= 1
        if home != identity.id {
            pending[nextBatch] = PendingStore(
                to: home,
                records: records,
                attempts: 1,
                deadline: now + configuration.storeRetryInterval
            )
        }
        return Store(to: home, batch: nextBatch, records: records)
    }
}
