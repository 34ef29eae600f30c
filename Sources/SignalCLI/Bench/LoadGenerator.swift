import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Runs a scenario across the generator's event loops: connect every connection, prepare, run the load
/// for a measured window, drain, collect and close. Each phase reaches the loops' drivers with
/// `submit`; the drivers never share state, so merging their statistics is the only synchronisation.
final class LoadGenerator: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let drivers: [NIOLoopBound<LoopDriver>]
    let progress: ProgressLine

    /// Creates one driver per loop; `makeDriver(loopIndex, loop)` runs on that loop.
    init(
        threads: Int,
        progress: ProgressLine,
        makeDriver: @escaping @Sendable (Int, any EventLoop) -> LoopDriver
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        self.group = group
        self.progress = progress
        var drivers: [NIOLoopBound<LoopDriver>] = []
        for (index, loop) in group.makeIterator().enumerated() {
            let driver = try await loop.submit { NIOLoopBound(makeDriver(index, loop), eventLoop: loop) }.get()
            drivers.append(driver)
        }
        self.drivers = drivers
    }

    /// Splits `units` (lists of global connection indexes that must share a loop) round-robin over loops.
    static func distribute(_ units: [[Int]], loops: Int) -> [[[Int]]] {
        var perLoop = [[[Int]]](repeating: [], count: max(1, loops))
        for (index, unit) in units.enumerated() {
            perLoop[index % perLoop.count].append(unit)
        }
        return perLoop
    }

    private func onAll<Result: Sendable>(_ body: @escaping @Sendable (LoopDriver) -> Result) async throws -> [Result] {
        var results: [Result] = []
        for driver in drivers {
            results.append(try await driver.eventLoop.submit { body(driver.value) }.get())
        }
        return results
    }

    private func sample() async throws -> BenchProgressSample {
        var total = BenchProgressSample()
        for sample in try await onAll({ $0.progressSample() }) { total.merge(sample) }
        return total
    }

    // MARK: Phases

    /// Connects everything (ready or failed) or gives up after `timeout` seconds. Returns the seconds it took.
    func connect(expected: Int, timeout: Double) async throws -> Double {
        let start = LoopDriver.now()
        let done = NIOLockedValueBox(false)
        var futures: [EventLoopFuture<Void>] = []
        for driver in drivers {
            futures.append(driver.eventLoop.flatSubmit { driver.value.connectAll() })
        }
        EventLoopFuture.andAllComplete(futures, on: group.next()).whenComplete { _ in
            done.withLockedValue { $0 = true }
        }
        var lastPrint = start
        var lastReady = 0
        while !done.withLockedValue({ $0 }) {
            try await Task.sleep(nanoseconds: 50_000_000)
            let now = LoopDriver.now()
            if Double(now - start) / 1e9 > timeout { break }
            if now - lastPrint >= 1_000_000_000 {
                let sample = try await self.sample()
                let rate = Double(sample.ready - lastReady) / (Double(now - lastPrint) / 1e9)
                progress.update(
                    String(
                        format: "connecting %6.1fs  ready %d/%d  %.0f/s  failed %d",
                        Double(now - start) / 1e9,
                        sample.ready,
                        expected,
                        rate,
                        sample.failures
                    )
                )
                lastPrint = now
                lastReady = sample.ready
            }
        }
        return Double(LoopDriver.now() - start) / 1e9
    }

    func prepare() async throws {
        _ = try await onAll { $0.prepare() }
    }

    /// Runs the load: `warmup` seconds unmeasured, then `duration` seconds measured; then waits (up to
    /// `drainTimeout` seconds) for the measured messages still under way. `rate` is messages per second
    /// over all loops (nil: closed loop). `measure(true)` runs as the window opens, `measure(false)` as
    /// it closes (to read the server's CPU time). `stopRequested`, checked at least once a second, ends
    /// the window early (nil: it lasts `duration`). Returns the measured window in seconds.
    func run(
        warmup: Double,
        duration: Double,
        rate: Double?,
        inflight: Int,
        label: String,
        drainTimeout: Double = 5,
        stopRequested: (@Sendable () -> Bool)? = nil,
        measure: @escaping @Sendable (Bool) async -> Void
    ) async throws -> Double {
        let units = try await onAll { ($0.unitCount, $0.messagesPerUnit) }
        let totalUnits = units.reduce(0) { $0 + $1.0 }
        let start = LoopDriver.now()
        let measureFrom = start + UInt64(warmup * 1e9)
        for (driver, (count, perUnit)) in zip(drivers, units) {
            let unitsPerSecond: Double? = rate.map { rate in
                totalUnits == 0 ? 0 : rate * Double(count) / Double(totalUnits) / perUnit
            }
            try await driver.eventLoop.submit {
                driver.value.start(measureFrom: measureFrom, unitsPerSecond: unitsPerSecond, inflight: inflight)
            }.get()
        }
        let end = duration.isFinite ? measureFrom + UInt64(duration * 1e9) : .max
        var measuring = false
        var lastPrint = start
        var last = BenchProgressSample()
        while true {
            let now = LoopDriver.now()
            if !measuring && now >= measureFrom {
                measuring = true
                await measure(true)
                continue
            }
            if now >= end || stopRequested?() == true { break }
            var wake = min(end, lastPrint + 1_000_000_000)
            if !measuring { wake = min(wake, measureFrom) }
            if wake > now { try await Task.sleep(nanoseconds: wake - now) }
            let after = LoopDriver.now()
            guard after - lastPrint >= 1_000_000_000 else { continue }
            let sample = try await self.sample()
            let seconds = Double(after - lastPrint) / 1e9
            let phase = after < measureFrom ? "warmup" : label
            let numbers = String(
                format: "%6.1fs  sent %d  received %d  %.0f/s  p99 %.3f ms  errors %d",
                Double(after - start) / 1e9,
                sample.sent,
                sample.received,
                Double(sample.received - last.received) / seconds,
                Double(sample.interval.valueAtPercentile(99)) / 1e6,
                sample.failures + sample.errorMessages
            )
            progress.update("\(phase) \(numbers)")
            lastPrint = after
            last = sample
        }
        let windows = try await onAll { driver -> Double in
            driver.stop()
            return Double(driver.windowEnd - driver.windowStart) / 1e9
        }
        await measure(false)
        let drainUntil = LoopDriver.now() + UInt64(drainTimeout * 1e9)
        while LoopDriver.now() < drainUntil {
            let counts = try await onAll { ($0.stats.expected, $0.stats.received) }
            if counts.reduce(0, { $0 + $1.1 }) >= counts.reduce(0, { $0 + $1.0 }) { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return windows.max() ?? duration
    }

    func stats() async throws -> BenchStats {
        var total = BenchStats()
        for stats in try await onAll({ $0.stats }) { total.merge(stats) }
        return total
    }

    /// Sends close frames, waits (up to `timeout` seconds) for the sockets to close, stops the loops.
    func shutdown(timeout: Double) async {
        _ = try? await onAll { $0.closeAll() }
        let deadline = LoopDriver.now() + UInt64(timeout * 1e9)
        while LoopDriver.now() < deadline {
            let open = (try? await onAll { $0.openCount })?.reduce(0, +) ?? 0
            if open == 0 { break }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        try? await group.shutdownGracefully()
    }
}
