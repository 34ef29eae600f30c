"""Backend conformance (issue 17, item 4): one set of protocol scenarios, over real sockets, against
each backend of `signal serve` — the in-memory hub, two Redis cluster nodes, two mesh nodes — with the
peers of a scenario on different nodes where there are nodes (`node 0` and `node 1`; the same node on
`memory`).

Every backend runs with auth on (`--jwt-secret`, so `--require-shared-room` is on) and the small limits
of `backends.LIMITS` (3 rooms per peer, 3 peers per room, 4 KiB messages, burst 40 at 20/s with 5
strikes, 3 s resume grace, 8 messages per resume buffer). `id-taken` needs a hub without auth (with auth
every id a client may ask for is its token's own), so it runs against a second, open set of backends.

Each scenario asserts the contract (Docs/protocol.md, the shared protocol-v1 contract). Where a
backend differs in a way Docs/protocol.md documents ("Several nodes (extension)"), the test asserts
the documented behaviour and names the passage.
"""

import os
import time

import pytest

from backends import GRACE, LIMITS, backend, open_backend, redis_server  # noqa: F401 - fixtures
from e2e_helpers import strictly_increasing
from rawws import CONTINUATION, TEXT, encode_frame

# How long "nothing arrives" is watched for. Long enough for a hop between nodes (and the mesh's
# late `error` after an `ack`, which Docs/protocol.md allows "within about 2 s" for peer-unavailable).
QUIET = 1.5


def unique(*names):
    """Per-test peer ids and room names: the backends live for the whole module."""
    tag = os.urandom(3).hex()
    return [f"{name}-{tag}" for name in names]


def assert_nothing(client, predicate, duration=QUIET, what="message"):
    client.collect(duration)
    unexpected = [m for m in client.log if predicate(m)]
    assert not unexpected, f"{what}: {unexpected}"


def assert_error(reply, code, request_id):
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply.get("id") == request_id, reply


def assert_refused_without_ack(client, message, code):
    """`message` is answered `error` `code` with its id, and never `ack`ed."""
    reply = client.request(message)
    assert_error(reply, code, message["id"])
    client.collect(QUIET)
    acks = [m for m in client.replies(message["id"]) if m["type"] == "ack"]
    assert not acks, f"{message['id']} was also acknowledged: {client.replies(message['id'])}"


def other_node(backend, node):
    return (node + 1) % backend.nodes


def known_bug(request, backend, kind, reason):
    """Marks this run `xfail(strict=True)` on backend `kind`: a failure confirmed to be the backend's bug
    (not the test's), reported to the lead. Strict, so the mark must go once the backend is fixed."""
    if backend.kind == kind:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


# Relay ----------------------------------------------------------------------------------------------


def test_relay_with_acks_and_seq(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    signals = [
        {"type": "offer", "sdp": "v=0 offer", "sid": "call-1"},
        {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 192.0.2.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}},
        {"type": "candidate", "candidate": None},
        {"type": "message", "data": {"chat": "hi", "n": [1, 2]}},
        {"type": "offer", "sdp": "v=0 forged", "from": "carol", "seq": 999},
        {"type": "bye"},
    ]
    for n, signal in enumerate(signals):
        reply = alice.request(dict(signal, to=b, id=f"s{n}"))
        assert reply == {"type": "ack", "id": f"s{n}"}, reply
    got = [bob.wait(lambda m, n=n: m.get("id") == f"s{n}" and "seq" in m) for n in range(len(signals))]
    for sent, relayed in zip(signals, got):
        assert relayed["from"] == a and relayed["to"] == b and relayed["type"] == sent["type"], relayed
        for field in ("sdp", "sid", "candidate", "data"):
            if field in sent:
                assert relayed[field] == sent[field], (field, relayed)
    assert got[4]["from"] == a and got[4]["seq"] != 999, "from and seq are the server's"
    assert strictly_increasing([m["seq"] for m in got]), [m["seq"] for m in got]
    # And back, to the other node.
    reply = bob.request({"type": "answer", "to": a, "sdp": "v=0 answer", "id": "back"})
    assert reply == {"type": "ack", "id": "back"}, reply
    answer = alice.wait(lambda m: m.get("type") == "answer")
    assert answer["from"] == b and answer["sdp"] == "v=0 answer" and "seq" in answer
    # Sending to oneself is allowed (Docs/protocol.md, rule "Sending to oneself").
    reply = alice.request({"type": "message", "to": a, "data": "note", "id": "self"})
    assert reply["type"] == "ack", reply
    assert alice.wait(lambda m: m.get("id") == "self" and "seq" in m)["from"] == a
    for client in (alice, bob):
        assert strictly_increasing(client.seqs()), client.seqs()
        client.close()


