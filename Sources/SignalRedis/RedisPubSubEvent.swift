import NIOCore

/// What a ``RedisSubscriber`` delivers, in order.
public enum RedisPubSubEvent: Sendable, Hashable {
    /// A message published to a subscribed channel or to one matching a subscribed pattern.
    case message(RedisPubSubMessage)
    /// The connection was lost. Redis pub/sub keeps no backlog: messages published until
    /// ``reconnected`` comes are not delivered. The subscriber reconnects by itself.
    case disconnected(RedisError)
    /// The connection is back and every subscription that existed when it was lost is active again.
    /// Messages published from now on are delivered; state that other nodes announced during the gap
    /// must be re-read from Redis.
    case reconnected
    /// The server dropped a sharded subscription (``RedisSubscriber/ssubscribe(_:timeout:)``) by itself: the
    /// channel's slot is served by another shard now (a failover or a resharding). The subscriber no longer
    /// wants it; subscribe it again on the node that serves the slot now (``RedisShardedSubscriber`` does).
    case unsubscribedByServer(channel: String)
}

/// One pub/sub message.
public struct RedisPubSubMessage: Sendable, Hashable {
    /// The channel it was published to.
    public var channel: String
    /// The pattern that matched, for messages received through `psubscribe`; nil for `subscribe`.
    public var pattern: String?
    /// The message as published (binary-safe).
    public var payload: ByteBuffer

    public init(channel: String, pattern: String? = nil, payload: ByteBuffer) {
        self.channel = channel
        self.pattern = pattern
        self.payload = payload
    }

    /// The payload as UTF-8 text.
    public var text: String { String(buffer: payload) }
}
