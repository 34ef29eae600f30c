"""Scale-out: several `signal serve --redis` nodes share peers, rooms and resume state through a real
redis-server. The load test and the fault tests of Docs/scaling.md."""

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
import websockets

from cluster_helpers import CuttableTCPProxy, Peer, RedisServer, eventually
from e2e_helpers import metric

GRACE = 5


@pytest.fixture
def redis(tmp_path):
    # The nodes connect as the least-privilege user of Docs/redis-users.acl (default prefix `sig`).
    server = RedisServer(tmp_path, least_privilege=True)
    server.allow_prefix("sig")
    yield server
    server.close()


def start_node(start_hub, redis_url, node, *extra):
    return start_hub(
        "--redis", redis_url, "--node-id", node,
        "--resume-grace", str(GRACE), "--cluster-refresh", "1", "--log-level", "warning", *extra,
    )


def start_cluster(start_hub, redis, count=3):
    hubs = [start_node(start_hub, redis.url, f"n{i}") for i in range(count)]
    for hub in hubs:
        wait_ready(hub, True)
    return hubs


def ready(hub):
    try:
        with urllib.request.urlopen(hub.http + "/readyz", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 200
    except OSError:
        return False


def wait_ready(hub, expected, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready(hub) == expected:
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"/readyz of {hub.port} never became {'ready' if expected else 'not ready'}")


def counter_of(msg):
    return int(msg["id"].rsplit("-", 1)[1])


def assert_exactly_once_in_order(peer, sender):
    """The signals `peer` got from `sender`: no id twice, and in the order they were sent."""
    got = [m for m in peer.messages if m.get("from") == sender and "id" in m]
    ids = [m["id"] for m in got]
    assert len(ids) == len(set(ids)), f"{peer.name} got duplicates from {sender}"
    counters = [counter_of(m) for m in got]
    assert counters == sorted(counters), f"{peer.name} got {sender}'s signals out of order"
    return set(ids)


def test_200_peers_in_50_rooms_negotiate_with_everyone_across_three_nodes(start_hub, redis):
    hubs = start_cluster(start_hub, redis)

    async def scenario():
        peers = [Peer(f"p{i:03d}") for i in range(200)]
        peers_by = {p.name: p for p in peers}
        await asyncio.gather(*(p.connect(hubs[i % 3].ws) for i, p in enumerate(peers)))
        rooms = {}
        for i, p in enumerate(peers):
            rooms.setdefault(f"room-{i % 50}", []).append(p)
        joined = {}

        async def join_room(room, members):
            for p in members:
                reply = await p.request({"type": "join", "room": room, "meta": {"name": p.name}})
                assert reply["type"] == "joined", reply
                joined[p.name] = {x["peer"] for x in reply["peers"]}

        await asyncio.gather(*(join_room(r, m) for r, m in rooms.items()))
        for room, members in rooms.items():
            names = {p.name for p in members}
            for p in members:
                await eventually(
                    lambda p=p, names=names: joined[p.name] | {m["peer"] for m in p.of_type("peer-joined")} == names - {p.name},
                    what=f"presence of {p.name}",
                )

        sent = {}  # (sender, recipient) -> ids acknowledged

        async def send(a, b, msg):
            reply = await a.request(dict(msg, to=b.name))
            assert reply["type"] == "ack" and not reply.get("queued"), reply
            sent.setdefault((a.name, b.name), set()).add(reply["id"])

        async def negotiate(a, b, room):
            await send(a, b, {"type": "offer", "sdp": f"v=0 offer {a.name}", "room": room, "sid": f"{a.name}:{b.name}"})
            await eventually(lambda: any(m["type"] == "offer" and m["from"] == a.name for m in b.messages), what="offer")
            await send(b, a, {"type": "answer", "sdp": f"v=0 answer {b.name}"})
            for k in range(4):
                cand = None if k == 3 else {"candidate": f"candidate:{k} 1 udp 1 127.0.0.1 {5000 + k} typ host", "sdpMid": "0", "sdpMLineIndex": 0}
                await asyncio.gather(send(a, b, {"type": "candidate", "candidate": cand}), send(b, a, {"type": "candidate", "candidate": cand}))

        pairs = [(a, b, room) for room, members in rooms.items() for i, a in enumerate(members) for b in members[i + 1:]]
        started = time.time()
        await asyncio.gather(*(negotiate(a, b, room) for a, b, room in pairs))
        elapsed = time.time() - started
        total = sum(len(ids) for ids in sent.values())
        await eventually(
            lambda: all(
                {m["id"] for m in peers_by[b].messages if m.get("from") == a and "id" in m} >= ids for (a, b), ids in sent.items()
            ),
            what="every signal delivered",
        )
        for (a, b), ids in sent.items():
            assert assert_exactly_once_in_order(peers_by[b], a) == ids
        for p in peers:
            seqs = [m["seq"] for m in p.messages]
            assert seqs == list(range(1, len(seqs) + 1)), f"{p.name}: seq not contiguous"
        print(f"\n{len(pairs)} negotiations, {total} signals across 3 nodes in {elapsed:.2f} s")
        await asyncio.gather(*(p.close() for p in peers))
        return len(pairs), total

    pairs, total = asyncio.run(scenario())
    assert pairs == 300 and total == 300 * 10
    cross = sum(metric(h, "signal_cluster_cross_node_signals_total") for h in hubs)
    assert cross > total / 2, f"only {cross} of {total} signals crossed nodes"


def test_killed_node_peers_resume_elsewhere_and_only_the_absent_one_leaves(start_hub, redis):
    hubs = start_cluster(start_hub, redis)

    async def scenario():
        movers = [Peer("mover-a"), Peer("mover-b")]
        absent = Peer("absent")
        watcher, sender = Peer("watcher"), Peer("sender")
        for p in movers + [absent]:
            await p.connect(hubs[0].ws)
        await watcher.connect(hubs[1].ws)
        await sender.connect(hubs[2].ws)
        for p in movers + [absent, watcher, sender]:
            assert (await p.request({"type": "join", "room": "k"}))["type"] == "joined"
        outcomes = {}
        stop = asyncio.Event()

        async def stream(to):
            n = 0
            while not stop.is_set():
                n += 1
                reply = await sender.request({"type": "message", "to": to.name, "data": {"n": n}})
                outcomes[reply["id"]] = (to.name, reply)
                await asyncio.sleep(0.01)

        streams = [asyncio.ensure_future(stream(p)) for p in movers]
        await asyncio.sleep(1.0)
        hubs[0].stop(signal.SIGKILL)
        killed_at = time.time()
        await eventually(lambda: all(p.closed is not None for p in movers), what="drop seen by clients")
        await asyncio.sleep(0.3)
        for p in movers:
            welcome = await p.connect(hubs[1].ws, resume=True)
            assert welcome.get("resumed") is True and not welcome.get("gap"), welcome
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*streams)
        for p in movers:
            acked = {i for i, (to, r) in outcomes.items() if to == p.name and r["type"] == "ack"}
            assert len(acked) == len([1 for to, _ in outcomes.values() if to == p.name]), "a signal was refused"
            await eventually(lambda p=p, acked=acked: assert_exactly_once_in_order(p, "sender") >= acked, what=f"replay to {p.name}")
            assert assert_exactly_once_in_order(p, "sender") == acked
        await eventually(
            lambda: any(m["type"] == "peer-left" and m["peer"] == "absent" for m in watcher.messages),
            timeout=GRACE + 8, what="peer-left for the peer that never came back",
        )
        left_after = time.time() - killed_at
        assert left_after >= GRACE - 0.5, f"peer-left came after {left_after:.1f} s, before the grace period"
        left = [m["peer"] for m in watcher.of_type("peer-left")]
        assert left == ["absent"], left
        print(f"\npeer-left for the absent peer {left_after:.1f} s after the kill; {len(outcomes)} signals, none lost")
        for p in movers + [watcher, sender]:
            await p.close()

    asyncio.run(scenario())


