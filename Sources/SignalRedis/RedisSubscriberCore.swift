import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The pub/sub side of ``RedisConnectionCore``: keeps the set of channels and patterns the caller wants,
/// subscribes to all of them on every (re)connect, matches confirmations to waiting calls by name, and
/// delivers messages. Confined to `loop` like its superclass.
final class RedisSubscriberCore: RedisConnectionCore {
    enum Kind {
        case channel
        case pattern
        /// A sharded channel (Redis 7 `SSUBSCRIBE`): served by the primary of its name's slot.
        case shard

        var subscribe: String {
            switch self {
            case .channel: return "subscribe"
            case .pattern: return "psubscribe"
            case .shard: return "ssubscribe"
            }
        }
        var unsubscribe: String {
            switch self {
            case .channel: return "unsubscribe"
            case .pattern: return "punsubscribe"
            case .shard: return "sunsubscribe"
            }
        }
    }

    private struct Waiter {
        /// The confirmation that answers it: `subscribe`, `psubscribe`, `unsubscribe` or `punsubscribe`.
        var confirmation: String
        var remaining: Set<String>
        var promise: EventLoopPromise<Void>
        var timer: Scheduled<Void>?
    }

    private let continuation: AsyncStream<RedisPubSubEvent>.Continuation
    /// What the caller wants, kept across reconnects.
    private var channels: Set<String> = []
    private var patterns: Set<String> = []
    private var shardChannels: Set<String> = []
    /// What this connection has asked the server for.
    private var sentChannels: Set<String> = []
    private var sentPatterns: Set<String> = []
    private var sentShardChannels: Set<String> = []
    private var waiters: [Int: Waiter] = [:]
    private var nextWaiterID = 0
    /// Messages that arrive during a handshake wait here, so that `.reconnected` comes first.
    private var handshaking = false
    private var heldMessages: [RedisPubSubMessage] = []

    init(
        loop: any EventLoop,
        configuration: RedisConfiguration,
        logger: Logger,
        status: NIOLockedValueBox<RedisStatus>,
        onStateChange: (@Sendable (RedisConnectionState) -> Void)?,
        continuation: AsyncStream<RedisPubSubEvent>.Continuation
    ) throws(RedisError) {
        self.continuation = continuation
        try super.init(
            loop: loop,
            configuration: configuration,
            logger: logger,
            status: status,
            onStateChange: onStateChange,
            onRoundTrip: nil
        )
    }

    // MARK: - Entry points (on `loop`)

    func subscribe(_ names: [String], kind: Kind, timeout: TimeAmount, promise: EventLoopPromise<Void>) {
        if phase.isShutdown {
            promise.fail(Self.shutdownError)
            return
        }
        switch kind {
        case .channel: channels.formUnion(names)
        case .pattern: patterns.formUnion(names)
        case .shard: shardChannels.formUnion(names)
        }
        addWaiter(kind.subscribe, names, timeout: timeout, promise: promise)
        switch phase {
        case .connected:
            send(kind.subscribe, names, timeout: timeout)
            switch kind {
            case .channel: sentChannels.formUnion(names)
            case .pattern: sentPatterns.formUnion(names)
            case .shard: sentShardChannels.formUnion(names)
            }
        case .idle:
            start()
        case .connecting, .backingOff, .shutdown:
            // The next handshake subscribes to everything wanted.
            break
        }
    }

    func unsubscribe(_ names: [String], kind: Kind, timeout: TimeAmount, promise: EventLoopPromise<Void>) {
        switch kind {
        case .channel: channels.subtract(names)
        case .pattern: patterns.subtract(names)
        case .shard: shardChannels.subtract(names)
        }
        guard case .connected = phase else {
            // Without a connection nothing is subscribed on the server, and the next one will not be.
            promise.succeed()
            return
        }
        switch kind {
        case .channel: sentChannels.subtract(names)
        case .pattern: sentPatterns.subtract(names)
        case .shard: sentShardChannels.subtract(names)
        }
        addWaiter(kind.unsubscribe, names, timeout: timeout, promise: promise)
        send(kind.unsubscribe, names, timeout: timeout)
    }

    // MARK: - Hooks

