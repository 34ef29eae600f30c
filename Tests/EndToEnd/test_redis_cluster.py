"""Scale-out on a Redis Cluster: three `signal serve --redis-cluster` nodes on a real Redis Cluster of three
primaries and three replicas (Docs/scaling.md, "Redis Cluster"). Peers on different nodes relay signals,
see each other's presence and resume elsewhere; through a `CLUSTER FAILOVER` and through a primary killed
with SIGKILL, every acknowledged signal is delivered exactly once and in order, every other one is answered
with an error, and none is lost silently."""

import asyncio
import subprocess
import time

import pytest

from cluster_helpers import Peer, RedisClusterNodes, RedisServer, eventually
from conftest import SIGNAL
from test_cluster import assert_exactly_once_in_order, wait_ready

GRACE = 5


@pytest.fixture
def cluster(tmp_path):
    # The nodes connect as the least-privilege user of Docs/redis-users.acl (default prefix `sig`).
    nodes = RedisClusterNodes(tmp_path, least_privilege=True)
    nodes.allow_prefix("sig")
    yield nodes
    nodes.close()


def start_nodes(start_hub, cluster, count=3):
    hubs = [
        start_hub(
            # Two seeds: any node of the Redis Cluster can tell the slot map.
            "--redis", cluster.urls[i % 6], "--redis", cluster.urls[(i + 1) % 6], "--redis-cluster",
            "--node-id", f"n{i}", "--resume-grace", str(GRACE), "--cluster-refresh", "1", "--log-level", "warning",
            "--rate-burst", "100000", "--rate-per-second", "1000000",
        )
        for i in range(count)
    ]
    for hub in hubs:
        wait_ready(hub, True)
    return hubs


def session_slot(cluster, peer):
    return cluster.slot(f"sig:{{{peer}}}:s")


def test_peers_on_different_nodes_relay_join_and_resume_across_shards(start_hub, cluster):
    hubs = start_nodes(start_hub, cluster)
    names = [f"peer{i}" for i in range(9)]
    shards = {cluster.primary_of(session_slot(cluster, n)) for n in names}
    assert len(shards) >= 2, "the peers' sessions should live on several shards"

    async def scenario():
        peers = [Peer(n) for n in names]
        for i, p in enumerate(peers):
            await p.connect(hubs[i % 3].ws)
        for p in peers:
            reply = await p.request({"type": "join", "room": "lobby", "meta": {"name": p.name}})
            assert reply["type"] == "joined", reply
        for i, p in enumerate(peers):
            later = {q.name for q in peers[i + 1:]}
            await eventually(lambda p=p, later=later: {m["peer"] for m in p.of_type("peer-joined")} == later,
                             what=f"presence seen by {p.name}")
        acked = {}
        for a in peers:
            for b in peers:
                if a is b:
                    continue
                reply = await a.request({"type": "offer", "to": b.name, "sdp": f"v=0 {a.name}", "room": "lobby"})
                assert reply["type"] == "ack" and not reply.get("queued"), reply
                acked.setdefault((a.name, b.name), set()).add(reply["id"])
        by_name = {p.name: p for p in peers}
        await eventually(lambda: all(assert_exactly_once_in_order(by_name[b], a) >= ids for (a, b), ids in acked.items()),
                         what="every offer delivered")

        # peer0 drops and resumes on another node: what was sent meanwhile is replayed, nothing twice.
        mover = peers[0]
        mover.ws.transport.abort()  # gone without a close frame: the session waits for a resume
        await mover.reader
        queued = await peers[1].request({"type": "message", "to": mover.name, "data": {"while": "away"}})
        assert queued["type"] == "ack", queued  # `queued` once its node noticed the drop; replayed either way
        welcome = await mover.connect(hubs[2].ws, resume=True)
        assert welcome.get("resumed") is True and not welcome.get("gap"), welcome
        await eventually(lambda: queued["id"] in assert_exactly_once_in_order(mover, peers[1].name), what="replay")
        for p in peers:
            seqs = [m["seq"] for m in p.messages]
            assert seqs == list(range(1, len(seqs) + 1)), f"{p.name}: seq not contiguous"

        # A peer that leaves for good: the others see it go, wherever they are.
        await peers[8].close()
        await eventually(lambda: all(any(m["type"] == "peer-left" and m["peer"] == "peer8" for m in p.messages)
                                     for p in peers[:8]), timeout=GRACE + 8, what="peer-left")
        for p in peers[:8]:
            await p.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fault", ["failover", "kill"])
