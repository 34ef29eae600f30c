"""Hostile inputs that try to make the hub keep more than a client is entitled to (issue 18, items 1
and 5): padded joins, sessions left waiting to resume, re-joins of full rooms, and resume tokens used
twice. Each runs against a real `signal serve` with a bystander pair relaying throughout, and reads the
hub's resident memory from /proc before and after."""

import json
import time

from rawws import TEXT, Bystanders, RawWS, connect_peer, encode_frame
from test_hostile import assert_rss_bounded, fast, metric, mib

PAD = 60_000  # bytes of an ignored member around `meta: {}` (under the 64 KiB message limit)


def padded_join(room, n):
    return encode_frame(TEXT, json.dumps({"type": "join", "room": room, "meta": {}, "id": f"j{n}", "pad": "x" * PAD}))


def test_a_padded_join_keeps_only_its_meta(start_hub):
    # 1,600 memberships from padded joins: before the fix each kept its whole ~60 KB frame alive
    # (about 96 MB); now each keeps a few bytes of meta.
    hub = start_hub(*fast(heartbeat_timeout=60), "--max-rooms-per-peer", "16", "--resume-grace", "30")
    with Bystanders(hub, room="busy") as bystanders:
        rss = hub.rss_bytes()
        peers = []
        for p in range(100):
            ws = connect_peer(hub.port, f"padder-{p}")
            for r in range(16):
                ws.send_raw(padded_join(f"room-{r}", r))
            peers.append(ws)
        for ws in peers:
            for _ in range(16):
                reply = ws.recv_until(lambda m: m.get("type") in ("joined", "error"), 15)
                assert reply["type"] == "joined", reply
        growth = hub.rss_bytes() - rss
        print(f"1,600 padded memberships: hub RSS +{mib(growth)} (the frames alone were {mib(1600 * PAD)})")
        # Each membership may keep its meta and bookkeeping, not its frame: far below 1,600 frames.
        assert growth < 32 * 1024 * 1024, f"RSS grew by {mib(growth)}"
        # Re-joining a full room one is in, again and again, costs nothing more.
        rss = hub.rss_bytes()
        for n in range(2_000):
            peers[0].send_raw(padded_join("room-0", n))
            if n % 50 == 49:
                # Read the replies (each lists the room's 100 members) and stay under 100 messages/s.
                reply = peers[0].recv_until(lambda m: m.get("id") == f"j{n}", 30)
                assert reply["type"] == "joined", reply
                time.sleep(0.5)
        assert_rss_bounded(hub, rss, bound=8 * 1024 * 1024)
        bystanders.check(2.0, 3.0)
        for ws in peers:
            ws.close()


def test_sessions_waiting_to_resume_are_bounded_by_the_connection_cap(start_hub):
    # With --max-connections 60 (so at most 60 sessions wait to resume), connect, join and drop 150
    # sessions without a close frame: the hub holds at most 60 of them, the oldest end first and their
    # rooms hear `peer-left`.
    hub = start_hub(*fast(), "--max-connections", "60", "--resume-grace", "60")
    with Bystanders(hub, room="watch") as bystanders:
        rss = hub.rss_bytes()
        for n in range(150):
            ws = connect_peer(hub.port, f"dropper-{n}", "watch")
            ws.sock.close()  # no close frame: the session waits to resume
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and metric(hub, "signal_detached_sessions_evicted_total") < 90:
            time.sleep(0.1)
        assert metric(hub, "signal_detached_sessions_evicted_total") >= 90
        held = metric(hub, "signal_sessions_detached")
        print(f"150 dropped sessions: {held:.0f} held, {metric(hub, 'signal_detached_sessions_evicted_total'):.0f} ended early")
        assert held <= 60
        assert bystanders.wait_event(lambda m: m.get("type") == "peer-left" and m.get("peer") == "dropper-0", 5)
        assert_rss_bounded(hub, rss)
        bystanders.check(2.0, 3.0)


def test_a_used_resume_token_resumes_once_and_leaves_the_live_session_alone(start_hub):
    hub = start_hub(*fast(), "--resume-grace", "30")
    alice = connect_peer(hub.port, "alice")
    bob = connect_peer(hub.port, "bob")
    token = bob.welcome["session"]
    bob.sock.close()
    time.sleep(0.2)
    resumed = RawWS(hub.port, f"/ws?resume={token}&last=0")
    assert resumed.status == 101
    welcome = resumed.read_welcome(10)
    assert welcome["resumed"] is True
    # The resumed client stays idle; someone replays the old token.
    thief = RawWS(hub.port, f"/ws?resume={token}&last=0")
    assert thief.status == 101
    code, _, seen = thief.expect_close(10)
    assert code == 4002, (code, seen)
    assert not any(m.get("type") == "welcome" for m in seen)
    # The legitimate session was not touched: it still receives.
    alice.send_json({"type": "message", "to": "bob", "data": "still here", "id": "m1"})
    message = resumed.recv_until(lambda m: m.get("type") == "message", 10)
    assert message["data"] == "still here"
    for ws in (alice, resumed):
        ws.close()
