import PeerMesh

/// N mesh nodes — the real `MeshNode` state machines — on a simulated network with a virtual clock.
///
/// Messages between nodes are delayed, jittered and lost per the `LinkModel`; a killed node's links
/// drop (its neighbours get `linkDown` one delay later, as a reset TCP connection would report); a
/// message to a killed node makes the transport report the link down; a partition silently drops
/// every message between the two sides. Each node is ticked exactly at its `nextDeadline`.
public final class MeshCluster {
    enum Event {
        case message(from: Int, to: Int, MeshMessage)
        case wake(Int)
        case linkDown(at: Int, lost: Int)
        case external(Int)
    }

    public private(set) var now: UInt64 = 0
    public let link: LinkModel
    public let configuration: MeshConfiguration
    public private(set) var nodes: [MeshNode?] = []
    public private(set) var alive: [Bool] = []
    public private(set) var keys: [MeshKey] = []
    var index: [MeshKey: Int] = [:]
    var side: [Int] = []
    var linked: [Set<Int>] = []
    var toldDown: [Set<Int>] = []
    var wakeAt: [UInt64] = []
    var queue = EventQueue<Event>()
    var rng: SeededRandom
    var identitySeed: SeededRandom
    var external: [Int: (MeshCluster) -> Void] = [:]
    var nextExternal = 0

    /// Called for every action a node emits: (node index, action, time).
    public var onAction: ((Int, MeshAction, UInt64) -> Void)?
    /// Called for every message put on a link (lost ones included): (from, to, message, time).
    public var onSend: ((Int, Int, MeshMessage, UInt64) -> Void)?
    public private(set) var events = 0

    public init(link: LinkModel, configuration: MeshConfiguration = .init(), seed: UInt64) {
        self.link = link
        self.configuration = configuration
        self.rng = SeededRandom(seed: seed)
        self.identitySeed = SeededRandom(seed: seed ^ 0x5EED_1D)
    }

    public var count: Int { nodes.count }

    /// The peers hosted by node `index`.
    public func node(_ index: Int) -> MeshNode? { nodes[index] }

    public func index(of key: MeshKey) -> Int? { index[key] }

    /// Indices of nodes currently running.
    public var aliveIndices: [Int] { alive.indices.filter { alive[$0] } }

    /// Adds a node and starts it now, joining through `seeds` (node indices; none for the first node).
    @discardableResult
    public func addNode(seeds: [Int]) -> Int {
        let identity = try! NodeIdentity(seed: identitySeed.bytes(32))
        let i = nodes.count
        var node = MeshNode(identity: identity, address: "sim-\(i)", configuration: configuration, seed: rng.next())
        nodes.append(nil)
        alive.append(true)
        keys.append(identity.id)
        index[identity.id] = i
        side.append(0)
        linked.append([])
        toldDown.append([])
        wakeAt.append(.max)
        let seedList = seeds.filter { $0 != i }.map { (node: keys[$0], address: "sim-\($0)") }
        let actions = node.start(seeds: seedList, now: now)
        nodes[i] = node
        perform(actions, at: i)
        return i
    }

    /// Kills node `i` (kill -9): it stops at once; its neighbours see their links drop.
    public func kill(_ i: Int) {
        guard alive[i] else { return }
        alive[i] = false
        nodes[i] = nil
        for neighbour in linked[i] where alive[neighbour] && side[neighbour] == side[i] {
            queue.push(.linkDown(at: neighbour, lost: i), at: now + link.baseDelay(i, neighbour))
            toldDown[neighbour].insert(i)
        }
    }

    /// Splits the network: nodes whose `sides` entry differs can no longer exchange messages. Silent:
    /// no link is reported down.
    public func partition(_ sides: [Int]) {
        for i in side.indices { side[i] = i < sides.count ? sides[i] : 0 }
    }

    public func heal() {
        for i in side.indices { side[i] = 0 }
    }

    /// Mutates node `i` with `body` (connect a peer, send a signal…) and carries out its actions.
    @discardableResult
    public func withNode<T>(_ i: Int, _ body: (inout MeshNode, UInt64) -> (T, [MeshAction])) -> T? {
        guard alive[i], var node = nodes[i] else { return nil }
        nodes[i] = nil
        let (result, actions) = body(&node, now)
        nodes[i] = node
        perform(actions, at: i)
        return result
    }

    public func connect(peer: String, to i: Int) {
        withNode(i) { node, now in ((), node.connect(peer: peer, now: now)) }
    }

    public func disconnect(peer: String, from i: Int) {
        withNode(i) { node, now in ((), node.disconnect(peer: peer, now: now)) }
    }

    public func send(from peer: String, at i: Int, to target: MeshSignal.Target, payload: [UInt8] = []) -> SignalKey? {
        withNode(i) { node, now in node.send(from: peer, to: target, payload: payload, now: now) }
    }

    /// Runs `body` at virtual time `time`.
    public func schedule(at time: UInt64, _ body: @escaping (MeshCluster) -> Void) {
        nextExternal += 1
        external[nextExternal] = body
        queue.push(.external(nextExternal), at: max(time, now))
    }

    /// Processes events until the virtual clock reaches `time`.
    public func run(until time: UInt64) {
        while let next = queue.nextTime, next <= time {
            let (at, event) = queue.pop()!
            now = at
            events += 1
            switch event {
            case .message(let from, let to, let message):
                guard alive[to] else { continue }
                withNode(to) { node, now in ((), node.receive(message, from: keys[from], now: now)) }
            case .wake(let i):
                guard alive[i], wakeAt[i] == at else { continue }
                wakeAt[i] = .max
                withNode(i) { node, now in ((), node.tick(now: now)) }
            case .linkDown(let i, let lost):
                withNode(i) { node, now in ((), node.linkDown(keys[lost], now: now)) }
            case .external(let id):
                external.removeValue(forKey: id)?(self)
            }
        }
        now = max(now, time)
    }

    func perform(_ actions: [MeshAction], at i: Int) {
        for action in actions {
            if case .send(let to, let message) = action, let j = index[to] {
                transmit(message, from: i, to: j)
            }
            onAction?(i, action, now)
        }
        guard alive[i], let node = nodes[i] else { return }
        let deadline = max(node.nextDeadline, now + 1_000_000)
        if deadline < wakeAt[i] {
            wakeAt[i] = deadline
            queue.push(.wake(i), at: deadline)
        }
    }

    func transmit(_ message: MeshMessage, from i: Int, to j: Int) {
        onSend?(i, j, message, now)
        linked[i].insert(j)
        linked[j].insert(i)
        if !alive[j] {
            // Connection refused: the transport reports the link down after a round trip, once.
            if side[i] == side[j], !toldDown[i].contains(j) {
                toldDown[i].insert(j)
                queue.push(.linkDown(at: i, lost: j), at: now + 2 * link.baseDelay(i, j))
            }
            return
        }
        guard side[i] == side[j], let delay = link.sample(i, j, using: &rng) else { return }
        queue.push(.message(from: i, to: j, message), at: now + delay)
    }
}
