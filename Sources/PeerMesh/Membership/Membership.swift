/// SWIM membership as a pure state machine.
///
/// Driven by four inputs — `start(now:)`, `receive(_:from:now:)`, `linkDown(_:now:)` and `tick(now:)`
/// — each returning the messages to send and the changes to the member list. It never reads a clock,
/// never sleeps and owns no sockets; its randomness comes from an injected seed.
///
/// - Probing: every `probeInterval` one member is pinged, round-robin over a shuffled list (reshuffled
///   at the end of each round). Without an ack within `probeTimeout`, `indirectProbes` other members
///   are asked to ping it (ping-req); without any ack by `indirectProbeTimeout` it is suspected.
/// - Suspicion: a suspect is declared dead after `suspicionTimeout` unless it refutes. The suspecting
///   node tells the suspect directly, so the refutation does not wait for gossip to reach it. A node
///   refutes a suspicion (or a death) of itself by raising its incarnation.
/// - A link reported down by the transport is an immediate suspicion.
/// - Dissemination: updates ride on pings and acks (at most `maxPiggyback` each, least-sent first) and,
///   while any are pending, on a gossip round to `gossipFanout` members every `gossipInterval`; each
///   update is sent λ·⌈log₂(n+1)⌉ times, then dropped.
/// - Dead members are pinged now and then with their death notice attached, so after a partition heals
///   each side learns the other refuted and the two lists merge again.
/// - Hostile input: every update must carry the member's own signature over its address and incarnation
///   (``MemberProof``); unsigned or forged updates are refused and counted (`refusedUpdates`). No number
///   a peer sends is used in arithmetic unchecked (a node at incarnation 0xFFFFFFFF cannot refute any
///   more, it does not wrap), and the member list and the indirect-probe relays are bounded
///   (`MembershipConfiguration.maxMembers`, `maxRelays`).
public struct Membership: Sendable {
    struct Member: Sendable {
        var address: String
        var incarnation: UInt32
        var status: MemberUpdate.Status
        var since: UInt64
        /// The member's signature over `address` and `incarnation` (and the left flag).
        var proof: MemberProof?
    }

    struct Probe: Sendable {
        var target: MeshKey
        var number: UInt32
        var sentAt: UInt64
        var indirectSent: Bool
    }

    struct Relay: Sendable {
        var requester: MeshKey
        var requesterProbe: UInt32
        var expiresAt: UInt64
    }

    struct Broadcast: Sendable {
        var update: MemberUpdate
        var transmissions: Int
    }

    public let me: MeshKey
    public let address: String
    public let configuration: MembershipConfiguration
    public private(set) var incarnation: UInt32 = 0
    /// Signs this node's own updates.
    let identity: NodeIdentity
    /// This node's signed alive record at `incarnation` (signed once per incarnation).
    var signedSelf: MemberUpdate
    /// Updates refused so far: unsigned, forged, or about a node when the member list was full.
    public private(set) var refusedUpdates = 0
    var members: [MeshKey: Member] = [:]
    var suspicionDeadlines: [MeshKey: UInt64] = [:]
    var probeOrder: [MeshKey] = []
    var probeIndex = 0
    var probe: Probe?
    var probeNumber: UInt32 = 0
    var relays: [UInt32: Relay] = [:]
    var broadcasts: [MeshKey: Broadcast] = [:]
    var nextProbeAt: UInt64 = 0
    var nextGossipAt: UInt64 = 0
    var seeds: [MeshKey] = []
    var seedAddresses: [MeshKey: String] = [:]
    var joined = true
    var nextJoinAt: UInt64 = 0
    var joinAttempts = 0
    var rng: SeededRandom
    /// Set while applying updates that are not to be re-gossiped.
    var quiet = false

    public init(identity: NodeIdentity, address: String, configuration: MembershipConfiguration = .init(), seed: UInt64)
    {
        self.identity = identity
        self.me = identity.id
        self.address = address
        self.configuration = configuration
        self.rng = SeededRandom(seed: seed)
        self.signedSelf = MemberUpdate(signedBy: identity, address: address, incarnation: 0, status: .alive)
    }

    // MARK: - Queries

    /// Live members (alive or suspected), this node included, in key order.
    public var liveMembers: [MeshKey] {
        ([me] + members.compactMap { $0.value.status.isLive ? $0.key : nil }).sorted()
    }

