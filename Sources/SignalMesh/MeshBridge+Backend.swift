import PeerMesh
import Signaling

/// The bridge is a server's backend: `SignalServer(configuration:backend:…)` runs it (``MeshBridge/run()``:
/// the mesh node, the hub's ticks and the bridge's sweeps) and reports its readiness and metrics.
extension MeshBridge: SignalBackend {
    /// Ready once the mesh node runs (it counts itself among the live members from then on).
    public var isReady: Bool { !runtime.liveMembers.isEmpty }

    public func exportMetrics() { hub.exportMetrics() }

    /// This node's sessions' events: its hub's.
    public func setEventSink(_ sink: @escaping HubEventSink) { hub.setEventSink(sink) }
}
