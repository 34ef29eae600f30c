/// Signal routing as a pure state machine.
///
/// - The entry node (the sending peer's) sends a signal straight to the recipient's host when it knows
///   it (1 inter-node hop), else to a home node of the recipient, which forwards it to the host (2
///   hops). A node that is itself a home node uses its own directory and sends directly.
/// - Every hop is acknowledged (`hopAck`); a hop without an ack within `hopTimeout` is sent again,
///   up to `attemptsPerHop` times, then the next option is tried (another home node). A next hop that
///   membership suspects or declares dead is given up at once.
/// - Receivers deduplicate by (origin, id) and answer a duplicate with the first answer, so retries
///   never deliver twice.
/// - A signal that has found no taker after `unavailableAfter` (or ran out of options) is answered
///   `unavailable` to the sending peer; a home node that accepted a signal it then cannot forward tells
///   the origin (`undeliverable`). Nothing is lost silently.
/// - Hosts learn where senders are from the signals they receive, and entry nodes learn from home
///   nodes' answers (signed records, verified): replies and later signals take 1 hop.
public struct Router: Sendable {
    public enum Action: Hashable, Sendable {
        case send(to: MeshKey, MeshMessage)
        /// Hand the signal to a peer hosted here.
        case deliver(peer: String, MeshSignal)
        /// Tell the sending peer (hosted here) that its signal found no recipient.
        case unavailable(SignalKey, peer: String)
    }

    struct PendingKey: Hashable, Sendable {
        var signal: SignalKey
        /// nil at the entry node; the host a leg goes to at a forwarding home node.
        var leg: MeshKey?
    }

    struct Pending: Sendable {
        var signal: MeshSignal
        var destination: MeshKey
        var route: MeshSignal.Route
        var attempts: Int
        var deadline: UInt64
        var startedAt: UInt64
        var tried: Set<MeshKey>
    }

    struct Seen: Sendable {
        var status: HopStatus
        var location: SignedRecord?
        var at: UInt64
    }

    struct Hint: Sendable {
        var host: MeshKey
        var expiresAt: UInt64
    }

    let me: MeshKey
    let configuration: MeshConfiguration
    var nextID: UInt64 = 0
    var pending: [PendingKey: Pending] = [:]
    var seen: [SignalKey: Seen] = [:]
    var accepted: [SignalKey: (peer: String, home: MeshKey, at: UInt64)] = [:]
    var hints: [String: Hint] = [:]

    init(me: MeshKey, configuration: MeshConfiguration) {
        self.me = me
        self.configuration = configuration
    }

    var nextDeadline: UInt64 {
        pending.values.map(\.deadline).min() ?? .max
    }

    /// Number of signals waiting for a hop ack here.
    public var inFlight: Int { pending.count }

    // MARK: - Entry

    mutating func send(
        from peer: String,
        to target: MeshSignal.Target,
        payload: [UInt8],
        view: RoutingView,
        now: UInt64,
        credential: (MeshSignal) -> SignalCredential?
    )
        -> (SignalKey, [Action])
    {
        nextID += 1
        var signal = MeshSignal(
            origin: me,
            id: nextID,
            from: peer,
            target: target,
            route: .direct,
            hops: 0,
            payload: payload
        )
        if case .peer(let recipient) = target, view.localPeers.contains(recipient) {
            return (signal.key, [.deliver(peer: recipient, signal)])
        }
        // Leaving this node: other nodes take it only with the origin's credential, and this node keeps
        // it only while there is room.
        signal.credential = credential(signal)
        guard signal.credential != nil, pending.count < configuration.maxPendingSignals else {
            return (signal.key, [.unavailable(signal.key, peer: peer)])
        }
        switch target {
        case .room(let room) where view.homes(of: MeshKey(room: room)).contains(me):
            return (signal.key, fanOut(signal, room: room, view: view, now: now))
        default:
            let key = PendingKey(signal: signal.key, leg: nil)
            pending[key] = Pending(
                signal: signal,
                destination: me,
                route: .direct,
                attempts: 0,
                deadline: now,
                startedAt: now,
                tried: []
            )
            return (signal.key, advance(key, view: view, now: now))
        }
    }

