import NIOCore
import NIOEmbedded
import Testing

@testable import Signaling

@Suite struct HeartbeatSweepTests {
    final class Member: HeartbeatSweep.Member {
        var sweepSlot: Int?
        var visits = 0
        var onVisit: (() -> Void)?

        func heartbeatTick() {
            visits += 1
            onVisit?()
        }
    }

    @Test func everyMemberIsVisitedOncePerPeriodSpreadOverTheTicks() {
        let loop = EmbeddedEventLoop()
        let sweep = HeartbeatSweep(eventLoop: loop, period: .seconds(16), slices: 16)
        let members = (0..<100).map { _ in Member() }
        members.forEach { sweep.add($0) }
        var perTick: [Int] = []
        for _ in 0..<16 {
            let before = members.map(\.visits).reduce(0, +)
            loop.advanceTime(by: .seconds(1))
            perTick.append(members.map(\.visits).reduce(0, +) - before)
        }
        #expect(members.allSatisfy { $0.visits == 1 })
        // 100 members over 16 ticks: 6 or 7 each, never all at once.
        #expect(perTick.allSatisfy { $0 == 6 || $0 == 7 })
        loop.advanceTime(by: .seconds(16))
        #expect(members.allSatisfy { $0.visits == 2 })
    }

    @Test func aMemberRemovedDuringItsVisitIsSafeAndTheTimerStopsWhenEmpty() {
        let loop = EmbeddedEventLoop()
        let sweep = HeartbeatSweep(eventLoop: loop, period: .seconds(2), slices: 2)
        let members = (0..<4).map { _ in Member() }
        members.forEach { sweep.add($0) }
        // A visit that closes its connection removes it (and moves the last member into its slot).
        for member in members { member.onVisit = { [unowned sweep, unowned member] in sweep.remove(member) } }
        loop.advanceTime(by: .seconds(4))
        #expect(members.allSatisfy { $0.visits == 1 && $0.sweepSlot == nil })
        #expect(sweep.count == 0)
        loop.advanceTime(by: .seconds(10))
        #expect(members.allSatisfy { $0.visits == 1 })
    }
}
