import Crypto
import Foundation

/// Mints short-lived TURN credentials in the "TURN REST API" form (draft-uberti-behave-turn-rest) that
/// coturn checks with `use-auth-secret` / `static-auth-secret`: the username is `<expiry>:<peer id>`
/// (expiry in Unix seconds) and the credential is base64(HMAC-SHA1(secret, username)). The TURN server
/// recomputes the HMAC with the shared secret and refuses the allocation once the expiry has passed, so
/// the hub and the TURN server share nothing but the secret.
///
/// Rotation: up to two secrets. The first signs every credential; the second is the one being retired,
/// which the TURN server still accepts (coturn takes several `static-auth-secret` lines) until every
/// credential it signed has expired. The hub keeps it only so one secrets file can serve both sides.
public struct TurnCredentialIssuer: Sendable {
    /// The TURN URLs the credentials are for (`--turn-url`, repeatable).
    public var urls: [String]
    /// The shared secrets; the first signs.
    public var secrets: [String]
    /// How long a credential is valid, in seconds (`--turn-ttl`).
    public var ttl: Int

    /// The shortest secret accepted (coturn takes any; a guessable secret lets anyone relay through it).
    public static let minimumSecretBytes = 16
    /// Sessions are sent fresh credentials after this share of the TTL (``refreshNanos``).
    public static let refreshShare = 0.8

    public init(urls: [String], secrets: [String], ttl: Int) {
        precondition(!secrets.isEmpty && secrets.count <= 2, "one or two TURN secrets")
        precondition(ttl > 0, "TURN credential TTL must be positive")
        self.urls = urls
        self.secrets = secrets
        self.ttl = ttl
    }

    /// The username of a credential for `peer` issued at `now`: `<expiry>:<peer id>`.
    public func username(peer: String, now: Date) -> String {
        "\(Int64(now.timeIntervalSince1970.rounded(.down)) + Int64(ttl)):\(peer)"
    }

    /// The `RTCIceServer` entry for `peer` issued at `now`.
    public func iceServer(peer: String, now: Date) -> IceServer {
        let username = self.username(peer: peer, now: now)
        return IceServer(
            urls: urls,
            username: username,
            credential: Self.credential(secret: secrets[0], username: username)
        )
    }

    /// base64(HMAC-SHA1(secret, username)): what coturn computes for `use-auth-secret`.
    public static func credential(secret: String, username: String) -> String {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(
            for: Data(username.utf8),
            using: SymmetricKey(data: Data(secret.utf8))
        )
        return Data(mac).base64EncodedString()
    }

    /// How long after a connection got credentials it is sent fresh ones: 80 % of the TTL, so a client
    /// always holds credentials valid for at least a fifth of the TTL (an ICE restart late in a long call
    /// still allocates).
    public var refreshNanos: UInt64 {
        UInt64(Double(ttl) * Self.refreshShare * 1e9)
    }
}
