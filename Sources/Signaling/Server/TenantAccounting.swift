import CoreMetrics
import NIOConcurrencyHelpers

/// Sessions per tenant on this node, as a value without locks or metrics: the `--max-sessions-per-tenant`
/// cap, and which tenants get a metrics label of their own (the first `maxLabels` seen; the rest share
/// ``otherLabel``, so a hub with many tenants keeps a bounded number of series).
struct TenantCounts {
    /// The label of the default tenant (not a valid tenant name, so no tenant can take it).
    static let defaultLabel = "(default)"
    /// The label of tenants seen after the first `maxLabels`.
    static let otherLabel = "(other)"

    let maxSessionsPerTenant: Int
    let maxLabels: Int
    private(set) var sessions: [Tenant: Int] = [:]
    private(set) var labels: Set<String> = []

    init(maxSessionsPerTenant: Int, maxLabels: Int) {
        self.maxSessionsPerTenant = maxSessionsPerTenant
        self.maxLabels = maxLabels
    }

    /// Counts a session of `tenant`; false when the tenant already has `maxSessionsPerTenant` here. The
    /// default tenant is bounded by `--max-connections` alone.
    mutating func acquire(_ tenant: Tenant) -> Bool {
        let current = sessions[tenant, default: 0]
        guard tenant.isDefault || current < maxSessionsPerTenant else { return false }
        sessions[tenant] = current + 1
        return true
    }

    mutating func release(_ tenant: Tenant) {
        let remaining = sessions[tenant, default: 1] - 1
        sessions[tenant] = remaining > 0 ? remaining : nil
    }

    /// The metrics label for `tenant`: its name while fewer than `maxLabels` tenants have one, else
    /// ``otherLabel``. A tenant keeps the label it got.
    mutating func label(_ tenant: Tenant) -> String {
        if tenant.isDefault { return Self.defaultLabel }
        if labels.contains(tenant.name) { return tenant.name }
        guard labels.count < maxLabels else { return Self.otherLabel }
        labels.insert(tenant.name)
        return tenant.name
    }
}

/// Per-tenant accounting shared by a server's connections: the session cap (``TenantCounts``) and the
/// metrics `signal_tenant_sessions{tenant}` (sessions connected here), `signal_tenant_messages_total{tenant}`
/// (client messages read) and `signal_tenant_sessions_refused_total{tenant}`.
final class TenantAccounting: Sendable {
    /// One tenant's metrics.
    struct Meters: Sendable {
        let sessions: Gauge
        let messages: Counter
        let refused: Counter
    }

    /// A session counted against its tenant, given back with ``TenantAccounting/release(_:)`` (once: its
    /// holder, the connection's ``AuthenticatedSession``, lets go of it then).
    struct Slot: Sendable {
        let tenant: Tenant
        let label: String
        let meters: Meters
    }

    private struct State {
        var counts: TenantCounts
        var meters: [String: Meters] = [:]
        var gauges: [String: Int] = [:]
    }

    private let state: NIOLockedValueBox<State>
    private let factory: any MetricsFactory

    init(maxSessionsPerTenant: Int, maxLabels: Int, factory: any MetricsFactory) {
        self.state = NIOLockedValueBox(
            State(counts: TenantCounts(maxSessionsPerTenant: maxSessionsPerTenant, maxLabels: maxLabels))
        )
        self.factory = factory
    }

    /// A slot for a session of `tenant`, or nil when the tenant is at its cap on this node (counted as
    /// refused).
    func acquire(_ tenant: Tenant) -> Slot? {
        let (granted, label, meters, value): (Bool, String, Meters, Int) = state.withLockedValue { state in
            let label = state.counts.label(tenant)
            let meters = self.meters(label, in: &state)
            guard state.counts.acquire(tenant) else { return (false, label, meters, 0) }
            state.gauges[label, default: 0] += 1
            return (true, label, meters, state.gauges[label]!)
        }
        guard granted else {
            meters.refused.increment()
            return nil
        }
        meters.sessions.record(value)
        return Slot(tenant: tenant, label: label, meters: meters)
    }

    /// Gives a session's slot back.
    func release(_ slot: Slot) {
        let value: Int = state.withLockedValue { state in
            state.counts.release(slot.tenant)
            state.gauges[slot.label, default: 1] -= 1
            return state.gauges[slot.label]!
        }
        slot.meters.sessions.record(value)
    }

    private func meters(_ label: String, in state: inout State) -> Meters {
        if let meters = state.meters[label] { return meters }
        let dimensions = [("tenant", label)]
        let meters = Meters(
            sessions: Gauge(label: "signal_tenant_sessions", dimensions: dimensions, factory: factory),
            messages: Counter(label: "signal_tenant_messages_total", dimensions: dimensions, factory: factory),
            refused: Counter(label: "signal_tenant_sessions_refused_total", dimensions: dimensions, factory: factory)
        )
        state.meters[label] = meters
        return meters
    }
}