# Presence ---------------------------------------------------------------------------------------------


def test_presence_joined_peer_joined_peer_left(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a)
    bob = backend.connect(1, b)
    joined = alice.request({"type": "join", "room": room, "meta": {"name": "Alice"}, "id": "j1"})
    assert joined == {"type": "joined", "room": room, "peers": [], "id": "j1"}, joined
    backend.settle()
    joined = bob.request({"type": "join", "room": room, "meta": {"name": "Bob"}, "id": "j2"})
    assert joined["type"] == "joined" and joined["room"] == room, joined
    event = alice.wait(lambda m: m.get("type") == "peer-joined" and m.get("peer") == b)
    assert event["room"] == room and event["meta"] == {"name": "Bob"} and "seq" in event, event
    alice_entry = {"peer": a, "meta": {"name": "Alice"}}
    if backend.kind == "mesh":
        # Docs/protocol.md, "Several nodes (extension)", PeerMesh: "`joined` lists the members on the
        # joiner's own node; members on other nodes arrive right after as `peer-joined`".
        if alice_entry not in joined["peers"]:
            announced = bob.wait(lambda m: m.get("type") == "peer-joined" and m.get("peer") == a)
            assert announced["room"] == room and announced["meta"] == {"name": "Alice"}, announced
    else:
        assert joined["peers"] == [alice_entry], joined
    # Leaving: `left` to the leaver, `peer-left` to the others.
    left = bob.request({"type": "leave", "room": room, "id": "l1"})
    assert left == {"type": "left", "room": room, "id": "l1"}, left
    event = alice.wait(lambda m: m.get("type") == "peer-left" and m.get("peer") == b)
    assert event["room"] == room and "seq" in event, event
    # Leaving a room one is not in.
    assert_error(bob.request({"type": "leave", "room": room, "id": "l2"}), "not-in-room", "l2")
    # Back in, then a close frame: the session ends at once (no grace), so peer-left comes well
    # before the grace period would have ended.
    assert bob.request({"type": "join", "room": room, "id": "j3"})["type"] == "joined"
    alice.wait(lambda m: m.get("type") == "peer-joined" and m.get("peer") == b)
    closed_at = time.monotonic()
    bob.close()
    event = alice.wait(lambda m: m.get("type") == "peer-left" and m.get("peer") == b, timeout=GRACE + 5)
    took = time.monotonic() - closed_at
    assert took < GRACE, f"peer-left {took:.1f} s after a close frame: the session waited out the grace period"
    assert strictly_increasing(alice.seqs()), alice.seqs()
    alice.close()


# Live presence state ------------------------------------------------------------------------------------------