    /// The next node to try for an entry signal, or nil when every option was tried.
    func nextOption(for signal: MeshSignal, tried: Set<MeshKey>, view: RoutingView, now: UInt64) -> (
        MeshKey, MeshSignal.Route
    )? {
        switch signal.target {
        case .peer(let recipient):
            if let hint = hints[recipient], hint.expiresAt > now, view.isUsable(hint.host), !tried.contains(hint.host),
                !view.suspects.contains(hint.host), hint.host != me
            {
                return (hint.host, .direct)
            }
            for home in view.homes(of: MeshKey(peer: recipient)) where !tried.contains(home) {
                if home == me {
                    if let host = view.directory.location(of: recipient)?.record.host, host != me, view.isUsable(host),
                        !tried.contains(host)
                    {
                        return (host, .direct)
                    }
                    continue
                }
                return (home, .viaHome)
            }
            return nil
        case .room(let room):
            return view.homes(of: MeshKey(room: room)).first { !tried.contains($0) && $0 != me }.map { ($0, .viaHome) }
        case .peers:
            return nil
        }
    }

    /// Moves a pending signal to its next option, or gives up.
    mutating func advance(_ key: PendingKey, view: RoutingView, now: UInt64) -> [Action] {
        guard var entry = pending[key] else { return [] }
        if entry.destination != me { entry.tried.insert(entry.destination) }
        let option: (MeshKey, MeshSignal.Route)?
        if key.leg == nil, now - entry.startedAt < configuration.unavailableAfter {
            option = nextOption(for: entry.signal, tried: entry.tried.union([me]), view: view, now: now)
        } else {
            option = nil
        }
        guard let (next, route) = option else {
            pending[key] = nil
            return giveUp(entry.signal, leg: key.leg)
        }
        entry.destination = next
        entry.route = route
        entry.attempts = 0
        pending[key] = entry
        return transmit(key, now: now)
    }

    mutating func transmit(_ key: PendingKey, now: UInt64) -> [Action] {
        guard var entry = pending[key] else { return [] }
        entry.attempts += 1
        entry.deadline = now + configuration.hopTimeout
        var signal = entry.signal
        signal.route = entry.route
        signal.hops += 1
        pending[key] = entry
        return [.send(to: entry.destination, .signal(signal))]
    }

    func giveUp(_ signal: MeshSignal, leg: MeshKey?) -> [Action] {
        if leg == nil {
            return [.unavailable(signal.key, peer: signal.from)]
        }
        if case .peer = signal.target, signal.origin != me {
            return [.send(to: signal.origin, .undeliverable(signal.key))]
        }
        return []
    }

    // MARK: - Receiving

    mutating func receive(_ signal: MeshSignal, from sender: MeshKey, view: RoutingView, now: UInt64) -> [Action] {
        if let first = seen[signal.key] {
            return [.send(to: sender, .hopAck(signal.key, first.status, location: first.location))]
        }
        if signal.origin != me, view.isUsable(signal.origin), !view.localPeers.contains(signal.from),
            hints.count < configuration.maxHints || hints[signal.from] != nil
        {
            switch signal.target {
            case .peer, .peers:
                hints[signal.from] = Hint(host: signal.origin, expiresAt: now + configuration.hintLifetime)
            case .room:
                break
            }
        }
        var actions: [Action] = []
        var status = HopStatus.notFound
        var location: SignedRecord?
        switch (signal.route, signal.target) {
        case (_, .peer(let recipient)) where view.localPeers.contains(recipient):
            status = .delivered
            actions.append(.deliver(peer: recipient, signal))
        case (.direct, .peer):
            status = .notHere
        case (_, .peers(let recipients)):
            status = .delivered
            for recipient in recipients where view.localPeers.contains(recipient) {
                actions.append(.deliver(peer: recipient, signal))
            }
        case (.viaHome, .peer(let recipient)):
            if signal.hops < configuration.maxHops, pending.count < configuration.maxPendingSignals,
                let found = view.directory.location(of: recipient),
                view.isUsable(found.record.host), found.record.host != sender
            {
                status = .accepted
                location = found.signed
                actions += forward(signal, to: found.record.host, target: signal.target, now: now)
            }
        case (_, .room(let room)):
            status = .accepted
            actions += fanOut(signal, room: room, view: view, now: now)
        }
        if seen.count < configuration.maxSeenSignals {
            seen[signal.key] = Seen(status: status, location: location, at: now)
        }
        actions.append(.send(to: sender, .hopAck(signal.key, status, location: location)))
        return actions
    }

    mutating func forward(_ signal: MeshSignal, to host: MeshKey, target: MeshSignal.Target, now: UInt64) -> [Action] {
        var leg = signal
        leg.target = target
        let key = PendingKey(signal: signal.key, leg: host)
        pending[key] = Pending(
            signal: leg,
            destination: host,
            route: .direct,
            attempts: 0,
            deadline: now,
            startedAt: now,
            tried: []
        )
        return transmit(key, now: now)
    }

