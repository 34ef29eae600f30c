import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a node does with the signals the mesh brings it: implemented by the hub that hosts the peers.
public protocol MeshDelivery: AnyObject, Sendable {
    /// A signal for `peer`, connected to this node. `payload` is what the entry node handed to
    /// ``MeshRuntime/send(from:to:payload:)``; `addressed` is false for a room broadcast.
    func deliver(_ payload: [UInt8], from sender: String, to peer: String, addressed: Bool)
    /// The same, with the node the signal came from: `origin`, whose credential (checked before this
    /// call: ``SignalCredential``) vouches that it hosts `sender` and sent this payload. The runtime calls
    /// this one; by default it forgets the origin and calls ``deliver(_:from:to:addressed:)``.
    func deliver(_ payload: [UInt8], from sender: String, origin: MeshKey, to peer: String, addressed: Bool)
    /// A signal a local peer sent found no node hosting its recipient.
    func unavailable(_ key: SignalKey, peer: String)
}

extension MeshDelivery {
    public func deliver(_ payload: [UInt8], from sender: String, origin: MeshKey, to peer: String, addressed: Bool) {
        self.deliver(payload, from: sender, to: peer, addressed: addressed)
    }
}

/// Everything a mesh node needs to run over real sockets.
public struct MeshRuntimeConfiguration: Sendable {
    /// Where to accept links (`--mesh-listen HOST:PORT`).
    public var listenHost: String
    public var listenPort: Int
    /// The address other nodes dial (default: the listen address; set it when listening on 0.0.0.0).
    public var advertisedHost: String?
    /// Nodes to join through (`--mesh-seed HOST:PORT`, repeatable). None: this node starts a new mesh.
    public var seeds: [String]
    public var secret: MeshSecret
    public var identity: NodeIdentity
    public var tls: MeshTLS?
    public var mesh: MeshConfiguration
    /// Bounds on links still in their handshake, and how long a node that sent invalid data is refused.
    public var links: MeshLinkLimits

    public init(
        listenHost: String,
        listenPort: Int,
        seeds: [String],
        secret: MeshSecret,
        identity: NodeIdentity = NodeIdentity()
    ) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.seeds = seeds
        self.secret = secret
        self.identity = identity
        self.tls = nil
        self.mesh = MeshConfiguration()
        self.links = MeshLinkLimits()
    }
}

/// Runs one ``MeshNode`` over a ``MeshTransport``: feeds it the links' messages and the clock, carries
/// out its actions, and gives the hub a small API for its local peers.
public final class MeshRuntime: Sendable {
    public let configuration: MeshRuntimeConfiguration
    public let transport: MeshTransport
    private let node: NIOLockedValueBox<MeshNode?>
    private let delivery = NIOLockedValueBox<(any MeshDelivery)?>(nil)
    private let timer = NIOLockedValueBox<RepeatedTask?>(nil)
    /// Dials the seeds again every second while none has answered yet; ``stop()`` cancels it.
    private let seedRetry = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let group: any EventLoopGroup
    private let logger: Logger
    private let metrics: MeshMetrics?

    /// - Parameter metrics: where link traffic, the member list and deliveries are counted (none: not
    ///   counted).
    public init(
        configuration: MeshRuntimeConfiguration,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: MeshMetrics? = nil
    ) throws {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.metrics = metrics
        self.node = NIOLockedValueBox(nil)
        self.transport = try MeshTransport(
            identity: configuration.identity,
            secret: configuration.secret,
            tls: configuration.tls,
            group: group,
            logger: logger,
            metrics: metrics,
            limits: configuration.links
        )
    }

    public var id: MeshKey { configuration.identity.id }

    /// Where signals for local peers go.
    public func setDelivery(_ delivery: any MeshDelivery) {
        self.delivery.withLockedValue { $0 = delivery }
    }

