import Foundation
import JWTKit

/// One key that client tokens may be signed with, bound to exactly one algorithm: a token is checked
/// only with a key whose algorithm is the one its header names (so no `none`, and no HMAC keyed with a
/// public key). Identity providers publish public keys as PEM files or a JWKS; `kid` picks the key.
public struct TokenKey: Sendable {
    /// The key id tokens name in their header (`kid`); nil: the key checks only tokens without a `kid`
    /// (which are tried with every key of their algorithm).
    public let kid: String?
    /// The one JWS algorithm this key verifies: `HS256`, `RS256`, `RS384`, `RS512`, `ES256`, `ES384` or `EdDSA`.
    public let algorithm: String

    enum Material: Sendable {
        case hmac(String)
        case rsa(Insecure.RSA.PublicKey)
        case es256(ES256PublicKey)
        case es384(ES384PublicKey)
        case eddsa(EdDSA.PublicKey)
    }

    let material: Material

    /// The algorithms a token may name.
    public static let algorithms: Set<String> = ["HS256", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]

    /// Why a key could not be used.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// An HS256 secret (at least ``TokenVerifier/minimumSecretBytes``).
    public static func secret(_ secret: String, kid: String? = nil) -> TokenKey {
        TokenKey(kid: kid, algorithm: "HS256", material: .hmac(secret))
    }

    /// A public key in PEM (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`): RSA (RS256), P-256 (ES256),
    /// P-384 (ES384) or Ed25519 (EdDSA).
    public static func pem(_ pem: String, kid: String? = nil) throws(Invalid) -> TokenKey {
        guard !pem.contains("PRIVATE KEY") else {
            throw Invalid(description: "a private key; give the hub the public key only")
        }
        if let key = try? Insecure.RSA.PublicKey(pem: pem) {
            return TokenKey(kid: kid, algorithm: "RS256", material: .rsa(key))
        }
        if let key = try? ES256PublicKey(pem: pem) {
            return TokenKey(kid: kid, algorithm: "ES256", material: .es256(key))
        }
        if let key = try? ES384PublicKey(pem: pem) {
            return TokenKey(kid: kid, algorithm: "ES384", material: .es384(key))
        }
        if let key = try? EdDSA.PublicKey(pem: pem) {
            return TokenKey(kid: kid, algorithm: "EdDSA", material: .eddsa(key))
        }
        throw Invalid(description: "not an RSA, P-256, P-384 or Ed25519 public key in PEM")
    }

    /// The signing keys of a JWKS document (`{"keys":[…]}`): `RSA`, `EC` (P-256, P-384) and `OKP`
    /// (Ed25519) keys; keys marked for another use than `sig` are skipped, symmetric (`oct`) keys refused.
    /// A key's `alg`, when given, must fit its type; without one it is the type's usual algorithm.
    public static func jwks(_ json: String) throws(Invalid) -> [TokenKey] {
        struct Document: Decodable {
            var keys: [Entry]
        }
        struct Entry: Decodable {
            var kty: String
            var kid: String?
            var alg: String?
            var use: String?
            var crv: String?
            var n: String?
            var e: String?
            var x: String?
            var y: String?
        }
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(json.utf8))
        } catch {
            throw Invalid(description: "not a JWKS document ({\"keys\":[…]})")
        }
        var keys: [TokenKey] = []
        for (index, entry) in document.keys.enumerated() {
            if let use = entry.use, use != "sig" { continue }
            let name = entry.kid.map { "key \"\($0)\"" } ?? "key \(index)"
            do {
                let key: TokenKey
                switch (entry.kty, entry.crv) {
                case ("RSA", _):
                    guard let n = entry.n, let e = entry.e else {
                        throw Invalid(description: "\(name): RSA key without n or e")
                    }
                    let algorithm = entry.alg ?? "RS256"
                    guard ["RS256", "RS384", "RS512"].contains(algorithm) else {
                        throw Invalid(description: "\(name): alg \(algorithm) does not fit an RSA key")
                    }
                    key = TokenKey(
                        kid: entry.kid,
                        algorithm: algorithm,
                        material: .rsa(try Insecure.RSA.PublicKey(modulus: n, exponent: e))
                    )
                case ("EC", "P-256"):
                    guard let x = entry.x, let y = entry.y else {
                        throw Invalid(description: "\(name): EC key without x or y")
                    }
                    guard entry.alg == nil || entry.alg == "ES256" else {
                        throw Invalid(description: "\(name): alg does not fit P-256")
                    }
                    key = TokenKey(
                        kid: entry.kid,
                        algorithm: "ES256",
                        material: .es256(try ES256PublicKey(parameters: (x, y)))
                    )
                case ("EC", "P-384"):
                    guard let x = entry.x, let y = entry.y else {
                        throw Invalid(description: "\(name): EC key without x or y")
                    }
                    guard entry.alg == nil || entry.alg == "ES384" else {
                        throw Invalid(description: "\(name): alg does not fit P-384")
                    }
                    key = TokenKey(
                        kid: entry.kid,
                        algorithm: "ES384",
                        material: .es384(try ES384PublicKey(parameters: (x, y)))
                    )
                case ("OKP", "Ed25519"):
                    guard let x = entry.x else { throw Invalid(description: "\(name): OKP key without x") }
                    guard entry.alg == nil || entry.alg == "EdDSA" else {
                        throw Invalid(description: "\(name): alg does not fit Ed25519")
                    }
                    key = TokenKey(
                        kid: entry.kid,
                        algorithm: "EdDSA",
                        material: .eddsa(try EdDSA.PublicKey(x: x, curve: .ed25519))
                    )
                case ("oct", _):
                    throw Invalid(description: "\(name): symmetric keys do not belong in a JWKS; use --jwt-secret-file")
                default:
                    throw Invalid(description: "\(name): unsupported key type \(entry.kty) \(entry.crv ?? "")")
                }
                keys.append(key)
            } catch let error as Invalid {
                throw error
            } catch {
                throw Invalid(description: "\(name): \(error)")
            }
        }
        guard !keys.isEmpty else { throw Invalid(description: "the JWKS has no signing key") }
        return keys
    }

    /// A collection holding only this key, which checks signatures with it alone.
    func collection() async -> JWTKeyCollection {
        let keys = JWTKeyCollection()
        switch material {
        case .hmac(let secret):
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        case .rsa(let key):
            let digest: DigestAlgorithm =
                switch algorithm {
                case "RS384": .sha384
                case "RS512": .sha512
                default: .sha256
                }
            await keys.add(rsa: key, digestAlgorithm: digest)
        case .es256(let key):
            await keys.add(ecdsa: key)
        case .es384(let key):
            await keys.add(ecdsa: key)
        case .eddsa(let key):
            await keys.add(eddsa: key)
        }
        return keys
    }
}
