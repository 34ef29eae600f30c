import Crypto
import Foundation
import JWTKit
import RedisTestSupport
import Testing

@testable import Signaling

/// Tokens as identity providers issue them: RS256, ES256 and EdDSA besides HS256, keys from PEM and
/// JWKS chosen by `kid`, `aud`/`iss`/`nbf`, and an algorithm that must match its key. Every key is made
/// by the test (RSA with `openssl`, the others with swift-crypto).
@Suite struct TokenVerifierTests {
    static let now = Date()
    static let hour: TimeInterval = 3600

    /// A fresh key pair: the private side signs, the public side (PEM, JWK) is what the hub is given.
    struct Pair {
        let signer: JWTKeyCollection
        let kid: String
        let publicPEM: String
        let jwk: String

        /// A token with `kid` in its header, as identity providers sign them.
        func sign(_ claims: SignalTokenPayload) async throws -> String {
            try await signer.sign(claims, kid: JWKIdentifier(string: kid))
        }
    }

    static func ecdsa(kid: String) async -> Pair {
        let key = ES256PrivateKey()
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        let parameters = key.publicKey.parameters!
        return Pair(
            signer: signer,
            kid: kid,
            publicPEM: key.publicKey.pemRepresentation,
            jwk:
                #"{"kty":"EC","crv":"P-256","kid":"\#(kid)","use":"sig","x":"\#(parameters.x)","y":"\#(parameters.y)"}"#
        )
    }

    static func eddsa(kid: String) async throws -> Pair {
        let key = try EdDSA.PrivateKey()
        let signer = JWTKeyCollection()
        await signer.add(eddsa: key, kid: JWKIdentifier(string: kid))
        let x = base64URL(key.publicKey.rawRepresentation)
        return Pair(
            signer: signer,
            kid: kid,
            publicPEM: key.publicKey.pemRepresentation,
            jwk: #"{"kty":"OKP","crv":"Ed25519","kid":"\#(kid)","alg":"EdDSA","x":"\#(x)"}"#
        )
    }

    static func rsa(kid: String) async throws -> Pair {
        let privatePEM = try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        let publicPEM = try openssl(["pkey", "-pubout"], input: privatePEM)
        let modulusLine = try openssl(["rsa", "-pubin", "-noout", "-modulus"], input: publicPEM)
        let hex = modulusLine.split(separator: "=")[1].trimmingCharacters(in: .whitespacesAndNewlines)
        var modulus = Data()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            modulus.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        let signer = JWTKeyCollection()
        await signer.add(
            rsa: try Insecure.RSA.PrivateKey(pem: privatePEM),
            digestAlgorithm: .sha256,
            kid: JWKIdentifier(string: kid)
        )
        return Pair(
            signer: signer,
            kid: kid,
            publicPEM: publicPEM,
            jwk: #"{"kty":"RSA","kid":"\#(kid)","alg":"RS256","n":"\#(base64URL(modulus))","e":"AQAB"}"#
        )
    }

