"""PeerMesh over real processes: `signal serve --mesh-listen …` nodes on loopback with no Redis and no
central server. Two aiortc peers on different nodes negotiate WebRTC through the mesh, and keep doing
so after a third node is killed; presence and room messages cross nodes; a TLS mesh link relays; with
auth on, the recipient's node refuses a signal from a peer that shares no room with its recipient."""

import asyncio
import hashlib
import json
import signal
import struct
import subprocess
import time

import websockets

from cluster_helpers import Peer, eventually
from conftest import SIGNAL, free_port
from e2e_helpers import metric
from test_aiortc import finish, start_peer
from tls_helpers import make_cert

SECRET = "a mesh secret for the end-to-end tests, long enough"


def start_mesh(start_hub, tmp_path, count, *extra_for, seed_index=0):
    secret = tmp_path / "mesh.secret"
    secret.write_text(SECRET)
    ports = [free_port() for _ in range(count)]
    hubs = []
    for i in range(count):
        # At info, each node's log has its membership and link lines: a failure quotes them (membership_events).
        args = ["--mesh-listen", f"127.0.0.1:{ports[i]}", "--mesh-secret-file", str(secret), "--log-level", "info"]
        if i != seed_index:
            args += ["--mesh-seed", f"127.0.0.1:{ports[seed_index]}"]
        if extra_for:
            args += list(extra_for[i])
        hubs.append(start_hub(*args))
    return hubs, ports


def membership_events(hubs):
    """The membership and link lines (and warnings) of every node's log, for a failure's message."""
    lines = []
    for i, hub in enumerate(hubs):
        for line in open(hub.log_path, errors="replace"):
            if "mesh membership" in line or "mesh link" in line or "mesh seed" in line or " warning " in line:
                lines.append(f"node {i}: {line.strip()[:300]}")
    return "\n".join(lines[-60:])


