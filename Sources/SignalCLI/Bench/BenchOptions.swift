import ArgumentParser

/// Options every `signal bench` mode takes.
struct BenchOptions: ParsableArguments {
    @Option(
        name: .customLong("url"),
        help: ArgumentHelp(
            "WebSocket URL of the server (the hub's /ws, its /echo, or a reference server; ws:// or wss://; default: \(Self.defaultURL)).",
            discussion:
                "Repeat it for the nodes of a cluster: connections go to the URLs round-robin, so the two peers of a pair (and neighbouring members of a room) are on different nodes, and the summary gives figures per URL."
        )
    )
    var urls: [String] = []

    @Option(help: "PEM file of a private CA to trust for wss:// (default: the system trust store).")
    var ca: String?

    @Flag(help: "Do not verify the server's certificate (insecure; for debugging only).")
    var insecure = false

    @Flag(help: "Print the summary as one JSON object on stdout.")
    var json = false

    @Option(help: "Event loop threads of the load generator.")
    var threads = 1

    @Option(help: "Spread connections over loopback sources 127.0.0.1…127.0.0.N (0: one per 2,000 connections).")
    var sourceAddresses = 0

    @Option(
        name: .customLong("server-pid"),
        help:
            "Server process id, for its CPU time and memory; repeat it for the nodes of a cluster, in --url order, and the figures are summed (default: the local process listening on each URL's port, else /metrics)."
    )
    var serverPids: [Int32] = []

    @Option(
        name: .customLong("redis-pid"),
        help:
            "Process id of a redis-server behind the servers (repeatable): its CPU over the measured window, per signal."
    )
    var redisPids: [Int32] = []

    @Option(
        help:
            "Counter file of a server run under Benchmarks/malloc-counter.c, for allocations per signal and heap per connection."
    )
    var serverMallocCounters: String?

    @Option(help: "WebSocket handshakes in flight at once.")
    var connectConcurrency = 256

    @Option(help: "Seconds allowed for connecting every session.")
    var connectTimeout = 120.0

    @Flag(help: "No progress line on stderr.")
    var quiet = false

    static let defaultURL = "ws://127.0.0.1:8080/ws"

    /// The `--url`s given, or the default.
    var serverURLs: [String] { urls.isEmpty ? [Self.defaultURL] : urls }

    func validateCommon() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard connectConcurrency >= 1 else { throw ValidationError("--connect-concurrency must be at least 1") }
        guard sourceAddresses >= 0, sourceAddresses <= 254 else {
            throw ValidationError("--source-addresses must be 0-254")
        }
    }
}