def test_update_reaches_members_on_other_nodes_and_later_joiners(backend):
    """`update` (Docs/protocol.md, "Presence state and volatile messages"): `updated` to the sender,
    `peer-updated` (sequenced) to the other members wherever they are, and the new meta for later joiners;
    a re-join with another meta is an update too, a resent join is not."""
    a, b, c, room, other = unique("alice", "bob", "carol", "room", "other")
    alice = backend.connect(0, a)
    bob = backend.connect(1, b)
    assert alice.request({"type": "join", "room": room, "meta": {"name": "Alice"}})["type"] == "joined"
    backend.settle()
    assert bob.request({"type": "join", "room": room, "meta": {"name": "Bob"}})["type"] == "joined"
    alice.wait(lambda m: m.get("type") == "peer-joined" and m.get("peer") == b)
    backend.settle()
    new_meta = {"name": "Alice", "status": "away"}
    reply = alice.request({"type": "update", "room": room, "meta": new_meta, "id": "u1"})
    assert reply == {"type": "updated", "room": room, "id": "u1"}, reply
    event = bob.wait(lambda m: m.get("type") == "peer-updated" and m.get("peer") == a)
    assert event["room"] == room and event["meta"] == new_meta and "seq" in event, event
    # Not a member: refused, nobody told.
    assert_error(alice.request({"type": "update", "room": other, "meta": {}, "id": "u2"}), "not-in-room", "u2")
    # A re-join with the same meta changes nothing; with another meta it is an update.
    assert bob.request({"type": "join", "room": room, "meta": {"name": "Bob"}})["type"] == "joined"
    assert bob.request({"type": "join", "room": room, "meta": {"name": "Bobby"}})["type"] == "joined"
    event = alice.wait(lambda m: m.get("type") == "peer-updated" and m.get("peer") == b)
    assert event["meta"] == {"name": "Bobby"}, event
    assert_nothing(alice, lambda m: m.get("type") == "peer-updated" and m.get("peer") == b and m["meta"] == {"name": "Bob"},
                   what="a resent join was announced")
    # A later joiner, on bob's node: alice's new meta.
    carol = backend.connect(1, c)
    joined = carol.request({"type": "join", "room": room, "id": "j"})
    assert joined["type"] == "joined", joined
    peers = {p["peer"]: p["meta"] for p in joined["peers"]}
    if backend.kind == "mesh" and a not in peers:
        # Docs/protocol.md, "Several nodes (extension)", PeerMesh: members on other nodes arrive right after
        # `joined` as `peer-joined`, with their current meta.
        peers[a] = carol.wait(lambda m: m.get("type") == "peer-joined" and m.get("peer") == a)["meta"]
    assert peers == {a: new_meta, b: {"name": "Bobby"}}, (joined, carol.log)
    for client in (alice, bob, carol):
        assert strictly_increasing(client.seqs()), client.seqs()
        client.close()


def test_volatile_messages_reach_connected_peers_and_are_never_replayed(backend):
    """`"volatile":true`: delivered only to recipients connected now, without `seq`; an addressed one to
    an away peer is refused `peer-unavailable`, a broadcast skips it, and its resume replays the
    non-volatile message sent meanwhile but none of the volatile ones."""
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    reply = alice.request({"type": "message", "to": b, "data": "typing", "volatile": True, "id": "v1"})
    assert reply == {"type": "ack", "id": "v1"}, reply
    got = bob.wait(lambda m: m.get("id") == "v1")
    assert got["from"] == a and got["volatile"] is True and got["data"] == "typing" and "seq" not in got, got
    reply = alice.request({"type": "message", "room": room, "data": {"x": 1}, "volatile": True, "id": "v2"})
    assert reply == {"type": "ack", "id": "v2"}, reply
    got = bob.wait(lambda m: m.get("id") == "v2")
    assert got["room"] == room and got["from"] == a and "seq" not in got, got
    # Bob drops: his session waits for a resume.
    bob.drop()
    time.sleep(0.5)
    assert_error(
        alice.request({"type": "message", "to": b, "data": "gone?", "volatile": True, "id": "v3"}),
        "peer-unavailable",
        "v3",
    )
    reply = alice.request({"type": "message", "room": room, "data": {"x": 2}, "volatile": True, "id": "v4"})
    assert reply == {"type": "ack", "id": "v4"}, "a volatile broadcast is never queued: " + repr(reply)
    reply = alice.request({"type": "message", "to": b, "data": "kept", "id": "n1"})
    assert reply == {"type": "ack", "id": "n1", "queued": True}, reply
    node = resume_node(backend, bob, 1)
    resumed, _ = resume(backend, bob, node)
    kept = resumed.wait(lambda m: m.get("id") == "n1")
    assert kept["data"] == "kept" and "seq" in kept, kept
    resumed.collect(QUIET)
    replayed = [m for m in resumed.log if m.get("id") in ("v1", "v2", "v3", "v4")]
    assert not replayed, f"volatile messages replayed: {replayed}"
    # Connected again: volatile messages reach him.
    assert alice.request({"type": "message", "to": b, "data": "back", "volatile": True, "id": "v5"})["type"] == "ack"
    assert "seq" not in resumed.wait(lambda m: m.get("id") == "v5")
    for client in (alice, resumed):
        assert strictly_increasing(client.seqs()), client.seqs()
        client.close()


# Rooms: scoped signals and broadcasts ---------------------------------------------------------------------


