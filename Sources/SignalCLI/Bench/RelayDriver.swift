import NIOCore

/// `signal bench relay`: pairs of sessions negotiate in a loop, as two browsers setting up a call do.
///
/// One negotiation: the offerer sends `offer`; the answerer, on receiving it, sends `answer`, its
/// candidates and the end-of-candidates `null`; the offerer, on the answer, sends its candidates and
/// `null`. With `--rate max` an offerer starts its next negotiation when the answerer's `null` arrives
/// (`--inflight` negotiations per pair at once); with a rate, negotiations start on a schedule.
final class RelayDriver: LoopDriver {
    private struct Pair {
        var offerer: Int
        var answerer: Int
    }

    private let runID: String
    private let size: Int
    private let candidates: Int
    private var pairs: [Pair] = []
    private var nextPair = 0
    private var closedLoop = false

    /// `units` holds the global indexes of this loop's pairs, two each.
    init(
        loop: any EventLoop,
        plan: ConnectionPlan,
        units: [[Int]],
        runID: String,
        size: Int,
        candidates: Int,
        maxConnectsInFlight: Int
    ) {
        self.runID = runID
        self.size = size
        self.candidates = candidates
        super.init(
            loop: loop,
            plan: plan,
            globalIndexes: units.flatMap { $0 },
            maxConnectsInFlight: maxConnectsInFlight
        )
        var index = 0
        for unit in units {
            pairs.append(Pair(offerer: index, answerer: index + 1))
            index += unit.count
        }
    }

    override func room(for connection: BenchConnection) -> String? {
        "\(runID)-p\(connection.globalIndex / 2)"
    }

    override var unitCount: Int { pairs.count }

    override var messagesPerUnit: Double { Double(2 + 2 * (candidates + 1)) }

    override func prepare() {
        for (slot, pair) in pairs.enumerated() {
            let offerer = connections[pair.offerer]
            let answerer = connections[pair.answerer]
            offerer.slot = slot
            offerer.initiator = true
            answerer.slot = slot
            offerer.templates = [
                BenchMessage.signal(.offer, to: answerer.peer, size: size),
                BenchMessage.signal(.candidate, to: answerer.peer, size: size),
                BenchMessage.signal(.candidate, to: answerer.peer, size: size, end: true),
            ]
            answerer.templates = [
                BenchMessage.signal(.answer, to: offerer.peer, size: size),
                BenchMessage.signal(.candidate, to: offerer.peer, size: size),
                BenchMessage.signal(.candidate, to: offerer.peer, size: size, end: true),
            ]
        }
    }

    override func beginClosedLoop(inflight: Int) {
        closedLoop = true
        for pair in pairs.indices {
            for _ in 0..<inflight { self.startNegotiation(pair) }
        }
    }

    override func paced() {
        guard !pairs.isEmpty else { return }
        self.startNegotiation(nextPair)
        nextPair = (nextPair + 1) % pairs.count
    }

    private func startNegotiation(_ pair: Int) {
        let offerer = connections[pairs[pair].offerer]
        let now = Self.now()
        offerer.send(offerer.templates[0], stamp: now)
        self.recordSend(from: offerer, at: now, deliveries: 1)
    }

    /// Candidates then end-of-candidates, from `connection` to its partner.
    private func sendCandidates(_ connection: BenchConnection, now: UInt64) {
        for _ in 0..<candidates {
            connection.send(connection.templates[1], stamp: now)
            self.recordSend(from: connection, at: now, deliveries: 1)
        }
        connection.send(connection.templates[2], stamp: now)
        self.recordSend(from: connection, at: now, deliveries: 1)
    }

    override func delivered(_ connection: BenchConnection, stamp: UInt64, now: UInt64, payload: UnsafeRawBufferPointer)
    {
        self.recordDelivery(to: connection, stamp: stamp, now: now)
        guard payload.count > BenchMessage.candidateValueOffset, connection.slot >= 0 else { return }
        let type = payload[BenchMessage.typeOffset]
        if connection.initiator {
            if type == UInt8(ascii: "a") {
                self.sendCandidates(connection, now: now)
            } else if type == UInt8(ascii: "c"), payload[BenchMessage.candidateValueOffset] == UInt8(ascii: "n"),
                closedLoop, running
            {
                self.startNegotiation(connection.slot)
            }
        } else if type == UInt8(ascii: "o") {
            connection.send(connection.templates[0], stamp: now)
            self.recordSend(from: connection, at: now, deliveries: 1)
            self.sendCandidates(connection, now: now)
        }
    }
}