def test_redis_restart_loses_no_signal_silently_and_readyz_follows(start_hub, redis):
    hubs = start_cluster(start_hub, redis)

    async def scenario():
        a, b = Peer("a"), Peer("b")
        await a.connect(hubs[0].ws)
        await b.connect(hubs[1].ws)
        for p in (a, b):
            await p.request({"type": "join", "room": "r"})
        sent_ids, tasks = [], []
        stop = asyncio.Event()

        async def one(n):
            return await a.request({"type": "message", "to": "b", "data": {"n": n}}, timeout=40)

        async def produce():
            n = 0
            while not stop.is_set():
                n += 1
                tasks.append(asyncio.ensure_future(one(n)))
                await asyncio.sleep(0.05)

        producer = asyncio.ensure_future(produce())
        await asyncio.sleep(1.0)
        redis.stop()
        down_at = time.time()
        for hub in hubs:
            await asyncio.to_thread(wait_ready, hub, False, 5)
        await asyncio.sleep(max(0, 5 - (time.time() - down_at)))
        redis.start()
        for hub in hubs:
            await asyncio.to_thread(wait_ready, hub, True, 15)
        back_after = time.time() - down_at
        await asyncio.sleep(1.0)
        stop.set()
        await producer
        replies = await asyncio.gather(*tasks)
        acked = {r["id"] for r in replies if r["type"] == "ack"}
        errors = [r for r in replies if r["type"] == "error"]
        assert all(r["code"] == "unavailable" for r in errors), errors
        await eventually(lambda: assert_exactly_once_in_order(b, "a") >= acked, what="every acknowledged signal")
        received = assert_exactly_once_in_order(b, "a")
        assert received <= {r["id"] for r in replies}
        print(f"\nRedis down {back_after:.1f} s: {len(replies)} signals, {len(acked)} acknowledged and delivered, "
              f"{len(errors)} answered 'unavailable', {len(received - acked)} delivered despite an error, 0 silent")
        assert len(acked) > 0 and len(replies) == len(tasks)
        for p in (a, b):
            await p.close()

    asyncio.run(scenario())


