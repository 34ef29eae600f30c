import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// An identity provider's JWKS fetched over HTTPS (`--jwks-url`): the keys tokens may be signed with,
/// kept in a cache and fetched again when it is older than ``Configuration/refreshInterval``, or when a
/// token names a `kid` the cache does not have (the provider rotated its keys) — at most once per
/// ``Configuration/minimumRefetchInterval``, so tokens with made-up `kid`s cannot make the hub hammer
/// the provider. A failed fetch keeps the keys it had.
public actor RemoteKeySet {
    public struct Configuration: Sendable {
        /// `https://…` (plain `http://` only to a loopback address: a test or a sidecar).
        public var url: String
        /// The cache's lifetime (`--jwks-refresh`, default 10 minutes).
        public var refreshInterval: Duration = .seconds(600)
        /// The shortest time between two fetches after the first (30 s): a rotation is picked up at once,
        /// a flood of made-up `kid`s costs one fetch per interval.
        public var minimumRefetchInterval: Duration = .seconds(30)
        /// Per fetch.
        public var timeout: Duration = .seconds(5)
        /// Largest JWKS document accepted.
        public var maxBytes: Int = 1 << 20

        public init(url: String) {
            self.url = url
        }
    }

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public nonisolated let configuration: Configuration
    private let client: HTTPClient
    private let logger: Logger
    private var entries: [TokenVerifier.Entry] = []
    private var fetchedAt: ContinuousClock.Instant?
    private var attemptedAt: ContinuousClock.Instant?
    private var inFlight: Task<Void, Never>?
    /// Fetches made (for tests and logs).
    public private(set) var fetches = 0

    /// Checks the URL; nothing is fetched until ``load()``.
    public init(_ configuration: Configuration, client: HTTPClient = .shared, logger: Logger) throws(Invalid) {
        try Self.checkURL(configuration.url)
        self.configuration = configuration
        self.client = client
        self.logger = logger
    }

    /// The rule for every URL the hub talks to on its own (a JWKS, a webhook receiver): `https://…`, or plain
    /// `http://` only to a loopback address (a test or a sidecar), so nothing secret crosses a network in
    /// the clear.
    public static func checkURL(_ string: String) throws(Invalid) {
        guard let url = URL(string: string), let scheme = url.scheme?.lowercased(), let host = url.host
        else { throw Invalid(description: "not a URL: \(string)") }
        let loopback = ["localhost", "127.0.0.1", "::1", "[::1]"].contains(host.lowercased())
        guard scheme == "https" || (scheme == "http" && loopback) else {
            throw Invalid(description: "\(string): use https (plain http only to a loopback address)")
        }
    }

    /// The first fetch, at start-up: throws when the JWKS cannot be fetched or holds no signing key.
    public func load() async throws {
        fetches += 1
        let keys = try await self.download()
        try await self.install(keys)
    }

    /// The cached keys, fetched again first when the cache is older than the refresh interval.
    func current() async -> [TokenVerifier.Entry] {
        if let fetchedAt, fetchedAt.duration(to: .now) < configuration.refreshInterval { return entries }
        await self.refresh()
        return entries
    }

    /// A token named a `kid` the cache lacks: fetches again (unless the last fetch was too recent) and
    /// returns the keys then.
    func afterUnknownKey() async -> [TokenVerifier.Entry] {
        await self.refresh()
        return entries
    }

    private func refresh() async {
        if let inFlight { return await inFlight.value }
        if let attemptedAt, attemptedAt.duration(to: .now) < configuration.minimumRefetchInterval { return }
        attemptedAt = .now
        fetches += 1
        let task = Task {
            do {
                let keys = try await self.download()
                try await self.install(keys)
                self.logger.info(
                    "JWKS fetched",
                    metadata: ["jwks.url": "\(self.configuration.url)", "keys": "\(keys.count)"]
                )
            } catch {
                self.logger.warning(
                    "JWKS fetch failed; keeping the keys fetched before",
                    metadata: ["jwks.url": "\(self.configuration.url)", "error": "\(error)"]
                )
            }
        }
        inFlight = task
        await task.value
        inFlight = nil
    }

    private func install(_ keys: [TokenKey]) async throws {
        var fresh: [TokenVerifier.Entry] = []
        for key in keys { fresh.append(await TokenVerifier.Entry(key)) }
        entries = fresh
        fetchedAt = .now
    }

    private nonisolated func download() async throws -> [TokenKey] {
        var request = HTTPClientRequest(url: configuration.url)
        request.headers.add(name: "Accept", value: "application/json")
        let seconds = configuration.timeout.components.seconds
        let response = try await client.execute(request, timeout: .seconds(max(1, seconds)))
        guard response.status == .ok else {
            throw Invalid(description: "\(configuration.url) answered \(response.status.code)")
        }
        let body = try await response.body.collect(upTo: configuration.maxBytes)
        do {
            return try TokenKey.jwks(String(buffer: body))
        } catch {
            throw Invalid(description: "\(configuration.url): \(error)")
        }
    }
}
