import SignalRedis

/// The node's subscription to what scripts publish for its connections: one channel on one Redis
/// (`PREFIX:node:ID`, `SUBSCRIBE`), or in a Redis Cluster one sharded channel per peer whose connection the
/// node holds (`PREFIX:node:ID:{peer}`, `SSUBSCRIBE` on the primary of the peer's slot).
enum ClusterSubscription: Sendable {
    case single(RedisSubscriber)
    case sharded(RedisShardedSubscriber)

    var events: AsyncStream<RedisPubSubEvent> {
        switch self {
        case .single(let subscriber): return subscriber.events
        case .sharded(let subscriber): return subscriber.events
        }
    }

    var isConnected: Bool {
        switch self {
        case .single(let subscriber): return subscriber.isConnected
        case .sharded(let subscriber): return subscriber.isConnected
        }
    }

    func start() {
        switch self {
        case .single(let subscriber): subscriber.start()
        case .sharded(let subscriber): subscriber.start()
        }
    }

    func close() async {
        switch self {
        case .single(let subscriber): await subscriber.close()
        case .sharded(let subscriber): await subscriber.close()
        }
    }
}