    /// Number of live members, this node included.
    public var liveCount: Int { 1 + members.values.count(where: { $0.status.isLive }) }

    public func status(of node: MeshKey) -> MemberUpdate.Status? {
        node == me ? .alive : members[node]?.status
    }

    public func address(of node: MeshKey) -> String? {
        node == me ? address : members[node]?.address
    }

    /// The earliest time `tick` has something to do.
    public var nextDeadline: UInt64 {
        var next = nextProbeAt
        if let probe {
            next = min(
                next,
                probe.sentAt + (probe.indirectSent ? configuration.indirectProbeTimeout : configuration.probeTimeout)
            )
        }
        if !broadcasts.isEmpty { next = min(next, nextGossipAt) }
        if let suspicion = suspicionDeadlines.values.min() { next = min(next, suspicion) }
        if !joined { next = min(next, nextJoinAt) }
        return next
    }

    // MARK: - Inputs

    /// Starts the node: with seeds, it asks them to let it in (one at a time, retried until one answers);
    /// without seeds, it is the first member of a new mesh.
    public mutating func start(seeds: [(node: MeshKey, address: String)], now: UInt64) -> [MembershipAction] {
        nextProbeAt = now + UInt64(rng.nextUnit() * Double(configuration.probeInterval))
        nextGossipAt = now + configuration.gossipInterval
        self.seeds = seeds.map(\.node).filter { $0 != me }
        for seed in seeds { seedAddresses[seed.node] = seed.address }
        guard !self.seeds.isEmpty else { return [] }
        joined = false
        nextJoinAt = now
        return tick(now: now)
    }

    /// Leaves gracefully: tells a few members, who spread it.
    public mutating func leave(now: UInt64) -> [MembershipAction] {
        raiseIncarnation()
        let notice = MemberUpdate(signedBy: identity, address: address, incarnation: incarnation, status: .left)
        return randomLive(count: max(configuration.gossipFanout, 3), excluding: []).map {
            .send(to: $0, .gossip(updates: [notice]))
        }
    }

    /// The transport lost its link to `node` (connection reset, refused): suspect it now.
    public mutating func linkDown(_ node: MeshKey, now: UInt64) -> [MembershipAction] {
        guard let member = members[node], member.status == .alive else { return [] }
        return suspect(node, incarnation: member.incarnation, now: now, notify: false)
    }

    public mutating func receive(_ message: MembershipMessage, from sender: MeshKey, now: UInt64) -> [MembershipAction]
    {
        var actions: [MembershipAction] = []
        switch message {
        case .ping(let number, let updates):
            actions += apply(updates, now: now)
            actions.append(.send(to: sender, .ack(probe: number, updates: piggyback())))
        case .pingRequest(let number, let target, let updates):
            actions += apply(updates, now: now)
            // Relays expire within `indirectProbeTimeout`; a member asking for more at once is refused.
            guard relays.count < configuration.maxRelays, target != me else { break }
            probeNumber &+= 1
            relays[probeNumber] = Relay(
                requester: sender,
                requesterProbe: number,
                expiresAt: now + configuration.indirectProbeTimeout
            )
            actions.append(.send(to: target, .ping(probe: probeNumber, updates: piggyback())))
        case .ack(let number, let updates):
            actions += apply(updates, now: now)
            if let probe, probe.number == number {
                self.probe = nil
            } else if let relay = relays.removeValue(forKey: number) {
                actions.append(.send(to: relay.requester, .ack(probe: relay.requesterProbe, updates: piggyback())))
            }
        case .join(let update):
            actions += apply([update], now: now)
            var list = members.map { memberUpdate(of: $0.key, $0.value) }
            list = list.filter { $0.status.isLive && $0.node != sender }.sorted { $0.node < $1.node }
            list.append(selfUpdate)
            actions.append(.send(to: sender, .joinReply(members: list)))
        case .joinReply(let list):
            guard !joined else { break }
            joined = true
            actions += apply(list, now: now, disseminate: false)
            // Announce ourselves to everyone the seed knows at once: members that joined before us learn
            // of us now instead of waiting for gossip to reach them.
            for member in list where member.status.isLive && member.node != me && member.node != sender {
                actions.append(.send(to: member.node, .announce(selfUpdate)))
            }
        case .gossip(let updates):
            actions += apply(updates, now: now)
        case .announce(let update):
            actions += apply([update], now: now, disseminate: false)
        }
        return actions
    }

