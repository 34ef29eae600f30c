import Crypto

/// What makes a signal's `from` believable on a node other than the one the sending peer is connected
/// to: the origin node's signed location record of the sender (``LocationRecord``, subject `.peer(from)`,
/// host = origin — "this peer is mine") and the origin's Ed25519 signature over the signal itself
/// (`"peermesh/signal/v1" ‖ origin ‖ id ‖ from ‖ payload`), so a node that forwards the signal (a home
/// node) can neither change what it says nor who said it.
///
/// Checked by every node that receives a signal, before anything else (``SignalCheck``): a signal
/// without one, with a record of another host or peer, or with a signature that does not verify is
/// dropped, and the node that sent it is disconnected. The target and route are not covered: they
/// change from hop to hop (a room becomes per-host legs); the payload names its recipient and the hub
/// checks it.
public struct SignalCredential: Hashable, Sendable {
    /// The origin's location record of `from`.
    public var sender: SignedRecord
    /// The origin's Ed25519 signature over the signal (64 bytes).
    public var signature: [UInt8]

    public init(sender: SignedRecord, signature: [UInt8]) {
        self.sender = sender
        self.signature = signature
    }

    static let domain = Array("peermesh/signal/v1".utf8)

    /// The bytes the origin signs.
    static func signedBytes(of signal: MeshSignal) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(raw: domain)
        writer.write(raw: signal.origin.bytes)
        writer.write(signal.id)
        writer.write(UInt16(truncatingIfNeeded: min(signal.from.utf8.count, Int(UInt16.max))))
        writer.write(raw: signal.from.utf8.prefix(Int(UInt16.max)))
        writer.write(UInt32(truncatingIfNeeded: signal.payload.count))
        writer.write(raw: signal.payload)
        return writer.bytes
    }

    /// The credential of `signal`, sent by `identity` (the origin) for its peer whose record is `sender`.
    static func sign(_ signal: MeshSignal, sender: SignedRecord, as identity: NodeIdentity) -> SignalCredential {
        SignalCredential(
            sender: sender,
            signature: Array(try! identity.privateKey.signature(for: signedBytes(of: signal)))
        )
    }
}
