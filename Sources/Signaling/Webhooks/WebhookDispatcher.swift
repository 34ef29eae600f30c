import AsyncHTTPClient
import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Where webhooks go and how hard the hub tries (`--webhook-url`, `--webhook-secret-file`).
public struct WebhookConfiguration: Sendable {
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Shortest secret accepted.
    public static let minimumSecretBytes = 16

    /// Receivers: every event goes to each of them (`https://`, or `http://` only to loopback).
    public let urls: [String]
    /// The HMAC-SHA256 key of ``WebhookSignature``.
    public let secret: [UInt8]
    /// Events waiting per receiver; beyond it the oldest is dropped (`signal_webhook_events_dropped_total`).
    public var queueCapacity = 10_000
    /// Retries with backoff; after the last failed attempt the event counts as failed.
    public var backoff = WebhookBackoff()
    /// Per attempt: a receiver that does not answer within it counts as failed.
    public var timeout: Duration = .seconds(5)

    public init(urls: [String], secret: String) throws(Invalid) {
        guard !urls.isEmpty else { throw Invalid(description: "at least one webhook URL is needed") }
        for url in urls {
            do throws(RemoteKeySet.Invalid) {
                try RemoteKeySet.checkURL(url)
            } catch {
                throw Invalid(description: error.description)
            }
        }
        guard secret.utf8.count >= Self.minimumSecretBytes else {
            throw Invalid(description: "the webhook secret must be at least \(Self.minimumSecretBytes) bytes")
        }
        self.urls = urls
        self.secret = Array(secret.utf8)
    }
}

/// Sends the backend's events (``HubEvent``) to the app's webhook receivers: each event gets an id and a
/// time when it is queued (``enqueue(_:)``, which the backend calls as events happen), then is POSTed as
/// JSON to every receiver, signed (``WebhookSignature``), in order per receiver; a failed attempt (an
/// error, a timeout or a non-2xx answer) is tried again with exponential backoff, up to
/// ``WebhookBackoff/maxAttempts``. Delivery is at least once (a receiver that answered after its timeout
/// gets the event again, with the same id); the queue lives in memory and is bounded, dropping the oldest
/// event (counted) when a receiver stays down.
///
/// A service of the server: ``run()`` (one child task per receiver) runs as a child of
/// ``SignalServer/run()`` and stops when cancelled.
public final class WebhookDispatcher: Sendable {
    public let configuration: WebhookConfiguration
    private let queues: [NIOLockedValueBox<WebhookQueue>]
    private let doorbells: [(stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)]
    private let client: HTTPClient
    private let logger: Logger
    private let delivered: Counter
    private let failed: Counter
    private let dropped: Counter
    private let tally = NIOLockedValueBox(Counts())

    /// Events delivered, given up and dropped since start (tests, logs).
    public struct Counts: Sendable, Equatable {
        public var delivered = 0
        public var failed = 0
        public var dropped = 0
    }

    public init(
        configuration: WebhookConfiguration,
        metricsFactory: any MetricsFactory,
        client: HTTPClient = .shared,
        logger: Logger
    ) {
        self.configuration = configuration
        self.queues = configuration.urls.map { _ in
            NIOLockedValueBox(WebhookQueue(capacity: configuration.queueCapacity))
        }
        self.doorbells = configuration.urls.map { _ in
            AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        }
        self.client = client
        self.logger = logger
        self.delivered = Counter(label: "signal_webhook_events_delivered_total", factory: metricsFactory)
        self.failed = Counter(label: "signal_webhook_events_failed_total", factory: metricsFactory)
        self.dropped = Counter(label: "signal_webhook_events_dropped_total", factory: metricsFactory)
    }

    public var counts: Counts { tally.withLockedValue { $0 } }

    /// Queues `events` for every receiver (a ``HubEventSink``): cheap, never waits.
    public func enqueue(_ events: [HubEvent]) {
        let time = Int(Date().timeIntervalSince1970)
        var generator = SystemRandomNumberGenerator()
        let stamped = events.map { WebhookEvent(id: WebhookEvent.randomID(using: &generator), event: $0, time: time) }
        for (index, queue) in queues.enumerated() {
            let lost = queue.withLockedValue { queue in stamped.reduce(0) { $0 + (queue.push($1) == nil ? 0 : 1) } }
            if lost > 0 {
                dropped.increment(by: lost)
                tally.withLockedValue { $0.dropped += lost }
            }
            doorbells[index].continuation.yield()
        }
    }

    /// Sends queued events until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for index in configuration.urls.indices {
                group.addTask { await self.serve(index) }
            }
        }
    }

    private func serve(_ index: Int) async {
        for await _ in doorbells[index].stream {
            while !Task.isCancelled, let event = queues[index].withLockedValue({ $0.pop() }) {
                await self.deliver(event, to: configuration.urls[index])
            }
        }
    }

    private func deliver(_ event: WebhookEvent, to url: String) async {
        let body = event.body
        let backoff = configuration.backoff
        for attempt in 1...max(1, backoff.maxAttempts) {
            if await self.post(body, id: event.id, to: url) {
                delivered.increment()
                tally.withLockedValue { $0.delivered += 1 }
                return
            }
            if attempt == backoff.maxAttempts { break }
            do {
                try await Task.sleep(for: backoff.delay(after: attempt, jitter: Double.random(in: 0...1)))
            } catch {
                return
            }
        }
        failed.increment()
        tally.withLockedValue { $0.failed += 1 }
        logger.warning(
            "webhook not delivered; giving up",
            metadata: ["webhook.url": "\(url)", "event.id": "\(event.id)", "event.type": "\(event.event.type)"]
        )
    }

    /// One attempt: true on a 2xx answer.
    private func post(_ body: ByteBuffer, id: String, to url: String) async -> Bool {
        let timestamp = Int(Date().timeIntervalSince1970)
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "signal-webhooks/1")
        request.headers.add(name: "Signal-Event-Id", value: id)
        request.headers.add(
            name: "Signal-Signature",
            value: WebhookSignature.header(body: body, secret: configuration.secret, timestamp: timestamp)
        )
        request.body = .bytes(body)
        do {
            let seconds = max(1, configuration.timeout.components.seconds)
            let response = try await client.execute(request, timeout: .seconds(seconds))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            if (200..<300).contains(response.status.code) { return true }
            logger.debug("webhook refused", metadata: ["webhook.url": "\(url)", "status": "\(response.status.code)"])
        } catch {
            logger.debug("webhook attempt failed", metadata: ["webhook.url": "\(url)", "error": "\(error)"])
        }
        return false
    }
}