def test_room_scoped_signals_and_room_messages(backend):
    a, b, c, r, s = unique("alice", "bob", "carol", "r", "s")
    alice = backend.connect(0, a, rooms=[r, s])
    bob = backend.connect(1, b, rooms=[r])
    carol = backend.connect(1, c, rooms=[s])
    backend.settle()
    # In a room both are in: relayed, with the room.
    assert alice.request({"type": "offer", "to": b, "room": r, "sdp": "v=0", "id": "o1"})["type"] == "ack"
    offer = bob.wait(lambda m: m.get("type") == "offer")
    assert offer["room"] == r and offer["from"] == a, offer
    # The sender is not in the room it names (rule 1).
    assert_refused_without_ack(carol, {"type": "offer", "to": b, "room": r, "sdp": "v=0", "id": "o2"}, "not-in-room")
    # The target is not in the room named (rule 3); they do share room s.
    assert_refused_without_ack(alice, {"type": "offer", "to": c, "room": r, "sdp": "v=0", "id": "o3"}, "not-in-room")
    assert alice.request({"type": "offer", "to": c, "room": s, "sdp": "v=0 in s", "id": "o4"})["type"] == "ack"
    got = carol.wait(lambda m: m.get("type") == "offer")
    assert got["sdp"] == "v=0 in s" and got["room"] == s, got
    # A room broadcast: one ack, every other member gets it once, non-members nothing.
    reply = alice.request({"type": "message", "room": r, "data": {"typing": True}, "id": "m1"})
    assert reply == {"type": "ack", "id": "m1"}, reply
    message = bob.wait(lambda m: m.get("type") == "message" and m.get("id") == "m1")
    assert message["from"] == a and message["room"] == r and "to" not in message and "seq" in message, message
    # A broadcast to a room the sender is not in.
    assert_refused_without_ack(carol, {"type": "message", "room": r, "data": 1, "id": "m2"}, "not-in-room")
    assert_nothing(carol, lambda m: m.get("id") in ("o3", "m1") and "seq" in m, what="carol got a signal scoped to a room she is not in")
    assert_nothing(alice, lambda m: m.get("type") == "message" and m.get("from") == a and m.get("room") == r, 0.1,
                   what="the broadcaster got its own broadcast")
    assert len(bob.received(lambda m: m.get("id") == "m1")) == 1
    assert_nothing(bob, lambda m: m.get("id") in ("o2", "m2"), 0.1, what="bob got a refused signal")
    for client in (alice, bob, carol):
        assert strictly_increasing(client.seqs()), client.seqs()
        client.close()


# Auth: shared rooms and grants ----------------------------------------------------------------------------


def test_mallory_shares_no_room_with_alice_and_cannot_signal_her(backend):
    """The issue 17 case: `--require-shared-room` (on with auth) refuses a signal to a peer the sender
    shares no room with, whichever node either is on."""
    a, m, x, y = unique("alice", "mallory", "x", "y")
    alice = backend.connect(0, a, rooms=[x])
    mallory = backend.connect(1, m)
    backend.settle()
    # Mallory in no room.
    assert_refused_without_ack(mallory, {"type": "offer", "to": a, "sdp": "v=0 evil", "id": "m1"}, "not-in-room")
    # Mallory in another room.
    assert mallory.request({"type": "join", "room": y, "id": "jy"})["type"] == "joined"
    backend.settle()
    assert_refused_without_ack(mallory, {"type": "offer", "to": a, "sdp": "v=0 evil", "id": "m2"}, "not-in-room")
    assert_refused_without_ack(mallory, {"type": "message", "to": a, "data": "hi", "id": "m3"}, "not-in-room")
    assert_refused_without_ack(mallory, {"type": "candidate", "to": a, "candidate": None, "id": "m4"}, "not-in-room")
    assert_nothing(alice, lambda msg: msg.get("from") == m, what="alice received mallory's signals")
    for client in (alice, mallory):
        client.close()


