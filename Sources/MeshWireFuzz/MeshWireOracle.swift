import PeerMesh

/// What the mesh fuzz target checks for every input, besides "never crashes, never hangs":
///
/// - `MeshWire.decode` either refuses the bytes or returns a message whose encoding is exactly those
///   bytes (the layout is canonical: one value, one encoding), and `LinkFrame` likewise, never longer
///   than `LinkFrame.maxEncodedSize`.
/// - The link handshake never authenticates a link from bytes that do not carry the mesh secret: fed as
///   the first frame a responder reads, as the proof after a genuine hello, or as the challenge an
///   initiator reads, the input is refused.
/// - A message that decodes is handed to a running `MeshNode` as if a hostile member (`stranger`, an
///   authenticated node without the victim's key) had sent it, and the node's clock is run on: the node
///   does not crash (arithmetic on the numbers it was sent included), raises its own incarnation by at
///   most one (a refutation), keeps its tables within their bounds, and delivers to its peers only
///   signals whose `from` is vouched for by a valid record of the origin node.
final class MeshWireOracle: @unchecked Sendable {
    static let shared = MeshWireOracle()

    let secret: MeshSecret
    let node: NodeIdentity
    let stranger: NodeIdentity
    /// A responder that has read a genuine hello and waits for the proof.
    let responderAfterHello: LinkHandshake
    /// An initiator that has sent its hello and waits for the challenge.
    let initiator: LinkHandshake
    /// A node of a two-node mesh (itself and `stranger`) hosting peer "b", in room "lobby".
    let victim: MeshNode
    static let second: UInt64 = 1_000_000_000

    init() {
        secret = try! MeshSecret(bytes: Array(repeating: 7, count: 32))
        node = try! NodeIdentity(seed: Array(repeating: 1, count: 32))
        stranger = try! NodeIdentity(seed: Array(repeating: 2, count: 32))
        var responder = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: node))
        let (initiator, hello) = LinkHandshake.initiator(LinkAuthenticator(secret: secret, identity: stranger))
        guard case .send = responder.receive(hello) else { fatalError("a genuine hello was refused") }
        responderAfterHello = responder
        self.initiator = initiator
        var victim = MeshNode(identity: node, address: "victim:1", seed: 1)
        _ = victim.start(seeds: [], now: Self.second)
        _ = victim.receive(
            .membership(
                .gossip(updates: [
                    MemberUpdate(signedBy: stranger, address: "stranger:1", incarnation: 0, status: .alive)
                ])
            ),
            from: stranger.id,
            now: Self.second
        )
        guard victim.liveMembers.count == 2 else { fatalError("the stranger's signed join was refused") }
        _ = victim.connect(peer: "b", now: Self.second)
        _ = victim.join(peer: "b", room: "lobby", now: Self.second)
        self.victim = victim
    }

    /// Feeds `message` to a copy of the victim node as if the stranger sent it, runs its clock for 10 s,
    /// and checks what it did.
    func attack(with message: MeshMessage) {
        var node = victim
        let now = 2 * Self.second
        var actions = node.receive(message, from: stranger.id, now: now)
        _ = node.takeOffences()
        actions += node.tick(now: now + 10 * Self.second)
        guard node.membership.incarnation <= 1 else { fatalError("a stranger raised the node's incarnation twice") }
        guard node.liveMembers.count <= node.configuration.membership.maxMembers + 1 else {
            fatalError("the member list outgrew its bound")
        }
        guard node.directory.count <= node.configuration.maxDirectoryRecords else { fatalError("directory over bound") }
        for action in actions {
            guard case .deliver(_, let signal) = action else { continue }
            guard let credential = signal.credential, let sender = try? VerifiedLocation(verifying: credential.sender),
                sender.record.subject == .peer(signal.from), sender.record.host == signal.origin
            else { fatalError("a signal from \(signal.from) was delivered without its origin vouching for it") }
        }
    }

    /// Checks one input; returns a short name for its outcome.
    @discardableResult
    func check(_ input: [UInt8]) -> String {
        var outcome = "refused"
        if let frame = try? LinkFrame(decoding: input) {
            guard frame.encoded() == input else { fatalError("a link frame does not re-encode to its bytes") }
            guard input.count <= LinkFrame.maxEncodedSize else { fatalError("a link frame over the pre-auth limit") }
            outcome = "frame"
        }
        var fresh = LinkHandshake.responder(LinkAuthenticator(secret: secret, identity: node))
        if case .established = fresh.receive(input) { fatalError("a responder authenticated a link from one frame") }
        var waiting = responderAfterHello
        if case .established = waiting.receive(input) { fatalError("a forged proof was accepted") }
        var dialling = initiator
        if case .established = dialling.receive(input) { fatalError("a forged challenge was accepted") }

        if let message = try? MeshWire.decode(input) {
            guard MeshWire.encode(message) == input else {
                fatalError("a mesh message does not re-encode to its bytes")
            }
            outcome = Self.kind(message)
            attack(with: message)
        }
        return outcome
    }

    static func kind(_ message: MeshMessage) -> String {
        switch message {
        case .membership(let membership):
            switch membership {
            case .ping: "ping"
            case .pingRequest: "ping-req"
            case .ack: "ack"
            case .join: "join"
            case .joinReply: "join-reply"
            case .gossip: "gossip"
            case .announce: "announce"
            }
        case .store: "store"
        case .storeAck: "store-ack"
        case .signal: "signal"
        case .hopAck: "hop-ack"
        case .undeliverable: "undeliverable"
        }
    }
}