    /// Binds, joins through the seeds (retrying in the background until one answers) and starts the
    /// node's clock. Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        transport.setHandlers(
            message: { [weak self] sender, message in
                self?.drive { $0.receive(message, from: sender, now: Self.now()) }
            },
            linkDown: { [weak self] node in
                self?.drive { $0.linkDown(node, now: Self.now()) }
            },
            address: { [weak self] node in
                self?.node.withLockedValue { $0?.membership.address(of: node) }
            }
        )
        let port = try await transport.listen(host: configuration.listenHost, port: configuration.listenPort)
        let address = "\(configuration.advertisedHost ?? configuration.listenHost):\(port)"
        node.withLockedValue {
            $0 = MeshNode(
                identity: configuration.identity,
                address: address,
                configuration: configuration.mesh,
                seed: UInt64.random(in: 0...UInt64.max)
            )
        }
        let seeds = await self.reachableSeeds()
        self.drive { $0.start(seeds: seeds, now: Self.now()) }
        if seeds.isEmpty && !configuration.seeds.isEmpty {
            seedRetry.withLockedValue { $0 = Task { await self.retrySeeds() } }
        }
        let loop = group.next()
        let task = loop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(10)) {
            [weak self] _ in
            self?.tick()
        }
        timer.withLockedValue { $0 = task }
        self.recordMembers()
        logger.info(
            "mesh node up",
            metadata: ["mesh.node": "\(id)", "mesh.address": "\(address)", "mesh.seeds": "\(seeds.count)"]
        )
        return port
    }

    /// Leaves the mesh (telling a few members) and closes every link.
    public func stop() async {
        // No seed is dialled after this returns: a retry left running would reach whatever listens on
        // the seed's port next (another mesh, another test's node).
        let retry = seedRetry.withLockedValue { task in
            defer { task = nil }
            return task
        }
        retry?.cancel()
        await retry?.value
        self.drive { $0.leave(now: Self.now()) }
        try? await Task.sleep(for: .milliseconds(100))
        timer.withLockedValue { $0?.cancel() }
        await transport.close()
    }

    // MARK: Local peers

    public func connect(peer: String) { drive { $0.connect(peer: peer, now: Self.now()) } }
    public func disconnect(peer: String) { drive { $0.disconnect(peer: peer, now: Self.now()) } }
    public func join(peer: String, room: String) { drive { $0.join(peer: peer, room: room, now: Self.now()) } }
    public func leave(peer: String, room: String) { drive { $0.leave(peer: peer, room: room, now: Self.now()) } }

    /// Routes a signal from a local peer; a later ``MeshDelivery/unavailable(_:peer:)`` names the
    /// returned key if nobody hosts the recipient.
    /// `register` is called with the key before anything is done with the signal (an `unavailable` can
    /// come at once when no other node is live).
    @discardableResult
    public func send(
        from peer: String,
        to target: MeshSignal.Target,
        payload: [UInt8],
        register: (SignalKey) -> Void = { _ in }
    ) -> SignalKey? {
        // The time is read under the lock (here and in every event), so the node sees it never go back: a
        // time read before waiting for the lock could be older than one another event already recorded.
        let result: (SignalKey, [MeshAction])? = node.withLockedValue { node in
            guard node != nil else { return nil }
            return node!.send(from: peer, to: target, payload: payload, now: Self.now())
        }
        guard let (key, actions) = result else { return nil }
        register(key)
        self.perform(actions)
        return key
    }

    /// Live members as this node sees them, itself included.
    public var liveMembers: [MeshKey] { node.withLockedValue { $0?.liveMembers ?? [] } }

    // MARK: Driving the state machine

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    private func tick() {
        let actions: [MeshAction] = node.withLockedValue { node in
            let now = Self.now()
            guard node != nil, node!.nextDeadline <= now else { return [] }
            return node!.tick(now: now)
        }
        self.perform(actions)
    }

    private func drive(_ event: (inout MeshNode) -> [MeshAction]) {
        let (actions, offences): ([MeshAction], [MeshOffence]) = node.withLockedValue { node in
            guard node != nil else { return ([], []) }
            let actions = event(&node!)
            return (actions, node!.takeOffences())
        }
        self.perform(actions)
        for offence in offences {
            metrics?.invalidMessage(offence.reason.rawValue)
            if offence.disconnects {
                transport.disconnect(offence.node, reason: offence.reason.rawValue)
            } else {
                logger.debug(
                    "mesh message refused",
                    metadata: ["mesh.node": "\(offence.node)", "reason": "\(offence.reason.rawValue)"]
                )
            }
        }
    }

    private func perform(_ actions: [MeshAction]) {
        guard !actions.isEmpty else { return }
        let delivery = self.delivery.withLockedValue { $0 }
        var changed = false
        for action in actions {
            switch action {
            case .send(let to, let message):
                transport.send(message, to: to)
            case .deliver(let peer, let signal):
                // A room leg that came back to the sender's own node: its hub already gave it to the
                // members here.
                if signal.origin == id, !signal.isAddressed { continue }
                metrics?.delivered(hops: signal.hops)
                delivery?.deliver(
                    signal.payload,
                    from: signal.from,
                    origin: signal.origin,
                    to: peer,
                    addressed: signal.isAddressed
                )
            case .unavailable(let key, let peer):
                delivery?.unavailable(key, peer: peer)
            case .membership(let event):
                logger.info("mesh membership", metadata: ["mesh.event": "\(event)"])
                changed = true
            }
        }
        if changed { self.recordMembers() }
    }

    private func recordMembers() {
        guard let metrics else { return }
        let view = node.withLockedValue { node in node.map { ($0.liveMembers, $0.suspectedMembers) } }
        guard let (live, suspects) = view else { return }
        metrics.members(live: live, suspects: suspects, self: id)
    }

    // MARK: Seeds

    private func reachableSeeds() async -> [(node: MeshKey, address: String)] {
        var found: [(node: MeshKey, address: String)] = []
        for address in configuration.seeds {
            if let key = try? await transport.dial(address).get() {
                found.append((key, address))
            } else {
                logger.warning("mesh seed not reachable", metadata: ["mesh.seed": "\(address)"])
            }
        }
        return found
    }

    private func retrySeeds() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if Task.isCancelled { return }
            let members = liveMembers.count
            if members > 1 { return }
            let seeds = await reachableSeeds()
            if !seeds.isEmpty, !Task.isCancelled {
                self.drive { $0.start(seeds: seeds, now: Self.now()) }
                return
            }
        }
    }
}