def wait_converged(hubs, timeout=20):
    """Until every node counts every node live (its /metrics), so they agree on home nodes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(metric(h, "signal_mesh_members_live") == len(hubs) for h in hubs):
            time.sleep(0.3)  # one more gossip round for the records
            return
        time.sleep(0.1)
    seen = [metric(h, "signal_mesh_members_live") for h in hubs]
    raise AssertionError(f"the mesh did not converge: live members per node {seen}\n{membership_events(hubs)}")


def test_five_nodes_carry_an_aiortc_negotiation_and_survive_the_kill_of_a_third(start_hub, tmp_path):
    hubs, _ = start_mesh(start_hub, tmp_path, 5)
    wait_converged(hubs)

    def pair(a_node, b_node, names, count=20):
        # The polite side (greater id) waits for the offer, so it goes first; the other finds it by presence.
        polite = start_peer(hubs[b_node], names[1], f"room-{names[0]}", "--count", str(count))
        time.sleep(0.5)
        impolite = start_peer(hubs[a_node], names[0], f"room-{names[0]}", "--count", str(count))
        return finish(impolite, timeout=45), finish(polite, timeout=45)

    before = pair(0, 3, ["mesh-a", "mesh-b"])
    for result in before:
        assert result["ok"] and result["exit"] == 0, result
        assert result["received"] == 20 and "connected" in result["connection_states"]
        assert result["stats"]["candidates_received"] >= 2
    hubs[2].stop(signal.SIGKILL)
    wait_converged(hubs[:2] + hubs[3:])
    after = pair(1, 4, ["mesh-c", "mesh-d"])
    for result in after:
        assert result["ok"] and result["exit"] == 0, result
        assert result["received"] == 20 and "connected" in result["connection_states"]
    a, b = after
    assert a["remote"] == "mesh-d" and b["remote"] == "mesh-c"
    print(f"\nbefore the kill: {before[0]['stats']}; after: {after[0]['stats']}")


def test_presence_room_messages_and_unknown_peers_across_the_mesh(start_hub, tmp_path):
    hubs, _ = start_mesh(start_hub, tmp_path, 3)
    wait_converged(hubs)

    async def scenario():
        alice, bob, carol = Peer("alice"), Peer("bob"), Peer("carol")
        await alice.connect(hubs[0].ws)
        await bob.connect(hubs[2].ws)
        await carol.connect(hubs[0].ws)
        assert (await alice.request({"type": "join", "room": "r", "meta": {"n": "a"}}))["peers"] == []
        await asyncio.sleep(0.3)
        assert (await bob.request({"type": "join", "room": "r"}))["type"] == "joined"
        await eventually(lambda: any(m["type"] == "peer-joined" and m["peer"] == "bob" for m in alice.messages), what="bob's presence")
        await eventually(lambda: any(m["type"] == "peer-joined" and m["peer"] == "alice" and m["meta"] == {"n": "a"} for m in bob.messages),
                         what="alice's presence answered to bob")
        reply = await alice.request({"type": "offer", "to": "bob", "sdp": "v=0", "room": "r"})
        assert reply["type"] == "ack"
        await eventually(lambda: any(m["type"] == "offer" and m["from"] == "alice" for m in bob.messages), what="offer across nodes")
        # Room scoping: carol is not in the room, so she may not signal into it.
        refused = await carol.request({"type": "offer", "to": "bob", "sdp": "v=0", "room": "r"})
        assert refused["type"] == "error" and refused["code"] == "not-in-room"
        await bob.request({"type": "message", "room": "r", "data": "to everyone"})
        await eventually(lambda: any(m["type"] == "message" and m["from"] == "bob" for m in alice.messages), what="room message")
        assert not any(m["type"] == "message" for m in carol.messages)
        # Nobody hosts "ghost": peer-unavailable (and no ack) within 2 s.
        started = time.time()
        reply = await alice.request({"type": "offer", "to": "ghost", "sdp": "v=0"})
        assert reply["type"] == "error" and reply["code"] == "peer-unavailable", reply
        assert time.time() - started <= 2.5
        await bob.close()
        await eventually(lambda: any(m["type"] == "peer-left" and m["peer"] == "bob" for m in alice.messages), what="peer-left across nodes")
        for p in (alice, carol):
            await p.close()

    asyncio.run(scenario())


def test_a_tls_mesh_link_relays_a_signal_and_refuses_a_plain_node(start_hub, pki, tmp_path):
    make_cert(pki, "mesh-a")
    make_cert(pki, "mesh-b")
    tls = [["--mesh-tls-cert", str(pki / f"{n}.pem"), "--mesh-tls-key", str(pki / f"{n}.key"), "--mesh-ca", str(pki / "ca.pem")]
           for n in ("mesh-a", "mesh-b")]
    hubs, ports = start_mesh(start_hub, tmp_path, 2, *tls)
    plain = start_hub("--mesh-listen", f"127.0.0.1:{free_port()}", "--mesh-seed", f"127.0.0.1:{ports[0]}",
                      "--mesh-secret-file", str(tmp_path / "mesh.secret"), "--log-level", "warning")
    time.sleep(1.5)

    async def scenario():
        a, b, outsider = Peer("tls-a"), Peer("tls-b"), Peer("outsider")
        await a.connect(hubs[0].ws)
        await b.connect(hubs[1].ws)
        await outsider.connect(plain.ws)
        await asyncio.sleep(0.5)
        assert (await a.request({"type": "offer", "to": "tls-b", "sdp": "v=0 over mutual TLS"}))["type"] == "ack"
        await eventually(lambda: any(m["type"] == "offer" for m in b.messages), what="offer over the TLS link")
        await outsider.request({"type": "offer", "to": "tls-a", "sdp": "v=0"})
        await eventually(lambda: any(v.get("code") == "peer-unavailable" for v in outsider.replies.values()), timeout=4,
                         what="the plain node is not part of the TLS mesh")
        assert not any(m.get("from") == "outsider" for m in a.messages)
        for p in (a, b, outsider):
            await p.close()

    asyncio.run(scenario())


def test_a_signal_queued_for_a_peer_that_never_returns_expires_back_across_nodes(start_hub, tmp_path):
    grace = ["--resume-grace", "2"]
    hubs, _ = start_mesh(start_hub, tmp_path, 3, grace, grace, grace)
    wait_converged(hubs)

    async def scenario():
        alice, bob = Peer("alice"), Peer("bob")
        await alice.connect(hubs[0].ws)
        await bob.connect(hubs[2].ws)
        await asyncio.sleep(0.5)
        bob.ws.transport.abort()  # gone without a close frame: its node keeps the session for the grace period
        await eventually(lambda: bob.closed is not None, what="bob's drop")
        await asyncio.sleep(0.3)
        ack = await alice.request({"type": "offer", "to": "bob", "sdp": "v=0 never read", "id": "lost-offer"})
        assert ack["type"] == "ack"
        await eventually(lambda: any(m["type"] == "expired" for m in alice.messages), timeout=8,
                         what="expired back on alice's node")
        expired = next(m for m in alice.messages if m["type"] == "expired")
        assert expired["id"] == "lost-offer" and expired["to"] == "bob" and expired["signal"] == "offer"
        await alice.close()

    asyncio.run(scenario())


JWT_SECRET = "a jwt secret for the mesh end-to-end tests, 32+ bytes"


def mint(sub, rooms=None):
    """A development token from `signal token` (what a user would run)."""
    args = [SIGNAL, "token", "--secret", JWT_SECRET, "--sub", sub]
    if rooms:
        args += ["--rooms", rooms]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


class TokenPeer(Peer):
    """A Peer that connects with a token (its `sub` is the peer id)."""

    async def connect(self, url, resume=False):
        self.ws = await websockets.connect(f"{url}?token={mint(self.name)}", max_queue=None, ping_interval=None)
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert welcome.get("type") == "welcome" and welcome["peer"] == self.name, welcome
        self.welcomes.append(welcome)
        self.token = welcome["session"]
        self.reader = asyncio.ensure_future(self._read(self.ws))
        return welcome


def test_a_peer_sharing_no_room_is_refused_by_the_recipients_node(start_hub, tmp_path):
    """Two nodes with --jwt-secret (so --require-shared-room is on): mallory on node 2, in no room and then
    in room y, offers to alice (room x, node 1). Her node cannot know alice's rooms; alice's node refuses,
    and mallory gets what she would get on one hub: `error` `not-in-room` with her request id, no `ack`;
    alice receives nothing. Once they share a room the offer goes through and is acked."""
    auth = ["--jwt-secret", JWT_SECRET]
    hubs, _ = start_mesh(start_hub, tmp_path, 2, auth, auth)
    wait_converged(hubs)

    async def scenario():
        alice, mallory = TokenPeer("alice"), TokenPeer("mallory")
        await alice.connect(hubs[0].ws)
        await mallory.connect(hubs[1].ws)
        assert (await alice.request({"type": "join", "room": "x"}))["type"] == "joined"
        await asyncio.sleep(0.5)  # alice's location reaches its home nodes
        for attempt, room in enumerate([None, "y"]):
            if room:
                assert (await mallory.request({"type": "join", "room": room}))["type"] == "joined"
            request_id = f"mallory-offer-{attempt}"
            reply = await mallory.request({"type": "offer", "to": "alice", "sdp": "v=0", "id": request_id})
            assert reply["type"] == "error" and reply["code"] == "not-in-room" and reply["id"] == request_id, reply
            await asyncio.sleep(1.0)
            assert mallory.replies[request_id] == reply  # no ack came after the error
        assert not [m for m in alice.messages if m.get("from") == "mallory"], alice.messages
        # Sharing room y, the same offer is delivered and acked (after alice's node took it).
        assert (await alice.request({"type": "join", "room": "y"}))["type"] == "joined"
        reply = await mallory.request({"type": "offer", "to": "alice", "sdp": "v=0", "id": "shared"})
        assert reply == {"type": "ack", "id": "shared"}, reply
        await eventually(lambda: any(m.get("from") == "mallory" for m in alice.messages), what="the offer on node 1")
        for p in (alice, mallory):
            await p.close()

    asyncio.run(scenario())
    # Everything the two nodes relayed to each other was valid.
    assert [metric(h, "signal_mesh_invalid_payloads_total") for h in hubs] == [0, 0]


def bridge_signal(prefix, request_id=None, ticket=1):
    """A bridge payload (SignalMesh's BridgePayload) carrying an offer whose relayed prefix is `prefix`."""
    rid = b"\x00" if request_id is None else b"\x01" + struct.pack(">H", len(request_id)) + request_id.encode()
    return b"\x04\x00" + struct.pack(">Q", ticket) + rid + b"\x00\x00" + struct.pack(">I", len(prefix)) + prefix


def test_what_another_node_relays_is_validated_before_a_client_sees_it(start_hub, tmp_path):
    """A member node (it has the mesh secret) relays, for a peer it does host (so the mesh layer lets it
    through), bridge payloads a bridge would never send: a prefix whose `from` is another peer, and raw
    JSON. The recipient's node drops both before its client sees them and counts them in
    signal_mesh_invalid_payloads_total; bystanders keep relaying."""
    # The hostile member's wire helpers (link handshake, vouched signal layout) live with the PeerMesh tests.
    from test_hostile_mesh import MeshBystanders, authenticate, raw, send_frame, string

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    hubs, ports = start_mesh(start_hub, tmp_path, 2)
    wait_converged(hubs)
    victim = hubs[1]
    with MeshBystanders(hubs[0], hubs[1]) as bystanders:
        time.sleep(1.0)
        key = Ed25519PrivateKey.generate()
        sock, _ = authenticate(ports[1], SECRET.encode(), key)
        me = hashlib.sha256(raw(key)).digest()

        def vouched(signal_id, sender, recipient, payload):
            """A signal from `sender`, a peer this node hosts, with its own signed record (as in
            test_hostile_mesh.forged_signal, but vouching for the sender itself)."""
            body = b"\x01\x01" + string(sender) + me + struct.pack(">QQB", 1, 2**62, 1)
            record = raw(key) + struct.pack(">H", len(body)) + body + key.sign(b"peermesh/record/v1" + body)
            head = me + struct.pack(">Q", signal_id) + string(sender)
            signed = b"peermesh/signal/v1" + head + struct.pack(">I", len(payload)) + payload
            return (
                b"\x04" + head + b"\x00" + string(recipient) + b"\x00\x01"
                + struct.pack(">I", len(payload)) + payload + b"\x01" + record + key.sign(signed)
            )

        target = bystanders.b_id
        forged_from = b'{"type":"offer","to":"%s","sdp":"forged","from":"%s","seq":' % (
            target.encode(), bystanders.a_id.encode())
        send_frame(sock, vouched(101, "mallory", target, bridge_signal(forged_from)))
        send_frame(sock, vouched(102, "mallory", target, b'{"type":"offer","to":"%s","sdp":"forged"}' % target.encode()))
        deadline = time.time() + 5
        while metric(victim, "signal_mesh_invalid_payloads_total") < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert metric(victim, "signal_mesh_invalid_payloads_total") == 2
        assert bystanders.wait_event(lambda m: m.get("sdp") == "forged", 1.0) is None, "a client saw a forged payload"
        # A well-formed one from the same member reaches the client: the two were dropped for what they were.
        honest = b'{"type":"offer","to":"%s","sdp":"honest","from":"mallory","seq":' % target.encode()
        send_frame(sock, vouched(103, "mallory", target, bridge_signal(honest)))
        seen = bystanders.wait_event(lambda m: m.get("sdp") == "honest", 5.0)
        assert seen is not None and seen[2]["from"] == "mallory", seen
        assert metric(victim, "signal_mesh_invalid_payloads_total") == 2
        sock.close()
        bystanders.check(2.0, 3.0)
