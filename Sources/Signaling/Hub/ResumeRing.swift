/// A first-in, first-out ring for a session's resume buffer: appended at the back, confirmed or pushed
/// out at the front, read in order on a resume.
///
/// Unlike NIO's `CircularBuffer`, an empty ring holds no storage (most sessions are idle), the storage
/// grows 2, 4, 8… as needed, an entry leaves by moving out (no copy, no retain), and the storage is let
/// go whenever the ring is empty again (a client confirms what it received every second or so), so an
/// idle session's buffer costs nothing.
struct ResumeRing<Element> {
    private var storage: ContiguousArray<Element?> = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    var capacity: Int { storage.count }

    var first: Element? { count == 0 ? nil : storage[head] }

    /// Logical positions, oldest first.
    var indices: Range<Int> { 0..<count }

    subscript(position: Int) -> Element {
        get {
            precondition(position >= 0 && position < count, "ResumeRing index out of range")
            return storage[self.slot(position)]!
        }
        _modify {
            precondition(position >= 0 && position < count, "ResumeRing index out of range")
            let slot = self.slot(position)
            var element = storage[slot].take()!
            defer { storage[slot] = element }
            yield &element
        }
    }

    mutating func append(_ element: Element) {
        if count == storage.count { self.grow() }
        storage[self.slot(count)] = element
        count += 1
    }

    /// Removes and returns the oldest element; the ring must not be empty.
    @discardableResult
    mutating func removeFirst() -> Element {
        precondition(count > 0, "removeFirst on an empty ResumeRing")
        let element = storage[head].take()!
        head = head + 1 == storage.count ? 0 : head + 1
        count -= 1
        if count == 0 {
            head = 0
            storage = []
        }
        return element
    }

    private func slot(_ position: Int) -> Int {
        let slot = head + position
        return slot < storage.count ? slot : slot - storage.count
    }

    private mutating func grow() {
        var grown = ContiguousArray<Element?>()
        grown.reserveCapacity(Swift.max(2, storage.count * 2))
        for position in 0..<count { grown.append(storage[self.slot(position)].take()) }
        grown.append(contentsOf: repeatElement(nil, count: grown.capacity - count))
        storage = grown
        head = 0
    }
}

extension ResumeRing: Sequence {
    struct Iterator: IteratorProtocol {
        let ring: ResumeRing
        var position = 0

        mutating func next() -> Element? {
            guard position < ring.count else { return nil }
            defer { position += 1 }
            return ring[position]
        }
    }

    func makeIterator() -> Iterator { Iterator(ring: self) }
}

extension ResumeRing: Sendable where Element: Sendable {}
