"""The mesh port under attack (issue 18, items 2 and 3): a real 3-node mesh (`signal serve --mesh-listen`)
with a bystander pair relaying across two nodes throughout.

- Strangers (no mesh secret): one address opens 150 connections to a node's mesh port, idle or declaring
  1 MiB frames before any handshake. The node holds at most `maxUnauthenticatedLinksPerIP` (8) of them,
  only until the handshake timeout (5 s); a frame longer than a handshake frame (161 bytes) closes the
  link at once; resident memory stays within MAX_RSS_GROWTH (before the fix: ~161 MiB for 150 links).
- A hostile member (it has the mesh secret, so its link authenticates, but not the other nodes' keys):
  gossips the node as suspect at incarnation 0xFFFFFFFF (unsigned, and under its own signature) and
  itself at 0xFFFFFFFF (this crashed the node before); then relays a signal "from" the bystander, a peer
  it does not host. The node stays up, refuses the updates, drops the signal before any client sees it,
  closes the link and counts it in /metrics.

Defaults and figures: Docs/security.md, rows 16-18.
"""

import hashlib
import hmac
import os
import socket
import struct
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from e2e_helpers import metric
from rawws import Bystanders
from test_mesh import SECRET, membership_events, start_mesh, wait_converged

MAX_ROUND_TRIP = 2.0  # seconds, a bystander offer -> answer round trip across two nodes during an attack
MAX_GAP = 3.0  # seconds without a completed bystander round trip
MAX_RSS_GROWTH = 16 * 1024 * 1024  # resident memory growth of the attacked node over the whole flood
CONNECTIONS = 150
PER_IP = 8  # MeshLinkLimits.maxUnauthenticatedLinksPerIP
HANDSHAKE_FRAME = 161  # LinkFrame.maxEncodedSize


def mib(n):
    return f"{n / (1024 * 1024):.1f} MiB"


class MeshBystanders(Bystanders):
    """Bystanders with `a` on one node and `b` on another: every round trip crosses the mesh twice."""

    def __init__(self, hub_a, hub_b, room="lobby", interval=0.02):
        super().__init__(_Deferred(hub_a, hub_b), room=room, interval=interval)


class _Deferred:
    """A `hub` for Bystanders whose first connection goes to hub_a and second to hub_b."""

    def __init__(self, hub_a, hub_b):
        self.ports = [hub_a.port, hub_b.port]

    @property
    def port(self):
        return self.ports.pop(0)


def wait_closed(sock, timeout):
    """Seconds until the server closed `sock` (EOF or reset), or None if it stayed open."""
    sock.settimeout(0.05)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - started
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def open_many(port, count, first_bytes=b"", source="127.0.0.1"):
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        if first_bytes:
            try:
                s.sendall(first_bytes)
            except OSError:
                pass
        socks.append(s)
    return socks


def mesh_port_of(hub):
    return int(hub.args[hub.args.index("--mesh-listen") + 1].rsplit(":", 1)[1])


# The strangers come from their own loopback addresses (127.0.0.7 and up), never the members' 127.0.0.1:
# the per-IP cap holds a member's redial back as long as strangers from its address fill that address's
# handshake slots (up to the 5 s handshake timeout), which is the cap's documented cost for nodes behind a
# shared address, not what this test measures.
IDLE_SOURCE = "127.0.0.7"