    public mutating func tick(now: UInt64) -> [MembershipAction] {
        var actions: [MembershipAction] = []
        if !joined, now >= nextJoinAt, !seeds.isEmpty {
            let seed = seeds[joinAttempts % seeds.count]
            joinAttempts += 1
            nextJoinAt = now + configuration.joinRetryInterval
            actions.append(.send(to: seed, .join(selfUpdate)))
        }
        for (node, deadline) in suspicionDeadlines where deadline <= now {
            suspicionDeadlines[node] = nil
            if let member = members[node], member.status == .suspect {
                actions += setStatus(node, .dead, incarnation: member.incarnation, now: now)
            }
        }
        if let current = probe {
            if !current.indirectSent, now >= current.sentAt + configuration.probeTimeout {
                probe?.indirectSent = true
                for helper in randomLive(
                    count: configuration.indirectProbes,
                    excluding: [current.target],
                    aliveOnly: true
                ) {
                    actions.append(
                        .send(
                            to: helper,
                            .pingRequest(probe: current.number, target: current.target, updates: piggyback())
                        )
                    )
                }
            }
            if now >= current.sentAt + configuration.indirectProbeTimeout {
                probe = nil
                if let member = members[current.target], member.status == .alive {
                    actions += suspect(current.target, incarnation: member.incarnation, now: now, notify: true)
                }
            }
        }
        if now >= nextProbeAt {
            nextProbeAt = max(nextProbeAt + configuration.probeInterval, now)
            if probe == nil, let target = nextProbeTarget() {
                probeNumber &+= 1
                probe = Probe(target: target, number: probeNumber, sentAt: now, indirectSent: false)
                // A probe also carries the prober's own record: a member that missed our join learns of
                // us at the latest when we first probe it, within one round.
                let updates = piggyback(limit: configuration.maxPiggyback - 1) + [selfUpdate]
                actions.append(.send(to: target, .ping(probe: probeNumber, updates: updates)))
            }
            actions += pingOneDead(now: now)
        }
        if now >= nextGossipAt {
            nextGossipAt = now + configuration.gossipInterval
            if !broadcasts.isEmpty {
                for target in randomLive(count: configuration.gossipFanout, excluding: []) {
                    let updates = piggyback()
                    if updates.isEmpty { break }
                    actions.append(.send(to: target, .gossip(updates: updates)))
                }
            }
        }
        relays = relays.filter { $0.value.expiresAt > now }
        return actions
    }

    // MARK: - Updates

    /// This node's own signed alive record (signed once per incarnation, not once per probe).
    var selfUpdate: MemberUpdate { signedSelf }

    /// Raises this node's incarnation above `floor` (to refute a claim at `floor`; to leave) and signs
    /// the new record. At 0xFFFFFFFF it stays there: the node can no longer refute, but nothing wraps.
    mutating func raiseIncarnation(above floor: UInt32? = nil) {
        let floor = max(floor ?? incarnation, incarnation)
        guard floor < .max else { return }
        incarnation = floor + 1
        signedSelf = MemberUpdate(signedBy: identity, address: address, incarnation: incarnation, status: .alive)
    }

    /// The update this node passes on about `node`: the member's own signed claim with our view of its
    /// status.
    func memberUpdate(of node: MeshKey, _ member: Member) -> MemberUpdate {
        MemberUpdate(
            node: node,
            address: member.address,
            incarnation: member.incarnation,
            status: member.status,
            proof: member.proof
        )
    }

    /// Checks an update from another node before anything is done with it: the member's own valid
    /// signature over the address, incarnation and left flag. A claim identical to the one already held
    /// (same incarnation, address and signature) was verified when it arrived and is not verified again.
    func isAuthentic(_ update: MemberUpdate) -> Bool {
        guard let proof = update.proof else { return false }
        if update.node == me, proof == signedSelf.proof, update.incarnation == incarnation, update.address == address,
            update.status != .left
        {
            return true
        }
        if update.node != me, let member = members[update.node], member.proof == proof,
            member.incarnation == update.incarnation, member.address == update.address,
            (member.status == .left) == (update.status == .left)
        {
            return true
        }
        return proof.verifies(update)
    }

