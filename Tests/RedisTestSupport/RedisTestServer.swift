import Foundation
import Logging
import NIOCore
import NIOPosix
import SignalRedis

#if canImport(Glibc)
    import Glibc
#endif

/// A real `redis-server` child process on a free loopback port, started for one test and killed at
/// the end (or when the test's reference to it goes away). Shared by the Redis client's tests
/// (`SignalRedisTests`) and the cluster's (`SignalingTests`).
public final class RedisTestServer: @unchecked Sendable {
    public struct NotInstalled: Error, CustomStringConvertible {
        public var description: String {
            "redis-server is not installed (or REDIS_SERVER does not name it), so the Redis integration tests "
                + "cannot run. Install it with "
                + "`apt-get install -y redis-server` (Scripts/test-all does this)."
        }
    }

    public struct DidNotStart: Error, CustomStringConvertible {
        public var description: String
    }

    public static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    /// Certificates for a TLS server, made with the `openssl` command in a temporary directory.
    public struct TLSFiles {
        public var directory: URL
        public var caCertificate: String { directory.appendingPathComponent("ca.crt").path }
        public var certificate: String { directory.appendingPathComponent("server.crt").path }
        public var key: String { directory.appendingPathComponent("server.key").path }
    }

    public let port: Int
    public let arguments: [String]
    /// Set when the server speaks only TLS (on `port`).
    public let tls: TLSFiles?
    private let lock = NSLock()
    private var process: SpawnedProcess?