def test_node_cut_from_redis_refuses_then_sends_clients_to_another_node(start_hub, redis):
    proxy = CuttableTCPProxy(redis.port)
    through_proxy = redis.url.replace(f":{redis.port}", f":{proxy.port}")
    cut_node = start_node(start_hub, through_proxy, "cut", "--redis-partition-timeout", "4")
    other = start_node(start_hub, redis.url, "ok")
    for hub in (cut_node, other):
        wait_ready(hub, True)

    async def scenario():
        a, b = Peer("a"), Peer("b")
        await a.connect(cut_node.ws)
        await b.connect(other.ws)
        for p in (a, b):
            await p.request({"type": "join", "room": "p"})
        proxy.set_cut(True)
        cut_at = time.time()
        await asyncio.to_thread(wait_ready, cut_node, False, 5)
        assert ready(other)
        reply = await a.request({"type": "message", "to": "b", "data": "during partition"}, timeout=15)
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        queued = []
        for n in range(5):
            r = await b.request({"type": "message", "to": "a", "data": {"n": n}})
            assert r["type"] == "ack", r
            queued.append(r["id"])
        await eventually(lambda: a.closed is not None, timeout=10, what="the cut node sends its client away")
        assert a.closed == 1001, a.closed
        evicted_after = time.time() - cut_at
        welcome = await a.connect(other.ws, resume=True)
        assert welcome.get("resumed") is True
        await eventually(lambda: assert_exactly_once_in_order(a, "b") >= set(queued), what="queued signals replayed")
        assert not any(m["type"] == "peer-left" for m in b.messages)
        reply = await a.request({"type": "message", "to": "b", "data": "after"})
        assert reply["type"] == "ack"
        proxy.set_cut(False)
        await asyncio.to_thread(wait_ready, cut_node, True, 15)
        print(f"\ncut node: not ready at once, 'unavailable' to its client, client sent away after {evicted_after:.1f} s, resumed elsewhere")
        for p in (a, b):
            await p.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()


