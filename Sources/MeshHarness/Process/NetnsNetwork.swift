import Foundation
import NIOConcurrencyHelpers

/// A private network for one scenario of the process harness (Linux, root, iproute2): each mesh node in
/// its own network namespace, the hub in one more, each joined by a veth pair to one bridge in the root
/// namespace, on 10.77.X.0/24 with X picked per run. The harness's peers stay in the root namespace
/// (the bridge is 10.77.X.1) and connect to the nodes' addresses.
///
/// - Node i is 10.77.X.(10 + i) in `sigmesh-<pid>-n<i>`.
/// - The hub is 10.77.X.2 in `sigmesh-<pid>-hub`, with one more address per edge node,
///   10.77.X.(100 + i), that the peers of node i connect to: a partition can then cut the hub off from
///   the peers of the other side's nodes, as the simulation's hub (on node 0's side) is.
/// - A partition is a blackhole route in every namespace of one side to every address of the other
///   side (and, for the hub, a blackhole rule on each address of the far side's nodes, both ways):
///   links between the sides silently stop carrying packets, no link is closed, each side's peers keep
///   reaching their own node. Healing deletes those routes and rules.
///
/// Names carry the harness's pid (interfaces `sm<pid>b`, `sm<pid>h`, `sm<pid>v<i>`), so parallel runs do
/// not collide, and the leftovers of a crashed run (its pid gone) are removed when the next run starts.
final class NetnsNetwork: Sendable {
    static let prefix = "sigmesh"

    let run: String
    let subnet: Int
    let nodes: Int
    /// Commands that undo the current partition: (namespace, `ip -batch` lines).
    private let undo = NIOLockedValueBox<[(String, [String])]>([])
    private let destroyed = NIOLockedValueBox(false)

    private init(run: String, subnet: Int, nodes: Int) {
        self.run = run
        self.subnet = subnet
        self.nodes = nodes
    }

    var bridge: String { "sm\(run)b" }
    var hubNamespace: String { "\(Self.prefix)-\(run)-hub" }
    var hubVeth: String { "sm\(run)h" }
    func namespace(_ node: Int) -> String { "\(Self.prefix)-\(run)-n\(node)" }
    func veth(_ node: Int) -> String { "sm\(run)v\(node)" }
    /// Node i's address (its WebSocket endpoint and its mesh links).
    func address(_ node: Int) -> String { "10.77.\(subnet).\(10 + node)" }
    /// The hub's own address (for `/metrics`; never cut).
    var hubAddress: String { "10.77.\(subnet).2" }
    /// The hub's address for the peers of node i.
    func hubAddress(for node: Int) -> String { "10.77.\(subnet).\(100 + node)" }

    static let maximumNodes = 90

    /// Why namespaces cannot be used here, or nil when they can (checked by adding and deleting one).
    static func unavailableReason() -> String? {
        guard geteuid() == 0 else {
            return "splitting the network needs root (a network namespace per node, `ip netns`); "
                + "SIGSTOP of half the nodes would freeze them, which is not a partition"
        }
        let probe = "\(prefix)-\(getpid())-probe"
        do {
            try ip(["netns", "add", probe])
            try ip(["netns", "del", probe])
            return nil
        } catch {
            return "network namespaces do not work here (\(error)); a partition needs one per node"
        }
    }