    override func handshakeCommands(into buffer: inout ByteBuffer) -> Int {
        releaseHeldMessages()
        handshaking = true
        sentChannels = channels
        sentPatterns = patterns
        sentShardChannels = shardChannels
        // A sharded SSUBSCRIBE takes channels of one slot only: one command each.
        for channel in shardChannels.sorted() {
            encoder.encodeCommand(Self.command("SSUBSCRIBE", [channel]), into: &buffer)
        }
        if !channels.isEmpty {
            encoder.encodeCommand(Self.command("SUBSCRIBE", channels.sorted()), into: &buffer)
        }
        if !patterns.isEmpty {
            encoder.encodeCommand(Self.command("PSUBSCRIBE", patterns.sorted()), into: &buffer)
        }
        // Their confirmations are pushes; the handshake's final PING is answered after all of them.
        return 0
    }

    override func makePushHandler() -> ((RESPValue, Bool) -> Bool)? {
        { [weak self] value, expectingReply in
            self?.received(value, expectingReply: expectingReply) ?? false
        }
    }

    override func didConnect(channel: any Channel, reconnected: Bool) {
        handshaking = false
        // The handshake subscribed to `sentChannels` and `sentPatterns` and its final PING was answered
        // after their confirmations: waiters for those are done now, not earlier, so that a subscribe
        // call never returns before the subscriber counts as connected.
        for (id, var waiter) in waiters {
            switch waiter.confirmation {
            case "subscribe": waiter.remaining.subtract(sentChannels)
            case "psubscribe": waiter.remaining.subtract(sentPatterns)
            case "ssubscribe": waiter.remaining.subtract(sentShardChannels)
            default: continue
            }
            self.store(waiter, id)
        }
        if reconnected {
            continuation.yield(.reconnected)
        }
        releaseHeldMessages()
        // Changes made while the handshake was running.
        let timeout = TimeAmount(configuration.commandTimeout)
        let addChannels = channels.subtracting(sentChannels)
        let dropChannels = sentChannels.subtracting(channels)
        let addPatterns = patterns.subtracting(sentPatterns)
        let dropPatterns = sentPatterns.subtracting(patterns)
        let addShards = shardChannels.subtracting(sentShardChannels)
        let dropShards = sentShardChannels.subtracting(shardChannels)
        if !addChannels.isEmpty { send("subscribe", addChannels.sorted(), timeout: timeout) }
        if !dropChannels.isEmpty { send("unsubscribe", dropChannels.sorted(), timeout: timeout) }
        if !addPatterns.isEmpty { send("psubscribe", addPatterns.sorted(), timeout: timeout) }
        if !dropPatterns.isEmpty { send("punsubscribe", dropPatterns.sorted(), timeout: timeout) }
        if !addShards.isEmpty { send("ssubscribe", addShards.sorted(), timeout: timeout) }
        if !dropShards.isEmpty { send("sunsubscribe", dropShards.sorted(), timeout: timeout) }
        sentChannels = channels
        sentPatterns = patterns
        sentShardChannels = shardChannels
    }

    override func didDisconnect(_ error: RedisError) {
        handshaking = false
        releaseHeldMessages()
        sentChannels = []
        sentPatterns = []
        sentShardChannels = []
        continuation.yield(.disconnected(error))
        // Unsubscribes still waiting are done: the server dropped every subscription with the connection.
        for (id, waiter) in waiters where waiter.confirmation.hasSuffix("unsubscribe") {
            waiter.timer?.cancel()
            waiter.promise.succeed()
            waiters[id] = nil
        }
    }

    override func didShutdown() {
        releaseHeldMessages()
        for waiter in waiters.values {
            waiter.timer?.cancel()
            waiter.promise.fail(Self.shutdownError)
        }
        waiters = [:]
        continuation.finish()
    }

    // MARK: - Inbound

