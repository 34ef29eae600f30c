import NIOCore

/// A node's checks of a full tenant's rooms for ones counted with nobody in them (``ClusterHub``'s
/// reservation of a tenant's room): at most one per tenant per ``interval``, each going on through the
/// tenant's set where this node's last one stopped (an `SSCAN` cursor), so one walk through the set finds
/// every room that was counted with nobody in it all along, however large the set. Time is injected.
struct TenantRoomChecks: Sendable {
    /// The last check of a tenant: when it started, and the cursor the next one starts from.
    struct Check: Sendable, Equatable {
        var started: NIODeadline
        var cursor: String
    }

    /// Least time between two checks of one tenant on this node.
    let interval: TimeAmount
    /// Tenants remembered before those checked more than ``interval`` ago are dropped (with their cursor:
    /// such a tenant's next walk starts again from the beginning).
    let maxTenants: Int
    private(set) var checks: [Tenant: Check] = [:]

    init(interval: TimeAmount, maxTenants: Int = 1024) {
        self.interval = interval
        self.maxTenants = maxTenants
    }

    /// The cursor a check of `tenant`'s rooms starts from (`"0"`: the beginning of the set) when one is due
    /// at `now`, recorded as started; nil when this node started one less than ``interval`` ago.
    mutating func start(_ tenant: Tenant, at now: NIODeadline) -> String? {
        let last = checks[tenant]
        if let last, now - last.started < interval { return nil }
        if checks.count >= maxTenants { checks = checks.filter { now - $0.value.started < interval } }
        let cursor = last?.cursor ?? "0"
        checks[tenant] = Check(started: now, cursor: cursor)
        return cursor
    }

    /// Where the next check of `tenant` goes on: the cursor `SSCAN` returned (`"0"` once the walk is done,
    /// so the next one starts again).
    mutating func finish(_ tenant: Tenant, cursor: String) {
        checks[tenant]?.cursor = cursor
    }
}