    /// A room's home node: one leg per host of the room's other members; members hosted here get it now.
    mutating func fanOut(_ signal: MeshSignal, room: String, view: RoutingView, now: UInt64) -> [Action] {
        var byHost: [MeshKey: [String]] = [:]
        for member in view.directory.members(of: room) where member.peer != signal.from && view.isUsable(member.host) {
            byHost[member.host, default: []].append(member.peer)
        }
        var actions: [Action] = []
        for host in byHost.keys.sorted() {
            let peers = byHost[host]!
            if host == me {
                actions += peers.filter(view.localPeers.contains).map { .deliver(peer: $0, signal) }
            } else if signal.hops < configuration.maxHops, pending.count < configuration.maxPendingSignals {
                actions += forward(signal, to: host, target: .peers(peers), now: now)
            }
        }
        return actions
    }

    mutating func receiveAck(
        _ key: SignalKey,
        _ status: HopStatus,
        location: SignedRecord?,
        from sender: MeshKey,
        view: RoutingView,
        now: UInt64
    )
        -> [Action]
    {
        let pendingKey: PendingKey
        if pending[PendingKey(signal: key, leg: sender)] != nil {
            pendingKey = PendingKey(signal: key, leg: sender)
        } else if let entry = pending[PendingKey(signal: key, leg: nil)], entry.destination == sender {
            pendingKey = PendingKey(signal: key, leg: nil)
        } else {
            return []
        }
        let entry = pending[pendingKey]!
        switch status {
        case .delivered, .accepted:
            pending[pendingKey] = nil
            if case .peer(let recipient) = entry.signal.target, pendingKey.leg == nil {
                if status == .accepted {
                    accepted[key] = (entry.signal.from, sender, now)
                }
                if status == .delivered {
                    hints[recipient] = Hint(host: sender, expiresAt: now + configuration.hintLifetime)
                } else if let location, let verified = try? VerifiedLocation(verifying: location),
                    verified.record.subject == .peer(recipient), verified.record.present
                {
                    hints[recipient] = Hint(host: verified.record.host, expiresAt: now + configuration.hintLifetime)
                }
            }
            return []
        case .notHere, .notFound:
            if case .peer(let recipient) = entry.signal.target, hints[recipient]?.host == sender {
                hints[recipient] = nil
            }
            return advance(pendingKey, view: view, now: now)
        }
    }

    /// A home node that accepted one of our signals could not reach the host. Only that home node may
    /// say so.
    mutating func receiveUndeliverable(_ key: SignalKey, from sender: MeshKey) -> [Action] {
        guard accepted[key]?.home == sender, let entry = accepted.removeValue(forKey: key) else { return [] }
        return [.unavailable(key, peer: entry.peer)]
    }

    // MARK: - Time and membership

    mutating func tick(view: RoutingView, now: UInt64) -> [Action] {
        var actions: [Action] = []
        let due = pending.compactMap { $0.value.deadline <= now ? $0.key : nil }
        for key in due.sorted(by: { $0.signal < $1.signal }) {
            guard let entry = pending[key], entry.deadline <= now else { continue }
            let outOfTime = now - entry.startedAt >= configuration.unavailableAfter
            // An entry node moves on to another option after `attemptsPerHop`; a forwarding leg has no
            // other option and keeps trying its host until the time budget is spent.
            let movesOn = key.leg == nil && entry.attempts >= configuration.attemptsPerHop
            if outOfTime || !view.isUsable(entry.destination) || movesOn {
                actions += advance(key, view: view, now: now)
            } else {
                actions += transmit(key, now: now)
            }
        }
        return actions
    }

    /// `node` is suspected, dead, or its link dropped: stop waiting on it.
    mutating func unreachable(_ node: MeshKey, view: RoutingView, now: UInt64) -> [Action] {
        for (peer, hint) in hints where hint.host == node {
            hints[peer] = nil
        }
        var actions: [Action] = []
        for key in pending.keys.sorted(by: { $0.signal < $1.signal }) where pending[key]?.destination == node {
            if key.leg == nil {
                actions += advance(key, view: view, now: now)
            } else if let entry = pending.removeValue(forKey: key) {
                actions += giveUp(entry.signal, leg: key.leg)
            }
        }
        return actions
    }

    mutating func sweep(now: UInt64) {
        seen = seen.filter { now - $0.value.at < configuration.dedupWindow }
        accepted = accepted.filter { now - $0.value.at < configuration.dedupWindow }
        hints = hints.filter { $0.value.expiresAt > now }
    }
}
