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
