/// One mesh node: membership, ownership and routing composed into one deterministic state machine.
///
/// The driver — a socket transport, or the simulator — feeds it events with the current time and
/// carries out the returned actions; it calls `tick(now:)` at `nextDeadline` (or more often). The same
/// value runs over sockets and in simulation.
public struct MeshNode: Sendable {
    public let identity: NodeIdentity
    public let configuration: MeshConfiguration
    public private(set) var membership: Membership
    public private(set) var directory = HomeDirectory()
    var publisher: LocationPublisher
    public private(set) var router: Router
    var live: [MeshKey]
    var liveSet: Set<MeshKey>
    var suspects: Set<MeshKey> = []
    var rehomeAt: UInt64?
    var nextSweepAt: UInt64 = 0
    var signalCheck: SignalCheck
    /// What other nodes sent that was refused, until the driver takes it (at most `maxOffences`).
    var offences: [MeshOffence] = []
    static let maxOffences = 256

    public var id: MeshKey { identity.id }

    public init(identity: NodeIdentity, address: String, configuration: MeshConfiguration = .init(), seed: UInt64) {
        self.identity = identity
        self.configuration = configuration
        self.membership = Membership(
            identity: identity,
            address: address,
            configuration: configuration.membership,
            seed: seed
        )
        self.publisher = LocationPublisher(identity: identity, configuration: configuration)
        self.router = Router(me: identity.id, configuration: configuration)
        self.signalCheck = SignalCheck(configuration: configuration)
        self.live = [identity.id]
        self.liveSet = [identity.id]
    }

    /// Peers connected to this node.
    public var localPeers: Set<String> { publisher.localPeers }

    /// Live members as this node sees them (itself included), in key order.
    public var liveMembers: [MeshKey] { live }

    /// Live members this node currently suspects (routing avoids them).
    public var suspectedMembers: Set<MeshKey> { suspects }

    public var nextDeadline: UInt64 {
        min(membership.nextDeadline, router.nextDeadline, publisher.nextDeadline, nextSweepAt, rehomeAt ?? .max)
    }

    var view: RoutingView {
        RoutingView(
            me: id,
            live: live,
            liveSet: liveSet,
            suspects: suspects,
            directory: directory,
            localPeers: localPeers,
            replicas: configuration.replicas
        )
    }

    // MARK: - Node lifecycle

    public mutating func start(seeds: [(node: MeshKey, address: String)], now: UInt64) -> [MeshAction] {
        nextSweepAt = now + configuration.sweepInterval
        return handle(membership.start(seeds: seeds, now: now), now: now)
    }

    /// Leaves the mesh gracefully (the members it tells spread the news).
    public mutating func leave(now: UInt64) -> [MeshAction] {
        handle(membership.leave(now: now), now: now)
    }

    public mutating func tick(now: UInt64) -> [MeshAction] {
        var actions = handle(membership.tick(now: now), now: now)
        if let at = rehomeAt, at <= now {
            rehomeAt = nil
            actions += stores(publisher.rehome(live: live, now: now), now: now)
        }
        actions += stores(publisher.tick(live: live, now: now), now: now)
        actions += Self.map(router.tick(view: view, now: now))
        if now >= nextSweepAt {
            nextSweepAt = now + configuration.sweepInterval
            directory.expire(now: now)
            router.sweep(now: now)
        }
        return actions
    }

    /// The transport lost its link to `node`.
    public mutating func linkDown(_ node: MeshKey, now: UInt64) -> [MeshAction] {
        var actions = handle(membership.linkDown(node, now: now), now: now)
        actions += Self.map(router.unreachable(node, view: view, now: now))
        return actions
    }

    // MARK: - Local peers

    /// A peer connected to this node: publish where it is.
    public mutating func connect(peer: String, now: UInt64) -> [MeshAction] {
        stores(publisher.announce(.peer(peer), present: true, live: live, now: now), now: now)
    }

