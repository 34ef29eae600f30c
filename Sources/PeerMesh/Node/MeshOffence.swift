/// Something another node sent that this node refused. ``MeshNode`` collects them (`takeOffences()`);
/// the runtime counts each in `signal_mesh_invalid_messages_total{reason}` and disconnects the node for
/// those that `disconnects`.
public struct MeshOffence: Hashable, Sendable {
    public enum Reason: String, Hashable, Sendable, CaseIterable {
        /// A signal without its origin's credential.
        case unsignedSignal = "unsigned_signal"
        /// A signal whose sender record or signature does not verify.
        case forgedSignal = "forged_signal"
        /// A signal whose `from` is not a peer its origin is recorded as hosting (the record names
        /// another peer or another host).
        case senderNotHosted = "sender_not_hosted"
        /// A signal with a hop count out of range, or a peer or room name longer than allowed.
        case malformedSignal = "malformed_signal"
        /// A signal whose sender record is a tombstone or has expired (not an attack by itself: dropped,
        /// not disconnected).
        case staleSender = "stale_sender"
        /// A member update without a valid signature of the member it describes (refused, not
        /// disconnected).
        case memberUpdate = "member_update"
        /// A location record that does not verify, names a peer or room longer than allowed, or claims a
        /// lifetime beyond the configured one (refused, not disconnected).
        case locationRecord = "location_record"
        /// A hop ack or undeliverable notice from a node the signal was not sent to (ignored).
        case unexpectedAnswer = "unexpected_answer"
    }

    /// The node that sent it (over an authenticated link).
    public var node: MeshKey
    public var reason: Reason

    public init(node: MeshKey, reason: Reason) {
        self.node = node
        self.reason = reason
    }

    /// Whether the link to the node is closed for it: forged or malformed signals are; the rest is only
    /// refused and counted (a stale record can come from an honest node; member updates and records are
    /// end-to-end signed, so refusing them is enough).
    public var disconnects: Bool {
        switch reason {
        case .unsignedSignal, .forgedSignal, .senderNotHosted, .malformedSignal: true
        case .staleSender, .memberUpdate, .locationRecord, .unexpectedAnswer: false
        }
    }
}
