import NIOConcurrencyHelpers
import NIOCore
import PeerMesh
import Signaling

/// The server API on a mesh node reaches the sessions of every node:
///
/// - a call about one peer (a message, a kick, a session read) is answered from this node's hub when the
///   peer has a session here; otherwise it crosses the mesh to the peer's node as a ``ServerRequest``,
///   routed like a signal by the peer's location records, and that node answers (found or not, the counts,
///   the session). No node hosting the peer (the mesh says so within 2 s): 404; no answer within
///   ``answerTimeout``: 503;
/// - a room message and the listings are asked of every live node (its API peer, ``apiPeer(of:)``), which
///   answers for its own members; the counts are summed and the lists merged. A node that does not answer
///   within ``answerTimeout`` is left out (its members are unreachable anyway).
///
/// Every node hosts its API peer on the mesh (``hostAPIPeer()``) and sends and receives the calls under it.
extension MeshBridge: ServerAPIBackend {
    public func publish(_ prefix: ByteBuffer, toPeer peer: String) async throws(APIBackendError) -> APIPublishCount? {
        if let count = try await hub.publish(prefix, toPeer: peer) { return count }
        guard let (answer, _) = try await self.askPeer(.messagePeer, peer, prefix: Array(buffer: prefix)) else {
            return nil
        }
        return APIPublishCount(delivered: Int(answer.delivered), queued: Int(answer.queued))
    }

    public func publish(_ prefix: ByteBuffer, toRoom room: String) async throws(APIBackendError) -> APIPublishCount? {
        let local = try await hub.publish(prefix, toRoom: room)
        let answers = await self.askNodes(.messageRoom, name: room, prefix: Array(buffer: prefix)).filter(\.found)
        guard local != nil || !answers.isEmpty else { return nil }
        return answers.reduce(local ?? APIPublishCount()) { count, answer in
            count + APIPublishCount(delivered: Int(answer.delivered), queued: Int(answer.queued))
        }
    }

    public func listRooms() async throws(APIBackendError) -> [APIRoomSummary] {
        var counts: [String: Int] = [:]
        for summary in try await hub.listRooms() { counts[summary.room, default: 0] += summary.members }
        for answer in await self.askNodes(.listRooms, name: nil) {
            for entry in answer.entries { counts[entry.name, default: 0] += Int(entry.count) }
        }
        return counts.map { APIRoomSummary(room: $0.key, members: $0.value) }.sorted { $0.room < $1.room }
    }

    /// This node's members first (in the order they joined), then each other node's.
    public func members(ofRoom room: String) async throws(APIBackendError) -> [APIRoomMember]? {
        let local = try await hub.members(ofRoom: room)
        let answers = await self.askNodes(.members, name: room).filter(\.found)
        guard local != nil || !answers.isEmpty else { return nil }
        return answers.reduce(into: local ?? []) { members, answer in
            members += answer.entries.map { APIRoomMember(peer: $0.name, meta: $0.meta.map { ByteBuffer(bytes: $0) }) }
        }
    }

    /// The session's `node` is the id (as the mesh logs it) of the node holding it.
    public func session(ofPeer peer: String) async throws(APIBackendError) -> APIPeerSession? {
        if var session = try await hub.session(ofPeer: peer) {
            session.node = runtime.id.description
            return session
        }
        guard let answer = try await self.askPeer(.session, peer), let node = answer.node else { return nil }
        return APIPeerSession(
            peer: peer,
            connected: answer.answer.connected,
            rooms: answer.answer.entries.map(\.name),
            node: node
        )
    }

    public func kick(_ peer: String) async throws(APIBackendError) -> Bool {
        let kicked = try await hub.kick(peer)
        if kicked {
            self.forgetIfEnded(peer)
            return true
        }
        return try await self.askPeer(.kick, peer) != nil
    }
}

/// Asking other nodes.
extension MeshBridge {
    static let apiPeerPrefix = "@api."

    /// The mesh name of `node`'s API peer: `@api.` and the first 16 bytes of its id in hex. `@` is outside
    /// the peer id charset, so no client can take it; the mesh checks that only `node` sends under it
    /// (``RelayValidator/validateServer(_:from:origin:to:addressed:localAPIPeer:)``).
    public static func apiPeer(of node: MeshKey) -> String {
        apiPeerPrefix + node.bytes.prefix(16).map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
    }

    /// Hosts this node's API peer on the mesh, so that other nodes' API calls and answers reach it
    /// (``run()`` calls it once the mesh node runs).
    public func hostAPIPeer() { runtime.connect(peer: apiPeer) }

    /// A call the API made on this node, waiting for other nodes' answers.
    struct APICall {
        /// The API peers that still owe an answer (a peer call: the peer, answered by whichever node holds it).
        var waiting: Set<String>
        var answers: [(sender: String, answer: ServerAnswer)] = []
        var keys: [SignalKey] = []
        var deadline: UInt64
        var timedOut = false
        var continuation: CheckedContinuation<APICall, Never>?
    }