    /// A peer left this node: publish a tombstone, and leave its rooms.
    public mutating func disconnect(peer: String, now: UInt64) -> [MeshAction] {
        var actions: [MeshAction] = []
        let rooms = publisher.published.keys.compactMap { subject -> String? in
            if case .roomMember(let room, peer) = subject { return room }
            return nil
        }
        for room in rooms.sorted() {
            actions += leave(peer: peer, room: room, now: now)
        }
        actions += stores(publisher.announce(.peer(peer), present: false, live: live, now: now), now: now)
        return actions
    }

    public mutating func join(peer: String, room: String, now: UInt64) -> [MeshAction] {
        stores(publisher.announce(.roomMember(room: room, peer: peer), present: true, live: live, now: now), now: now)
    }

    public mutating func leave(peer: String, room: String, now: UInt64) -> [MeshAction] {
        stores(publisher.announce(.roomMember(room: room, peer: peer), present: false, live: live, now: now), now: now)
    }

    /// A local peer sends a signal; the returned key identifies it in a later `unavailable`.
    public mutating func send(from peer: String, to target: MeshSignal.Target, payload: [UInt8], now: UInt64)
        -> (SignalKey, [MeshAction])
    {
        let identity = self.identity
        let published = publisher.record(of: .peer(peer))?.signed
        let lifetime = configuration.recordLifetime
        let (key, actions) = router.send(from: peer, to: target, payload: payload, view: view, now: now) { signal in
            // A peer hosted here has its published record. A signal on behalf of a peer this node does not
            // host (the hub's answer about a recipient that is gone) carries a record made for the occasion:
            // either way, this node vouches for `from` under its own key.
            let record =
                published
                ?? LocationRecord(
                    subject: .peer(peer),
                    host: identity.id,
                    sequence: now,
                    expiresAt: now &+ lifetime,
                    present: true
                )
                .signed(by: identity).signed
            return SignalCredential.sign(signal, sender: record, as: identity)
        }
        return (key, Self.map(actions))
    }

    /// What other nodes sent that this node refused since the last call (the driver counts them and
    /// closes the links of nodes whose offence `disconnects`).
    public mutating func takeOffences() -> [MeshOffence] {
        defer { offences.removeAll() }
        return offences
    }

    mutating func record(_ reason: MeshOffence.Reason, by node: MeshKey) {
        guard offences.count < Self.maxOffences else { return }
        offences.append(MeshOffence(node: node, reason: reason))
    }

    // MARK: - Messages from other nodes

    public mutating func receive(_ message: MeshMessage, from sender: MeshKey, now: UInt64) -> [MeshAction] {
        switch message {
        case .membership(let message):
            let refusedBefore = membership.refusedUpdates
            let actions = handle(membership.receive(message, from: sender, now: now), now: now)
            if membership.refusedUpdates != refusedBefore { record(.memberUpdate, by: sender) }
            return actions
        case .store(let batch, let records):
            var refused = false
            for record in records where !accept(record, now: now) {
                refused = true
            }
            if refused { record(.locationRecord, by: sender) }
            return [.send(to: sender, .storeAck(batch: batch))]
        case .storeAck(let batch):
            publisher.acknowledged(batch)
            return []
        case .signal(let signal):
            switch signalCheck.check(signal, now: now) {
            case .valid:
                return Self.map(router.receive(signal, from: sender, view: view, now: now))
            case .refused(let reason):
                record(reason, by: sender)
                // Dropped before routing (no dedup entry, no hint). A stale sender is answered, so an
                // honest entry node tries elsewhere or tells its peer; a forger gets nothing but the
                // closed link.
                guard reason == .staleSender else { return [] }
                return [.send(to: sender, .hopAck(signal.key, .notFound, location: nil))]
            }
        case .hopAck(let key, let status, let location):
            return Self.map(router.receiveAck(key, status, location: location, from: sender, view: view, now: now))
        case .undeliverable(let key):
            return Self.map(router.receiveUndeliverable(key, from: sender))
        }
    }