def test_primary_failover_during_traffic_loses_no_signal_silently(start_hub, cluster, fault):
    hubs = start_nodes(start_hub, cluster)
    # Recipients whose sessions live on the shard that fails over, and others.
    names = [f"r{i}" for i in range(40)]
    victim = cluster.primary_of(session_slot(cluster, names[0]))
    hit = [n for n in names if cluster.primary_of(session_slot(cluster, n)) == victim][:3]
    spared = [n for n in names if cluster.primary_of(session_slot(cluster, n)) != victim][:2]
    replica = cluster.replica_of(victim)

    async def scenario():
        senders = [Peer("s0"), Peer("s1")]
        receivers = [Peer(n) for n in hit + spared]
        for i, p in enumerate(senders):
            await p.connect(hubs[i].ws)
        for i, p in enumerate(receivers):
            await p.connect(hubs[(i + 1) % 3].ws)
        for p in senders + receivers:
            assert (await p.request({"type": "join", "room": "f"}))["type"] == "joined"
        outcomes = []  # (sender, recipient, reply)
        stop = asyncio.Event()

        async def stream(sender, to):
            n = 0
            while not stop.is_set():
                n += 1
                reply = await sender.request({"type": "message", "to": to.name, "data": {"n": n}}, timeout=20)
                outcomes.append((sender.name, to.name, reply))
                await asyncio.sleep(0.01)

        streams = [asyncio.ensure_future(stream(s, r)) for s in senders for r in receivers]
        await asyncio.sleep(1.5)
        started = time.time()
        if fault == "failover":
            await asyncio.to_thread(cluster.cli, replica, "CLUSTER", "FAILOVER")
        else:
            await asyncio.to_thread(cluster.kill, victim)
        await asyncio.to_thread(lambda: eventually_sync(lambda: cluster.primary_of(session_slot(cluster, hit[0])) == replica))
        promoted_after = time.time() - started
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.gather(*streams)

        acks = [(s, r, rep) for s, r, rep in outcomes if rep["type"] == "ack"]
        errors = [rep for _, _, rep in outcomes if rep["type"] == "error"]
        assert len(acks) + len(errors) == len(outcomes), "every signal is answered"
        assert all(e["code"] == "unavailable" for e in errors), errors
        late = 0
        for r in receivers:
            for s in senders:
                acked = {rep["id"] for s2, r2, rep in acks if s2 == s.name and r2 == r.name}
                sent = {rep["id"] for s2, r2, rep in outcomes if s2 == s.name and r2 == r.name}
                await eventually(lambda r=r, s=s, acked=acked: assert_exactly_once_in_order(r, s.name) >= acked,
                                 what=f"every acknowledged signal from {s.name} to {r.name}")
                received = assert_exactly_once_in_order(r, s.name)
                assert received <= sent
                late += len(received - acked)
            seqs = [m["seq"] for m in r.messages]
            assert seqs == sorted(set(seqs)), f"{r.name}: seq repeated or out of order"
        # After the failover, the shard's new primary serves new sessions and signals.
        newcomer = Peer("newcomer")
        await newcomer.connect(hubs[0].ws)
        reply = await newcomer.request({"type": "message", "to": hit[0], "data": "hello"})
        assert reply["type"] == "ack", reply
        print(f"\n{fault}: new primary after {promoted_after:.1f} s; {len(outcomes)} signals, {len(acks)} acknowledged "
              f"and delivered exactly once in order, {len(errors)} answered 'unavailable', {late} delivered despite an "
              f"error, 0 silent")
        assert len(acks) > 100
        for p in senders + receivers + [newcomer]:
            await p.close()

    asyncio.run(scenario())
    for hub in hubs:
        wait_ready(hub, True)


