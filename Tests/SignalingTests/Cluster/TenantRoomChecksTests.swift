import NIOCore
import Testing

@testable import Signaling

/// A node's checks of a full tenant's rooms: one per tenant per interval, each going on where the last
/// stopped, so a walk through a large set reaches every room instead of sampling the same ones again.
@Suite struct TenantRoomChecksTests {
    let acme = Tenant("acme")!
    let globex = Tenant("globex")!
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test func aCheckIsDueOncePerIntervalPerTenant() {
        var checks = TenantRoomChecks(interval: .seconds(2))
        #expect(checks.start(acme, at: start) == "0")
        #expect(checks.start(acme, at: start + .milliseconds(1999)) == nil, "checked less than 2 s ago")
        #expect(checks.start(globex, at: start + .milliseconds(1)) == "0", "another tenant has its own")
        #expect(checks.start(acme, at: start + .seconds(2)) == "0")
    }

    @Test func eachCheckGoesOnWhereTheLastStoppedAndStartsAgainAfterAWholeWalk() {
        var checks = TenantRoomChecks(interval: .seconds(2))
        var at = start
        var cursors: [String] = []
        for next in ["112", "48", "0", "96"] {
            guard let cursor = checks.start(acme, at: at) else {
                Issue.record("a check 2 s after the last was not due")
                return
            }
            cursors.append(cursor)
            checks.finish(acme, cursor: next)
            at = at + .seconds(2)
        }
        #expect(cursors == ["0", "112", "48", "0"])
    }

    @Test func aCheckNotDueLeavesTheCursorAlone() {
        var checks = TenantRoomChecks(interval: .seconds(2))
        _ = checks.start(acme, at: start)
        checks.finish(acme, cursor: "40")
        #expect(checks.start(acme, at: start + .seconds(1)) == nil)
        #expect(checks.start(acme, at: start + .seconds(3)) == "40")
    }

    @Test func tenantsAreBoundedAndADueTenantKeepsItsCursorWhenOthersAreDropped() {
        var checks = TenantRoomChecks(interval: .seconds(2), maxTenants: 3)
        _ = checks.start(acme, at: start)
        checks.finish(acme, cursor: "7")
        for n in 0..<2 { _ = checks.start(Tenant("t\(n)")!, at: start + .milliseconds(100)) }
        #expect(checks.checks.count == 3)
        // Full: tenants checked more than 2 s ago are dropped, acme too, but its walk goes on.
        #expect(checks.start(acme, at: start + .seconds(5)) == "7")
        #expect(checks.checks.count == 1)
        #expect(checks.checks[acme]?.cursor == "7")
    }
}
