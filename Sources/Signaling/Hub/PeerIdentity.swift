/// Which peer id a session may have, from what it asked for (`?peer=`) and what its token proves
/// (`sub`). One rule for every hub: the in-memory ``HubState`` and the Redis-backed ``ClusterHub``.
public enum PeerIdentity {
    /// The outcome of a fresh session's request.
    public enum Choice: Equatable, Sendable {
        /// Use this id.
        case id(String)
        /// No id asked for and no token: the hub picks a random one.
        case random
        /// The token does not allow the requested id.
        case forbidden(String)
    }

    /// With a token, the id is `sub` or `sub~suffix`; without one, whatever was asked for (or random).
    public static func choose(requested: String?, subject: String?) -> Choice {
        guard let subject else { return requested.map(Choice.id) ?? .random }
        guard let requested else { return .id(subject) }
        return owns(subject, requested) ? .id(requested) : .forbidden(requested)
    }

    /// Whether a token with `sub` = `subject` (nil: no token) may act as `peer`.
    public static func owns(_ subject: String?, _ peer: String) -> Bool {
        guard let subject else { return true }
        return peer == subject || peer.hasPrefix(subject + "~")
    }

    /// Random characters after `p-` in an id the hub picks: 13 base-62 characters (~77 bits), so an
    /// id is unguessable and, at 15 bytes, fits in a Swift small string (no heap allocation per id).
    static let randomIDCharacters = 13

    /// A random id (`p-` and ``randomIDCharacters`` base-62 characters).
    static func randomID(using characters: inout RandomCharacters) -> String {
        "p-" + characters.string(count: randomIDCharacters)
    }
}
