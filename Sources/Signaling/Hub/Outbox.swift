import NIOConcurrencyHelpers
import NIOCore

/// The bounded queue of messages waiting for one connection's event loop.
///
/// The hub appends under its own lock, in the order it decided them, from any thread; the connection's
/// handler takes everything at once on its event loop, writes it and flushes once. Past `limit` bytes
/// the outbox stops taking messages and flags an overflow: the handler then closes the connection with
/// 1013 (slow consumer). Nothing is lost by that: every sequenced message is also in the session's
/// resume buffer.
public final class Outbox: @unchecked Sendable {
    public enum Item: Sendable {
        case text(ByteBuffer)
        case close(CloseCode, reason: String)
    }

    private let lock = NIOLock()
    private var items: [Item] = []
    private var bytes = 0
    private var overflowed = false
    private var wakePending = false
    private let limit: Int
    private let wake: @Sendable () -> Void

    /// - Parameters:
    ///   - limit: bytes the outbox may hold before it overflows.
    ///   - wake: called (from any thread) when the outbox went from empty to non-empty; it must arrange
    ///     for the owner to call ``take()`` on its event loop.
    public init(limit: Int, wake: @escaping @Sendable () -> Void) {
        self.limit = limit
        self.wake = wake
    }

    /// Appends an item; returns true when the owner must be woken (see ``wakeOwner()``).
    public func append(_ item: Item) -> Bool {
        self.lock.withLock {
            if overflowed { return false }
            if case .text(let buffer) = item {
                bytes += buffer.readableBytes
                if bytes > limit {
                    // Overflow always wakes the owner, even when it is waiting for writability.
                    overflowed = true
                    items.removeAll()
                    wakePending = true
                    return true
                }
            }
            items.append(item)
            if wakePending { return false }
            wakePending = true
            return true
        }
    }

    public func wakeOwner() {
        self.wake()
    }

    /// Takes everything queued. `overflowed` means the connection must be closed with 1013.
    public func take() -> (items: [Item], overflowed: Bool) {
        self.lock.withLock {
            wakePending = false
            defer {
                items.removeAll(keepingCapacity: true)
                bytes = 0
            }
            return (items, overflowed)
        }
    }

    /// Takes everything queued by swapping it with `items`, which must be empty: the caller keeps one
    /// array and hands it back after each drain, so a drain allocates nothing. Returns whether the
    /// outbox overflowed (the connection must then be closed with 1013).
    public func take(swapping items: inout [Item]) -> Bool {
        precondition(items.isEmpty, "take(swapping:) needs an empty array")
        return self.lock.withLock {
            wakePending = false
            swap(&self.items, &items)
            bytes = 0
            return overflowed
        }
    }

    /// Whether the outbox overflowed (checked while the socket is not writable).
    public var isOverflowed: Bool {
        self.lock.withLock { overflowed }
    }
}
