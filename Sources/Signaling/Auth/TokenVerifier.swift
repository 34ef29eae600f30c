import Foundation
import JWTKit

/// The claims the hub reads from a client token.
public struct SignalTokenPayload: JWTPayload, Equatable {
    /// The peer id (`sub`); a client may also use `sub~suffix`.
    public var sub: SubjectClaim
    /// Expiry; required.
    public var exp: ExpirationClaim
    /// Rooms the token may join; `*` or absence means any room.
    public var rooms: [String]?

    public init(sub: String, exp: Date, rooms: [String]? = nil) {
        self.sub = SubjectClaim(value: sub)
        self.exp = ExpirationClaim(value: exp)
        self.rooms = rooms
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try self.exp.verifyNotExpired()
    }
}

/// Why a token was refused; the message goes into the 4001 close reason (never the token itself).
public struct TokenRejection: Error, Sendable, Equatable {
    public var reason: String
}

/// Verifies HS256 client tokens with jwt-kit. The algorithm is pinned: a token whose header names any
/// other `alg` (`none` included) is refused before its signature is looked at.
public struct TokenVerifier: Sendable {
    private let keys: JWTKeyCollection

    /// The shortest secret accepted: HS256 keys shorter than the hash output (32 bytes) are weak.
    public static let minimumSecretBytes = 32

    /// Creates a verifier. The secret must be at least ``minimumSecretBytes`` long (checked by the
    /// callers that take a secret from users, e.g. `signal serve`).
    public init(secret: String) async {
        precondition(secret.utf8.count >= Self.minimumSecretBytes, "HS256 secret shorter than 32 bytes")
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.keys = keys
    }

    /// Verifies `token`; returns its claims or throws a ``TokenRejection``.
    public func verify(_ token: String) async throws(TokenRejection) -> SignalTokenPayload {
        guard token.utf8.count <= 8192 else { throw TokenRejection(reason: "token too long") }
        guard let alg = Self.headerAlgorithm(of: token) else { throw TokenRejection(reason: "malformed token") }
        guard alg == "HS256" else { throw TokenRejection(reason: "token algorithm \(alg.prefix(16)) not accepted") }
        let payload: SignalTokenPayload
        do {
            payload = try await keys.verify(token, as: SignalTokenPayload.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw TokenRejection(reason: "token expired")
        } catch {
            throw TokenRejection(reason: "invalid token")
        }
        guard Identifier.isValid(payload.sub.value), !payload.sub.value.contains("~") else {
            throw TokenRejection(reason: "token subject is not a valid peer id")
        }
        return payload
    }

    /// Signs a token (for tests and the CLI's `token` helper).
    public func sign(_ payload: SignalTokenPayload) async throws -> String {
        try await keys.sign(payload)
    }

    static func headerAlgorithm(of token: String) -> String? {
        guard let dot = token.firstIndex(of: ".") else { return nil }
        var base64 = token[..<dot].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        return object["alg"] as? String
    }
}
