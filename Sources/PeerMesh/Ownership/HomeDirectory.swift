/// The records a node keeps as a home node: verified location and room-membership records, at most one
/// per (subject, host), the highest sequence winning. Records expire at their `expiresAt`, and all of
/// a host's records are dropped the moment membership declares that host dead.
///
/// Bounded: at most `maxRecords` records in all and `maxPerHost` from one host (see
/// ``MeshConfiguration/maxDirectoryRecords``); a new (subject, host) record beyond either is refused,
/// and counted in `refused`. Replacing a held record with a newer one is always allowed.
public struct HomeDirectory: Sendable {
    var records: [LocationRecord.Subject: [MeshKey: VerifiedLocation]] = [:]
    var roomMembers: [String: Set<String>] = [:]
    var perHost: [MeshKey: Int] = [:]
    /// Number of (subject, host) records held.
    public private(set) var count = 0
    /// New records refused because the directory, or their host's share of it, was full.
    public private(set) var refused = 0

    public init() {}

    /// Stores `location` unless a record with the same or a higher sequence is already held, it has
    /// expired, or it is new and the directory (or its host's share) is full. Returns true when stored.
    @discardableResult
    public mutating func store(
        _ location: VerifiedLocation,
        now: UInt64,
        maxRecords: Int = .max,
        maxPerHost: Int = .max
    ) -> Bool {
        let record = location.record
        guard record.expiresAt > now else { return false }
        if let held = records[record.subject]?[record.host] {
            if held.record.sequence >= record.sequence { return false }
        } else {
            guard count < maxRecords, perHost[record.host, default: 0] < maxPerHost else {
                refused += 1
                return false
            }
            count += 1
            perHost[record.host, default: 0] += 1
        }
        records[record.subject, default: [:]][record.host] = location
        if case .roomMember(let room, let peer) = record.subject {
            roomMembers[room, default: []].insert(peer)
        }
        return true
    }

    /// The current location of `peer`: the present record with the highest sequence, if any.
    public func location(of peer: String) -> VerifiedLocation? {
        records[.peer(peer)]?.values.filter(\.record.present).max { $0.record.sequence < $1.record.sequence }
    }

    /// True when this directory holds any record about `peer` (a tombstone included).
    public func knows(_ peer: String) -> Bool {
        records[.peer(peer)] != nil
    }

    /// Present members of `room` with their hosts.
    public func members(of room: String) -> [(peer: String, host: MeshKey)] {
        guard let peers = roomMembers[room] else { return [] }
        var result: [(peer: String, host: MeshKey)] = []
        for peer in peers.sorted() {
            let present = records[.roomMember(room: room, peer: peer)]?.values.filter(\.record.present)
            if let best = present?.max(by: { $0.record.sequence < $1.record.sequence }) {
                result.append((peer, best.record.host))
            }
        }
        return result
    }

    /// Drops every record hosted by `host` (it died: its peers are gone with it).
    public mutating func dropRecords(of host: MeshKey) {
        for (subject, byHost) in records where byHost[host] != nil {
            remove(subject, host: host)
        }
    }

    /// Drops expired records.
    public mutating func expire(now: UInt64) {
        for (subject, byHost) in records {
            for (host, location) in byHost where location.record.expiresAt <= now {
                remove(subject, host: host)
            }
        }
    }

    private mutating func remove(_ subject: LocationRecord.Subject, host: MeshKey) {
        guard records[subject]?.removeValue(forKey: host) != nil else { return }
        count -= 1
        perHost[host, default: 1] -= 1
        if perHost[host] == 0 { perHost[host] = nil }
        guard records[subject]?.isEmpty == true else { return }
        records[subject] = nil
        if case .roomMember(let room, let peer) = subject {
            roomMembers[room]?.remove(peer)
            if roomMembers[room]?.isEmpty == true { roomMembers[room] = nil }
        }
    }
}