def test_stalled_redis_bounds_what_one_client_queues_and_a_bystander_keeps_its_session(start_hub, redis):
    """Issue 18: while Redis does not answer, a client that floods its node can make it hold no more than
    its pending-request bound (1 MiB by default); beyond it the client gets 'unavailable', then 1013.
    A bystander on another node keeps its session and relays once Redis answers again."""
    no_rate_limit = ("--rate-burst", "100000", "--rate-per-second", "1000000")
    flooded = start_node(start_hub, redis.url, "flooded", *no_rate_limit)
    other = start_node(start_hub, redis.url, "other")
    for hub in (flooded, other):
        wait_ready(hub, True)
    chunk = "x" * 60_000
    count = 800  # 48 MB, all of it queued on the flooded node before the bound

    async def scenario():
        bystander, partner = Peer("bystander"), Peer("partner")
        await bystander.connect(other.ws)
        await partner.connect(flooded.ws)
        for p in (bystander, partner):
            await p.request({"type": "join", "room": "calm"})
        assert (await bystander.request({"type": "message", "to": "partner", "data": "before"}))["type"] == "ack"
        flooder = await websockets.connect(f"{flooded.ws}?peer=flooder", max_queue=None, ping_interval=None)
        assert json.loads(await flooder.recv())["type"] == "welcome"
        errors = []

        async def read():
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in flooder:
                    msg = json.loads(raw)
                    if msg.get("type") == "error":
                        errors.append(msg["code"])

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.5)
        before = flooded.rss_bytes()
        redis.pause()
        paused_at = time.time()
        try:
            sent = 0
            with contextlib.suppress(websockets.ConnectionClosed):
                for n in range(count):
                    await flooder.send(json.dumps({"type": "message", "to": "partner", "data": chunk, "id": f"f{n}"}))
                    sent += 1
            await asyncio.wait_for(reader, 10)
            # Long enough for requests to time out (2 s) and both nodes to lose their Redis connections.
            await asyncio.sleep(max(1.0, 4 - (time.time() - paused_at)))
            peak = flooded.rss_bytes()
            stalled = time.time() - paused_at
        finally:
            redis.resume()
        grew = peak - before
        print(f"\nRedis stalled {stalled:.1f} s: the flooder sent {sent} of {count} messages of 60 KB, got {len(errors)} errors "
              f"({set(errors)}) and close {flooder.close_code}; the flooded node's RSS grew "
              f"{grew / 2**20:.1f} MiB ({before / 2**20:.1f} -> {peak / 2**20:.1f} MiB)")
        assert set(errors) <= {"unavailable"}, errors
        assert errors or flooder.close_code == 1013, (errors, flooder.close_code)
        assert flooder.close_code == 1013, flooder.close_code
        assert grew < 16 * 2**20, f"the flooded node grew {grew} bytes while Redis was stalled"
        # The bystander on the other node kept its session and relays again once Redis answers.
        for hub in (flooded, other):
            await asyncio.to_thread(wait_ready, hub, True, 20)
        assert bystander.closed is None and partner.closed is None

        async def relayed():
            reply = await bystander.request({"type": "message", "to": "partner", "data": "after"}, timeout=10)
            return reply["type"] == "ack"

        deadline = time.time() + 15
        while not await relayed():
            assert time.time() < deadline, "the bystander could not relay after Redis came back"
            await asyncio.sleep(0.2)
        await eventually(lambda: any(m.get("data") == "after" for m in partner.messages), what="the bystander's signal")
        assert bystander.closed is None
        for p in (bystander, partner):
            await p.close()

    asyncio.run(scenario())


