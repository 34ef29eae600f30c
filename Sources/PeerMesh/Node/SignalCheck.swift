import Crypto

/// Checks a signal another node sent before routing sees it: the numbers and names in range, and the
/// origin's ``SignalCredential`` — its signed record of the sending peer (`from` hosted by `origin`) and
/// its signature over the signal. Verified sender records are remembered (bounded), so a peer's stream
/// of signals costs one record check per refresh and one signature check per signal.
struct SignalCheck: Sendable {
    enum Verdict: Equatable {
        case valid
        case refused(MeshOffence.Reason)
    }

    let configuration: MeshConfiguration
    /// Sender records already verified (signature, decoding, signer = host).
    var verified: [SignedRecord: LocationRecord] = [:]

    /// Most verified sender records remembered; when full, the memory starts over.
    static let maxRemembered = 4096

    init(configuration: MeshConfiguration) {
        self.configuration = configuration
    }

    mutating func check(_ signal: MeshSignal, now: UInt64) -> Verdict {
        guard (1...configuration.maxHops).contains(signal.hops) else { return .refused(.malformedSignal) }
        guard isName(signal.from) else { return .refused(.malformedSignal) }
        switch signal.target {
        case .peer(let name), .room(let name):
            guard isName(name) else { return .refused(.malformedSignal) }
        case .peers(let names):
            guard !names.isEmpty, names.allSatisfy(isName) else { return .refused(.malformedSignal) }
        }
        guard let credential = signal.credential else { return .refused(.unsignedSignal) }
        let record: LocationRecord
        if let known = verified[credential.sender] {
            record = known
        } else {
            guard let location = try? VerifiedLocation(verifying: credential.sender) else {
                return .refused(.forgedSignal)
            }
            if verified.count >= Self.maxRemembered { verified.removeAll(keepingCapacity: true) }
            verified[credential.sender] = location.record
            record = location.record
        }
        guard record.subject == .peer(signal.from), record.host == signal.origin else {
            return .refused(.senderNotHosted)
        }
        // The record verified, so its signer is the origin: the signature must be the origin's.
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: credential.sender.signer),
            key.isValidSignature(credential.signature, for: SignalCredential.signedBytes(of: signal))
        else { return .refused(.forgedSignal) }
        guard record.present, record.expiresAt > now else { return .refused(.staleSender) }
        return .valid
    }

    func isName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= configuration.maxNameBytes
    }
}