    /// Creates the namespaces, veth pairs and bridge for `nodes` nodes and the hub (removing stale ones
    /// of crashed runs first). On failure, whatever was created is removed.
    static func create(nodes: Int) throws -> NetnsNetwork {
        guard nodes <= maximumNodes else {
            throw HarnessProcessError("network namespaces: at most \(maximumNodes) nodes (one address each)")
        }
        removeStale()
        let used = (try? ip(["-4", "-o", "addr", "show"])) ?? ""
        let routes = (try? ip(["-4", "route", "show"])) ?? ""
        let free = (1...254).filter { !used.contains("10.77.\($0).") && !routes.contains("10.77.\($0).") }
        guard let subnet = free.randomElement() else {
            throw HarnessProcessError("network namespaces: no free 10.77.X.0/24")
        }
        let network = NetnsNetwork(run: String(getpid()), subnet: subnet, nodes: nodes)
        do {
            try ip(["link", "add", network.bridge, "type", "bridge"])
            try ip(["addr", "add", "10.77.\(subnet).1/24", "dev", network.bridge])
            try ip(["link", "set", network.bridge, "up"])
            var members = [
                (network.hubNamespace, network.hubVeth, [network.hubAddress] + (0..<nodes).map(network.hubAddress))
            ]
            for node in 0..<nodes {
                members.append((network.namespace(node), network.veth(node), [network.address(node)]))
            }
            for (namespace, veth, addresses) in members {
                try ip(["netns", "add", namespace])
                try ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace])
                try ip(["link", "set", veth, "master", network.bridge, "up"])
                let lines =
                    addresses.map { "addr add \($0)/24 dev eth0" } + ["link set eth0 up", "link set lo up"]
                try ip(["-n", namespace, "-batch", "-"], input: lines.joined(separator: "\n") + "\n")
            }
            // The hub's blackhole rules must come before the local table (which accepts any packet to a
            // local address): move the local table's rule after them.
            try ip(
                ["-n", network.hubNamespace, "-batch", "-"],
                input: "rule add pref 32765 table local\nrule del pref 0\n"
            )
        } catch {
            network.destroy()
            throw error
        }
        return network
    }

    /// Splits the network: `sides[i]` is node i's side; the hub is on node 0's side. In `hub` mode only
    /// the hub's addresses for the far side's nodes are cut (the nodes are not running).
    func partition(_ sides: [Int], hub: Bool) throws {
        heal()
        var plan: [(String, [String], [String])] = []
        if hub {
            let hubSide = sides.first ?? 0
            var add: [String] = []
            var remove: [String] = []
            for node in 0..<min(sides.count, nodes) where sides[node] != hubSide {
                let address = hubAddress(for: node)
                add += ["rule add pref \(100 + node) to \(address) blackhole"]
                add += ["rule add pref \(200 + node) from \(address) blackhole"]
                remove += ["rule del pref \(100 + node)", "rule del pref \(200 + node)"]
            }
            plan.append((hubNamespace, add, remove))
        } else {
            for node in 0..<min(sides.count, nodes) {
                let far = (0..<min(sides.count, nodes)).filter { sides[$0] != sides[node] }
                plan.append(
                    (
                        namespace(node), far.map { "route add blackhole \(address($0))/32" },
                        far.map { "route del blackhole \(address($0))/32" }
                    )
                )
            }
        }
        for (namespace, add, remove) in plan where !add.isEmpty {
            undo.withLockedValue { $0.append((namespace, remove)) }
            try Self.ip(["-n", namespace, "-batch", "-"], input: add.joined(separator: "\n") + "\n")
        }
    }

    /// Deletes the partition's routes and rules (nothing when there are none).
    func heal() {
        let undo = self.undo.withLockedValue { undo in
            defer { undo = [] }
            return undo
        }
        for (namespace, lines) in undo {
            _ = try? Self.ip(["-n", namespace, "-force", "-batch", "-"], input: lines.joined(separator: "\n") + "\n")
        }
    }

    /// Kills whatever still runs in the namespaces, deletes them, the veth pairs and the bridge. Safe to
    /// call twice and from a signal handler's queue: a second caller waits until the first is done.
    func destroy() {
        destroyed.withLockedValue { destroyed in
            guard !destroyed else { return }
            destroyed = true
            for node in 0..<nodes { Self.remove(namespace: namespace(node), veth: veth(node)) }
            Self.remove(namespace: hubNamespace, veth: hubVeth)
            _ = try? Self.ip(["link", "del", bridge])
        }
    }

    private static func remove(namespace: String, veth: String?) {
        if let pids = try? ip(["netns", "pids", namespace]) {
            for pid in pids.split(whereSeparator: \.isWhitespace).compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        }
        if let veth { _ = try? ip(["link", "del", veth]) }
        _ = try? ip(["netns", "del", namespace])
    }

    /// Namespaces and interfaces of this harness whose run (pid) is gone.
    static func removeStale() {
        func isStale(_ run: Substring) -> Bool {
            guard let pid = Int32(run), pid != getpid() else { return false }
            return kill(pid, 0) != 0 && errno == ESRCH
        }
        for line in ((try? ip(["netns", "list"])) ?? "").split(separator: "\n") {
            let name = line.split(separator: " ").first ?? ""
            let parts = name.split(separator: "-")
            guard parts.count == 3, parts[0] == prefix, isStale(parts[1]) else { continue }
            remove(namespace: String(name), veth: nil)
        }
        for line in ((try? ip(["-o", "link", "show"])) ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 1 else { continue }
            let name = fields[1].split(separator: "@").first?.split(separator: ":").first ?? ""
            guard name.hasPrefix("sm"), let kind = name.dropFirst(2).firstIndex(where: { !$0.isNumber }),
                "bhv".contains(name[kind]), name[kind...].dropFirst().allSatisfy(\.isNumber),
                isStale(name[name.index(name.startIndex, offsetBy: 2)..<kind])
            else { continue }
            _ = try? ip(["link", "del", String(name)])
        }
    }

    /// Where iproute2's `ip` is.
    static var ipPath: String? {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Runs `ip` with `arguments` (and `input` on its stdin); its stdout, or an error with its stderr.
    @discardableResult
    static func ip(_ arguments: [String], input: String? = nil) throws -> String {
        let process = Process()
        guard let path = ipPath else { throw HarnessProcessError("`ip` (iproute2) is not installed") }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        let stdin = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = input == nil ? FileHandle.nullDevice : stdin
        try process.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: err, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw HarnessProcessError("ip \(arguments.joined(separator: " ")): \(message)")
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Removes a scenario's network namespaces (and the harness's temporary files) on SIGINT or SIGTERM,
/// then exits as the signal would have.
final class InterruptCleanup {
    private let sources: [any DispatchSourceSignal]

    init(network: NetnsNetwork, directory: String) {
        sources = [SIGINT, SIGTERM].map { signal in
            Foundation.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
            source.setEventHandler {
                network.destroy()
                try? FileManager.default.removeItem(atPath: directory)
                FileHandle.standardError.write(Data("interrupted: network namespaces removed\n".utf8))
                exit(128 + signal)
            }
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
        Foundation.signal(SIGINT, SIG_DFL)
        Foundation.signal(SIGTERM, SIG_DFL)
    }
}