    /// Takes messages and (un)subscribe confirmations; leaves other replies (`PING`, handshake) to the
    /// request queue.
    private func received(_ value: RESPValue, expectingReply: Bool) -> Bool {
        guard let parts = value.array, let kind = parts.first?.buffer else {
            if !expectingReply, let message = value.errorMessage {
                // An error no request waits for answers a (P)SUBSCRIBE, e.g. `NOPERM` from an ACL.
                failSubscribeWaiters(.server(message))
                return true
            }
            return false
        }
        switch String(buffer: kind) {
        case "message" where parts.count == 3, "smessage" where parts.count == 3:
            deliver(
                RedisPubSubMessage(
                    channel: parts[1].string ?? "",
                    pattern: nil,
                    payload: parts[2].buffer ?? ByteBuffer()
                )
            )
        case "pmessage" where parts.count == 4:
            deliver(
                RedisPubSubMessage(
                    channel: parts[2].string ?? "",
                    pattern: parts[1].string,
                    payload: parts[3].buffer ?? ByteBuffer()
                )
            )
        case "sunsubscribe" where parts.count == 3:
            guard let name = parts[1].string else { break }
            if shardChannels.contains(name) {
                // Not asked for: the channel's slot moved to another shard (a failover, a resharding), and
                // the server dropped the subscription. The caller subscribes it where it lives now.
                shardChannels.remove(name)
                sentShardChannels.remove(name)
                continuation.yield(.unsubscribedByServer(channel: name))
            } else if !handshaking {
                confirm("sunsubscribe", name)
            }
        case let confirmation where parts.count == 3 && confirmation.hasSuffix("subscribe"):
            // During a handshake, `didConnect` settles the waiters.
            if !handshaking, let name = parts[1].string {
                confirm(confirmation, name)
            }
        default:
            // `pong` in subscribed mode answers the health check or handshake PING.
            return false
        }
        return true
    }

    private func deliver(_ message: RedisPubSubMessage) {
        if handshaking {
            heldMessages.append(message)
        } else {
            continuation.yield(.message(message))
        }
    }

    private func releaseHeldMessages() {
        for message in heldMessages {
            continuation.yield(.message(message))
        }
        heldMessages = []
    }

    // MARK: - Waiters

    private func addWaiter(
        _ confirmation: String,
        _ names: [String],
        timeout: TimeAmount,
        promise: EventLoopPromise<Void>
    ) {
        let id = nextWaiterID
        nextWaiterID += 1
        let timer = loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            guard let waiter = waiters.removeValue(forKey: id) else { return }
            if case .connected = phase {
                waiter.promise.fail(
                    RedisError(
                        .timeout,
                        "Redis at \(configuration.url) did not confirm \(confirmation.uppercased()) "
                            + "\(waiter.remaining.sorted().joined(separator: " ")) within \(Self.format(timeout))"
                    )
                )
            } else {
                waiter.promise.fail(notConnectedError(timeout: timeout))
            }
        }
        waiters[id] = Waiter(confirmation: confirmation, remaining: Set(names), promise: promise, timer: timer)
    }

    /// Keeps a waiter that still expects confirmations, or resolves it when it expects none.
    private func store(_ waiter: Waiter, _ id: Int) {
        if waiter.remaining.isEmpty {
            waiter.timer?.cancel()
            waiter.promise.succeed()
            waiters[id] = nil
        } else {
            waiters[id] = waiter
        }
    }

    private func confirm(_ confirmation: String, _ name: String) {
        for (id, var waiter) in waiters where waiter.confirmation == confirmation {
            guard waiter.remaining.remove(name) != nil else { continue }
            self.store(waiter, id)
        }
    }

    private func failSubscribeWaiters(_ error: RedisError) {
        for (id, waiter) in waiters where !waiter.confirmation.hasSuffix("unsubscribe") {
            waiter.timer?.cancel()
            waiter.promise.fail(error)
            waiters[id] = nil
        }
    }

    private func send(_ command: String, _ names: [String], timeout: TimeAmount) {
        if command.hasPrefix("s"), names.count > 1 {
            // Sharded (un)subscriptions take channels of one slot only: one command each.
            for name in names { send(command, [name], timeout: timeout) }
            return
        }
        var bytes = ByteBufferAllocator().buffer(capacity: 32 + names.count * 24)
        encoder.encodeCommand(Self.command(command.uppercased(), names), into: &bytes)
        write(
            RedisRequest(bytes: bytes, replies: 0, responder: .discard, deadline: loop.now + timeout, timeout: timeout)
        )
    }

    private static func command(_ name: String, _ arguments: [String]) -> [any RESPEncodable] {
        var command: [any RESPEncodable] = [name]
        command.reserveCapacity(1 + arguments.count)
        for argument in arguments { command.append(argument) }
        return command
    }
}
