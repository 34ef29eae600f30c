import ArgumentParser
import Foundation
import Signaling

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Mint an HS256 client token (for development and tests; production apps mint their own)."
    )

    @Option(help: "The HS256 secret the hub was started with (also SIGNAL_JWT_SECRET).") var secret: String?
    @Option(help: "Peer id (the token's sub).") var sub: String
    @Option(help: "Rooms the token may join, comma-separated ('*' for any; default any).") var rooms: String?
    @Option(help: "Seconds until the token expires (negative makes an expired token).") var ttl = 3600
    @Option(help: "The tenant whose namespace of peer ids and rooms the session lives in (default: none).")
    var tenant: String?

    func run() async throws {
        guard let secret = secret ?? ProcessInfo.processInfo.environment["SIGNAL_JWT_SECRET"] else {
            throw ValidationError("--secret (or SIGNAL_JWT_SECRET) is required")
        }
        guard secret.utf8.count >= TokenVerifier.minimumSecretBytes else {
            throw ValidationError("the secret must be at least \(TokenVerifier.minimumSecretBytes) bytes")
        }
        if let tenant, Tenant(tenant) == nil {
            throw ValidationError("--tenant must be 1-64 characters of [A-Za-z0-9._~-]")
        }
        let verifier = await TokenVerifier(secret: secret)
        let payload = SignalTokenPayload(
            sub: sub,
            exp: Date(timeIntervalSinceNow: TimeInterval(ttl)),
            rooms: rooms.map { $0.split(separator: ",").map(String.init) },
            tenant: tenant
        )
        print(try await verifier.sign(payload))
    }
}
