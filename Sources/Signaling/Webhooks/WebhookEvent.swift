import Crypto
import NIOCore

/// One webhook as sent: a ``HubEvent`` with its id (for the receiver's dedup: a retried event keeps its id)
/// and the time it happened, as the JSON body
/// `{"id":…,"type":…,"time":UNIX,"tenant":…|null,"peer":…|null,"room":…|null[,"reason":…]}`. Names are
/// shown as the tenant's clients see them (``Tenant/display(_:)``); `tenant` is null for the default one.
public struct WebhookEvent: Sendable, Equatable {
    public let id: String
    public let event: HubEvent
    /// Seconds since the Unix epoch.
    public let time: Int

    public init(id: String, event: HubEvent, time: Int) {
        self.id = id
        self.event = event
        self.time = time
    }

    /// A fresh event id: `evt_` and 32 hex digits (128 random bits).
    public static func randomID<Generator: RandomNumberGenerator>(using generator: inout Generator) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var id = Array("evt_".utf8)
        for _ in 0..<2 {
            var word = generator.next()
            for _ in 0..<16 {
                id.append(digits[Int(word & 0xF)])
                word >>= 4
            }
        }
        return String(decoding: id, as: UTF8.self)
    }

    /// The JSON body.
    public var body: ByteBuffer {
        var peer: String?
        var room: String?
        var reason: SessionEndReason?
        switch event {
        case .sessionStarted(let p): peer = p
        case .sessionEnded(let p, let why):
            peer = p
            reason = why
        case .peerJoined(let p, let r), .peerLeft(let p, let r):
            peer = p
            room = r
        case .roomEmpty(let r): room = r
        }
        let tenant = Tenant.of(peer ?? room ?? "")
        var json = JSONObjectWriter()
        json.string("id", id)
        json.string("type", event.type)
        json.number("time", time)
        json.optionalString("tenant", tenant.isDefault ? nil : tenant.name)
        json.optionalString("peer", peer.map { String(Tenant.display($0)) })
        json.optionalString("room", room.map { String(Tenant.display($0)) })
        if let reason { json.string("reason", reason.rawValue) }
        return json.finish()
    }
}

/// The `Signal-Signature` header: `t=UNIX,v1=HEX`, where HEX is HMAC-SHA256 with the webhook secret over
/// `"UNIX.BODY"` (the timestamp, a dot, the exact body bytes), as payment providers sign their webhooks.
/// A receiver recomputes it, compares in constant time, and refuses a timestamp too far from its clock
/// (replays).
public enum WebhookSignature {
    public static func header(body: ByteBuffer, secret: [UInt8], timestamp: Int) -> String {
        "t=\(timestamp),v1=" + hex(body: body, secret: secret, timestamp: timestamp)
    }

    /// The hex digest alone.
    public static func hex(body: ByteBuffer, secret: [UInt8], timestamp: Int) -> String {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        mac.update(data: Array("\(timestamp).".utf8))
        mac.update(data: Array(body.readableBytesView))
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in mac.finalize() {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// When a failed webhook is tried again: exponential backoff (`base`, doubling per attempt, at most `cap`),
/// with "full jitter" (a random point of the delay, given by the caller), so receivers coming back up are
/// not hit by every event at once.
public struct WebhookBackoff: Sendable, Equatable {
    /// Delay before the second attempt (before jitter).
    public var base: Duration = .milliseconds(500)
    /// Longest delay.
    public var cap: Duration = .seconds(30)
    /// Attempts per event, the first included; then it counts as failed.
    public var maxAttempts = 8

    public init() {}

    /// The delay after failed attempt `attempt` (1-based), scaled by `jitter` in [0, 1]: half the delay
    /// is fixed, half random, so a retry never comes at once.
    public func delay(after attempt: Int, jitter: Double) -> Duration {
        let doubling = base * (1 << min(max(0, attempt - 1), 20))
        let full = min(cap, doubling)
        return full / 2 + full / 2 * min(1, max(0, jitter))
    }
}

/// The events waiting for one receiver: first in, first out, bounded; at the bound the oldest is dropped
/// (the newest events matter most to an app that catches up), and the caller counts it.
public struct WebhookQueue: Sendable {
    public let capacity: Int
    private var items = CircularBuffer<WebhookEvent>()

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    public var count: Int { items.count }

    /// Appends `event`; returns the event dropped to make room, if any.
    public mutating func push(_ event: WebhookEvent) -> WebhookEvent? {
        var dropped: WebhookEvent?
        if items.count >= capacity { dropped = items.removeFirst() }
        items.append(event)
        return dropped
    }

    public mutating func pop() -> WebhookEvent? {
        items.popFirst()
    }
}

extension JSONObjectWriter {
    /// A string, or `null`.
    mutating func optionalString(_ name: String, _ value: String?) {
        if let value {
            string(name, value)
        } else {
            rawLiteral(name, "null")
        }
    }
}
