import NIOCore
import Synchronization

/// The bounded queue of messages waiting for one connection's event loop.
///
/// The hub appends under its own lock, in the order it decided them, from any thread; the connection's
/// handler takes everything at once on its event loop, writes it and flushes once. Past `limit` bytes
/// the outbox stops taking messages and flags an overflow: the handler then closes the connection with
/// 1013 (slow consumer). Nothing is lost by that: every sequenced message is also in the session's
/// resume buffer.
public final class Outbox: Sendable {
    /// Who is woken when the outbox goes from empty to non-empty.
    private enum Wake: Sendable {
        case closure(@Sendable () -> Void)
        /// A connection's handler, called on its event loop: kept in the outbox itself rather than in a
        /// closure's separately allocated context (one per connection).
        case drainer(NIOLoopBound<any OutboxDrainer>)
    }

    public enum Item: Sendable {
        case text(ByteBuffer)
        /// An `ack` (``ServerMessage/ack(id:queued:)``), written by the connection straight into its frames.
        case ack(ServerMessage.Ack)
        case close(CloseCode, reason: String)
    }

    private struct State {
        var items: [Item] = []
        var bytes = 0
        var overflowed = false
        var wakePending = false
    }

    /// Kept inline (a futex word, not a separately allocated lock): one outbox per connection.
    private let state = Mutex(State())
    private let limit: Int
    private let wake: Wake

    /// - Parameters:
    ///   - limit: bytes the outbox may hold before it overflows.
    ///   - wake: called (from any thread) when the outbox went from empty to non-empty; it must arrange
    ///     for the owner to call ``take()`` on its event loop.
    public init(limit: Int, wake: @escaping @Sendable () -> Void) {
        self.limit = limit
        self.wake = .closure(wake)
    }

    /// An outbox whose owner is woken by ``OutboxDrainer/drainOutboxAfterWake()`` on `eventLoop`.
    ///
    /// The outbox holds `drainer` strongly: the owner lets go of the outbox when it is done with it.
    init(limit: Int, drainer: any OutboxDrainer, on eventLoop: any EventLoop) {
        self.limit = limit
        self.wake = .drainer(NIOLoopBound(drainer, eventLoop: eventLoop))
    }

    /// Runs `body` on the owner's event loop once the owner has handled what it is doing now (for a
    /// connection opening, that is writing its `welcome`); at once for an outbox woken by a closure.
    public func afterOwnerDrains(_ body: @escaping @Sendable () -> Void) {
        switch wake {
        case .closure: body()
        case .drainer(let drainer): drainer.eventLoop.execute(body)
        }
    }

    /// Appends an item; returns true when the owner must be woken (see ``wakeOwner()``).
    public func append(_ item: Item) -> Bool {
        let limit = self.limit
        return self.state.withLock { state in
            if state.overflowed { return false }
            if let size = item.size {
                state.bytes += size
                if state.bytes > limit {
                    // Overflow always wakes the owner, even when it is waiting for writability.
                    state.overflowed = true
                    state.items.removeAll()
                    state.wakePending = true
                    return true
                }
            }
            state.items.append(item)
            if state.wakePending { return false }
            state.wakePending = true
            return true
        }
    }

    public func wakeOwner() {
        switch wake {
        case .closure(let wake):
            wake()
        case .drainer(let drainer):
            drainer.eventLoop.execute { drainer.value.drainOutboxAfterWake() }
        }
    }

    /// Takes everything queued. `overflowed` means the connection must be closed with 1013.
    public func take() -> (items: [Item], overflowed: Bool) {
        self.state.withLock { state in
            state.wakePending = false
            defer {
                state.items.removeAll(keepingCapacity: true)
                state.bytes = 0
            }
            return (state.items, state.overflowed)
        }
    }

    /// Takes everything queued by swapping it with `items`, which must be empty: the caller keeps one
    /// array and hands it back after each drain, so a drain allocates nothing. Returns whether the
    /// outbox overflowed (the connection must then be closed with 1013).
    public func take(swapping items: inout [Item]) -> Bool {
        precondition(items.isEmpty, "take(swapping:) needs an empty array")
        return self.state.withLock { state in
            state.wakePending = false
            swap(&state.items, &items)
            state.bytes = 0
            return state.overflowed
        }
    }

    /// Whether the outbox overflowed (checked while the socket is not writable).
    public var isOverflowed: Bool {
        self.state.withLock { $0.overflowed }
    }
}

/// The owner of an ``Outbox`` that is woken on its event loop (a connection's handler).
protocol OutboxDrainer: AnyObject {
    /// Called on the owner's event loop after the outbox went from empty to non-empty.
    func drainOutboxAfterWake()
}

extension Outbox.Item {
    /// The bytes of the message, counted against the outbox's limit (nil for a close).
    var size: Int? {
        switch self {
        case .text(let buffer): return buffer.readableBytes
        case .ack(let ack): return ack.length
        case .close: return nil
        }
    }
}