def test_room_grants_from_the_token(backend):
    a, b, g1, g2, g3 = unique("alice", "bob", "g1", "g2", "g3")
    alice = backend.connect(1, a, token_rooms=[g1])
    assert_error(alice.request({"type": "join", "room": g2, "id": "j1"}), "forbidden", "j1")
    assert alice.request({"type": "join", "room": g1, "id": "j2"})["type"] == "joined"
    # Checked first, also for a repeated join, and the refused join left no trace.
    assert_error(alice.request({"type": "join", "room": g2, "id": "j3"}), "forbidden", "j3")
    bob = backend.connect(0, b, token_rooms=["*"])
    for room in (g1, g2, g3):
        assert bob.request({"type": "join", "room": room, "id": "j-" + room})["type"] == "joined"
    joined_g2 = bob.replies("j-" + g2)[0]
    assert joined_g2["peers"] == [], joined_g2
    # A grant does not let alice into bob's room g2, nor signal bob scoped to it.
    assert_refused_without_ack(alice, {"type": "offer", "to": b, "room": g2, "sdp": "v=0", "id": "o1"}, "not-in-room")
    for client in (alice, bob):
        client.close()


# Identity: id-taken and takeover --------------------------------------------------------------------------


def same_node_on_mesh(backend, node):
    """Where a rule that the mesh holds per node only is tested (Docs/protocol.md, "Several nodes": peer
    ids and room sizes are exclusive per node on the mesh): the given node elsewhere, node 0 on the mesh."""
    return 0 if backend.kind == "mesh" else node


