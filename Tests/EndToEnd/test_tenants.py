"""Tenants (issue 20, item 4): a token's `tenant` claim puts its session in that tenant's own namespace of
peer ids and rooms. Two tenants can both have a room `lobby` and a peer `alice` and never see each
other's presence or signals; names reach clients without the tenant; no claim is the default tenant.

Same backends as test_backends.py (the in-memory hub, two Redis cluster nodes, two mesh nodes, auth on),
peers on different nodes where there are nodes.
"""

import os
import time

from backends import backend, redis_server  # noqa: F401 - fixtures
from test_backends import assert_error, assert_nothing, other_node, resume_node  # noqa: F401


def names():
    tag = os.urandom(3).hex()
    return f"acme-{tag}", f"globex-{tag}", f"alice-{tag}", f"bob-{tag}", f"lobby-{tag}"


def about(peer):
    return lambda m: m.get("peer") == peer or m.get("from") == peer


def test_same_peer_id_and_room_in_two_tenants_never_meet(backend):
    acme, globex, a, b, lobby = names()
    # The same id `a` in three namespaces at once: acme, globex and the default tenant. No id-taken, no
    # takeover: they are three peers.
    acme_alice = backend.connect(0, a, rooms=[lobby], tenant=acme)
    globex_alice = backend.connect(other_node(backend, 0), a, rooms=[lobby], tenant=globex)
    default_alice = backend.connect(0, a, rooms=[lobby])
    for client in (acme_alice, globex_alice, default_alice):
        joined = client.replies("join-" + lobby)[0]
        assert joined["room"] == lobby and joined["peers"] == [], joined
    backend.settle()
    acme_bob = backend.connect(other_node(backend, 0), b, rooms=[lobby], tenant=acme)
    joined = acme_bob.replies("join-" + lobby)[0]
    members = [p["peer"] for p in joined["peers"]]
    if backend.kind == "mesh" and not members:
        # Docs/protocol.md, "Several nodes (extension)": on the mesh `joined` lists the joiner's own node's
        # members; the others arrive right after as `peer-joined`.
        acme_bob.wait(lambda m: m["type"] == "peer-joined")
        acme_bob.collect(0.5)
        members = [m["peer"] for m in acme_bob.log if m["type"] == "peer-joined"]
    assert members == [a], joined
    # Only acme's alice hears bob arrive, with the names its tenant knows.
    seen = acme_alice.wait(lambda m: m["type"] == "peer-joined" and m["peer"] == b)
    assert seen["room"] == lobby, seen
    for outsider in (globex_alice, default_alice):
        assert_nothing(outsider, lambda m: m["type"] == "peer-joined", what="presence across tenants")

    # An offer to `a` from acme reaches acme's alice, from bob as acme knows him.
    assert acme_bob.request({"type": "offer", "to": a, "sdp": "v=0 acme", "id": "o1"})["type"] == "ack"
    offer = acme_alice.wait(lambda m: m["type"] == "offer")
    assert offer["from"] == b and offer["to"] == a and offer["sdp"] == "v=0 acme", offer
    # A room message in acme's lobby reaches acme's members only.
    reply = acme_bob.request({"type": "message", "room": lobby, "data": {"hi": 1}, "id": "m1"})
    assert reply["type"] == "ack", reply
    message = acme_alice.wait(lambda m: m["type"] == "message")
    assert message["from"] == b and message["room"] == lobby, message
    for outsider in (globex_alice, default_alice):
        assert_nothing(outsider, about(b), what="a signal across tenants")

    # globex's alice cannot reach acme's bob: in globex there is no bob.
    reply = globex_alice.request({"type": "offer", "to": b, "sdp": "v=0", "id": "o2"})
    assert_error(reply, "peer-unavailable", "o2")
    assert reply["message"] == f'peer "{b}" is not connected', reply
    assert_nothing(acme_bob, lambda m: m["type"] == "offer", what="a signal from another tenant")

    # Leaving: only acme's alice sees bob go.
    acme_bob.close()
    acme_alice.wait(lambda m: m["type"] == "peer-left" and m["peer"] == b, timeout=8)
    for outsider in (globex_alice, default_alice):
        assert_nothing(outsider, lambda m: m["type"] == "peer-left", duration=0.5, what="presence across tenants")
    for client in (acme_alice, globex_alice, default_alice):
        client.close()


