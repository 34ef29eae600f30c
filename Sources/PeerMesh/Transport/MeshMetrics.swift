import CoreMetrics
import Metrics
import NIOConcurrencyHelpers

/// A node's mesh figures as swift-metrics, created from an injected factory (the CLI passes the
/// server's Prometheus registry, so they appear on `/metrics` beside the hub's):
///
/// - `signal_mesh_messages_sent_total{kind}`, `signal_mesh_sent_bytes_total{kind}` and the
///   `received` pair: link traffic by kind — `signal` (signal hops, retries included), `hop_ack` (hop
///   acks and `undeliverable` notices), `control` (membership, location stores and their acks). Bytes
///   are frames as written: the 4-byte length and the message, without TCP/IP or TLS.
/// - `signal_mesh_members_live` and `signal_mesh_members_suspect`: this node's view of the mesh
///   (itself included in the live count);
/// - `signal_mesh_member_live{node}` / `signal_mesh_member_suspect{node}` (1 or 0), one pair per member
///   ever seen, `node` being the first 12 hex digits of its id: when this node declared which member
///   dead, for failure-detection times measured from outside (the process harness polls them);
/// - `signal_mesh_delivered_total{hops}`: signals this node delivered to local peers, by inter-node
///   hops taken (1 or 2; signals between peers on the same node never enter the mesh).
/// - `signal_mesh_links_refused_total{reason}`: connections to the mesh port closed before they
///   authenticated — `capacity` / `per_ip` (too many handshakes at once, in all or from one address),
///   `frame_too_large` (a frame longer than a handshake frame), `handshake` (no proof of the mesh secret
///   and node key), `timeout`, `banned` (a node serving a ban for invalid data).
/// - `signal_mesh_invalid_messages_total{reason}`: messages from authenticated nodes that were refused
///   (``MeshOffence/Reason``: `forged_signal`, `sender_not_hosted`, `member_update`, …), and
///   `signal_mesh_links_dropped_total{reason}`: links closed for one (the node is then refused for the
///   ban duration).
public final class MeshMetrics: Sendable {
    /// How link traffic is counted.
    public enum Kind: String, CaseIterable, Sendable {
        case signal
        case hopAck = "hop_ack"
        case control

        init(_ message: MeshMessage) {
            switch message {
            case .signal: self = .signal
            case .hopAck, .undeliverable: self = .hopAck
            case .membership, .store, .storeAck: self = .control
            }
        }
    }

    struct Traffic: Sendable {
        let messages: Counter
        let bytes: Counter
    }

    private let factory: any MetricsFactory
    private let sent: [Kind: Traffic]
    private let received: [Kind: Traffic]
    private let liveMembers: Gauge
    private let suspects: Gauge
    private let delivered: [Counter]
    private let members = NIOLockedValueBox<[MeshKey: (live: Gauge, suspect: Gauge)]>([:])
    private let refused: [String: Counter]
    private let invalid: [String: Counter]
    private let dropped: [String: Counter]

    /// Most per-member gauge pairs kept: beyond it, those of members neither live nor suspected go (a
    /// hostile member gossiping made-up nodes cannot grow the metrics without bound).
    static let maxMemberGauges = 1024

    public init(factory: any MetricsFactory) {
        self.factory = factory
        func traffic(_ direction: String, _ kind: Kind) -> Traffic {
            Traffic(
                messages: Counter(
                    label: "signal_mesh_messages_\(direction)_total",
                    dimensions: [("kind", kind.rawValue)],
                    factory: factory
                ),
                bytes: Counter(
                    label: "signal_mesh_\(direction)_bytes_total",
                    dimensions: [("kind", kind.rawValue)],
                    factory: factory
                )
            )
        }
        sent = Dictionary(uniqueKeysWithValues: Kind.allCases.map { ($0, traffic("sent", $0)) })
        received = Dictionary(uniqueKeysWithValues: Kind.allCases.map { ($0, traffic("received", $0)) })
        liveMembers = Gauge(label: "signal_mesh_members_live", factory: factory)
        suspects = Gauge(label: "signal_mesh_members_suspect", factory: factory)
        delivered = (0...3).map {
            Counter(label: "signal_mesh_delivered_total", dimensions: [("hops", String($0))], factory: factory)
        }
        func counters(_ label: String, _ reasons: [String]) -> [String: Counter] {
            Dictionary(
                uniqueKeysWithValues: reasons.map {
                    ($0, Counter(label: label, dimensions: [("reason", $0)], factory: factory))
                }
            )
        }
        refused = counters("signal_mesh_links_refused_total", MeshTransport.Refusal.allCases.map(\.rawValue))
        let offences = MeshOffence.Reason.allCases.map(\.rawValue)
        invalid = counters("signal_mesh_invalid_messages_total", offences)
        dropped = counters("signal_mesh_links_dropped_total", offences)
    }

    func linkRefused(_ reason: String) {
        refused[reason]?.increment()
    }

    func invalidMessage(_ reason: String) {
        invalid[reason]?.increment()
    }

    func linkDropped(_ reason: String) {
        dropped[reason]?.increment()
    }

    func sent(_ message: MeshMessage, bytes: Int) {
        let traffic = sent[Kind(message)]!
        traffic.messages.increment()
        traffic.bytes.increment(by: bytes)
    }

    func received(_ message: MeshMessage, bytes: Int) {
        let traffic = received[Kind(message)]!
        traffic.messages.increment()
        traffic.bytes.increment(by: bytes)
    }

    func delivered(hops: UInt8) {
        delivered[min(Int(hops), delivered.count - 1)].increment()
    }

    /// The member list changed: `live` and `suspects` as the node now sees them.
    func members(live: [MeshKey], suspects suspected: Set<MeshKey>, self me: MeshKey) {
        liveMembers.record(live.count)
        suspects.record(suspected.count)
        let liveSet = Set(live)
        members.withLockedValue { gauges in
            if gauges.count >= Self.maxMemberGauges {
                for (key, pair) in gauges where !liveSet.contains(key) && !suspected.contains(key) {
                    pair.live.destroy()
                    pair.suspect.destroy()
                    gauges[key] = nil
                }
            }
            for key in liveSet.union(suspected).union(gauges.keys) where key != me {
                if gauges[key] == nil, gauges.count >= Self.maxMemberGauges { continue }
                let pair =
                    gauges[key]
                    ?? (
                        Gauge(
                            label: "signal_mesh_member_live",
                            dimensions: [("node", key.description)],
                            factory: factory
                        ),
                        Gauge(
                            label: "signal_mesh_member_suspect",
                            dimensions: [("node", key.description)],
                            factory: factory
                        )
                    )
                gauges[key] = pair
                pair.live.record(liveSet.contains(key) ? 1 : 0)
                pair.suspect.record(suspected.contains(key) ? 1 : 0)
            }
        }
    }
}
