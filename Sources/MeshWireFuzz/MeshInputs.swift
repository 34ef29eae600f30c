import Crypto
import PeerMesh

/// Deterministic inputs for running the mesh target without libFuzzer: well-formed link frames and
/// mesh messages of every type (with extreme numbers: incarnation 0xFFFFFFFF, 255 hops, huge counts and
/// lengths), and mutations of them. The same seed gives the same inputs.
struct MeshInputs {
    private var state: UInt64
    let oracle: MeshWireOracle

    init(seed: UInt64, oracle: MeshWireOracle) {
        state = seed &+ 0x9E37_79B9_7F4A_7C15
        self.oracle = oracle
    }

    /// SplitMix64.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }

    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }

    mutating func input() -> [UInt8] {
        let base = below(4) == 0 ? frame() : MeshWire.encode(message())
        return below(3) == 0 ? base : mutate(base, rounds: 1 + below(4))
    }

    mutating func frame() -> [UInt8] {
        let key = Array(oracle.stranger.publicKey.rawRepresentation)
        switch below(3) {
        case 0: return LinkFrame.hello(key: key, nonce: bytes(32)).encoded()
        case 1:
            return LinkFrame.challenge(key: key, nonce: bytes(32), proof: .init(mac: bytes(32), signature: bytes(64)))
                .encoded()
        default: return LinkFrame.proof(.init(mac: bytes(32), signature: bytes(64))).encoded()
        }
    }

    mutating func number32() -> UInt32 {
        pick([0, 1, 2, UInt32.max, UInt32.max - 1, UInt32(truncatingIfNeeded: next())])
    }
    mutating func number64() -> UInt64 { pick([0, 1, UInt64.max, UInt64.max - 1, next()]) }
    mutating func name() -> String { pick(["a", "b", "p1", "", String(repeating: "x", count: 65), "lobby", "\u{e9}"]) }
    mutating func key() -> MeshKey {
        pick([oracle.node.id, oracle.stranger.id, MeshKey(peer: name()), MeshKey(bytes: bytes(32))])
    }

    /// Unsigned updates about anyone, and updates the stranger signed about itself (with any
    /// incarnation, 0xFFFFFFFF included): the first must be refused, the second are a member's right.
    mutating func update() -> MemberUpdate {
        let address = pick(["127.0.0.1:7001", "", "h:0", "[::1]:65535"])
        let status: MemberUpdate.Status = pick([.alive, .suspect, .dead, .left])
        switch below(3) {
        case 0: return MemberUpdate(node: key(), address: address, incarnation: number32(), status: status)
        case 1:
            var forged = MemberUpdate(
                signedBy: oracle.stranger,
                address: address,
                incarnation: number32(),
                status: status
            )
            forged.node = oracle.node.id  // the stranger's signature on the victim's record
            return forged
        default:
            return MemberUpdate(signedBy: oracle.stranger, address: address, incarnation: number32(), status: status)
        }
    }

    mutating func updates() -> [MemberUpdate] { (0..<below(4)).map { _ in update() } }

    mutating func record() -> SignedRecord {
        let location = LocationRecord(
            subject: below(2) == 0 ? .peer(name()) : .roomMember(room: name(), peer: name()),
            host: oracle.stranger.id,
            sequence: number64(),
            expiresAt: number64(),
            present: below(2) == 0
        )
        return below(2) == 0
            ? location.signed(by: oracle.stranger).signed : oracle.stranger.sign(body: bytes(below(40)))
    }

    /// Signals to the victim's peer "b" (or room "lobby") from peers the stranger hosts, does not host,
    /// or claims with another node's id as origin; with no credential, a genuine one, or a genuine record
    /// and a forged signature.
    mutating func signal() -> MeshSignal {
        let target: MeshSignal.Target = pick([.peer("b"), .peer(name()), .room("lobby"), .peers(["b", name()])])
        let from = pick(["a", "b", name()])
        var signal = MeshSignal(
            origin: below(4) == 0 ? key() : oracle.stranger.id,
            id: number64(),
            from: from,
            target: target,
            route: pick([.direct, .viaHome]),
            hops: pick([0, 1, 1, 2, 3, 4, 255]),
            payload: bytes(below(64))
        )
        let record = LocationRecord(
            subject: .peer(below(4) == 0 ? name() : from),
            host: oracle.stranger.id,
            sequence: number64(),
            expiresAt: pick([0, 3_000_000_000, 30_000_000_000, UInt64.max]),
            present: below(4) != 0
        ).signed(by: oracle.stranger).signed
        switch below(3) {
        case 0: break
        case 1: signal.credential = SignalCredential(sender: record, signature: bytes(64))
        default: signal.credential = credential(for: signal, record: record)
        }
        return signal
    }

    func credential(for signal: MeshSignal, record: SignedRecord) -> SignalCredential {
        var writer = ByteWriter()
        writer.write(raw: Array("peermesh/signal/v1".utf8))
        writer.write(raw: signal.origin.bytes)
        writer.write(signal.id)
        writer.write(string: signal.from)
        writer.write(UInt32(signal.payload.count))
        writer.write(raw: signal.payload)
        let signature = try! oracle.stranger.privateKey.signature(for: writer.bytes)
        return SignalCredential(sender: record, signature: Array(signature))
    }

    mutating func message() -> MeshMessage {
        switch below(12) {
        case 0: return .membership(.ping(probe: number32(), updates: updates()))
        case 1: return .membership(.pingRequest(probe: number32(), target: key(), updates: updates()))
        case 2: return .membership(.ack(probe: number32(), updates: updates()))
        case 3: return .membership(.join(update()))
        case 4: return .membership(.joinReply(members: updates()))
        case 5: return .membership(.gossip(updates: updates()))
        case 6: return .membership(.announce(update()))
        case 7: return .store(batch: number32(), records: (0..<below(3)).map { _ in record() })
        case 8: return .storeAck(batch: number32())
        case 9: return .signal(signal())
        case 10:
            return .hopAck(
                SignalKey(origin: key(), id: number64()),
                pick([.delivered, .accepted, .notHere, .notFound]),
                location: below(2) == 0 ? nil : record()
            )
        default: return .undeliverable(SignalKey(origin: key(), id: number64()))
        }
    }

    mutating func mutate(_ input: [UInt8], rounds: Int) -> [UInt8] {
        var bytes = input
        for _ in 0..<rounds {
            let at = below(bytes.count + 1)
            switch below(6) {
            case 0:
                if !bytes.isEmpty { bytes[below(bytes.count)] ^= UInt8(1) << UInt8(below(8)) }
            case 1:
                if !bytes.isEmpty {
                    bytes[below(bytes.count)] = pick([0x00, 0xFF, 0x7F, 0x80, 0x01, 0x10, 0x11, 0x12])
                }
            case 2:
                if !bytes.isEmpty {
                    let start = below(bytes.count)
                    bytes.removeSubrange(start..<min(bytes.count, start + 1 + below(8)))
                }
            case 3:
                bytes.insert(
                    contentsOf: pick([[0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0xFF], [0, 0], [0x7F, 0xFF, 0xFF, 0xFF]]),
                    at: at
                )
            case 4:
                bytes = Array(bytes.prefix(below(bytes.count + 1)))
            default:
                if !bytes.isEmpty {
                    let start = below(bytes.count)
                    let range = start..<min(bytes.count, start + 1 + below(32))
                    bytes.insert(contentsOf: Array(bytes[range]), at: at)
                }
            }
        }
        return bytes
    }
}