def test_a_resume_or_fresh_token_from_another_tenant_is_refused(backend):
    acme, globex, a, _, lobby = names()
    alice = backend.connect(0, a, rooms=[lobby], tenant=acme)
    # In band: the same `sub` in another tenant is another peer.
    reply = alice.request({"type": "auth", "token": backend.token(a, tenant=globex), "id": "a1"})
    assert_error(reply, "unauthorized", "a1")
    assert reply["message"] == "the token is for another peer", reply
    assert alice.request({"type": "auth", "token": backend.token(a, tenant=acme), "id": "a2"})["type"] == "authed"
    # A resume of acme's alice with globex's token for the same `sub` is refused; with acme's it resumes.
    session, last = alice.welcome["session"], max(alice.seqs(), default=0)
    alice.drop()
    node = resume_node(backend, alice, 0)
    stranger = backend.client(node, backend.resume_query(a, session, last, tenant=globex))
    code, _ = stranger.expect_close()
    assert code in (4001, 4002), stranger.log
    stranger.close()
    resumed = backend.client(node, backend.resume_query(a, session, last, tenant=acme))
    welcome = resumed.wait(lambda m: m["type"] == "welcome")
    assert welcome["resumed"] is True and welcome["peer"] == a, welcome
    resumed.close()


def test_a_token_with_an_invalid_tenant_is_refused(backend):
    _, _, a, _, _ = names()
    client = backend.client(0, "token=" + backend.token(a, tenant="no/slashes"))
    assert client.expect_close() == (4001, "token tenant is not a valid tenant name"), client.log
    client.close()


def test_sessions_per_tenant_are_capped_and_counted(start_hub):
    """`--max-sessions-per-tenant 2`: a tenant's third session is refused (`tenant-full`, 1008) while
    another tenant and the default tenant still connect; a closed session gives its place back. The
    per-tenant series on /metrics count sessions, messages and refusals, with labels bounded by
    `--metrics-max-tenants` (the third tenant is counted as "(other)")."""
    from backends import JWT_SECRET, mint_token
    from e2e_helpers import metric
    from rawws import RawWS

    hub = start_hub(
        "--jwt-secret", JWT_SECRET, "--max-sessions-per-tenant", "2", "--metrics-max-tenants", "2",
        "--log-level", "warning",
    )
    acme, globex, a, b, _ = names()

    def connect(sub, tenant):
        ws = RawWS(hub.port, "/ws?token=" + mint_token(JWT_SECRET, sub, tenant=tenant))
        assert ws.status == 101, ws.response_head
        return ws

    first, second = connect(a, acme), connect(b, acme)
    for ws in (first, second):
        ws.read_welcome()
    third = connect("carol", acme)
    code, reason, seen = third.expect_close()
    assert code == 1008 and [m["code"] for m in seen] == ["tenant-full"], (code, reason, seen)
    others = [connect(a, globex), connect(a, None), connect(a, "initech")]
    for ws in others:
        ws.read_welcome()
    assert first.request({"type": "ping", "id": "p"})["type"] == "pong"
    assert metric(hub, "signal_tenant_sessions", tenant=acme) == 2
    assert metric(hub, "signal_tenant_sessions_refused_total", tenant=acme) == 1
    assert metric(hub, "signal_tenant_messages_total", tenant=acme) == 1
    assert metric(hub, "signal_tenant_sessions", tenant=globex) == 1
    assert metric(hub, "signal_tenant_sessions", tenant="(default)") == 1
    assert metric(hub, "signal_tenant_sessions", tenant="(other)") == 1
    # A closed session gives its place back.
    first.close()
    deadline = time.monotonic() + 5
    while metric(hub, "signal_tenant_sessions", tenant=acme) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    again = connect("carol", acme)
    again.read_welcome()
    for ws in [second, again] + others:
        ws.close()


