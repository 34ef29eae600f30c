import ArgumentParser
import Signaling

/// `signal mesh`: the gossip mesh's tools.
struct MeshCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "PeerMesh: run a mesh node (the harness that measures the mesh is signal-mesh-harness).",
        subcommands: [MeshNodeCommand.self]
    )
}

/// `signal mesh node`: a bare mesh node that hosts only its own local peers (one agent can run its own),
/// with the hub's defaults otherwise.
struct MeshNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run a mesh node: a WebSocket endpoint for local peers (v1 protocol) linked to the mesh.",
        discussion: """
            signal mesh node --port 9001 --mesh-listen 127.0.0.1:7001 --mesh-secret-file mesh.secret
            signal mesh node --port 9002 --mesh-listen 127.0.0.1:7002 --mesh-seed 127.0.0.1:7001 --mesh-secret-file mesh.secret
            """
    )

    @OptionGroup var logging: LoggingOptions
    @OptionGroup(title: "PeerMesh") var mesh: MeshOptions
    @Option(help: "Address of the WebSocket endpoint for local peers.") var host = "127.0.0.1"
    @Option(help: "Port of the WebSocket endpoint (0 picks one).") var port = 8090
    @Option(help: "Seconds a dropped session waits for its client to resume.") var resumeGrace = 30.0

    func validate() throws {
        guard mesh.enabled else { throw ValidationError("a mesh node needs --mesh-listen HOST:PORT") }
    }

    func run() async throws {
        let logger = logging.bootstrap(label: "signal-mesh")
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.limits.resumeGraceNanos = UInt64(resumeGrace * 1e9)
        try await runServer(configuration: configuration, mesh: mesh, logger: logger)
    }
}