    /// Stores a record as a home node if it verifies, names a peer (and room) of a sane length, does not
    /// claim to live longer than `recordLifetime` allows, and its host is not known dead. Returns false
    /// for records that are refused as invalid (a dead host's or a full directory's are not invalid).
    @discardableResult
    mutating func accept(_ record: SignedRecord, now: UInt64) -> Bool {
        guard let verified = try? VerifiedLocation(verifying: record) else { return false }
        let location = verified.record
        switch location.subject {
        case .peer(let peer):
            guard signalCheck.isName(peer) else { return false }
        case .roomMember(let room, let peer):
            guard signalCheck.isName(peer), signalCheck.isName(room) else { return false }
        }
        // A host stamps expiry as now + recordLifetime on its own clock; twice that is slack enough.
        let horizon = configuration.recordLifetime.multipliedReportingOverflow(by: 2)
        let (latest, overflow) = now.addingReportingOverflow(horizon.overflow ? .max : horizon.partialValue)
        guard overflow || location.expiresAt <= latest else { return false }
        if let status = membership.status(of: location.host), !status.isLive { return true }
        directory.store(
            verified,
            now: now,
            maxRecords: configuration.maxDirectoryRecords,
            maxPerHost: configuration.maxRecordsPerHost
        )
        return true
    }

    // MARK: - Plumbing

    mutating func stores(_ stores: [LocationPublisher.Store], now: UInt64) -> [MeshAction] {
        var actions: [MeshAction] = []
        for store in stores {
            if store.to == id {
                for record in store.records { accept(record, now: now) }
            } else {
                actions.append(.send(to: store.to, .store(batch: store.batch, records: store.records)))
            }
        }
        return actions
    }

    mutating func handle(_ membershipActions: [MembershipAction], now: UInt64) -> [MeshAction] {
        var actions: [MeshAction] = []
        var unreachable: [MeshKey] = []
        for action in membershipActions {
            switch action {
            case .send(let to, let message):
                actions.append(.send(to: to, .membership(message)))
            case .changed(let event):
                actions.append(.membership(event))
                switch event {
                case .joined(let node):
                    suspects.remove(node)
                    if liveSet.insert(node).inserted {
                        live.insert(node, at: live.partitioningIndex(where: { $0 >= node }))
                    }
                    scheduleRehome(now: now)
                case .recovered(let node):
                    suspects.remove(node)
                case .suspected(let node):
                    suspects.insert(node)
                    unreachable.append(node)
                case .failed(let node):
                    suspects.remove(node)
                    if liveSet.remove(node) != nil, let index = live.firstIndex(of: node) {
                        live.remove(at: index)
                    }
                    directory.dropRecords(of: node)
                    unreachable.append(node)
                    scheduleRehome(now: now)
                }
            }
        }
        for node in unreachable {
            actions += Self.map(router.unreachable(node, view: view, now: now))
        }
        return actions
    }

    mutating func scheduleRehome(now: UInt64) {
        if rehomeAt == nil { rehomeAt = now + 50_000_000 }
    }

    /// The router's actions as the node's. Static, not a method: in `map(router.receive(…))` a method would
    /// borrow `self` before the router is mutated, so Swift copies the node first and every dictionary the
    /// router then writes to is copied whole (it was most of a mesh node's CPU under load).
    static func map(_ actions: [Router.Action]) -> [MeshAction] {
        actions.map {
            switch $0 {
            case .send(let to, let message): .send(to: to, message)
            case .deliver(let peer, let signal): .deliver(peer: peer, signal)
            case .unavailable(let key, let peer): .unavailable(key, peer: peer)
            }
        }
    }
}

extension Array {
    /// The first index whose element satisfies `predicate`, for a predicate that is false then true
    /// along the array (binary search).
    func partitioningIndex(where predicate: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if predicate(self[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
