import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Signaling

/// The flow every `signal bench` mode shares: limits and addresses, connect, prepare, measure the
/// server before and after, run the load, report, close.
struct BenchRunner {
    /// Load to run once everything is connected.
    struct Load {
        var warmup: Double
        var duration: Double
        /// Messages per second over all loops; nil: closed loop.
        var rate: Double?
        var inflight: Int
    }

    typealias Factory =
        @Sendable (
            _ loop: any EventLoop, _ plan: ConnectionPlan, _ units: [[Int]], _ runID: String, _ maxConnectsInFlight: Int
        ) -> LoopDriver

    let mode: String
    let options: BenchOptions
    /// Global connection indexes, grouped in what must share a loop (a pair, a room).
    let units: [[Int]]
    /// Protocol-v1 sessions (`welcome`, `join`) or bare WebSockets.
    let sessions: Bool

    var connectionCount: Int { units.reduce(0) { $0 + $1.count } }

    /// Runs and returns the report (`settle` > 0: wait that long after connecting and measure the
    /// server's memory per connection).
    func run(load: Load?, settle: Double, factory: @escaping Factory) async throws -> BenchReport {
        try options.validateCommon()
        let url: WebSocketURL
        do {
            url = try WebSocketURL(options.url)
        } catch {
            throw ValidationError("--url: \(error)")
        }
        let tls = try Self.clientTLS(url: url, options: options)
        let count = connectionCount
        let progress = ProgressLine(enabled: !options.quiet)
        Self.ensureFileDescriptors(count + 64, progress: progress)

        let server = try SocketAddress.makeAddressResolvingHost(url.host, port: url.port)
        // With one source address, the kernel's search for a free ephemeral port in `connect` grows
        // with the ports in use and was a third of the generator's CPU at 15,000 connections.
        let sourceCount = options.sourceAddresses > 0 ? options.sourceAddresses : (count + 1_999) / 2_000
        let sources = sourceCount > 1 ? try ConnectionPlan.loopbackSources(count: sourceCount, server: server) : []
        let plan = try ConnectionPlan(url: url, tls: tls, sources: sources, sessions: sessions)

        let probe = await ServerProbe.locate(
            pid: options.serverPid,
            host: url.host,
            port: url.port,
            tls: tls,
            mallocCounters: options.serverMallocCounters,
            group: MultiThreadedEventLoopGroup.singleton
        )
        let before = await probe?.read(group: MultiThreadedEventLoopGroup.singleton)

        let runID = "b" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let perLoop = LoadGenerator.distribute(units, loops: options.threads)
        let maxConnects = max(1, options.connectConcurrency / options.threads)
        let generator = try await LoadGenerator(threads: options.threads, progress: progress) { index, loop in
            factory(loop, plan, perLoop[index], runID, maxConnects)
        }
        let generatorCPUStart = ServerProbe.ownCPUSeconds()

        // Connect.
        let connectStart = LoopDriver.now()
        _ = try await generator.connect(expected: count, timeout: options.connectTimeout)
        let connected = try await generator.stats()
        let afterConnect = await probe?.read(group: MultiThreadedEventLoopGroup.singleton)
        try await generator.prepare()
        var settled: ServerProbe.Reading?
        if settle > 0 {
            try await Task.sleep(nanoseconds: UInt64(settle * 1e9))
            settled = await probe?.read(group: MultiThreadedEventLoopGroup.singleton)
        }

        // Load.
        var window = 0.0
        let readings = NIOLockedValueBox<[ServerProbe.Reading?]>([])
        if let load, connected.ready > 0 {
            window = try await generator.run(
                warmup: load.warmup,
                duration: load.duration,
                rate: load.rate,
                inflight: load.inflight,
                label: mode
            ) { _ in
                let reading = await probe?.read(group: MultiThreadedEventLoopGroup.singleton)
                readings.withLockedValue { $0.append(reading) }
            }
        }
        let stats = try await generator.stats()
        let final = await probe?.read(group: MultiThreadedEventLoopGroup.singleton)
        let generatorCPU = ServerProbe.ownCPUSeconds() - generatorCPUStart
        progress.finish()
        await generator.shutdown(timeout: 10 + Double(count) / 10_000)

        // Report.
        let lost = load == nil ? 0 : stats.lost
        var report = BenchReport(
            mode: mode,
            url: options.url,
            threads: options.threads,
            connections: stats.ready,
            durationS: (window * 1000).rounded() / 1000,
            sent: stats.sent,
            signals: stats.received,
            signalsPerSec: window > 0 ? (Double(stats.received) / window).rounded() : 0,
            latencyMs: LatencySummary(stats.latency),
            errors: stats.errorMessages + stats.connectFailed + stats.closed + lost,
            errorDetail: ErrorDetail(
                errorMessages: stats.errorMessages,
                connectFailed: stats.connectFailed,
                closed: stats.closed,
                lost: lost,
                firstError: stats.firstError
            ),
            serverPid: probe?.pid,
            serverRssBytes: final?.residentBytes,
            generatorCpuSeconds: (generatorCPU * 100).rounded() / 100
        )
        let measured = readings.withLockedValue { $0 }
        if measured.count == 2, let start = measured[0]?.cpuSeconds, let end = measured[1]?.cpuSeconds {
            let cpu = end - start
            report.serverCpuSeconds = (cpu * 100).rounded() / 100
            if cpu > 0 { report.signalsPerServerCpuSec = (Double(stats.received) / cpu).rounded() }
        }
        if measured.count == 2, let start = measured[0]?.allocations, let end = measured[1]?.allocations,
            stats.received > 0
        {
            report.serverAllocationsPerSignal = (Double(end - start) / Double(stats.received) * 100).rounded() / 100
        }
        if settle > 0 {
            let seconds = Double(connected.lastReadyAt > connectStart ? connected.lastReadyAt - connectStart : 0) / 1e9
            report.connectsPerSec = seconds > 0 ? (Double(connected.ready) / seconds).rounded() : 0
            report.connectLatencyMs = LatencySummary(connected.connectLatency)
            // Connect mode: the server's CPU is what connecting cost it (the probe barely loads it).
            report.serverCpuSeconds = nil
            report.signalsPerServerCpuSec = nil
            if let start = before?.cpuSeconds, let end = afterConnect?.cpuSeconds {
                report.serverCpuSeconds = ((end - start) * 100).rounded() / 100
                if end > start { report.connectsPerServerCpuSec = (Double(connected.ready) / (end - start)).rounded() }
            }
            if let base = before?.heapBytes, let held = settled?.heapBytes, connected.ready > 0 {
                report.serverHeapBytesPerConnection = (Double(held - base) / Double(connected.ready)).rounded()
            }
            if let base = before?.allocations, let after = afterConnect?.allocations, connected.ready > 0 {
                report.serverAllocationsPerConnect = (Double(after - base) / Double(connected.ready)).rounded()
            }
            if let base = before?.residentBytes, let held = settled?.residentBytes, connected.ready > 0 {
                report.serverRssBytesPerConnection = (Double(held - base) / Double(connected.ready)).rounded()
                report.serverRssBytes = held
            }
        }
        return report
    }