    /// Applies updates by SWIM's rules; those that change what this node knows are queued for
    /// dissemination unless `disseminate` is false (full lists and introductions).
    mutating func apply(_ updates: [MemberUpdate], now: UInt64, disseminate: Bool = true) -> [MembershipAction] {
        quiet = !disseminate
        defer { quiet = false }
        var actions: [MembershipAction] = []
        for update in updates {
            guard isAuthentic(update) else {
                refusedUpdates += 1
                continue
            }
            if update.node == me {
                // Only a claim this node signed itself gets here: at most our incarnation, or one from
                // before a restart with the same key, which we jump above.
                if update.status != .alive, update.incarnation >= incarnation {
                    raiseIncarnation(above: update.incarnation)
                    enqueue(selfUpdate, always: true)
                }
                continue
            }
            guard let member = members[update.node] else {
                actions += add(update, now: now)
                continue
            }
            // Every status change below takes the update's claim (address, incarnation, signature) with it,
            // so what this node holds and passes on is always one claim the member signed.
            switch update.status {
            case .alive:
                if update.incarnation > member.incarnation {
                    actions += setStatus(update.node, .alive, incarnation: update.incarnation, now: now, claim: update)
                }
            case .suspect:
                let newer = update.incarnation > member.incarnation
                if (member.status == .alive && update.incarnation >= member.incarnation)
                    || (member.status == .suspect && newer)
                {
                    actions += setStatus(
                        update.node,
                        .suspect,
                        incarnation: update.incarnation,
                        now: now,
                        claim: update
                    )
                } else if !member.status.isLive && newer {
                    actions += setStatus(
                        update.node,
                        .suspect,
                        incarnation: update.incarnation,
                        now: now,
                        claim: update
                    )
                }
            case .dead, .left:
                if member.status.isLive, update.incarnation >= member.incarnation {
                    actions += setStatus(
                        update.node,
                        update.status,
                        incarnation: update.incarnation,
                        now: now,
                        claim: update
                    )
                }
            }
        }
        return actions
    }

    mutating func add(_ update: MemberUpdate, now: UInt64) -> [MembershipAction] {
        if members.count >= configuration.maxMembers {
            // Full: make room by forgetting the member that has been dead the longest, if any.
            let oldestDead = members.filter { !$0.value.status.isLive }.min {
                $0.value.since != $1.value.since ? $0.value.since < $1.value.since : $0.key < $1.key
            }
            guard let (node, _) = oldestDead else {
                refusedUpdates += 1
                return []
            }
            members[node] = nil
            broadcasts[node] = nil
        }
        members[update.node] = Member(
            address: update.address,
            incarnation: update.incarnation,
            status: update.status,
            since: now,
            proof: update.proof
        )
        enqueue(update)
        guard update.status.isLive else { return [] }
        let position = probeOrder.isEmpty ? 0 : Int(rng.next() % UInt64(probeOrder.count + 1))
        probeOrder.insert(update.node, at: position)
        if position < probeIndex { probeIndex += 1 }
        if update.status == .suspect {
            suspicionDeadlines[update.node] = now + configuration.suspicionTimeout
        }
        return [.changed(.joined(update.node))]
    }

    mutating func suspect(_ node: MeshKey, incarnation: UInt32, now: UInt64, notify: Bool) -> [MembershipAction] {
        var actions = setStatus(node, .suspect, incarnation: incarnation, now: now)
        if notify, let member = members[node] {
            actions.append(.send(to: node, .gossip(updates: [memberUpdate(of: node, member)])))
        }
        return actions
    }

    /// Sets a member's status at `incarnation`; `claim` is the (verified) update that says so, whose
    /// address and signature the member then holds (nil for this node's own suspicions, which keep the
    /// member's claim as it is).
    mutating func setStatus(
        _ node: MeshKey,
        _ status: MemberUpdate.Status,
        incarnation: UInt32,
        now: UInt64,
        claim: MemberUpdate? = nil
    ) -> [MembershipAction] {
        guard var member = members[node] else { return [] }
        let before = member.status
        member.status = status
        member.incarnation = incarnation
        if let claim {
            member.address = claim.address
            member.proof = claim.proof
        }
        member.since = now
        members[node] = member
        enqueue(memberUpdate(of: node, member))
        suspicionDeadlines[node] = status == .suspect ? now + configuration.suspicionTimeout : nil
        switch (before.isLive, status) {
        case (false, .alive), (false, .suspect):
            probeOrder.insert(node, at: Int(rng.next() % UInt64(probeOrder.count + 1)))
            return [.changed(.joined(node))]
        case (true, .suspect):
            return before == .suspect ? [] : [.changed(.suspected(node))]
        case (true, .alive):
            return before == .suspect ? [.changed(.recovered(node))] : []
        case (true, .dead), (true, .left):
            return [.changed(.failed(node))]
        default:
            return []
        }
    }