def eventually_sync(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError("the replica was not promoted")


@pytest.mark.parametrize("args, complaint", [
    (["--redis-cluster"], "--redis-cluster needs --redis"),
    (["--redis", "redis://127.0.0.1:1", "--redis", "redis://127.0.0.1:2"], "several times with --redis-cluster"),
    (["--redis", "redis://127.0.0.1:1", "--redis-cluster", "--node-id", "a{b}"], "may not contain { or }"),
    (["--redis", "redis://127.0.0.1:1/2", "--redis-cluster"], "only database 0"),
])
def test_redis_cluster_flags_are_checked(args, complaint):
    result = subprocess.run([SIGNAL, "serve", "--port", "0", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
def test_negotiations_across_nodes_one_redis_and_a_redis_cluster(start_hub, tmp_path, backend):
    """The same load on one Redis and on a Redis Cluster (the figures in Docs/scaling.md): 80 peers on 3
    nodes in 20 rooms of 4, every pair negotiating (offer, answer, three candidates and end-of-candidates
    each way); every signal delivered exactly once and in order, every peer's seq contiguous."""
    if backend == "redis":
        redis = RedisServer(tmp_path)
        stop = redis.stop
        flags = [["--redis", redis.url]] * 3
    else:
        nodes = RedisClusterNodes(tmp_path)
        stop = nodes.stop
        flags = [["--redis", nodes.urls[i], "--redis-cluster"] for i in range(3)]
    try:
        hubs = [start_hub(*flags[i], "--node-id", f"n{i}", "--log-level", "warning", "--rate-burst", "100000",
                          "--rate-per-second", "1000000") for i in range(3)]
        for hub in hubs:
            wait_ready(hub, True)

        async def scenario():
            peers = [Peer(f"p{i:02d}") for i in range(80)]
            await asyncio.gather(*(p.connect(hubs[i % 3].ws) for i, p in enumerate(peers)))
            rooms = {}
            for i, p in enumerate(peers):
                rooms.setdefault(f"room-{i % 20}", []).append(p)
            for room, members in rooms.items():
                for p in members:
                    assert (await p.request({"type": "join", "room": room}))["type"] == "joined"
            sent = {}

            async def send(a, b, msg):
                reply = await a.request(dict(msg, to=b.name))
                assert reply["type"] == "ack", reply
                sent.setdefault((a.name, b.name), set()).add(reply["id"])

            async def negotiate(a, b, room):
                await send(a, b, {"type": "offer", "sdp": "v=0 offer", "room": room})
                await send(b, a, {"type": "answer", "sdp": "v=0 answer"})
                for k in range(4):
                    cand = None if k == 3 else {"candidate": f"candidate:{k} 1 udp 1 127.0.0.1 {5000 + k} typ host",
                                                "sdpMid": "0", "sdpMLineIndex": 0}
                    await asyncio.gather(send(a, b, {"type": "candidate", "candidate": cand}),
                                         send(b, a, {"type": "candidate", "candidate": cand}))

            pairs = [(a, b, room) for room, members in rooms.items()
                     for i, a in enumerate(members) for b in members[i + 1:]]
            started = time.time()
            await asyncio.gather(*(negotiate(a, b, room) for a, b, room in pairs))
            elapsed = time.time() - started
            by_name = {p.name: p for p in peers}
            await eventually(lambda: all(assert_exactly_once_in_order(by_name[b], a) >= ids
                                         for (a, b), ids in sent.items()), what="every signal delivered")
            for p in peers:
                seqs = [m["seq"] for m in p.messages]
                assert seqs == list(range(1, len(seqs) + 1)), f"{p.name}: seq not contiguous"
            total = sum(len(ids) for ids in sent.values())
            print(f"\n{backend}: {len(pairs)} negotiations, {total} signals across 3 nodes in {elapsed:.2f} s")
            await asyncio.gather(*(p.close() for p in peers))
            return total

        assert asyncio.run(scenario()) == 120 * 10
    finally:
        stop()