def test_strangers_cannot_hold_or_fill_the_mesh_port_and_bystanders_keep_relaying(start_hub, tmp_path):
    info = ["--log-level", "info"]
    hubs, ports = start_mesh(start_hub, tmp_path, 3, info, info, info)
    wait_converged(hubs)
    victim = hubs[1]
    with MeshBystanders(hubs[0], hubs[1]) as bystanders:
        time.sleep(1.0)
        before = victim.rss_bytes()
        peak = before

        # 1. 150 idle connections from one address: 8 wait for their handshake, the rest are closed at once.
        idle = open_many(ports[1], CONNECTIONS, source=IDLE_SOURCE)
        closed_at_once = sum(1 for s in idle if wait_closed(s, 0.2) is not None)
        refused_per_ip = metric(victim, "signal_mesh_links_refused_total", reason="per_ip")
        print(f"idle: {closed_at_once} of {CONNECTIONS} closed at once; per_ip refusals {refused_per_ip:.0f}")
        assert closed_at_once >= CONNECTIONS - PER_IP
        assert refused_per_ip >= CONNECTIONS - PER_IP
        peak = max(peak, victim.rss_bytes())

        # 2. Five rounds of 150 connections that each declare a 1 MiB frame and send 64 KiB of it, each
        # round from another loopback address (the first address's 8 slots are still held by step 1).
        oversized = struct.pack(">I", 1 << 20) + os.urandom(64 * 1024)
        for round in range(5):
            flood = open_many(ports[1], CONNECTIONS, oversized, source=f"127.0.0.{8 + round}")
            for s in flood:
                assert wait_closed(s, 2.0) is not None, "a link declaring 1 MiB before authenticating stayed open"
                s.close()
            peak = max(peak, victim.rss_bytes())
        too_large = metric(victim, "signal_mesh_links_refused_total", reason="frame_too_large")
        print(f"frame_too_large refusals {too_large:.0f}")
        assert too_large >= 5  # at least one per round; the rest are refused even earlier, by the per-IP cap

        # 3. The idle ones that were let in are closed at the handshake timeout (5 s) and give their slots back.
        left = [s for s in idle if s.fileno() != -1]
        for s in left:
            assert wait_closed(s, 8.0) is not None, "an unauthenticated link outlived the handshake timeout"
            s.close()
        assert metric(victim, "signal_mesh_links_refused_total", reason="timeout") >= 1

        after = victim.rss_bytes()
        print(f"victim RSS {mib(before)} -> peak {mib(peak)} -> {mib(after)} (bound: +{mib(MAX_RSS_GROWTH)})")
        assert peak - before <= MAX_RSS_GROWTH
        # The mesh still works for its members: all three nodes still count each other.
        assert metric(victim, "signal_mesh_members_live") == 3
        try:
            bystanders.check(MAX_ROUND_TRIP, MAX_GAP)
        except AssertionError as error:
            raise AssertionError(f"{error}\nmembership and links:\n{membership_events(hubs)}") from None
    log = open(victim.log_path).read()
    refusals = log.count("mesh link refused")
    print(f"'mesh link refused' lines in the victim's log: {refusals}")
    assert refusals <= 20, "refused handshakes are logged at a bounded rate (10 per minute)"


# A hostile member: the mesh protocol in a few lines ---------------------------------------------------


