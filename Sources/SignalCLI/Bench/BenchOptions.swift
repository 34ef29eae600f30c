import ArgumentParser

/// Options every `signal bench` mode takes.
struct BenchOptions: ParsableArguments {
    @Option(help: "WebSocket URL of the server (the hub's /ws, its /echo, or a reference server; ws:// or wss://).")
    var url = "ws://127.0.0.1:8080/ws"

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
        help:
            "Server process id, for its CPU time and memory (default: the local process listening on the URL's port, else /metrics)."
    )
    var serverPid: Int32?

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

    func validateCommon() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard connectConcurrency >= 1 else { throw ValidationError("--connect-concurrency must be at least 1") }
        guard sourceAddresses >= 0, sourceAddresses <= 254 else {
            throw ValidationError("--source-addresses must be 0-254")
        }
    }
}
