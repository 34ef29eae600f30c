import ArgumentParser

/// `signal bench`: the load generator (a lean SwiftNIO client, many connections per event loop).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load a hub (or any protocol-v1 or echo server) and measure it.",
        discussion: """
            connect  open and hold N sessions joined to rooms: connect rate, server
                     memory per connection, relay latency while all are held
            relay    pairs negotiate (offer, answer, candidates) in a loop:
                     signals/s, latency, server CPU
            presence a mover joins and leaves a watcher's room in turn:
                     join → peer-joined latency
            fanout   room broadcasts: deliveries/s, latency
            echo     the transport ceiling against an echo endpoint
                     (the hub's /echo with `signal serve --echo`)
            state    the hub's own memory per session at any count, in this
                     process (no server, no sockets)

            A progress line goes to stderr while it runs and a summary to stdout at \
            the end; with --json the summary is one JSON object with signals_per_sec, \
            latency_ms (p50, p90, p99, p999, max, mean), errors and, for connect, \
            connections, connects_per_sec and server_rss_bytes_per_connection. The \
            server's CPU time and memory come from /proc/<pid> (--server-pid, or the \
            local process listening on the URL's port) or from its /metrics.

            Against a cluster, give --url once per node: connections go to the URLs \
            round-robin, so the two peers of a relay pair (and neighbouring members of \
            a room) are on different nodes and cross-node relay is what is measured. \
            The summary adds each node's figures (nodes: connections, sent, \
            received, errors, server CPU) and sums every node's CPU (one --server-pid \
            per node, in --url order); --redis-pid adds Redis's CPU per signal.

            Start the hub with limits that let one machine load it, e.g.
              signal serve --rate-burst 100000 --rate-per-second 1000000 \\
                --max-connections 200000 --max-connections-per-ip 1000000 \\
                --max-peers-per-room 10000
            """,
        subcommands: [
            BenchConnectCommand.self, BenchRelayCommand.self, BenchPresenceCommand.self, BenchFanoutCommand.self,
            BenchEchoCommand.self, BenchStateCommand.self,
        ]
    )
}
