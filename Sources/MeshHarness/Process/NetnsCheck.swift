/// Whether network namespaces work here, found out once per process (it adds and deletes one).
public final class NetnsCheck: Sendable {
    /// Why they do not work (nil when they do).
    public let reason: String?

    public init() { reason = NetnsNetwork.unavailableReason() }
}