    /// A call about `peer`, which has no session here: its node's answer (nil: no node holds it).
    func askPeer(_ operation: ServerRequest.Operation, _ peer: String, prefix: [UInt8] = [])
        async throws(APIBackendError) -> (answer: ServerAnswer, node: String?)?
    {
        let call = await self.ask(
            ServerRequest(operation: operation, ticket: 0, name: peer, prefix: prefix),
            of: [peer]
        )
        guard let (sender, answer) = call.answers.first else {
            if call.timedOut { throw .unavailable }
            return nil
        }
        guard answer.found else { return nil }
        return (answer, String(sender.dropFirst(Self.apiPeerPrefix.count).prefix(12)))
    }

    /// A call asked of every other live node: their answers, in the order of their ids.
    func askNodes(_ operation: ServerRequest.Operation, name: String?, prefix: [UInt8] = []) async -> [ServerAnswer] {
        let nodes = runtime.liveMembers.filter { $0 != runtime.id }.map(Self.apiPeer(of:))
        let call = await self.ask(ServerRequest(operation: operation, ticket: 0, name: name, prefix: prefix), of: nodes)
        return call.answers.sorted { $0.sender < $1.sender }.map(\.answer)
    }

    /// Sends `request` (under a fresh random ticket) to each of `targets` and waits until each answered,
    /// was found unreachable, or ``answerTimeout`` passed.
    private func ask(_ request: ServerRequest, of targets: [String]) async -> APICall {
        let deadline =
            NIODeadline.now().uptimeNanoseconds + UInt64(answerTimeout.components.seconds) * 1_000_000_000
            + UInt64(answerTimeout.components.attoseconds / 1_000_000_000)
        guard !targets.isEmpty else { return APICall(waiting: [], deadline: deadline) }
        return await withCheckedContinuation { continuation in
            var request = request
            request.ticket = state.withLockedValue { state in
                var ticket = UInt64.random(in: 1...UInt64.max)
                while state.apiCalls[ticket] != nil { ticket = UInt64.random(in: 1...UInt64.max) }
                state.apiCalls[ticket] = APICall(
                    waiting: Set(targets),
                    deadline: deadline,
                    continuation: continuation
                )
                return ticket
            }
            let ticket = request.ticket
            for target in targets {
                if request.isAboutPeer { request.name = target }
                let sent = runtime.send(
                    from: apiPeer,
                    to: .peer(target),
                    payload: BridgePayload.server(request).encoded
                ) {
                    key in
                    state.withLockedValue { state in
                        guard state.apiCalls[ticket] != nil else { return }
                        state.apiCalls[ticket]!.keys.append(key)
                        state.apiKeys[key] = (ticket, target)
                    }
                }
                if sent == nil { self.settle(ticket) { $0.waiting.remove(target) } }
            }
        }
    }

    /// Updates a waiting call; resumes its caller once nothing more is owed.
    private func settle(_ ticket: UInt64, _ update: (inout APICall) -> Void) {
        let done: APICall? = state.withLockedValue { state in
            guard state.apiCalls[ticket] != nil else { return nil }
            update(&state.apiCalls[ticket]!)
            guard state.apiCalls[ticket]!.waiting.isEmpty || state.apiCalls[ticket]!.timedOut else { return nil }
            let call = state.apiCalls.removeValue(forKey: ticket)!
            for key in call.keys { state.apiKeys[key] = nil }
            return call
        }
        if let done { done.continuation?.resume(returning: done) }
    }

    /// Another node answered a call of this node's API.
    func receiveAPIAnswer(_ answer: ServerAnswer, from sender: String) {
        self.settle(answer.ticket) { call in
            // A peer call is answered by whichever node holds the peer; a node's call by that node, once.
            let owed =
                call.waiting.count == 1 && !call.waiting.first!.hasPrefix(Self.apiPeerPrefix)
                ? call.waiting.first : (call.waiting.contains(sender) ? sender : nil)
            guard let owed else { return }
            call.waiting.remove(owed)
            call.answers.append((sender, answer))
        }
    }

    /// The mesh found no node hosting the target of a call.
    func apiUnavailable(_ key: SignalKey) {
        guard let (ticket, target) = state.withLockedValue({ $0.apiKeys.removeValue(forKey: key) }) else { return }
        self.settle(ticket) { $0.waiting.remove(target) }
    }

    /// Calls whose answers are overdue end with the answers they have.
    func sweepAPICalls(now: UInt64) {
        let overdue = state.withLockedValue { $0.apiCalls.filter { $0.value.deadline <= now }.map(\.key) }
        for ticket in overdue { self.settle(ticket) { $0.timedOut = true } }
    }
}
