import NIOCore
import Signaling

/// One sender's requests that crossed the mesh, remembered by `id`, so that a request resent after a
/// resume (on a later connection of the same session, as a resuming client does with the requests it got
/// no answer for) is answered again — or waits for the answer still on its way — instead of being
/// delivered twice: what the single hub does with the answers it remembers
/// (``HubLimits/rememberedRequests``). The same `id` again on the same connection is a new request, as on
/// one hub. Bounded: the oldest ids are forgotten first.
struct RememberedRequests {
    enum Entry: Equatable {
        /// Sent; the recipient's node has not answered yet.
        case inFlight(ticket: UInt64)
        /// The answer the sender was given (`ack` or `error`).
        case answered(ByteBuffer)
    }

    struct Record: Equatable {
        var connection: ConnectionID
        var entry: Entry
    }

    let limit: Int
    private(set) var records: [String: Record] = [:]
    private var order: [String] = []

    init(limit: Int) {
        self.limit = limit
    }

    /// The record of request `id` if it was sent from another connection (nil: send it as a new request).
    func earlier(_ id: String, on connection: ConnectionID) -> Record? {
        guard let record = records[id], record.connection != connection else { return nil }
        return record
    }

    /// Request `id` went into the mesh from `connection` as `ticket`.
    mutating func sent(_ id: String, ticket: UInt64, on connection: ConnectionID) {
        guard limit > 0 else { return }
        if records.updateValue(Record(connection: connection, entry: .inFlight(ticket: ticket)), forKey: id) == nil {
            order.append(id)
            if order.count > limit { records[order.removeFirst()] = nil }
        }
    }

    /// The answer to `ticket` (request `id`) was given: remembered for a resend.
    mutating func answered(_ id: String, ticket: UInt64, with message: ByteBuffer) {
        guard records[id]?.entry == .inFlight(ticket: ticket) else { return }
        records[id]!.entry = .answered(message)
    }

    /// The request was resent on `connection`: its answer goes there now.
    mutating func moved(_ id: String, to connection: ConnectionID) {
        records[id]?.connection = connection
    }
}
