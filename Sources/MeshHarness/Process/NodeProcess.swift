import Foundation
import NIOCore
import NIOPosix

/// One `signal` child process of the process harness: a plain hub or a mesh node on loopback ports.
final class NodeProcess: Sendable {
    let process: Process
    /// The WebSocket / HTTP port (`/ws`, `/metrics`).
    let port: Int
    /// The mesh link port (nil for the plain hub).
    let meshPort: Int?

    private init(process: Process, port: Int, meshPort: Int?) {
        self.process = process
        self.port = port
        self.meshPort = meshPort
    }

    var pid: Int32 { process.processIdentifier }

    /// Starts `signal serve` with `arguments` after the common ones (`host`, one event loop thread,
    /// a short resume grace so a peer that moves is not kept as a detached session), in the network
    /// namespace `namespace` if one is given (`ip netns exec`, which execs: the pid is the server's).
    /// Output goes to `log` (or nowhere).
    static func launch(
        executable: String,
        host: String = "127.0.0.1",
        port: Int,
        meshPort: Int?,
        arguments: [String],
        namespace: String? = nil,
        log: String?
    ) throws -> NodeProcess {
        let process = Process()
        let serve =
            ["serve", "--host", host, "--port", String(port), "--threads", "1", "--resume-grace", "1"]
            + ["--log-level", log == nil ? "error" : "info"] + arguments
        if let namespace {
            process.executableURL = URL(fileURLWithPath: NetnsNetwork.ipPath ?? "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace, executable] + serve
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = serve
        }
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        return NodeProcess(process: process, port: port, meshPort: meshPort)
    }

    /// kill -9: no goodbye, no close frames; the kernel resets its connections.
    func kill() {
        guard process.isRunning else { return }
        _ = Foundation.kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace` seconds.
    func stop(grace: Double = 3) async {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        self.kill()
    }

    /// Free loopback TCP ports (bound to port 0 and released; another process could take one in between,
    /// which is unlikely on a test machine and shows up as a node that does not start).
    static func freePorts(_ count: Int, group: any EventLoopGroup) async throws -> [Int] {
        var channels: [any Channel] = []
        for _ in 0..<count {
            channels.append(try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get())
        }
        let ports = channels.compactMap { $0.localAddress?.port }
        for channel in channels { try? await channel.close() }
        return ports
    }
}
