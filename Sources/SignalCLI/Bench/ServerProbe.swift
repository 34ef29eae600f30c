import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Signaling

/// Reads the server's CPU time and resident memory: from `/proc/<pid>` when the server runs on this
/// machine (`--server-pid`, or found from the socket listening on the URL's port), otherwise from the
/// `process_resident_memory_bytes` / `process_cpu_seconds_total` lines of its `/metrics` (over TLS for a
/// `wss://` URL), if it has them.
struct ServerProbe: Sendable {
    enum Source: Sendable {
        case process(pid: Int32)
        case metrics(host: String, port: Int, tls: ClientTLS?)
    }

    struct Reading: Sendable {
        var cpuSeconds: Double?
        var residentBytes: Int?
        /// Heap allocations so far and live heap bytes (only with a malloc counter file).
        var allocations: Int?
        var heapBytes: Int?
    }

    let source: Source
    /// The counter file of `Benchmarks/malloc-counter.c`, when the server runs under it.
    var mallocCounters: String? = nil

    var pid: Int32? {
        if case .process(let pid) = source { return pid }
        return nil
    }

    /// The best source available: the given pid, the local process listening on `port`, or `/metrics`.
    static func locate(
        pid: Int32?,
        host: String,
        port: Int,
        tls: ClientTLS?,
        mallocCounters: String?,
        group: any EventLoopGroup
    ) async -> ServerProbe? {
        if let pid { return ServerProbe(source: .process(pid: pid), mallocCounters: mallocCounters) }
        // Reading /proc races with processes coming and going; a loaded machine can miss once.
        for attempt in 0..<3 {
            if let pid = listeningProcess(port: port) {
                return ServerProbe(source: .process(pid: pid), mallocCounters: mallocCounters)
            }
            if attempt < 2 { try? await Task.sleep(for: .milliseconds(100)) }
        }
        let probe = ServerProbe(source: .metrics(host: host, port: port, tls: tls), mallocCounters: mallocCounters)
        let reading = await probe.read(group: group)
        return reading.residentBytes != nil || reading.cpuSeconds != nil ? probe : nil
    }

    func read(group: any EventLoopGroup) async -> Reading {
        var reading = await self.readProcess(group: group)
        if let mallocCounters, let counters = Self.readMallocCounters(mallocCounters) {
            reading.allocations = counters.allocations
            reading.heapBytes = counters.liveBytes
        }
        return reading
    }

    /// The counters `Benchmarks/malloc-counter.c` keeps: four little-endian UInt64 (allocations,
    /// frees, live bytes, magic).
    static func readMallocCounters(_ path: String) -> (allocations: Int, liveBytes: Int)? {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 32 else { return nil }
        let words = (0..<4).map { index in
            data[(index * 8)..<(index * 8 + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        guard words[3] == 0x6d61_6c6c_6f63 else { return nil }
        return (Int(truncatingIfNeeded: words[0]), Int(truncatingIfNeeded: Int64(bitPattern: words[2])))
    }

    private func readProcess(group: any EventLoopGroup) async -> Reading {
        switch source {
        case .process(let pid):
            return Reading(cpuSeconds: Self.cpuSeconds(pid: pid), residentBytes: Self.residentBytes(pid: pid))
        case .metrics(let host, let port, let tls):
            guard let text = await MetricsFetcher.fetch(host: host, port: port, tls: tls, group: group) else {
                return Reading()
            }
            var reading = Reading()
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                guard parts.count >= 2, let value = Double(parts[1]) else { continue }
                if parts[0] == "process_resident_memory_bytes" { reading.residentBytes = Int(value) }
                if parts[0] == "process_cpu_seconds_total" { reading.cpuSeconds = value }
            }
            return reading
        }
    }

    // MARK: /proc

    /// User + system CPU seconds of `pid` (fields 14 and 15 of `/proc/<pid>/stat`).
    static func cpuSeconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Resident set size of `pid` (`VmRSS` of `/proc/<pid>/status`).
    static func residentBytes(pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kilobytes = Int(parts[1]) { return kilobytes * 1024 }
        }
        return nil
    }

    /// CPU seconds this process used (user + system).
    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        #if os(Linux)
            getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// The process holding a socket listening on `port` (found through `/proc/net/tcp*` and `/proc/*/fd`).
    static func listeningProcess(port: Int) -> Int32? {
        var inodes: Set<String> = []
        let portHex = String(format: ":%04X", port)
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 9, fields[3] == "0A", fields[1].hasSuffix(portHex) else { continue }
                inodes.insert("socket:[\(fields[9])]")
            }
        }
        guard !inodes.isEmpty else { return nil }
        let files = FileManager.default
        let own = getpid()
        guard let entries = try? files.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry), pid != own else { continue }
            guard let descriptors = try? files.contentsOfDirectory(atPath: "/proc/\(entry)/fd") else { continue }
            for descriptor in descriptors {
                if let target = try? files.destinationOfSymbolicLink(atPath: "/proc/\(entry)/fd/\(descriptor)"),
                    inodes.contains(target)
                {
                    return pid
                }
            }
        }
        return nil
    }
}
