"""Sessions waiting to resume are bounded on every backend (Docs/security.md, row 23): at
`--max-detached-sessions`, and at `--max-detached-per-ip` for one address, the oldest waiting session
ends as if its grace period were over (its rooms hear `peer-left`, it can no longer be resumed); the
newest still resume.

The single hub and each mesh node bound the sessions waiting on that node; the Redis cluster bounds them
across all its nodes (sorted sets of waiting sessions in Redis, Docs/scaling.md), so the test drops its
clients on both nodes. Auth is on.
"""

import time

import pytest

from backends import KINDS, redis_server, start_backend  # noqa: F401 - fixture
from e2e_helpers import metric

DROPPED = 12
BOUND = 4


@pytest.mark.parametrize("bound", ["sessions", "per-ip"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_oldest_waiting_sessions_end_at_the_bound(kind, bound, tmp_path_factory, redis_server):
    sessions, per_ip = (BOUND, 100) if bound == "sessions" else (100, BOUND)
    flags = [
        "--resume-grace", "60", "--max-peers-per-room", "20",
        "--max-detached-sessions", str(sessions), "--max-detached-per-ip", str(per_ip),
    ]
    redis = redis_server.get() if kind == "cluster" else None
    backend = start_backend(
        kind, tmp_path_factory.mktemp(f"detached-{kind}-{bound}"), auth=True, redis=redis,
        prefix=f"detached-{bound}", node_args=lambda i: flags,
    )
    try:
        room = f"watch-{kind}-{bound}"
        bystanders = [backend.connect(i, f"bystander-{i}", rooms=[room]) for i in range(backend.nodes)]
        backend.settle()
        dropped = []
        started = time.monotonic()
        for n in range(DROPPED):
            node = n % backend.nodes
            client = backend.connect(node, f"dropper-{n}", rooms=[room])
            dropped.append((node, client.welcome["peer"], client.welcome["session"]))
            client.drop()  # no close frame: the session waits to resume
            time.sleep(0.05)
        # The cluster bounds the sessions waiting across its nodes; a mesh node (and the hub) its own.
        scopes = [dropped] if kind != "mesh" else [[d for d in dropped if d[0] == i] for i in range(backend.nodes)]
        evicted = [d for scope in scopes for d in scope[: len(scope) - BOUND]]
        kept = [d for scope in scopes for d in scope[len(scope) - BOUND:]]
        gone = {peer for _, peer, _ in evicted}
        seen = set()
        watcher = bystanders[0]
        deadline = time.monotonic() + 10
        while seen != gone and time.monotonic() < deadline:
            message = watcher.wait(lambda m: m["type"] == "peer-left", timeout=deadline - time.monotonic())
            seen.add(message["peer"])
        took = time.monotonic() - started
        assert seen == gone, f"peer-left for {sorted(seen)}, expected the oldest {sorted(gone)}"
        # Well within the 60 s grace: ended at the bound, not when their grace period ran out.
        assert took < 10, took
        counted = sum(metric(backend.hub(i), "signal_detached_sessions_evicted_total") for i in range(backend.nodes))
        assert counted == len(evicted), counted
        print(f"{kind}, {bound} bound {BOUND}: {DROPPED} dropped, {len(evicted)} ended at the bound in {took:.1f} s")
        # The newest still resume, on the node they left (the mesh keeps a session on its node).
        for node, peer, session in kept:
            client = backend.client(node, backend.resume_query(peer, session, 0))
            welcome = client.wait(lambda m: m["type"] == "welcome", timeout=5)
            assert welcome["resumed"] is True and welcome["peer"] == peer, welcome
            client.close()
        # An ended one does not.
        node, peer, session = evicted[0]
        client = backend.client(node, backend.resume_query(peer, session, 0))
        code, _ = client.expect_close(timeout=5)
        assert code is not None and not [m for m in client.log if m["type"] == "welcome"], client.log
        assert not [m for m in watcher.log if m["type"] == "peer-left" and m["peer"] not in gone], watcher.log
        for bystander in bystanders:
            bystander.close()
    finally:
        backend.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_a_session_resumed_from_another_address_leaves_the_count_of_the_one_it_left(kind, tmp_path_factory,
                                                                                    redis_server):
    """`--max-detached-per-ip 2`: V and then X drop from 127.0.0.2; X resumes from 127.0.0.3 (on the other
    node of the cluster); W drops from 127.0.0.2. Two sessions wait from 127.0.0.2 (V and W), within the
    bound: nobody ends, and V and W resume. (Counted under the address it resumed from, X would still
    count against 127.0.0.2, and W's drop would end V.)"""
    flags = ["--resume-grace", "60", "--max-peers-per-room", "20", "--max-detached-sessions", "100",
             "--max-detached-per-ip", "2"]
    redis = redis_server.get() if kind == "cluster" else None
    backend = start_backend(
        kind, tmp_path_factory.mktemp(f"moved-{kind}"), auth=True, redis=redis, prefix="detached-moved",
        node_args=lambda i: flags,
    )
    try:
        room = f"moved-{kind}"
        watcher = backend.connect(0, "watcher", rooms=[room])
        backend.settle()
        waiting = {}
        for name in ("v", "x"):
            client = backend.connect(0, f"{name}-{kind}", rooms=[room], source="127.0.0.2")
            waiting[name] = (client.welcome["peer"], client.welcome["session"])
            client.drop()
            time.sleep(0.2)
        # X comes back from another address (the mesh keeps a session on the node it left).
        elsewhere = 1 if kind == "cluster" else 0
        peer, session = waiting.pop("x")
        x = backend.client(elsewhere, backend.resume_query(peer, session, 0), source="127.0.0.3")
        assert x.wait(lambda m: m["type"] == "welcome", timeout=5)["resumed"] is True
        time.sleep(0.3)
        client = backend.connect(0, f"w-{kind}", rooms=[room], source="127.0.0.2")
        waiting["w"] = (client.welcome["peer"], client.welcome["session"])
        client.drop()
        watcher.collect(2.0)
        left = [m["peer"] for m in watcher.log if m["type"] == "peer-left"]
        assert not left, f"{kind}: {left} ended although only two sessions wait from 127.0.0.2"
        for peer, session in waiting.values():
            client = backend.client(0, backend.resume_query(peer, session, 0), source="127.0.0.2")
            welcome = client.wait(lambda m: m["type"] == "welcome", timeout=5)
            assert welcome["resumed"] is True and welcome["peer"] == peer, welcome
            client.close()
        for client in (x, watcher):
            client.close()
    finally:
        backend.stop()
