import NIOCore
import Signaling

/// The server API on a mesh node acts on the sessions this node holds (its hub's): the mesh has no
/// central view of sessions and rooms, and a node relays only for the peers it hosts. A message to a room
/// reaches the room's members on this node; a peer on another node is "not found" here (Docs/protocol.md,
/// "Several nodes"). Ending a session also tells the other nodes' members of its rooms (`peer-left`) and
/// takes the peer off the mesh, as when its client closes.
extension MeshBridge: ServerAPIBackend {
    public func publish(_ prefix: ByteBuffer, toPeer peer: String) async throws(APIBackendError) -> APIPublishCount? {
        try await hub.publish(prefix, toPeer: peer)
    }

    public func publish(_ prefix: ByteBuffer, toRoom room: String) async throws(APIBackendError) -> APIPublishCount? {
        try await hub.publish(prefix, toRoom: room)
    }

    public func listRooms() async throws(APIBackendError) -> [APIRoomSummary] {
        try await hub.listRooms()
    }

    public func members(ofRoom room: String) async throws(APIBackendError) -> [APIRoomMember]? {
        try await hub.members(ofRoom: room)
    }

    public func session(ofPeer peer: String) async throws(APIBackendError) -> APIPeerSession? {
        try await hub.session(ofPeer: peer)
    }

    public func kick(_ peer: String) async throws(APIBackendError) -> Bool {
        let kicked = try await hub.kick(peer)
        if kicked { self.forgetIfEnded(peer) }
        return kicked
    }
}
