/// A tenant: its own namespace of peer ids and rooms on a shared hub (a token's `tenant` claim, or an API
/// key's tenant). Two tenants can both have a room `lobby` and a peer `alice` and never see each other.
///
/// Inside the hub a tenant's names are *qualified*: `acme/alice`, `acme/lobby`. A `/` cannot appear in a
/// peer id or room name a client sends (`[A-Za-z0-9._~-]`), so no client can name another tenant's peer
/// or room, and the backends (memory, Redis cluster, mesh) route qualified names like any other: the
/// namespaces stay apart on every backend without a backend knowing about tenants. Names leave the hub
/// unqualified (``display(_:)``): a client of `acme` sees `alice`, never `acme/alice`. The default tenant
/// (no claim) has no prefix, so its names are stored exactly as before.
public struct Tenant: Hashable, Sendable, CustomStringConvertible {
    /// The tenant's name; empty for the default tenant.
    public let name: String

    /// The tenant of sessions whose token has no `tenant` claim (and of API keys without one).
    public static let `default` = Tenant(unchecked: "")

    /// Longest tenant name.
    public static let maxNameLength = 64

    /// The separator between a tenant and a name; never part of a client's id or room.
    public static let separator: Character = "/"

    /// `name` as a tenant, when it is a valid name (1–64 characters of `[A-Za-z0-9._~-]`).
    public init?(_ name: String) {
        guard Self.isValidName(name) else { return nil }
        self.name = name
    }

    private init(unchecked name: String) {
        self.name = name
    }

    public var isDefault: Bool { name.isEmpty }

    public var description: String { isDefault ? "(default)" : name }

    /// `name` (a client's peer id or room name) inside this tenant's namespace.
    public func qualify(_ local: String) -> String {
        isDefault ? local : name + "/" + local
    }

    /// The tenant a qualified name belongs to (the default tenant when it has no prefix).
    public static func of(_ qualified: String) -> Tenant {
        guard let slash = qualified.firstIndex(of: separator) else { return .default }
        return Tenant(unchecked: String(qualified[..<slash]))
    }

    /// The name as its tenant's clients see it: everything after the tenant prefix.
    public static func display(_ qualified: String) -> Substring {
        guard let slash = qualified.firstIndex(of: separator) else { return qualified[...] }
        return qualified[qualified.index(after: slash)...]
    }

    /// Whether `qualified` is in this tenant's namespace.
    public func owns(_ qualified: String) -> Bool {
        Self.of(qualified) == self
    }

    /// 1–64 characters of `[A-Za-z0-9._~-]`, the protocol's charset for ids and rooms.
    public static func isValidName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= maxNameLength else { return false }
        return name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
                UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }
}

extension ClientMessage {
    /// The request with the peer ids and rooms it names moved into `tenant`'s namespace. A signal's
    /// `members` (the bytes its recipient gets) keep the names the client wrote: they are the names the
    /// recipient, in the same tenant, knows.
    public func qualified(by tenant: Tenant) -> ClientMessage {
        guard !tenant.isDefault else { return self }
        var message = self
        switch request {
        case .join(let room, let meta):
            message.request = .join(room: tenant.qualify(room), meta: meta)
        case .leave(let room):
            message.request = .leave(room: tenant.qualify(room))
        case .update(let room, let meta):
            message.request = .update(room: tenant.qualify(room), meta: meta)
        case .signal(var envelope):
            envelope.to = envelope.to.map(tenant.qualify)
            envelope.room = envelope.room.map(tenant.qualify)
            message.request = .signal(envelope)
        case .ping, .received, .auth, .grant:
            break
        }
        return message
    }
}

extension OpenRequest {
    /// The request with its peer id and token subject moved into `tenant`'s namespace (a resume token is
    /// opaque: its session is found by the token, then its peer must belong to the qualified subject).
    public func qualified(by tenant: Tenant) -> OpenRequest {
        guard !tenant.isDefault else { return self }
        switch self {
        case .fresh(let peer, let subject, let grant, let client):
            return .fresh(
                peer: peer.map(tenant.qualify),
                subject: subject.map(tenant.qualify),
                grant: grant,
                client: client
            )
        case .resume(let token, let last, let subject, let client):
            return .resume(token: token, last: last, subject: subject.map(tenant.qualify), client: client)
        }
    }
}

extension Identifier {
    /// A peer id or room name as the hub stores it: a valid name, optionally in a tenant's namespace
    /// (`tenant/name`, both parts valid).
    public static func isValidQualified(_ value: String) -> Bool {
        guard let slash = value.utf8.firstIndex(of: UInt8(ascii: "/")) else { return isValid(value) }
        return Tenant.isValidName(String(value[..<slash])) && isValid(String(value[value.index(after: slash)...]))
    }
}
