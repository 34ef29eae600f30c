import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import Signaling

/// Resume over real sockets: no signal lost, none delivered twice, no ghost peers.
@Suite(.serialized) struct ResumeIntegrationTests {
    /// 10,000 signals while the receiver's TCP connection is cut (no close frame) at random moments.
    @Test func tenThousandSignalsSurviveFiftyDrops() async throws {
        let hub = try await TestHub {
            $0.rateBurst = 1_000_000
            $0.ratePerSecond = 1_000_000
        }
        defer { Task { await hub.stop() } }
        let total = 10_000
        var options = SignalClient.Options(url: try WebSocketURL(hub.url), peer: "receiver")
        options.initialBackoff = 0.005
        options.maxBackoff = 0.1
        let receiver = SignalClient(options: options, group: TestHub.group)
        try await receiver.start()
        let received = NIOLockedValueBox<[Int]>([])
        let collector = Task {
            for await event in receiver.events {
                guard case .message(let text) = event,
                    let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                    object["type"] as? String == "message", let n = object["data"] as? Int
                else { continue }
                let count = received.withLockedValue {
                    $0.append(n)
                    return $0.count
                }
                if count == total { return }
            }
        }

        let sender = try await hub.peer("sender")
        // Cuts come 20-60 ms apart, each once the previous one was resumed (so a loaded machine, where a
        // resume can take longer than that, still makes progress), until every signal arrived or the
        // sender is done and 30 s have passed.
        let stopDrops = NIOLockedValueBox(false)
        let cuts = NIOLockedValueBox(0)
        let drops = Task {
            var count = 0
            while received.withLockedValue({ $0.count }) < total && !stopDrops.withLockedValue({ $0 }) {
                try await Task.sleep(nanoseconds: UInt64.random(in: 20_000_000...60_000_000))
                let before = await receiver.resumes
                await receiver.dropConnection()
                count += 1
                cuts.withLockedValue { $0 = count }
                let resumeDeadline = Date().addingTimeInterval(10)
                while await receiver.resumes == before && Date() < resumeDeadline && !stopDrops.withLockedValue({ $0 })
                {
                    try await Task.sleep(nanoseconds: 2_000_000)
                }
            }
            return count
        }
        // The sender keeps a window of signals in flight and paces itself by the acks.
        let window = 16
        var acked = 0
        var errors: [[String: Any]] = []
        for n in 0..<total {
            // Spread at least 60 cuts over the stream, however fast the machine relays.
            let paceDeadline = Date().addingTimeInterval(10)
            while cuts.withLockedValue({ $0 }) < n * 60 / total && Date() < paceDeadline {
                try await Task.sleep(nanoseconds: 1_000_000)
            }
            // Flow control, as an app would do: never more than 200 signals ahead of what the receiver has
            // read, so a resume that is slow on a loaded machine cannot fill its 256-message queue.
            let flowDeadline = Date().addingTimeInterval(10)
            while n - received.withLockedValue({ $0.count }) >= 200 && Date() < flowDeadline {
                try await Task.sleep(nanoseconds: 1_000_000)
            }
            sender.send(#"{"type":"message","to":"receiver","data":\#(n),"id":"s\#(n)"}"#)
            if n - acked >= window {
                let reply = try await sender.next(timeout: 10) {
                    ["ack", "error"].contains($0["type"] as? String ?? "")
                }
                if reply["type"] as? String == "error" { errors.append(reply) }
                acked += 1
            }
        }
        while acked < total {
            let reply = try await sender.next(timeout: 10) { ["ack", "error"].contains($0["type"] as? String ?? "") }
            if reply["type"] as? String == "error" { errors.append(reply) }
            acked += 1
        }
        let deadline = Date().addingTimeInterval(30)
        while received.withLockedValue({ $0.count }) < total && Date() < deadline {
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        stopDrops.withLockedValue { $0 = true }
        let dropCount = try await drops.value
        collector.cancel()
        let got = received.withLockedValue { $0 }
        #expect(errors.isEmpty, "sender saw errors: \(errors.prefix(3))")
        #expect(got == Array(0..<total), "every signal exactly once, in order (got \(got.count))")
        #expect(dropCount >= 50, "the connection was cut \(dropCount) times")
        #expect(await receiver.resumes >= 50)
        await receiver.close()
    }

    @Test func peerThatDoesNotComeBackLeavesAndItsQueuedSignalsExpire() async throws {
        let hub = try await TestHub { $0.limits.resumeGraceNanos = 1_000_000_000 }
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        let bob = try await hub.peer("bob")
        alice.send(#"{"type":"join","room":"r"}"#)
        _ = try await alice.next("joined")
        bob.send(#"{"type":"join","room":"r"}"#)
        _ = try await bob.next("joined")
        _ = try await alice.next("peer-joined")
        bob.client.abort()
        try await Task.sleep(nanoseconds: 200_000_000)
        alice.send(#"{"type":"offer","to":"bob","sdp":"x","id":"o1"}"#)
        let ack = try await alice.next("ack")
        #expect(ack["queued"] as? Bool == true)
        #expect(alice.pending("peer-left").isEmpty, "no peer-left during the grace period")
        let left = try await alice.next("peer-left", timeout: 3)
        #expect(left["peer"] as? String == "bob")
        let expired = try await alice.next("expired", timeout: 3)
        #expect(expired["id"] as? String == "o1")
        #expect(expired["to"] as? String == "bob")
        // The ended session cannot be resumed.
        let late = try await hub.connect("resume=\(bob.session)&last=0")
        #expect(try await late.closed() == 4002)
    }

    @Test func resumeWithinGraceReplaysAndKeepsRooms() async throws {
        let hub = try await TestHub()
        defer { Task { await hub.stop() } }
        let alice = try await hub.peer("alice")
        let bob = try await hub.peer("bob")
        alice.send(#"{"type":"join","room":"r"}"#)
        _ = try await alice.next("joined")
        bob.send(#"{"type":"join","room":"r"}"#)
        _ = try await bob.next("joined")
        _ = try await alice.next("peer-joined")
        alice.send(#"{"type":"offer","to":"bob","sdp":"one","id":"1"}"#)
        let first = try await bob.next("offer")
        #expect(first["seq"] as? Int == 1)
        bob.client.abort()
        try await Task.sleep(nanoseconds: 100_000_000)
        alice.send(#"{"type":"candidate","to":"bob","candidate":null,"id":"2"}"#)
        #expect(try await alice.next("ack")["id"] as? String == "1")
        #expect(try await alice.next("ack")["queued"] as? Bool == true)
        let resumed = try await hub.connect("resume=\(bob.session)&last=1")
        let welcome = try await resumed.next("welcome")
        #expect(welcome["resumed"] as? Bool == true)
        #expect(welcome["peer"] as? String == "bob")
        #expect(welcome["gap"] == nil)
        #expect(welcome["session"] as? String != bob.session, "a fresh token every welcome")
        let replay = try await resumed.next("candidate")
        #expect(replay["seq"] as? Int == 2)
        #expect(alice.pending("peer-left").isEmpty)
        // The resumed connection's welcome was written: the old token is used up (it could retry only a
        // resume cut off before its welcome was written), and using it again leaves the live session alone.
        let again = try await hub.connect("resume=\(bob.session)&last=0")
        #expect(try await again.closed() == 4002)
        // A second resume with the new token takes over; the older socket gets 4009.
        let takeover = try await hub.connect("resume=\(welcome["session"] as! String)&last=2")
        _ = try await takeover.next("welcome")
        #expect(try await resumed.closed() == 4009)
        alice.send(#"{"type":"message","to":"bob","data":"live","id":"3"}"#)
        #expect(try await takeover.next("message")["seq"] as? Int == 3)
    }
}
