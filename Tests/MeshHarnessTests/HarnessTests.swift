import Testing

@testable import MeshHarness

@Suite struct HarnessTests {
    func options(nodes: Int = 16) -> HarnessOptions {
        var options = HarnessOptions()
        options.nodes = nodes
        options.workloadSeconds = 9
        options.signalsPerSecondPerNode = 4
        options.linkDelayMs = 50
        return options
    }

    @Test func steadyMeshDeliversEverythingWithinTwoHops() {
        let report = Harness.run(.steady, options: options()) { 0 }
        #expect(report.mesh.eligible > 400)
        #expect(report.mesh.delivered == report.mesh.eligible)
        #expect(report.mesh.duplicates == 0)
        #expect(report.mesh.hops.keys.allSatisfy { ["0", "1", "2"].contains($0) })
        #expect(report.mesh.signalMessagesPerDelivered <= 1.2)
        #expect(report.mesh.controlBytesPerSecondPerNode < 1024)
        // The hub always takes two hops; the mesh mostly one.
        #expect(report.hub.hops == ["2": report.hub.delivered])
        #expect(report.mesh.latencyMs.p95 <= 1.5 * report.hub.latencyMs.p95)
    }

    @Test func killingAHomeNodeKeepsDeliveryAndIsDetected() {
        let report = Harness.run(.killHome, options: options()) { 0 }
        #expect(report.mesh.deliveryRatio >= 0.999)
        let detection = try! #require(report.mesh.detection)
        #expect(detection.allMaxMs <= 3000)
        #expect(report.mesh.recoverySeconds ?? 99 <= 5)
    }

    @Test func partitionHealsWithinFiveSeconds() {
        let report = Harness.run(.partition, options: options()) { 0 }
        #expect(report.mesh.recoverySeconds ?? 99 <= 5)
        #expect(report.mesh.silentlyLost <= 2)
    }

    @Test func sameSeedSameReport() throws {
        let first = Harness.run(.loss5, options: options(nodes: 8)) { 0 }
        let second = Harness.run(.loss5, options: options(nodes: 8)) { 0 }
        var report1 = HarnessReport(options: options(nodes: 8))
        report1.scenarios = [first]
        var report2 = HarnessReport(options: options(nodes: 8))
        report2.scenarios = [second]
        #expect(try ReportRenderer.json(report1) == ReportRenderer.json(report2))
        #expect(ReportRenderer.svg(report1).hasPrefix("<svg"))
        #expect(ReportRenderer.markdown(report1).contains("| loss-5 | mesh |"))
    }
}
