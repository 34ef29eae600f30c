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
        /// Ends the load before `duration` when it returns true (checked at least once a second).
        var stopRequested: (@Sendable () -> Bool)? = nil
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
        let urls = try options.serverURLs.map { text in
            do {
                return try WebSocketURL(text)
            } catch {
                throw ValidationError("--url: \(error)")
            }
        }
        let tls = try Self.clientTLS(urls: urls, options: options)
        let targets = try zip(urls, tls).map { try ConnectionPlan.Target(url: $0, tls: $1) }
        let count = connectionCount
        let progress = ProgressLine(enabled: !options.quiet)
        Self.ensureFileDescriptors(count + 64, progress: progress)

        // With one source address, the kernel's search for a free ephemeral port in `connect` grows
        // with the ports in use and was a third of the generator's CPU at 15,000 connections.
        let sourceCount = options.sourceAddresses > 0 ? options.sourceAddresses : (count + 1_999) / 2_000
        let sources =
            sourceCount > 1
            ? try ConnectionPlan.loopbackSources(count: sourceCount, servers: targets.map(\.server)) : []
        let plan = ConnectionPlan(targets: targets, sources: sources, sessions: sessions)

        let group = MultiThreadedEventLoopGroup.singleton
        let probes = try await ServerProbeSet.locate(
            pids: options.serverPids,
            targets: targets,
            mallocCounters: options.serverMallocCounters,
            group: group
        )
        let before = await probes?.read(group: group)
        let redis = ServerProbeSet(
            probes: options.redisPids.map { ServerProbe(source: .process(pid: $0)) },
            matchesTargets: false
        )

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
        let afterConnect = await probes?.read(group: group)
        try await generator.prepare()
        var settled: [ServerProbe.Reading]?
        if settle > 0 {
            try await Task.sleep(nanoseconds: UInt64(settle * 1e9))
            settled = await probes?.read(group: group)
        }

        // Load.
        var window = 0.0
        let readings = NIOLockedValueBox<[[ServerProbe.Reading]?]>([])
        let redisReadings = NIOLockedValueBox<[[ServerProbe.Reading]]>([])
        if let load, connected.ready > 0 {
            window = try await generator.run(
                warmup: load.warmup,
                duration: load.duration,
                rate: load.rate,
                inflight: load.inflight,
                label: mode,
                stopRequested: load.stopRequested
            ) { _ in
                let reading = await probes?.read(group: group)
                let redisReading = await redis.read(group: group)
                readings.withLockedValue { $0.append(reading) }
                redisReadings.withLockedValue { $0.append(redisReading) }
            }
        }
        let stats = try await generator.stats()
        let finalReadings = await probes?.read(group: group)
        let final = finalReadings.map { ServerProbeSet.total($0) }
        let generatorCPU = ServerProbe.ownCPUSeconds() - generatorCPUStart
        progress.finish()
        await generator.shutdown(timeout: 10 + Double(count) / 10_000)

        // Report.
        let lost = load == nil ? 0 : stats.lost
        let pids = probes?.pids ?? []
        var report = BenchReport(
            mode: mode,
            url: options.serverURLs[0],
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
            serverPid: pids.count == 1 ? pids[0] : nil,
            serverRssBytes: final?.residentBytes,
            generatorCpuSeconds: (generatorCPU * 100).rounded() / 100
        )
        if pids.count > 1 { report.serverPids = pids }
        let measured = readings.withLockedValue { $0 }
        // Each node's CPU over the window of the total: the load, or for connect mode the connecting.
        var windowStart: [ServerProbe.Reading]? = nil
        var windowEnd: [ServerProbe.Reading]? = nil
        if settle > 0 {
            (windowStart, windowEnd) = (before, afterConnect)
        } else if measured.count == 2 {
            (windowStart, windowEnd) = (measured[0], measured[1])
        }
        let first = measured.count == 2 ? measured[0].map { ServerProbeSet.total($0) } : nil
        let last = measured.count == 2 ? measured[1].map { ServerProbeSet.total($0) } : nil
        if let start = first?.cpuSeconds, let end = last?.cpuSeconds {
            let cpu = end - start
            report.serverCpuSeconds = (cpu * 100).rounded() / 100
            if cpu > 0 { report.signalsPerServerCpuSec = (Double(stats.received) / cpu).rounded() }
        }
        let redisMeasured = redisReadings.withLockedValue { $0 }
        if !options.redisPids.isEmpty {
            report.redisPids = options.redisPids
            if redisMeasured.count == 2, let start = ServerProbeSet.total(redisMeasured[0]).cpuSeconds,
                let end = ServerProbeSet.total(redisMeasured[1]).cpuSeconds
            {
                report.redisCpuSeconds = ((end - start) * 100).rounded() / 100
                if stats.received > 0 {
                    /// CPU µs per measured signal, to two decimals.
                    func perSignal(_ seconds: Double) -> Double {
                        (seconds / Double(stats.received) * 1e6 * 100).rounded() / 100
                    }
                    report.redisCpuMicrosecondsPerSignal = perSignal(end - start)
                    // Several redis-servers (the shards of a Redis Cluster): each one's share as well.
                    if options.redisPids.count > 1 {
                        report.redisCpuMicrosecondsPerSignalEach = zip(redisMeasured[0], redisMeasured[1]).compactMap {
                            guard let start = $0.cpuSeconds, let end = $1.cpuSeconds else { return nil }
                            return perSignal(end - start)
                        }
                    }
                }
            }
        }
        if let start = first?.allocations, let end = last?.allocations, stats.received > 0 {
            report.serverAllocationsPerSignal = (Double(end - start) / Double(stats.received) * 100).rounded() / 100
        }
        if settle > 0 {
            let seconds = Double(connected.lastReadyAt > connectStart ? connected.lastReadyAt - connectStart : 0) / 1e9
            report.connectsPerSec = seconds > 0 ? (Double(connected.ready) / seconds).rounded() : 0
            report.connectLatencyMs = LatencySummary(connected.connectLatency)
            // Connect mode: the server's CPU is what connecting cost it (the probe barely loads it).
            report.serverCpuSeconds = nil
            report.signalsPerServerCpuSec = nil
            let before = before.map { ServerProbeSet.total($0) }
            let afterConnect = afterConnect.map { ServerProbeSet.total($0) }
            let settled = settled.map { ServerProbeSet.total($0) }
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
        if plan.targets.count > 1 {
            report.urls = options.serverURLs
            report.nodes = Self.nodeReports(
                urls: options.serverURLs,
                stats: stats,
                window: window,
                probes: probes,
                start: windowStart,
                end: windowEnd
            )
        }
        return report
    }

    /// Each `--url`'s share of the run; with one probe per URL, each node's pid and CPU seconds.
    static func nodeReports(
        urls: [String],
        stats: BenchStats,
        window: Double,
        probes: ServerProbeSet?,
        start: [ServerProbe.Reading]?,
        end: [ServerProbe.Reading]?
    ) -> [BenchNodeReport] {
        urls.enumerated().map { index, url in
            var node = BenchNodeReport(
                url: url,
                stats: index < stats.nodes.count ? stats.nodes[index] : BenchNodeStats(),
                window: window
            )
            if let probes, probes.matchesTargets {
                node.serverPid = probes.probes[index].pid
                if let start = start?[index].cpuSeconds, let end = end?[index].cpuSeconds {
                    node.serverCpuSeconds = ((end - start) * 100).rounded() / 100
                }
            }
            return node
        }
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
            let urls = options.serverURLs.joined(separator: ", ")
            FileHandle.standardError.write(Data("signal bench: no connection to \(urls): \(reason)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// The TLS setup of each URL: for `wss://`, `--ca` or the system trust store; nil for `ws://`.
    /// Warns about `--insecure`.
    static func clientTLS(urls: [WebSocketURL], options: BenchOptions) throws -> [ClientTLS?] {
        guard urls.contains(where: \.secure) else {
            if options.ca != nil || options.insecure {
                throw ValidationError("--ca and --insecure apply to wss:// URLs only")
            }
            return urls.map { _ in nil }
        }
        if options.insecure {
            FileHandle.standardError.write(
                Data("# warning: --insecure: the server's certificate is not verified\n".utf8)
            )
        }
        return try urls.map { url in
            guard url.secure else { return nil }
            do {
                return try ClientTLS(
                    options: ClientTLSOptions(caFile: options.ca, insecure: options.insecure),
                    host: url.host
                )
            } catch {
                throw ValidationError("--ca \(options.ca ?? ""): cannot load the CA certificate: \(error)")
            }
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