def test_id_taken_without_a_token_owning_the_id(open_backend):
    a, b, room = unique("alice", "bob", "room")
    alice = open_backend.connect(0, a, rooms=[room])
    bob = open_backend.connect(1, b, rooms=[room])
    open_backend.settle()
    thief_node = same_node_on_mesh(open_backend, 1)
    thief = open_backend.client(thief_node, f"peer={a}")
    code, reason = thief.expect_close()
    errors = [m for m in thief.log if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["id-taken"] and "id" not in errors[0], thief.log
    assert not any(m["type"] == "welcome" for m in thief.log), thief.log
    assert code == 4009, (code, reason)
    # The holder is not disturbed.
    assert alice.request({"type": "ping", "id": "p"})["type"] == "pong"
    assert bob.request({"type": "offer", "to": a, "sdp": "v=0", "id": "o"})["type"] == "ack"
    assert alice.wait(lambda m: m.get("type") == "offer")["from"] == b
    assert_nothing(bob, lambda m: m.get("type") == "peer-left", 0.3, what="the room saw the holder leave")
    # An id held by a session in its grace period is held too.
    alice.drop()
    time.sleep(0.5)
    again = open_backend.client(thief_node, f"peer={a}")
    assert again.expect_close()[0] == 4009
    for client in (bob, thief, again):
        client.close()


def test_takeover_by_the_tokens_owner(backend):
    a, b, room = unique("alice", "bob", "room")
    old = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    # Another user's token may not ask for alice's id.
    impostor = backend.client(1, f"peer={a}&token={backend.token(b)}")
    code, _ = impostor.expect_close()
    assert code == 4001 and [m["code"] for m in impostor.log if m["type"] == "error"] == ["forbidden"], impostor.log
    assert old.request({"type": "ping", "id": "p1"})["type"] == "pong"
    # Alice's own token takes the id over from the other node (on the mesh: from her node): a fresh session.
    new = backend.connect(same_node_on_mesh(backend, 1), a)
    assert not new.welcome.get("resumed"), new.welcome
    code, reason = old.expect_close()
    assert code == 4009, (code, reason)
    # The older session ended: it left its rooms.
    bob.wait(lambda m: m.get("type") == "peer-left" and m.get("peer") == a)
    # The new session starts with no room, joins again, and is signalled on its own connection.
    assert new.request({"type": "join", "room": room, "id": "j"})["type"] == "joined"
    bob.wait(lambda m: m.get("type") == "peer-joined" and m.get("peer") == a)
    backend.settle()
    assert bob.request({"type": "offer", "to": a, "sdp": "v=0 to the new tab", "id": "o"})["type"] == "ack"
    assert new.wait(lambda m: m.get("type") == "offer")["sdp"] == "v=0 to the new tab"
    for client in (new, bob, impostor):
        client.close()


# Limits -----------------------------------------------------------------------------------------------------


def test_too_many_rooms(backend):
    a, *rooms = unique("alice", "r1", "r2", "r3", "r4")
    limit = LIMITS["max_rooms_per_peer"]
    assert len(rooms) == limit + 1
    alice = backend.connect(1, a, rooms=rooms[:limit])
    assert_error(alice.request({"type": "join", "room": rooms[limit], "id": "over"}), "too-many-rooms", "over")
    # Re-joining a room one is in does not count again.
    assert alice.request({"type": "join", "room": rooms[0], "id": "again"})["type"] == "joined"
    assert alice.request({"type": "leave", "room": rooms[0], "id": "l"})["type"] == "left"
    assert alice.request({"type": "join", "room": rooms[limit], "id": "now"})["type"] == "joined"
    alice.close()


def test_room_full(backend):
    room, *names = unique("room", "p0", "p1", "p2", "p3")
    limit = LIMITS["max_peers_per_room"]
    assert len(names) == limit + 1
    members = []
    for i, name in enumerate(names[:limit]):
        members.append(backend.connect(same_node_on_mesh(backend, i), name, rooms=[room]))
        backend.settle()
    extra = backend.connect(same_node_on_mesh(backend, limit), names[limit])
    assert_error(extra.request({"type": "join", "room": room, "id": "full"}), "room-full", "full")
    # A seat frees up when a member leaves.
    assert members[0].request({"type": "leave", "room": room, "id": "l"})["type"] == "left"
    backend.settle()
    assert extra.request({"type": "join", "room": room, "id": "now"})["type"] == "joined"
    for client in members + [extra]:
        client.close()


def test_message_size_limit_closes_1009(backend):
    a, b, room = unique("alice", "bob", "room")
    limit = LIMITS["max_message_bytes"]
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    # Just under the limit: relayed.
    sdp = "v=0 " + "a" * (limit - 200)
    assert bob.request({"type": "offer", "to": a, "sdp": sdp, "id": "fits"})["type"] == "ack"
    assert alice.wait(lambda m: m.get("type") == "offer")["sdp"] == sdp
    # Over it, in one frame.
    bob.send({"type": "offer", "to": a, "sdp": "v=0 " + "a" * limit, "id": "big"})
    assert bob.expect_close()[0] == 1009
    # Over it, in fragments.
    carol = backend.connect(1, unique("carol")[0])
    # Each fragment is within the limit, the message is not (summed over its fragments).
    head = b'{"type":"message","room":"' + room.encode() + b'","data":"' + b"x" * (limit * 2 // 3)
    tail = b"y" * (limit * 2 // 3) + b'"}'
    carol.ws.send_raw(encode_frame(TEXT, head, fin=False) + encode_frame(CONTINUATION, tail, fin=True))
    assert carol.expect_close()[0] == 1009
    assert_nothing(alice, lambda m: m.get("id") == "big", 0.2, what="the oversized offer was relayed")
    for client in (alice, bob, carol):
        client.close()


def test_rate_limit_errors_then_1008(backend):
    a = unique("alice")[0]
    burst, strikes = LIMITS["rate_burst"], LIMITS["rate_max_strikes"]
    alice = backend.connect(1, a)
    alice.ws.send_raw(b"".join(encode_frame(TEXT, f'{{"type":"ping","id":"p{n}"}}') for n in range(burst + 3)))
    alice.wait(lambda m: m.get("id") == f"p{burst + 2}")
    alice.collect(0.3)
    pongs = [m for m in alice.log if m["type"] == "pong"]
    limited = [m for m in alice.log if m["type"] == "error" and m["code"] == "rate-limited"]
    assert limited and len(limited) <= 3 + 1, alice.log
    assert {m["id"] for m in limited} <= {f"p{n}" for n in range(burst + 3)}, limited
    assert len(pongs) + len(limited) == burst + 3
    assert alice.closed is None, "rate-limited first, closed only when it keeps going"
    # Strikes start over once a message is accepted more than a second after the last refusal.
    time.sleep(1.2)
    assert alice.request({"type": "ping", "id": "calm"})["type"] == "pong"
    # Keeps going: errors, then 1008.
    alice.ws.send_raw(b"".join(encode_frame(TEXT, f'{{"type":"ping","id":"q{n}"}}') for n in range(burst * 2)))
    code, reason = alice.expect_close()
    refused = [m for m in alice.log if m["type"] == "error" and str(m.get("id", "")).startswith("q")]
    assert code == 1008, (code, reason)
    assert 1 <= len(refused) <= strikes and all(m["code"] == "rate-limited" for m in refused), refused
    alice.close()


# Resume ------------------------------------------------------------------------------------------------------


def resume(backend, client, node):
    """Resumes `client`'s session (the token of its latest welcome, `last` = the highest seq it read)
    on `node`; returns the new Client (its welcome read)."""
    peer = client.welcome["peer"]
    session = [m for m in client.log if m["type"] == "welcome"][-1]["session"]
    last = max(client.seqs(), default=0)
    resumed = backend.client(node, backend.resume_query(peer, session, last))
    welcome = resumed.wait(lambda m: m["type"] == "welcome")
    assert welcome["resumed"] is True and welcome["peer"] == peer and not welcome.get("gap"), welcome
    assert welcome["session"] != session
    return resumed, last


def resume_node(backend, bob, home):
    """Where a dropped client resumes: on another node where there are nodes. The mesh keeps a
    session's buffer on its node (Docs/protocol.md, "Several nodes (extension)", PeerMesh: "a client
    that resumes on another node gets 4002"), which the test checks before resuming at home."""
    other = other_node(backend, home)
    if backend.kind != "mesh":
        return other
    peer = bob.welcome["peer"]
    session = bob.welcome["session"]
    elsewhere = backend.client(other, backend.resume_query(peer, session, max(bob.seqs(), default=0)))
    assert elsewhere.expect_close()[0] == 4002, elsewhere.log
    elsewhere.close()
    return home


def test_resume_replays_what_was_missed_once_and_in_order(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    ids = []

    def send(n, queued):
        ids.append(f"o{n}")
        reply = alice.request({"type": "offer", "to": b, "sdp": f"v=0 {n}", "id": f"o{n}"})
        assert reply["type"] == "ack" and bool(reply.get("queued")) == queued, reply

    for n in range(2):
        send(n, queued=False)
    for n in range(2):
        bob.wait(lambda m, n=n: m.get("id") == f"o{n}" and "seq" in m)
    bob.drop()
    time.sleep(0.5)  # the node notices the drop; the session waits for a resume
    for n in range(2, 5):
        send(n, queued=True)
    node = resume_node(backend, bob, 1)
    resumed, last = resume(backend, bob, node)
    replayed = [resumed.wait(lambda m, n=n: m.get("id") == f"o{n}" and "seq" in m) for n in range(2, 5)]
    assert all(m["seq"] > last for m in replayed), (last, replayed)
    # Live traffic continues on the new connection, both ways; rooms are unchanged (the others saw no peer-left).
    for n in range(5, 7):
        send(n, queued=False)
    live = [resumed.wait(lambda m, n=n: m.get("id") == f"o{n}" and "seq" in m) for n in range(5, 7)]
    assert resumed.request({"type": "answer", "to": a, "sdp": "v=0 back", "room": room, "id": "back"})["type"] == "ack"
    assert alice.wait(lambda m: m.get("type") == "answer")["from"] == b
    resumed.collect(0.5)
    everything = bob.received() + resumed.received()
    offers = [m["id"] for m in everything if m.get("from") == a and m.get("type") == "offer"]
    assert offers == ids, f"each offer once, in order: {offers}"
    seqs = [m["seq"] for m in everything]
    assert strictly_increasing(seqs), seqs
    assert [m["seq"] for m in replayed + live] == sorted(m["seq"] for m in replayed + live)
    assert not any(m.get("type") == "peer-left" and m.get("peer") == b for m in alice.log), "the room saw bob leave"
    for client in (alice, resumed):
        client.close()


def test_a_used_resume_token_resumes_only_once(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    used = bob.welcome["session"]
    bob.drop()
    time.sleep(0.5)
    node = resume_node(backend, bob, 1)
    resumed, _ = resume(backend, bob, node)
    # The welcome has been read and nothing sent yet: the used token is still refused, on the other node
    # where a session can resume on any node, on the session's own node on the mesh.
    again_node = node if backend.kind == "mesh" else other_node(backend, node)
    again = backend.client(again_node, backend.resume_query(b, used, 0))
    code, reason = again.expect_close()
    assert code == 4002, (code, reason, again.log)
    assert not any(m["type"] == "welcome" for m in again.log), again.log
    # The live session is untouched: still open, still signalled, still answering.
    resumed.collect(0.5)
    assert resumed.closed is None, f"the live session was closed: {resumed.closed}"
    assert alice.request({"type": "offer", "to": b, "sdp": "v=0 after", "id": "after"}) == {"type": "ack", "id": "after"}
    assert resumed.wait(lambda m: m.get("id") == "after" and "seq" in m)["from"] == a
    assert resumed.request({"type": "ping", "id": "p"})["type"] == "pong"
    # Once used on the connection (it sent something), the old token stays refused too.
    third = backend.client(node, backend.resume_query(b, used, 0))
    assert third.expect_close()[0] == 4002
    assert resumed.request({"type": "ping", "id": "p2"})["type"] == "pong"
    for client in (alice, resumed, again, third):
        client.close()


def test_expired_back_to_the_sender_when_the_grace_runs_out(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    bob.drop()
    dropped = time.monotonic()
    time.sleep(0.5)
    reply = alice.request({"type": "offer", "to": b, "sdp": "v=0 never read", "id": "lost"})
    assert reply == {"type": "ack", "id": "lost", "queued": True}, reply
    reply = alice.request({"type": "candidate", "to": b, "candidate": None})
    assert reply["type"] == "ack" and reply.get("queued") is True, reply
    unnamed = reply["id"]
    left = alice.wait(lambda m: m.get("type") == "peer-left" and m.get("peer") == b, timeout=GRACE + 8)
    took = time.monotonic() - dropped
    assert took >= GRACE - 0.5, f"peer-left {took:.1f} s after the drop, before the grace period ended"
    expired = alice.wait(lambda m: m.get("type") == "expired" and m.get("id") == "lost", timeout=5)
    assert expired["to"] == b and expired["signal"] == "offer" and "seq" in expired, expired
    other = alice.wait(lambda m: m.get("type") == "expired" and m.get("signal") == "candidate", timeout=5)
    assert other["to"] == b and other.get("id") == unnamed, other
    # The others get peer-left first, then each sender gets expired (Docs/protocol.md, "expired").
    assert left["seq"] < expired["seq"], (left, expired)
    assert strictly_increasing(alice.seqs()), alice.seqs()
    # The session is gone: its token no longer resumes.
    gone = backend.client(1, backend.resume_query(b, bob.welcome["session"], 0))
    assert gone.expect_close()[0] == 4002
    for client in (alice, gone):
        client.close()


def test_queue_full_while_the_recipient_is_away(backend):
    a, b, room = unique("alice", "bob", "room")
    bound = LIMITS["resume_buffer_messages"]
    alice = backend.connect(0, a, rooms=[room])
    bob = backend.connect(1, b, rooms=[room])
    backend.settle()
    bob.drop()
    time.sleep(0.5)
    for n in range(bound):
        reply = alice.request({"type": "message", "to": b, "data": n, "id": f"q{n}"})
        assert reply == {"type": "ack", "id": f"q{n}", "queued": True}, reply
    assert_refused_without_ack(alice, {"type": "message", "to": b, "data": "one too many", "id": "over"}, "queue-full")
    # What was queued is all delivered on the resume, once each; the refused one is not.
    node = resume_node(backend, bob, 1)
    resumed, _ = resume(backend, bob, node)
    for n in range(bound):
        resumed.wait(lambda m, n=n: m.get("id") == f"q{n}" and "seq" in m)
    resumed.collect(0.5)
    got = [m["id"] for m in resumed.received(lambda m: m.get("from") == a)]
    assert got == [f"q{n}" for n in range(bound)], got
    for client in (alice, resumed):
        client.close()


def test_mesh_holds_ids_and_room_sizes_per_node(open_backend):
    """The documented difference (Docs/protocol.md, "Several nodes"): the mesh has no central authority,
    so a peer id and a room's size are exclusive per node. An id held on one node can be opened on
    another; with auth on, only the token's owner can do that (test_takeover_by_the_tokens_owner)."""
    if open_backend.kind != "mesh":
        pytest.skip("a mesh-only difference")
    a, room = unique("alice", "room")
    alice = open_backend.connect(0, a, rooms=[room])
    open_backend.settle()
    twin = open_backend.client(1, f"peer={a}")
    assert twin.wait(lambda m: m.get("type") == "welcome")["peer"] == a, twin.log
    # The first session is not disturbed.
    assert alice.request({"type": "ping", "id": "p"})["type"] == "pong"
    for client in (alice, twin):
        client.close()
