"""Token lifetime on every backend (issue 19, item 4): a session ends when its token expires (an `error`
and close 4001 "token expired"), unless the client sends a fresh token in band (`auth`); the fresh
token's `rooms` claim applies at once (rooms it no longer grants are left, with `peer-left` to the other
members, wherever they are), as does the claim of the token a resume presents.

Same backends as test_backends.py (the in-memory hub, two Redis cluster nodes, two mesh nodes, auth
on), peers on different nodes where there are nodes.
"""

import time

from backends import backend, redis_server  # noqa: F401 - fixtures
from test_backends import QUIET, assert_error, assert_nothing, other_node, resume_node, unique


def peer_left(room, peer):
    return lambda m: m["type"] == "peer-left" and m.get("room") == room and m.get("peer") == peer


def test_a_session_ends_when_its_token_expires(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room], ttl=3)
    bob = backend.connect(other_node(backend, 0), b, rooms=[room])
    backend.settle()
    started = time.monotonic()
    code, reason = alice.expect_close(timeout=8)
    lasted = time.monotonic() - started
    assert (code, reason) == (4001, "token expired"), alice.log
    errors = [m for m in alice.log if m["type"] == "error"]
    assert errors and errors[-1]["code"] == "unauthorized" and errors[-1]["message"] == "token expired", errors
    assert lasted < 4.5, f"closed {lasted:.1f} s after the welcome of a 3 s token"
    # The session ended (4001 keeps nothing): the other member learns it at once, not after the grace.
    bob.wait(peer_left(room, a), timeout=1)
    bob.close()


def test_a_fresh_token_in_band_keeps_the_session(backend):
    a, b, room = unique("alice", "bob", "room")
    alice = backend.connect(0, a, rooms=[room], ttl=3)
    bob = backend.connect(other_node(backend, 0), b, rooms=[room])
    backend.settle()
    reply = alice.request({"type": "auth", "token": backend.token(a, ttl=600), "id": "auth-1"})
    assert reply["type"] == "authed", reply
    assert abs(reply["expires"] - (time.time() + 600)) < 30, reply
    alice.collect(4)
    assert alice.closed is None, alice.log
    assert alice.request({"type": "ping", "id": "p1"})["type"] == "pong"
    offer = alice.request({"type": "offer", "to": b, "sdp": "v=0", "id": "o1"})
    assert offer["type"] == "ack", offer
    bob.wait(lambda m: m["type"] == "offer" and m["from"] == a)
    assert not [m for m in bob.log if m["type"] == "peer-left"], bob.log
    for client in (alice, bob):
        client.close()


def test_refused_tokens_in_band_leave_the_session_as_it_was(backend):
    a, room = unique("alice", "room")
    alice = backend.connect(0, a, rooms=[room], ttl=3)
    other = backend.token(a + "x", ttl=600)
    assert_error(alice.request({"type": "auth", "token": other, "id": "a1"}), "unauthorized", "a1")
    assert alice.replies("a1")[0]["message"] == "the token is for another peer"
    expired = backend.token(a, ttl=-10)
    assert_error(alice.request({"type": "auth", "token": expired, "id": "a2"}), "unauthorized", "a2")
    assert alice.replies("a2")[0]["message"] == "token expired"
    forged = backend.token(a, ttl=600)[:-4] + "AAAA"
    assert_error(alice.request({"type": "auth", "token": forged, "id": "a3"}), "unauthorized", "a3")
    assert_error(alice.request({"type": "auth", "id": "a4"}), "bad-message", "a4")
    # Still the first token's session: it ends at that token's expiry.
    assert alice.request({"type": "ping", "id": "p1"})["type"] == "pong"
    assert alice.expect_close(timeout=5) == (4001, "token expired"), alice.log


def test_a_fresh_token_with_fewer_rooms_leaves_the_others(backend):
    a, b, kept, revoked = unique("alice", "bob", "kept", "revoked")
    alice = backend.connect(0, a, rooms=[kept, revoked], token_rooms=[kept, revoked])
    bob = backend.connect(other_node(backend, 0), b, rooms=[kept, revoked])
    backend.settle()
    # The join right behind the `auth` is decided under the new token (requests wait for its check).
    alice.send({"type": "auth", "token": backend.token(a, [kept]), "id": "auth-1"})
    alice.send({"type": "join", "room": revoked, "id": "j1"})
    assert alice.wait(lambda m: m.get("id") == "auth-1")["type"] == "authed"
    alice.wait(lambda m: m["type"] == "left" and m["room"] == revoked and "id" not in m)
    assert_error(alice.wait(lambda m: m.get("id") == "j1"), "forbidden", "j1")
    bob.wait(peer_left(revoked, a))
    backend.settle()
    # Still in the room the new token grants: bob's room message reaches alice there only.
    for room in (kept, revoked):
        bob.send({"type": "message", "room": room, "data": room, "id": "m-" + room})
    alice.wait(lambda m: m["type"] == "message" and m["data"] == kept)
    assert_nothing(alice, lambda m: m["type"] == "message" and m.get("data") == revoked, what="message in a left room")
    assert not [m for m in bob.log if m["type"] == "peer-left" and m["room"] == kept], bob.log
    for client in (alice, bob):
        client.close()


def test_a_resume_applies_the_claims_of_the_token_it_presents(backend):
    a, b, kept, revoked = unique("alice", "bob", "kept", "revoked")
    alice = backend.connect(0, a, rooms=[kept, revoked], token_rooms=[kept, revoked])
    bob = backend.connect(other_node(backend, 0), b, rooms=[kept, revoked])
    backend.settle()
    alice.drop()
    node = resume_node(backend, alice, 0)
    session = alice.welcome["session"]
    resumed = backend.client(node, backend.resume_query(a, session, 0, token_rooms=[kept]))
    welcome = resumed.wait(lambda m: m["type"] == "welcome")
    assert welcome["resumed"] is True, welcome
    resumed.wait(lambda m: m["type"] == "left" and m["room"] == revoked)
    bob.wait(peer_left(revoked, a))
    reply = resumed.request({"type": "join", "room": revoked, "id": "j1"})
    assert_error(reply, "forbidden", "j1")
    backend.settle()
    bob.send({"type": "message", "room": kept, "data": "still here", "id": "m1"})
    resumed.wait(lambda m: m["type"] == "message" and m["data"] == "still here")
    assert_nothing(bob, peer_left(kept, a), duration=QUIET, what="peer-left for the room still granted")
    for client in (resumed, bob):
        client.close()
