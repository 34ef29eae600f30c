@testable import PeerMesh

extension MeshSignal {
    /// This signal with the credential its origin `identity` would attach: its signed record of `from`
    /// (valid until `expiresAt`) and its signature over the signal.
    func vouched(by identity: NodeIdentity, expiresAt: UInt64 = 60_000_000_000, present: Bool = true) -> MeshSignal {
        var signal = self
        let record = LocationRecord(
            subject: .peer(from),
            host: identity.id,
            sequence: 1,
            expiresAt: expiresAt,
            present: present
        )
        .signed(by: identity).signed
        signal.credential = SignalCredential.sign(signal, sender: record, as: identity)
        return signal
    }
}

extension NodeIdentity {
    /// A reproducible identity from one byte.
    static func seeded(_ byte: UInt8) -> NodeIdentity {
        try! NodeIdentity(seed: [UInt8](repeating: byte, count: 32))
    }
}