def raw(key):
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def string(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def send_frame(sock, body):
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    (length,) = struct.unpack(">I", exactly(4))
    return exactly(length)


def authenticate(port, secret, key):
    """Opens a link as a member (LinkAuthenticator's three messages) and returns (socket, the node's id)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    nonce = os.urandom(32)
    send_frame(sock, b"\x10" + raw(key) + nonce)
    challenge = recv_frame(sock)
    assert challenge[0] == 0x11, challenge[:1]
    responder_key, responder_nonce = challenge[1:33], challenge[33:65]
    transcript = b"peermesh/link/v1" + raw(key) + responder_key + nonce + responder_nonce
    message = b"\x01" + transcript
    send_frame(sock, b"\x12" + hmac.new(secret, message, hashlib.sha256).digest() + key.sign(message))
    return sock, hashlib.sha256(responder_key).digest()


def member_update(node, address, incarnation, status, signer=None, signed_node=None):
    """MemberUpdate on the wire; `signer` signs the claim (the node's own key, or a forger's)."""
    body = node + struct.pack(">IB", incarnation, status) + string(address)
    if signer is None:
        return body + b"\x00"
    claim = b"peermesh/member/v1" + (signed_node or node) + struct.pack(">I", incarnation) + string(address)
    claim += b"\x01" if status == 3 else b"\x00"
    return body + b"\x01" + raw(signer) + signer.sign(claim)


def gossip(updates):
    return b"\x01\x06" + struct.pack(">H", len(updates)) + b"".join(updates)


def forged_signal(key, sender, recipient, vouched_for):
    """A signal from `sender` that the hostile node vouches for with a record of another peer of its own."""
    me = hashlib.sha256(raw(key)).digest()
    body = b"\x01\x01" + string(vouched_for) + me + struct.pack(">QQB", 1, 2**62, 1)
    record = raw(key) + struct.pack(">H", len(body)) + body + key.sign(b"peermesh/record/v1" + body)
    payload = b'{"type":"offer","to":"%s","sdp":"forged"}' % recipient.encode()
    signed = b"peermesh/signal/v1" + me + struct.pack(">Q", 7) + string(sender) + struct.pack(">I", len(payload)) + payload
    return (
        b"\x04" + me + struct.pack(">Q", 7) + string(sender) + b"\x00" + string(recipient) + b"\x00\x01"
        + struct.pack(">I", len(payload)) + payload + b"\x01" + record + key.sign(signed)
    )


def test_a_hostile_member_cannot_crash_rewrite_or_speak_for_another_node(start_hub, tmp_path):
    hubs, ports = start_mesh(start_hub, tmp_path, 3)
    wait_converged(hubs)
    victim = hubs[1]
    with MeshBystanders(hubs[0], hubs[1]) as bystanders:
        time.sleep(1.0)
        key = Ed25519PrivateKey.generate()
        sock, victim_id = authenticate(ports[1], SECRET.encode(), key)
        me = hashlib.sha256(raw(key)).digest()
        forger = Ed25519PrivateKey.generate()
        # The victim as suspect/dead at 0xFFFFFFFF: unsigned, and signed by the wrong key.
        updates = [
            member_update(victim_id, f"127.0.0.1:{ports[1]}", 0xFFFFFFFF, status, signer=signer, signed_node=victim_id)
            for status in (1, 2)
            for signer in (None, forger)
        ]
        # Itself at 0xFFFFFFFF, properly signed: a member's right, and no arithmetic may overflow on it.
        updates += [member_update(me, "127.0.0.1:9", 0xFFFFFFFF, status, signer=key) for status in (0, 1, 2)]
        send_frame(sock, gossip(updates))
        time.sleep(1.0)
        assert victim.proc.poll() is None, "the node crashed on incarnation 0xFFFFFFFF"
        refused = metric(victim, "signal_mesh_invalid_messages_total", reason="member_update")
        assert refused >= 1
        # The victim was not pushed to refute (its incarnation is its own): all three nodes still live.
        assert metric(victim, "signal_mesh_members_suspect") <= 1  # only the hostile node itself
        # A signal "from" bystander a, whom the hostile node does not host.
        send_frame(sock, forged_signal(key, bystanders.a_id, bystanders.b_id, "mallory"))
        closed = wait_closed(sock, 3.0)
        assert closed is not None, "the node kept the link of a member that relayed for a peer it does not host"
        assert metric(victim, "signal_mesh_links_dropped_total", reason="sender_not_hosted") == 1
        assert metric(victim, "signal_mesh_invalid_messages_total", reason="sender_not_hosted") == 1
        # Banned for a while: a new link from the same node is refused after its handshake.
        try:
            again, _ = authenticate(ports[1], SECRET.encode(), key)
            assert wait_closed(again, 3.0) is not None
        except (ConnectionError, OSError):
            pass
        assert metric(victim, "signal_mesh_links_refused_total", reason="banned") >= 1
        assert bystanders.wait_event(lambda m: m.get("sdp") == "forged", 1.0) is None, "a client saw the forged signal"
        assert victim.proc.poll() is None
        bystanders.check(MAX_ROUND_TRIP, MAX_GAP)
    for hub in hubs:
        assert hub.proc.poll() is None