def test_rooms_per_tenant_are_capped_on_every_backend(start_hub, tmp_path, redis_server):  # noqa: F811
    """`--max-rooms-per-tenant 2`: a tenant's join that would open a third room gets `tenant-full` (the
    connection stays), joining one of its two rooms still works, another tenant and the default tenant
    are not held back, and a room that empties gives its place back. On the single hub, across two Redis
    cluster nodes (the tenant's rooms counted in Redis), and on a mesh node (counted per node)."""
    from backends import KINDS, start_backend

    for kind in KINDS:
        redis = redis_server.get() if kind == "cluster" else None
        (tmp_path / kind).mkdir()
        backend = start_backend(
            kind, tmp_path / kind, auth=True, redis=redis, prefix="trooms",
            node_args=lambda i: ["--max-rooms-per-tenant", "2"],
        )
        try:
            acme, globex, a, b, _ = names()
            rooms = [f"room{n}-{a}" for n in range(3)]
            alice = backend.connect(0, a, rooms=rooms[:2], tenant=acme)
            bob = backend.connect(other_node(backend, 0) if kind == "cluster" else 0, b, tenant=acme)
            reply = bob.request({"type": "join", "room": rooms[2], "id": "j3"})
            assert_error(reply, "tenant-full", "j3")
            assert reply["message"] == "the tenant has the most rooms it may have (2)", (kind, reply)
            assert bob.request({"type": "join", "room": rooms[0], "id": "j0"})["type"] == "joined", kind
            other = backend.connect(0, a, rooms=rooms[:2], tenant=globex)
            plain = backend.connect(0, a, rooms=rooms)
            # alice and bob leave rooms[0]: it empties, and a new room fits again.
            for client in (alice, bob):
                assert client.request({"type": "leave", "room": rooms[0], "id": "l0"})["type"] == "left", kind
            assert bob.request({"type": "join", "room": rooms[2], "id": "j4"})["type"] == "joined", kind
            for client in (alice, bob, other, plain):
                client.close()
        finally:
            backend.stop()


def test_a_room_counted_with_nobody_in_it_is_released_across_cluster_nodes(tmp_path, redis_server):  # noqa: F811
    """A room stays counted against its tenant with nobody in it when a join fails after its reservation
    or a node dies between a room's last leave and its release (the count is a set in Redis, apart from the
    rooms). A full tenant's next join finds such rooms and gives their places back; the bound still holds."""
    from backends import start_backend

    redis = redis_server.get()
    backend = start_backend(
        "cluster", tmp_path, auth=True, redis=redis, prefix="tghost",
        node_args=lambda i: ["--max-rooms-per-tenant", "2"],
    )
    try:
        acme, _, a, b, _ = names()
        rooms = [f"room{n}-{a}" for n in range(3)]
        counted = "tghost:tenant:{%s}:rooms" % acme
        alice = backend.connect(0, a, rooms=rooms[:1], tenant=acme)
        assert redis.integer("SCARD", counted) == 1
        # A room left behind, as by a node killed between a join's reservation and the join.
        assert redis.integer("SADD", counted, f"{acme}/ghost-{a}") == 1
        bob = backend.connect(other_node(backend, 0), b, tenant=acme)
        assert bob.request({"type": "join", "room": rooms[1], "id": "j1"})["type"] == "joined"
        assert redis.integer("SISMEMBER", counted, f"{acme}/ghost-{a}") == 0
        assert redis.integer("SCARD", counted) == 2
        # Two rooms with people in them: the third is still refused.
        assert_error(bob.request({"type": "join", "room": rooms[2], "id": "j2"}), "tenant-full", "j2")
        assert redis.integer("SCARD", counted) == 2
        for client in (alice, bob):
            client.close()
    finally:
        backend.stop()


