import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn`, for the tests' servers and tools.
///
/// Not Foundation's `Process`: on Linux its `run()` over-reads a `dirent` while it lists
/// `/proc/self/fd` (swift-corelibs-foundation#5472), and a test process with many descriptors open
/// crashes in it now and then (SIGSEGV in `memcpy` under `Process.run()`, seen in this project's CI).
/// The child gets standard input from `input` (a file path; none: `/dev/null`), standard output and
/// error into `output` (a file path, truncated; none: `/dev/null`), and none of our other descriptors.
public final class SpawnedProcess: Sendable {
    public struct SpawnFailed: Error, CustomStringConvertible {
        public var description: String
    }

    public let processIdentifier: pid_t
    /// The wait status once the child has been reaped.
    private let status = NIOLockedValueBox<Int32?>(nil)

    /// - Parameter errors: standard error goes with standard output (true) or to `/dev/null`.
    public init(
        executable: String,
        arguments: [String],
        input: String? = nil,
        output: String? = nil,
        errors: Bool = true
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, input ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if errors {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        // None of our other descriptors: not every one is close-on-exec (a server holding a copy of a
        // test's socket keeps that connection open after the test closed it). Listed with FileManager,
        // which reads directory entries safely; one closed meanwhile is skipped by posix_spawn (EBADF on
        // a close action is ignored).
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for name in open {
            if let fd = Int32(name), fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        // The child starts with no signal blocked and every signal at its default action, whatever the
        // spawning thread had (a dispatch worker blocks most signals: a server would ignore SIGTERM).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw SpawnFailed(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        processIdentifier = pid
    }

    deinit {
        // Reap it if it has exited; one still running is left to whoever stops it (a zombie at worst).
        _ = isRunning
    }

    /// True until the child has exited (it is reaped then).
    public var isRunning: Bool {
        status.withLockedValue { status in
            guard status == nil else { return false }
            var raw: Int32 = 0
            let reaped = waitpid(processIdentifier, &raw, WNOHANG)
            if reaped == processIdentifier {
                status = raw
            } else if reaped == -1, errno == ECHILD {
                status = 0  // reaped elsewhere: gone, its status unknown
            }
            return status == nil
        }
    }

    /// The exit code (128 + the signal for a child killed by one); -1 while it runs.
    public var terminationStatus: Int32 {
        guard !isRunning, let raw = status.withLockedValue({ $0 }) else { return -1 }
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }

    /// Sends `signal` (SIGTERM by default).
    public func terminate(_ signal: Int32 = SIGTERM) {
        guard isRunning else { return }
        _ = kill(processIdentifier, signal)
    }

    /// Waits until the child has exited.
    public func exited() async {
        while isRunning { try? await Task.sleep(for: .milliseconds(5)) }
    }

    /// Blocks until the child has exited (for a child that was just killed, or a quick tool).
    public func waitUntilExit() {
        status.withLockedValue { status in
            guard status == nil else { return }
            var raw: Int32 = 0
            while waitpid(processIdentifier, &raw, 0) == -1, errno == EINTR {}
            status = raw
        }
    }

    /// Runs `executable` to the end; its exit code and what it wrote (standard output and error).
    public static func run(_ executable: String, _ arguments: [String], input: String? = nil) async throws -> (
        status: Int32, output: String
    ) {
        let (process, files) = try tool(executable, arguments, input: input, errors: true)
        defer { files.remove() }
        await process.exited()
        return (process.terminationStatus, files.read())
    }

    /// ``run(_:_:input:)`` for synchronous callers: blocks the thread until the tool exits; only its standard
    /// output is returned.
    public static func runBlocking(_ executable: String, _ arguments: [String], input: String? = nil) throws -> (
        status: Int32, output: String
    ) {
        let (process, files) = try tool(executable, arguments, input: input, errors: false)
        defer { files.remove() }
        process.waitUntilExit()
        return (process.terminationStatus, files.read())
    }

    /// Starts a tool with its input and output in temporary files (removed again if it cannot start).
    private static func tool(
        _ executable: String,
        _ arguments: [String],
        input: String?,
        errors: Bool
    ) throws -> (SpawnedProcess, ToolFiles) {
        let files = try ToolFiles(input: input)
        do {
            let process = try SpawnedProcess(
                executable: executable,
                arguments: arguments,
                input: files.input,
                output: files.output,
                errors: errors
            )
            return (process, files)
        } catch {
            files.remove()
            throw error
        }
    }

    /// A tool's standard input (written first) and output, as temporary files.
    private struct ToolFiles {
        var input: String?
        var output: String

        init(input text: String?) throws {
            let directory = FileManager.default.temporaryDirectory
            output = directory.appendingPathComponent("spawned-\(UUID().uuidString).out").path
            if let text {
                let path = directory.appendingPathComponent("spawned-\(UUID().uuidString).in").path
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                input = path
            }
        }

        func read() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }

        func remove() {
            try? FileManager.default.removeItem(atPath: output)
            if let input { try? FileManager.default.removeItem(atPath: input) }
        }
    }
}