    static func openssl(_ arguments: [String], input: String? = nil) throws -> String {
        try SpawnedProcess.runBlocking("/usr/bin/env", ["openssl"] + arguments, input: input).output
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func claims(
        sub: String = "alice",
        exp: TimeInterval = hour,
        nbf: TimeInterval? = nil,
        aud: [String]? = nil,
        iss: String? = nil
    ) -> SignalTokenPayload {
        SignalTokenPayload(
            sub: sub,
            exp: now.addingTimeInterval(exp),
            rooms: ["demo"],
            nbf: nbf.map { now.addingTimeInterval($0) },
            aud: aud,
            iss: iss
        )
    }

    static func rejection(_ verifier: TokenVerifier, _ token: String) async -> String? {
        do {
            _ = try await verifier.verify(token, now: now)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func publicKeyAlgorithmsFromPEMAndJWKSChosenByKid() async throws {
        let rsa = try await Self.rsa(kid: "rsa-1")
        let ec = await Self.ecdsa(kid: "ec-1")
        let ed = try await Self.eddsa(kid: "ed-1")
        let fromPEM = await TokenVerifier(keys: [
            try .pem(rsa.publicPEM, kid: "rsa-1"), try .pem(ec.publicPEM, kid: "ec-1"),
            try .pem(ed.publicPEM, kid: "ed-1"),
        ])
        let jwks = try TokenKey.jwks(
            #"{"keys":[\#(rsa.jwk),\#(ec.jwk),\#(ed.jwk),{"kty":"EC","crv":"P-256","use":"enc","x":"","y":""}]}"#
        )
        #expect(jwks.map(\.algorithm) == ["RS256", "ES256", "EdDSA"], "the encryption key is skipped")
        let fromJWKS = await TokenVerifier(keys: jwks)
        for verifier in [fromPEM, fromJWKS] {
            for pair in [rsa, ec, ed] {
                let token = try await pair.sign(Self.claims())
                let payload = try await verifier.verify(token, now: Self.now)
                #expect(payload.sub.value == "alice")
                #expect(payload.rooms == ["demo"])
            }
        }
        // Another key under a known kid: the signature does not verify.
        let impostor = await Self.ecdsa(kid: "ec-1")
        #expect(await Self.rejection(fromJWKS, try await impostor.sign(Self.claims())) == "invalid token")
        // An unknown kid is named in the reason (rotation gone wrong is easy to see).
        let stranger = await Self.ecdsa(kid: "ec-2")
        #expect(await Self.rejection(fromJWKS, try await stranger.sign(Self.claims())) == "unknown token key ec-2")
        // The key's algorithm only: an RS384 token under the RS256 key's kid is refused before its signature.
        let rs384 = JWTKeyCollection()
        let privatePEM = try Self.openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        await rs384.add(rsa: try Insecure.RSA.PrivateKey(pem: privatePEM), digestAlgorithm: .sha384, kid: "rsa-1")
        #expect(
            await Self.rejection(fromPEM, try await rs384.sign(Self.claims(), kid: "rsa-1"))
                == "token algorithm RS384 not accepted"
        )
        // A token without kid is tried with every key of its algorithm.
        #expect(try await fromJWKS.verify(try await ed.signer.sign(Self.claims()), now: Self.now).sub.value == "alice")
    }

    @Test func noNoneAndNoHMACWithAPublicKey() async throws {
        let rsa = try await Self.rsa(kid: "rsa-1")
        let verifier = await TokenVerifier(keys: [try .pem(rsa.publicPEM, kid: "rsa-1")])
        // HS256 keyed with the public key's PEM (the classic confusion), under the RSA key's kid and without.
        for kid in ["rsa-1", nil] as [String?] {
            let forger = JWTKeyCollection()
            await forger.add(
                hmac: HMACKey(from: rsa.publicPEM),
                digestAlgorithm: .sha256,
                kid: kid.map { JWKIdentifier(string: $0) }
            )
            let token = try await forger.sign(Self.claims(), kid: kid.map { JWKIdentifier(string: $0) })
            #expect(await Self.rejection(verifier, token) == "token algorithm HS256 not accepted")
        }
        // With an HS256 secret configured too, HS256 is known, but never checked with the RSA key.
        let both = await TokenVerifier(keys: [
            .secret(String(repeating: "s", count: 32)), try .pem(rsa.publicPEM, kid: "rsa-1"),
        ])
        let forger = JWTKeyCollection()
        await forger.add(hmac: HMACKey(from: rsa.publicPEM), digestAlgorithm: .sha256, kid: "rsa-1")
        #expect(
            await Self.rejection(both, try await forger.sign(Self.claims(), kid: "rsa-1"))
                == "token algorithm HS256 does not match its key"
        )
        // … and without a kid it is checked with the HS256 secret only, which it was not signed with.
        #expect(await Self.rejection(both, try await forger.sign(Self.claims())) == "invalid token")
        // alg none
        let header = Self.base64URL(Data(#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#.utf8))
        let body = Self.base64URL(Data(#"{"sub":"alice","exp":\#(Int(Self.now.timeIntervalSince1970) + 600)}"#.utf8))
        #expect(await Self.rejection(verifier, "\(header).\(body).") == "token algorithm none not accepted")
        // Private keys are refused as configuration.
        #expect(throws: TokenKey.Invalid.self) {
            try TokenKey.pem(try Self.openssl(["genpkey", "-algorithm", "ED25519"]))
        }
        #expect(throws: TokenKey.Invalid.self) { try TokenKey.jwks(#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#) }
        #expect(throws: TokenKey.Invalid.self) {
            try TokenKey.jwks(#"{"keys":[{"kty":"RSA","alg":"ES256","n":"AQAB","e":"AQAB"}]}"#)
        }
    }

    @Test func claimsExpNbfAudIss() async throws {
        let ec = await Self.ecdsa(kid: "ec-1")
        let key = try TokenKey.pem(ec.publicPEM, kid: "ec-1")
        let plain = await TokenVerifier(keys: [key])
        let strict = await TokenVerifier(
            keys: [key],
            audiences: ["app", "app-staging"],
            issuer: "https://id.example.org/",
            leeway: 30
        )
        func token(_ claims: SignalTokenPayload) async throws -> String { try await ec.sign(claims) }

        #expect(await Self.rejection(plain, try await token(Self.claims(exp: -1))) == "token expired")
        // nbf: tomorrow is refused; within the leeway (a provider's clock slightly ahead) accepted
        #expect(await Self.rejection(plain, try await token(Self.claims(nbf: 86_400))) == "token not valid yet")
        #expect(await Self.rejection(plain, try await token(Self.claims(nbf: 20))) == nil)
        #expect(await Self.rejection(plain, try await token(Self.claims(nbf: 40))) == "token not valid yet")
        // aud and iss only when configured
        #expect(await Self.rejection(plain, try await token(Self.claims(aud: ["other"], iss: "mallory"))) == nil)
        let good = Self.claims(aud: ["other", "app"], iss: "https://id.example.org/")
        #expect(await Self.rejection(strict, try await token(good)) == nil)
        #expect(
            await Self.rejection(strict, try await token(Self.claims(aud: ["other"], iss: "https://id.example.org/")))
                == "token audience not accepted"
        )
        #expect(
            await Self.rejection(strict, try await token(Self.claims(iss: "https://id.example.org/")))
                == "token audience not accepted"
        )
        #expect(
            await Self.rejection(strict, try await token(Self.claims(aud: ["app"], iss: "https://evil.example/")))
                == "token issuer not accepted"
        )
        #expect(await Self.rejection(strict, try await token(Self.claims(aud: ["app"]))) == "token issuer not accepted")
        #expect(
            await Self.rejection(
                strict,
                try await token(Self.claims(sub: "a~b", aud: ["app"], iss: "https://id.example.org/"))
            ) == "token subject is not a valid peer id"
        )
    }

    @Test func hs256KeepsWorkingBesideThePublicKeys() async throws {
        let secret = "a-secret-of-at-least-thirty-two-bytes"
        let ec = await Self.ecdsa(kid: "ec-1")
        let verifier = await TokenVerifier(keys: [.secret(secret), try .pem(ec.publicPEM, kid: "ec-1")])
        let hs = try await TokenVerifier(secret: secret).sign(Self.claims(sub: "bob"))
        #expect(try await verifier.verify(hs, now: Self.now).sub.value == "bob")
        #expect(try await verifier.verify(try await ec.sign(Self.claims()), now: Self.now).sub.value == "alice")
    }
}