def test_a_full_tenants_checks_walk_its_rooms_until_a_room_with_nobody_in_it_is_found(tmp_path, redis_server):  # noqa: F811
    """A tenant at its bound with many rooms, one of them counted with nobody in it: each refused join reads
    about 64 of the rooms (at most one check per tenant every 2 s on a node), going on where the last check
    stopped, so the room is found within one walk through the set (200 rooms: four checks), not by luck."""
    from backends import start_backend

    redis = redis_server.get()
    rooms = 200
    backend = start_backend(
        "cluster", tmp_path, auth=True, redis=redis, prefix="twalk",
        node_args=lambda i: ["--max-rooms-per-tenant", str(rooms)],
    )
    try:
        acme, _, a, b, _ = names()
        counted = "twalk:tenant:{%s}:rooms" % acme
        busy = [f"{acme}/busy{n}-{a}" for n in range(rooms - 1)]
        for room in busy:  # rooms with somebody in them, as far as the count is concerned
            redis.integer("HSET", "twalk:room:{%s}" % room, f"{acme}/someone", "")
        assert redis.integer("SADD", counted, *busy, f"{acme}/ghost-{a}") == rooms
        bob = backend.connect(0, b, tenant=acme)
        refused = 0
        while True:
            reply = bob.request({"type": "join", "room": f"new-{a}", "id": f"j{refused}"})
            if reply["type"] == "joined":
                break
            assert_error(reply, "tenant-full", f"j{refused}")
            refused += 1
            assert refused < 5, "five checks (one more than a walk through 200 rooms takes) found no empty room"
            time.sleep(2.1)
        assert redis.integer("SISMEMBER", counted, f"{acme}/ghost-{a}") == 0
        assert redis.integer("SCARD", counted) == rooms
        bob.close()
    finally:
        backend.stop()


def test_a_join_racing_the_last_leave_keeps_its_room_counted(tmp_path, redis_server):  # noqa: F811
    """A join on one cluster node racing the last leave of its room on another: the join reserves the room
    (already counted), the leave empties it and releases it, the join then enters it. The room has a member
    and must count against its tenant. Over many rounds, whichever way the two interleave, it does."""
    import threading

    from backends import start_backend

    redis = redis_server.get()
    backend = start_backend(
        "cluster", tmp_path, auth=True, redis=redis, prefix="trace",
        node_args=lambda i: ["--max-rooms-per-tenant", "5", "--rate-per-second", "1000", "--rate-burst", "1000"],
    )
    try:
        acme, _, a, b, _ = names()
        room = f"race-{a}"
        counted = "trace:tenant:{%s}:rooms" % acme
        alice = backend.connect(0, a, tenant=acme)
        bob = backend.connect(other_node(backend, 0), b, tenant=acme)
        uncounted = 0
        for n in range(60):
            assert alice.request({"type": "join", "room": room, "id": f"a{n}"})["type"] == "joined"
            replies = {}
            go = threading.Barrier(2)

            def run(name, client, message):
                go.wait()
                replies[name] = client.request(message)

            threads = [
                threading.Thread(target=run, args=("leave", alice, {"type": "leave", "room": room, "id": f"l{n}"})),
                threading.Thread(target=run, args=("join", bob, {"type": "join", "room": room, "id": f"j{n}"})),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert replies["leave"]["type"] == "left" and replies["join"]["type"] == "joined", replies
            if redis.integer("SISMEMBER", counted, f"{acme}/{room}") != 1:
                uncounted += 1
            assert bob.request({"type": "leave", "room": room, "id": f"b{n}"})["type"] == "left"
        assert uncounted == 0, f"{uncounted} of 60 rounds left the room with bob in it uncounted"
        for client in (alice, bob):
            client.close()
    finally:
        backend.stop()
