import ArgumentParser
import NIOCore
import Signaling

/// The servers under load, one probe each: one hub, or the nodes of a cluster (several `--url`s or
/// `--server-pid`s). Their CPU time and memory are summed, so "per server CPU-second" figures count
/// every node's CPU.
struct ServerProbeSet: Sendable {
    let probes: [ServerProbe]
    /// Whether `probes[i]` is the server of `targets[i]` (per-node CPU figures are then reported).
    let matchesTargets: Bool

    /// Pids, in order, of the probes that read `/proc` (empty when the figures come from `/metrics`).
    var pids: [Int32] { probes.compactMap(\.pid) }

    /// Probes for `pids` (`--server-pid`, one per node, in `--url` order), or else for the local process
    /// listening on each target's port (else its `/metrics`). Nil when no server can be measured.
    static func locate(
        pids: [Int32],
        targets: [ConnectionPlan.Target],
        mallocCounters: String?,
        group: any EventLoopGroup
    ) async throws -> ServerProbeSet? {
        if mallocCounters != nil && max(pids.count, targets.count) > 1 {
            throw ValidationError("--server-malloc-counters applies to one server (one --url, one --server-pid)")
        }
        if !pids.isEmpty {
            let probes = pids.map { ServerProbe(source: .process(pid: $0), mallocCounters: mallocCounters) }
            return ServerProbeSet(probes: probes, matchesTargets: pids.count == targets.count)
        }
        var probes: [ServerProbe] = []
        for target in targets {
            guard
                let probe = await ServerProbe.locate(
                    pid: nil,
                    host: target.url.host,
                    port: target.url.port,
                    tls: target.tls,
                    mallocCounters: mallocCounters,
                    group: group
                )
            else { return nil }
            probes.append(probe)
        }
        // Several URLs served by one process (or one proxy): measure it once.
        let found = probes.compactMap(\.pid)
        if found.count == probes.count, Set(found).count < found.count {
            var seen: Set<Int32> = []
            let unique = probes.filter { seen.insert($0.pid!).inserted }
            return ServerProbeSet(probes: unique, matchesTargets: false)
        }
        return ServerProbeSet(probes: probes, matchesTargets: true)
    }

    /// One reading of every server, in `probes` order.
    func read(group: any EventLoopGroup) async -> [ServerProbe.Reading] {
        var readings: [ServerProbe.Reading] = []
        for probe in probes { readings.append(await probe.read(group: group)) }
        return readings
    }

    /// The sum over every server: a figure only when every server gave it (allocation counters come
    /// from one server only).
    static func total(_ readings: [ServerProbe.Reading]) -> ServerProbe.Reading {
        func sum<Value: AdditiveArithmetic>(_ value: (ServerProbe.Reading) -> Value?) -> Value? {
            var total = Value.zero
            for reading in readings {
                guard let part = value(reading) else { return nil }
                total += part
            }
            return readings.isEmpty ? nil : total
        }
        var total = ServerProbe.Reading(cpuSeconds: sum(\.cpuSeconds), residentBytes: sum(\.residentBytes))
        if readings.count == 1 {
            total.allocations = readings[0].allocations
            total.heapBytes = readings[0].heapBytes
        }
        return total
    }
}
