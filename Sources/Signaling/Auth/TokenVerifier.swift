import Foundation
import JWTKit

/// The claims the hub reads from a client token.
public struct SignalTokenPayload: JWTPayload, Equatable {
    /// The peer id (`sub`); a client may also use `sub~suffix`.
    public var sub: SubjectClaim
    /// Expiry; required.
    public var exp: ExpirationClaim
    /// Not before; optional, honoured with the verifier's leeway.
    public var nbf: NotBeforeClaim?
    /// Audience; checked when the verifier is given audiences.
    public var aud: AudienceClaim?
    /// Issuer; checked when the verifier is given an issuer.
    public var iss: IssuerClaim?
    /// Rooms the token may join; `*` or absence means any room.
    public var rooms: [String]?
    /// The tenant whose namespace of peer ids and rooms the session lives in (``Tenant``); absence means
    /// the default tenant. ``TokenVerifier`` refuses a token whose tenant is not a valid name.
    public var tenant: String?

    public init(
        sub: String,
        exp: Date,
        rooms: [String]? = nil,
        nbf: Date? = nil,
        aud: [String]? = nil,
        iss: String? = nil,
        tenant: String? = nil
    ) {
        self.sub = SubjectClaim(value: sub)
        self.exp = ExpirationClaim(value: exp)
        self.rooms = rooms
        self.tenant = tenant
        self.nbf = nbf.map { NotBeforeClaim(value: $0) }
        self.aud = aud.map { AudienceClaim(value: $0) }
        self.iss = iss.map { IssuerClaim(value: $0) }
    }

    /// The session's tenant: the `tenant` claim, or the default tenant without one.
    public var namespace: Tenant { tenant.flatMap(Tenant.init) ?? .default }

    /// `sub` in the tenant's namespace: what the hub compares peer ids with.
    public var qualifiedSubject: String { namespace.qualify(sub.value) }

    /// The `rooms` claim as a grant of rooms in the tenant's namespace.
    public var roomGrant: RoomGrant {
        let tenant = namespace
        guard let rooms, !tenant.isDefault else { return RoomGrant(claim: rooms) }
        return RoomGrant(claim: rooms.map { $0 == "*" ? $0 : tenant.qualify($0) })
    }

    /// Claims are checked by ``TokenVerifier`` (with its clock, leeway, audiences and issuer), after the
    /// signature.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why a token was refused; the message goes into the 4001 close reason (never the token itself).
public struct TokenRejection: Error, Sendable, Equatable {
    public var reason: String
}

/// Verifies client tokens with jwt-kit: HS256 with a shared secret, and RS256/ES256/EdDSA (and their
/// siblings, see ``TokenKey/algorithms``) with public keys from PEM files or a JWKS.
///
/// Every key is bound to one algorithm. The header's `alg` must be one the hub knows (`none` never is),
/// then its `kid` picks the key (a token without `kid` is tried with every key of its algorithm), and the
/// key's algorithm must be the header's: an RS256 key never checks an HS256 token, so a public key can
/// never be used as an HMAC secret. Then the signature, then the claims: `exp` required and in the
/// future, `nbf` honoured with the leeway, `aud` and `iss` when configured.
public struct TokenVerifier: Sendable {
    struct Entry: Sendable {
        let kid: String?
        let algorithm: String
        let keys: JWTKeyCollection

        init(_ key: TokenKey) async {
            self.kid = key.kid
            self.algorithm = key.algorithm
            self.keys = await key.collection()
        }
    }

    private let entries: [Entry]
    /// JWKS fetched from identity providers (`--jwks-url`), consulted after the fixed keys.
    private let remote: [RemoteKeySet]
    /// Tokens must name one of these in `aud` (none: `aud` is not checked).
    public let audiences: [String]
    /// Tokens must have this `iss` (nil: not checked).
    public let issuer: String?
    /// Clock skew tolerated for `nbf`, in seconds: a token minted by a server whose clock runs a little
    /// ahead is usable at once. `exp` gets none: a token is never accepted after its expiry.
    public let leeway: Int

    /// The shortest secret accepted: HS256 keys shorter than the hash output (32 bytes) are weak.
    public static let minimumSecretBytes = 32
    /// The default clock skew tolerated for `nbf`.
    public static let defaultLeeway = 30