    /// Starts `redis-server` with `arguments` added to a configuration without persistence; with `tls`,
    /// it listens with TLS only, with a certificate for 127.0.0.1 from a fresh CA.
    public init(_ arguments: [String] = [], tls: Bool = false) async throws {
        let files = tls ? try await Self.makeCertificates() : nil
        self.tls = files
        self.arguments = arguments
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try await Self.freePort()
            do {
                let process = try await Self.launch(
                    port: port,
                    arguments: Self.arguments(arguments, port: port, tls: files)
                )
                self.port = port
                self.process = process
                return
            } catch let error as DidNotStart {
                lastError = error  // most likely the port was taken in between; try another
            }
        }
        throw lastError!
    }

    deinit {
        signalKill()?.waitUntilExit()
        if let tls { try? FileManager.default.removeItem(at: tls.directory) }
    }

    public var url: String { "redis://127.0.0.1:\(port)" }

    public func configuration(_ path: String = "") throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: url + path)
        configuration.connectTimeout = .seconds(2)
        configuration.reconnectBackoff = RedisBackoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        return configuration
    }

    /// True while the server process runs.
    public var isRunning: Bool {
        lock.withLock { process?.isRunning ?? false }
    }

    /// Kills the server with SIGKILL (no goodbye to clients) and waits until it is gone.
    public func kill() async {
        guard let process = signalKill() else { return }
        while process.isRunning {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    @discardableResult
    private func signalKill() -> SpawnedProcess? {
        let process = lock.withLock { () -> SpawnedProcess? in
            defer { self.process = nil }
            return self.process
        }
        guard let process, process.isRunning else { return nil }
        process.terminate(SIGKILL)
        return process
    }

    /// Starts the server again on the same port.
    public func restart() async throws {
        await kill()
        var lastError: (any Error)?
        // The port was just released; retry briefly in case the kernel has not let go of it.
        for _ in 0..<20 {
            do {
                let process = try await Self.launch(
                    port: port,
                    arguments: Self.arguments(arguments, port: port, tls: tls)
                )
                lock.withLock { self.process = process }
                return
            } catch let error as DidNotStart {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw lastError!
    }

    /// A client for this server, with short timeouts for tests.
    public func connection(
        _ path: String = "",
        configure: (inout RedisConfiguration) -> Void = { _ in },
        onStateChange: (@Sendable (RedisConnectionState) -> Void)? = nil,
        onRoundTrip: (@Sendable (Duration) -> Void)? = nil
    ) throws -> RedisConnection {
        var configuration = try configuration(path)
        configure(&configuration)
        return try RedisConnection(
            configuration: configuration,
            eventLoopGroup: Self.group,
            logger: Self.logger,
            onStateChange: onStateChange,
            onRoundTrip: onRoundTrip
        )
    }

    public func subscriber(
        configure: (inout RedisConfiguration) -> Void = { _ in },
        onStateChange: (@Sendable (RedisConnectionState) -> Void)? = nil
    ) throws -> RedisSubscriber {
        var configuration = try configuration()
        configure(&configuration)
        return try RedisSubscriber(
            configuration: configuration,
            eventLoopGroup: Self.group,
            logger: Self.logger,
            onStateChange: onStateChange
        )
    }

    public static var logger: Logger {
        var logger = Logger(label: "redis-test")
        logger.logLevel = ProcessInfo.processInfo.environment["TEST_LOG"] == nil ? .warning : .debug
        return logger
    }

    // MARK: - Process

    /// `redis-server` from `REDIS_SERVER` or the `PATH`.
    public static func executable() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let configured = environment["REDIS_SERVER"] {
            guard FileManager.default.isExecutableFile(atPath: configured) else { throw NotInstalled() }
            return configured
        }
        let path = environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
            let candidate = "\(directory)/redis-server"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw NotInstalled()
    }

    private static func launch(port: Int, arguments: [String]) async throws -> SpawnedProcess {
        let logFile = FileManager.default.temporaryDirectory.appendingPathComponent("redis-test-\(port).log").path
        try? FileManager.default.removeItem(atPath: logFile)
        let process = try SpawnedProcess(
            executable: try executable(),
            arguments: [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "notice", "--logfile", logFile,
                "--dir", FileManager.default.temporaryDirectory.path,
            ] + arguments
        )
        func log() -> String {
            (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "(no log)"
        }
        // Ready when it accepts a TCP connection.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                throw DidNotStart(description: "redis-server exited at start on port \(port): \(log())")
            }
            if let channel = try? await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get() {
                try? await channel.close()
                // A server that lost the race for the port exits right away; make sure it is ours.
                try await Task.sleep(for: .milliseconds(30))
                guard process.isRunning else { continue }
                return process
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.terminate()
        throw DidNotStart(description: "redis-server did not accept connections on port \(port) within 10 s: \(log())")
    }

    private static func arguments(_ arguments: [String], port: Int, tls: TLSFiles?) -> [String] {
        guard let tls else { return arguments }
        // Later options win: the plain port is switched off and the TLS port takes its number.
        return arguments + [
            "--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.certificate, "--tls-key-file", tls.key,
            "--tls-ca-cert-file", tls.caCertificate, "--tls-auth-clients", "no",
        ]
    }

    /// A CA and a server certificate for IP 127.0.0.1 and localhost, signed by it.
    public static func makeCertificates() async throws -> TLSFiles {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let files = TLSFiles(directory: directory)
        let extensions = directory.appendingPathComponent("server.ext")
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            .write(to: extensions, atomically: true, encoding: .utf8)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let csr = directory.appendingPathComponent("server.csr").path
        try await openssl(
            ["req", "-x509"] + key + [
                "-keyout", directory.appendingPathComponent("ca.key").path, "-out", files.caCertificate, "-days", "2",
                "-subj", "/CN=signal test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )
        try await openssl(["req"] + key + ["-keyout", files.key, "-out", csr, "-subj", "/CN=localhost"])
        try await openssl([
            "x509", "-req", "-in", csr, "-CA", files.caCertificate, "-CAkey",
            directory.appendingPathComponent("ca.key").path,
            "-CAcreateserial", "-out", files.certificate, "-days", "2", "-extfile", extensions.path,
        ])
        return files
    }

    private static func openssl(_ arguments: [String]) async throws {
        let (status, output) = try await SpawnedProcess.run("/usr/bin/env", ["openssl"] + arguments)
        guard status == 0 else {
            throw DidNotStart(
                description: "openssl \(arguments.first ?? "") failed (is openssl installed?): \(output)"
            )
        }
    }

    static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }
}

/// Polls `condition` until it holds or `timeout` passes.
public func eventually(
    timeout: Duration = .seconds(10),
    _ condition: @Sendable () async throws -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}