    mutating func enqueue(_ update: MemberUpdate, always: Bool = false) {
        guard always || !quiet else { return }
        broadcasts[update.node] = Broadcast(update: update, transmissions: 0)
    }

    /// Up to `maxPiggyback` pending updates, least-transmitted first; each is dropped once it has been
    /// sent λ·⌈log₂(n+1)⌉ times.
    mutating func piggyback(limit count: Int? = nil) -> [MemberUpdate] {
        guard !broadcasts.isEmpty else { return [] }
        let limit = configuration.retransmitMultiplier * max(1, Int.bitWidth - (liveCount + 1).leadingZeroBitCount)
        let chosen = broadcasts.min(count: count ?? configuration.maxPiggyback) {
            $0.value.transmissions != $1.value.transmissions
                ? $0.value.transmissions < $1.value.transmissions : $0.key < $1.key
        }
        var updates: [MemberUpdate] = []
        for (node, broadcast) in chosen {
            updates.append(broadcast.update)
            if broadcast.transmissions + 1 >= limit {
                broadcasts[node] = nil
            } else {
                broadcasts[node]?.transmissions += 1
            }
        }
        return updates
    }

    // MARK: - Choosing members

    mutating func nextProbeTarget() -> MeshKey? {
        for _ in 0..<2 {
            while probeIndex < probeOrder.count {
                let candidate = probeOrder[probeIndex]
                probeIndex += 1
                if members[candidate]?.status.isLive == true { return candidate }
            }
            probeOrder = members.compactMap { $0.value.status.isLive ? $0.key : nil }.sorted()
            probeOrder.shuffle(using: &rng)
            probeIndex = 0
        }
        return nil
    }

    /// Every probe interval, one remembered dead member is pinged with its death notice attached: if it
    /// is in fact alive (a healed partition), it refutes and rejoins everyone's list.
    mutating func pingOneDead(now: UInt64) -> [MembershipAction] {
        let dead = members.filter { !$0.value.status.isLive }
        for (node, member) in dead where now - member.since > configuration.deadRetention {
            members[node] = nil
        }
        let candidates = dead.filter { now - $0.value.since <= configuration.deadRetention }.keys.sorted()
        guard !candidates.isEmpty else { return [] }
        let node = candidates[Int(rng.next() % UInt64(candidates.count))]
        guard let member = members[node] else { return [] }
        return [.send(to: node, .ping(probe: 0, updates: [memberUpdate(of: node, member), selfUpdate]))]
    }

    mutating func randomLive(count: Int, excluding: Set<MeshKey>, aliveOnly: Bool = false) -> [MeshKey] {
        var candidates = members.compactMap { entry -> MeshKey? in
            let ok = aliveOnly ? entry.value.status == .alive : entry.value.status.isLive
            return ok && !excluding.contains(entry.key) ? entry.key : nil
        }
        candidates.sort()
        var chosen: [MeshKey] = []
        while chosen.count < count, !candidates.isEmpty {
            chosen.append(candidates.remove(at: Int(rng.next() % UInt64(candidates.count))))
        }
        return chosen
    }
}

extension MemberUpdate.Status {
    /// Alive or suspected: still a member for ownership and routing.
    public var isLive: Bool { self == .alive || self == .suspect }
}

extension Collection {
    /// The `count` smallest elements in order, in one pass (no sort of the whole collection).
    func min(count: Int, by areInIncreasingOrder: (Element, Element) -> Bool) -> [Element] {
        var best: [Element] = []
        best.reserveCapacity(count + 1)
        for element in self {
            if best.count == count, let last = best.last, !areInIncreasingOrder(element, last) { continue }
            var index = best.count
            while index > 0, areInIncreasingOrder(element, best[index - 1]) { index -= 1 }
            best.insert(element, at: index)
            if best.count > count { best.removeLast() }
        }
        return best
    }
}