    /// A verifier of HS256 tokens. The secret must be at least ``minimumSecretBytes`` long (checked by the
    /// callers that take a secret from users, e.g. `signal serve`).
    public init(secret: String) async {
        precondition(secret.utf8.count >= Self.minimumSecretBytes, "HS256 secret shorter than 32 bytes")
        await self.init(keys: [.secret(secret)])
    }

    /// A verifier of tokens signed with any of `keys`.
    public init(
        keys: [TokenKey],
        remote: [RemoteKeySet] = [],
        audiences: [String] = [],
        issuer: String? = nil,
        leeway: Int = Self.defaultLeeway
    ) async {
        var entries: [Entry] = []
        for key in keys { entries.append(await Entry(key)) }
        self.entries = entries
        self.remote = remote
        self.audiences = audiences
        self.issuer = issuer
        self.leeway = max(0, leeway)
    }

    /// Verifies `token` at `now`; returns its claims or throws a ``TokenRejection``.
    public func verify(_ token: String, now: Date = Date()) async throws(TokenRejection) -> SignalTokenPayload {
        guard token.utf8.count <= 8192 else { throw TokenRejection(reason: "token too long") }
        guard let header = Self.header(of: token), let alg = header["alg"] as? String else {
            throw TokenRejection(reason: "malformed token")
        }
        guard TokenKey.algorithms.contains(alg) else {
            throw TokenRejection(reason: "token algorithm \(alg.prefix(16)) not accepted")
        }
        let kid = header["kid"] as? String
        var all = entries
        for set in remote { all += await set.current() }
        // A `kid` no key has: the identity provider may have rotated; its JWKS is fetched again (rate-bounded).
        if let kid, !remote.isEmpty, !all.contains(where: { $0.kid == kid }) {
            all = entries
            for set in remote { all += await set.afterUnknownKey() }
        }
        guard all.contains(where: { $0.algorithm == alg }) else {
            throw TokenRejection(reason: "token algorithm \(alg.prefix(16)) not accepted")
        }
        let candidates: [Entry]
        if let kid {
            candidates = all.filter { $0.kid == kid }
            guard !candidates.isEmpty else { throw TokenRejection(reason: "unknown token key \(kid.prefix(64))") }
        } else {
            candidates = all.filter { $0.algorithm == alg }  // no kid: every key of its algorithm
        }
        guard candidates.contains(where: { $0.algorithm == alg }) else {
            throw TokenRejection(reason: "token algorithm \(alg.prefix(16)) does not match its key")
        }
        var verified: SignalTokenPayload?
        for entry in candidates where entry.algorithm == alg {
            if let payload = try? await entry.keys.verify(token, as: SignalTokenPayload.self) {
                verified = payload
                break
            }
        }
        guard let payload = verified else { throw TokenRejection(reason: "invalid token") }
        let skew = TimeInterval(leeway)
        guard payload.exp.value > now else { throw TokenRejection(reason: "token expired") }
        if let nbf = payload.nbf, nbf.value.addingTimeInterval(-skew) > now {
            throw TokenRejection(reason: "token not valid yet")
        }
        if !audiences.isEmpty {
            guard let aud = payload.aud, aud.value.contains(where: audiences.contains) else {
                throw TokenRejection(reason: "token audience not accepted")
            }
        }
        if let issuer, payload.iss?.value != issuer {
            throw TokenRejection(reason: "token issuer not accepted")
        }
        guard Identifier.isValid(payload.sub.value), !payload.sub.value.contains("~") else {
            throw TokenRejection(reason: "token subject is not a valid peer id")
        }
        if let tenant = payload.tenant, Tenant(tenant) == nil {
            throw TokenRejection(reason: "token tenant is not a valid tenant name")
        }
        return payload
    }

    /// Signs a token with the first key, which must be an HS256 secret (for tests and the CLI's `token`
    /// helper).
    public func sign(_ payload: SignalTokenPayload) async throws -> String {
        guard let first = entries.first, first.algorithm == "HS256" else {
            throw TokenRejection(reason: "only an HS256 secret signs tokens here")
        }
        return try await first.keys.sign(payload)
    }

    static func headerAlgorithm(of token: String) -> String? {
        header(of: token)?["alg"] as? String
    }

    static func header(of token: String) -> [String: Any]? {
        guard let dot = token.firstIndex(of: ".") else { return nil }
        var base64 = token[..<dot].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    }
}