    /// Prints the report (text, or JSON with `--json`); exits with 1 when nothing connected, saying why
    /// on stderr.
    func emit(_ report: BenchReport) throws {
        if options.json {
            print(try report.jsonText())
        } else {
            print(report.text)
        }
        if report.connections == 0 {
            var reason = report.errorDetail.firstError ?? "unknown error"
            if reason.hasPrefix("TLS certificate verification failed"), options.ca == nil {
                reason += " (pass --ca FILE to trust a private CA)"
            }
            FileHandle.standardError.write(Data("signal bench: no connection to \(options.url): \(reason)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// The TLS setup for a `wss://` URL (nil for `ws://`): `--ca`, or the system trust store; warns
    /// about `--insecure`.
    static func clientTLS(url: WebSocketURL, options: BenchOptions) throws -> ClientTLS? {
        guard url.secure else {
            if options.ca != nil || options.insecure {
                throw ValidationError("--ca and --insecure apply to wss:// URLs only")
            }
            return nil
        }
        if options.insecure {
            FileHandle.standardError.write(
                Data("# warning: --insecure: the server's certificate is not verified\n".utf8)
            )
        }
        do {
            return try ClientTLS(
                options: ClientTLSOptions(caFile: options.ca, insecure: options.insecure),
                host: url.host
            )
        } catch {
            throw ValidationError("--ca \(options.ca ?? ""): cannot load the CA certificate: \(error)")
        }
    }

    /// Raises the open-files limit (soft to hard, then past the hard limit when privileged) to `needed`.
    static func ensureFileDescriptors(_ needed: Int, progress: ProgressLine) {
        raiseFileDescriptorLimit()
        var limit = rlimit()
        #if os(Linux)
            let resource = Int32(RLIMIT_NOFILE.rawValue)
        #else
            let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < rlim_t(needed) else { return }
        var wanted = limit
        wanted.rlim_cur = rlim_t(needed)
        wanted.rlim_max = max(limit.rlim_max, rlim_t(needed))
        if setrlimit(resource, &wanted) != 0 {
            progress.note(
                "the open-files limit is \(limit.rlim_cur) but \(needed) are needed; raise it (ulimit -n) or run privileged"
            )
        }
    }
}
