import NIOConcurrencyHelpers
import NIOCore

/// The in-memory hub answers the server API from its state, each call one step under its lock.
extension Hub: ServerAPIBackend {
    public func publish(_ prefix: ByteBuffer, toPeer peer: String) async throws(APIBackendError) -> APIPublishCount? {
        self.apply { state, actions in state.publish(prefix, toPeer: peer, actions: &actions) }
    }

    public func publish(_ prefix: ByteBuffer, toRoom room: String) async throws(APIBackendError) -> APIPublishCount? {
        self.apply { state, actions in state.publish(prefix, toRoom: room, actions: &actions) }
    }

    public func listRooms() async throws(APIBackendError) -> [APIRoomSummary] {
        locked.withLockedValue { $0.state.roomSummaries() }
    }

    public func members(ofRoom room: String) async throws(APIBackendError) -> [APIRoomMember]? {
        locked.withLockedValue { $0.state.roomMembers(room) }
    }

    public func session(ofPeer peer: String) async throws(APIBackendError) -> APIPeerSession? {
        locked.withLockedValue { $0.state.sessionInfo(peer) }
    }

    public func kick(_ peer: String) async throws(APIBackendError) -> Bool {
        self.apply { state, actions in state.kick(peer, actions: &actions) }
    }

    /// Runs `body` on the state under the lock and carries out the actions it decided (as every event does).
    func apply<Result>(_ body: (inout HubState, inout [HubAction]) -> Result) -> Result {
        var actions: [HubAction] = []
        let (result, wakes) = locked.withLockedValue { locked in
            let result = body(&locked.state, &actions)
            locked.flushEvents()
            return (result, Self.dispatch(actions, outboxes: locked.outboxes, skipping: nil))
        }
        wakes.wakeAll()
        return result
    }
}