def test_nodes_reach_redis_over_tls_and_refuse_an_untrusted_certificate(start_hub, pki, tmp_path):
    redis = RedisServer(tmp_path, pki=pki)
    try:
        ca = ["--redis-ca", str(pki / "ca.pem")]
        hubs = [start_node(start_hub, redis.url, f"tls{i}", *ca) for i in range(2)]
        for hub in hubs:
            wait_ready(hub, True)
        untrusting = start_node(start_hub, redis.url, "no-ca")
        time.sleep(2)
        assert not ready(untrusting), "a node that does not trust Redis's certificate must not be ready"

        async def scenario():
            a, b = Peer("a"), Peer("b")
            await a.connect(hubs[0].ws)
            await b.connect(hubs[1].ws)
            reply = await a.request({"type": "offer", "to": "b", "sdp": "v=0 over rediss"})
            assert reply["type"] == "ack", reply
            await eventually(lambda: any(m["type"] == "offer" for m in b.messages), what="offer over rediss")
            for p in (a, b):
                await p.close()

        asyncio.run(scenario())
        assert metric(hubs[0], "signal_cluster_cross_node_signals_total") == 1
        assert "certificate" in open(untrusting.log_path).read().lower()
    finally:
        redis.stop()


def test_peer_ids_are_unique_across_nodes_and_an_ended_session_resumes_nowhere(start_hub, redis):
    hubs = start_cluster(start_hub, redis, count=2)

    async def scenario():
        import websockets

        alice = Peer("alice")
        await alice.connect(hubs[0].ws)
        async with websockets.connect(hubs[1].ws + "?peer=alice") as twin:
            refusal = await twin.recv()
            assert '"code":"id-taken"' in refusal
            await asyncio.sleep(0.2)
            assert twin.close_code == 4009
        token = alice.token
        await alice.close()  # a close frame ends the session cluster-wide
        # Its node ends it in Redis just after the socket closes: wait for that, not for a race.
        await eventually(lambda: not redis.exists("sig:{alice}:s"), what="alice's session to end in Redis")
        async with websockets.connect(f"{hubs[1].ws}?resume={token}&last=0") as late:
            with pytest.raises(websockets.ConnectionClosed):
                await late.recv()
            assert late.close_code == 4002
        again = Peer("alice")
        welcome = await again.connect(hubs[1].ws)
        assert welcome["peer"] == "alice" and not welcome.get("resumed")
        await again.close()

    asyncio.run(scenario())


def test_received_trims_the_buffer_at_the_next_refresh_and_a_resume_replays_only_what_follows(start_hub, redis):
    """A `received` costs Redis no script of its own: the node trims the session's buffer at its next
    refresh (`--cluster-refresh 1` here), and nothing the client has not confirmed is lost."""
    hubs = start_cluster(start_hub, redis, count=2)

    async def scenario():
        alice, bob = Peer("alice"), Peer("bob")
        await alice.connect(hubs[0].ws)
        await bob.connect(hubs[1].ws)
        for i in range(20):
            ack = await alice.request({"type": "message", "to": "bob", "data": i})
            assert ack["type"] == "ack" and not ack.get("queued"), ack
        await eventually(lambda: bob.last == 20, what="bob to get 20 messages")
        assert redis.llen("sig:{bob}:b") == 20
        await bob.ws.send(json.dumps({"type": "received", "seq": 15}))
        await eventually(lambda: redis.llen("sig:{bob}:b") == 5, timeout=5, what="the refresh to trim through 15")
        assert redis.llen("sig:{bob}:m") == 5
        # Bob drops (no close frame) and resumes on the other node from 17: 18-20 are replayed, once.
        bob.ws.transport.abort()
        await bob.reader
        bob.last = 17
        welcome = await bob.connect(hubs[0].ws, resume=True)
        assert welcome.get("resumed") and not welcome.get("gap"), welcome
        await eventually(lambda: [m["data"] for m in bob.messages[20:]] == [17, 18, 19], what="the replay")
        ack = await alice.request({"type": "message", "to": "bob", "data": 20})
        assert ack["type"] == "ack", ack
        await eventually(lambda: bob.last == 21, what="the next message")
        assert [m["seq"] for m in bob.messages[20:]] == [18, 19, 20, 21]
        await alice.close()
        await bob.close()

    asyncio.run(scenario())
