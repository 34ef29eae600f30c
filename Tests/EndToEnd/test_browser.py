"""Headless Chromium: two SDK peers in one page connect through the hub over a real RTCDataChannel,
also when one peer's WebSocket is cut (or goes silent) in the middle of the negotiation; and the SDK's
live presence state (`update` → `peer-updated`) and volatile messages."""

import asyncio
import json
import os

import pytest

from conftest import free_port
from cdp import Chromium
from cutproxy import CutProxy
from e2e_helpers import http_get, metric, strictly_increasing, web_args

PEER_A = "e2e-a"  # sorts first: impolite, its offer wins
PEER_B = "e2e-b"  # polite: rolls back its own offer and answers A's


async def run_pair(tmp_path, page_url, chromium_flags=(), **args):
    async with Chromium.launch(str(tmp_path), extra_flags=chromium_flags) as browser:
        page = await browser.open(page_url)
        await page.wait_for("window.e2eReady === true")
        try:
            return await page.evaluate(f"e2e.pair({json.dumps(args)})", timeout=45)
        except Exception as error:
            raise AssertionError(f"{error!r}\n--- page console ---\n{browser.console_text()}") from None


def start_hub_with_proxy_origin(start_hub, *args):
    """B's WebSocket goes through a proxy on another port, so the hub sees the page's origin as a
    foreign one: allow it explicitly."""
    port = free_port()
    return start_hub(*web_args(), "--allow-origin", f"http://127.0.0.1:{port}", *args, port=port)


def check_clean_delivery(result):
    """Every client saw each seq once, in order, and got each signal exactly as often as it was sent."""
    a, b = result["clients"]["A"], result["clients"]["B"]
    for client in (a, b):
        assert strictly_increasing(client["seqs"]), client["seqs"]
        assert not client["errors"], client["errors"]
        assert [e for e in client["events"] if e["type"] == "reset"] == []
    for kind in ("offer", "answer", "candidate"):
        assert a["received"].get(kind, 0) == b["sent"].get(kind, 0), (kind, a["received"], b["sent"])
        assert b["received"].get(kind, 0) == a["sent"].get(kind, 0), (kind, b["received"], a["sent"])


def test_sdk_and_pages_are_served(start_hub):
    hub = start_hub(*web_args())
    status, headers, body = http_get(hub.http + "/sdk/signal.js")
    assert status == 200
    assert headers["Content-Type"].startswith("text/javascript")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "export class SignalClient" in body and "export function connectPeer" in body
    status, headers, body = http_get(hub.http + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "/sdk/signal.js" in body
    status, _, body = http_get(hub.http + "/test/e2e.html")
    assert status == 200 and "e2e.pair" in body


def test_two_browser_peers_exchange_a_message_over_a_data_channel(start_hub, tmp_path):
    hub = start_hub(*web_args())
    result = asyncio.run(run_pair(tmp_path, hub.http + "/test/e2e.html", ws=hub.ws, room="e2e", peerA=PEER_A, peerB=PEER_B))

    assert result["ok"], result
    assert result["gotB"] == "hello from A" and result["gotA"] == "hello from B"
    assert result["links"]["A"]["polite"] is False and result["links"]["B"]["polite"] is True
    assert "connected" in result["links"]["A"]["states"] and "connected" in result["links"]["B"]["states"]
    # Host candidates only: there is no STUN/TURN server here.
    assert result["pair"]["local"].startswith("host ") and result["pair"]["remote"].startswith("host "), result["pair"]
    check_clean_delivery(result)
    # The negotiation really went through the hub, trickling candidates.
    assert metric(hub, "signal_signals_relayed_total", type="offer") >= 1
    assert metric(hub, "signal_signals_relayed_total", type="answer") >= 1
    assert metric(hub, "signal_signals_relayed_total", type="candidate") >= 2
    assert result["clients"]["A"]["sent"]["candidate"] >= 1 and result["clients"]["B"]["sent"]["candidate"] >= 1


@pytest.mark.parametrize(
    "rule, match",
    [
        # The hub hands A's offer to B's socket, but the connection dies with the frame in flight:
        # B must get it again from the resume replay.
        ("drop-server-frame", '"type":"offer"'),
        # B's answer is lost on the way to the hub: the SDK must resend the unanswered request.
        ("drop-client-frame", '"type":"answer"'),
        # B's answer reaches the hub and A, but its ack is lost: the SDK resends it and the hub must
        # answer from memory without delivering the answer to A a second time.
        ("cut-before-ack", '"type":"answer"'),
    ],
)
def test_resume_completes_a_negotiation_cut_in_the_middle(start_hub, tmp_path, rule, match):
    hub = start_hub_with_proxy_origin(start_hub)

    async def scenario():
        proxy = await CutProxy(hub.port, rule=rule, match=match).start()
        try:
            # B talks to the hub through the proxy; the page is served by the hub itself.
            result = await run_pair(tmp_path, hub.http + "/test/e2e.html", ws=hub.ws, wsB=proxy.ws, room="cut", peerA=PEER_A, peerB=PEER_B)
            return result, proxy.events
        finally:
            await proxy.stop()

    result, events = asyncio.run(scenario())

    cuts = [e for e in events if e[1].startswith("cut")]
    assert len(cuts) == 1, f"the proxy never cut the connection: {events}"
    assert result["ok"], result
    b = result["clients"]["B"]
    assert b["stats"]["resumes"] >= 1, b
    assert any(e["type"] == "resumed" and not e["gap"] for e in b["events"]), b["events"]
    assert metric(hub, "signal_resumes_total") >= 1
    if rule == "drop-server-frame":
        assert metric(hub, "signal_replayed_messages_total") >= 1
    else:
        assert b["stats"]["resent"] >= 1, b["stats"]
    check_clean_delivery(result)
    assert result["clients"]["A"]["received"].get("answer") == 1


def test_ping_notices_a_silent_socket_and_resume_completes_the_negotiation(start_hub, tmp_path):
    """The path to the hub goes silent (no FIN, no RST) right when A's offer is on its way to B: only
    the SDK's app-level ping can tell, after which it resumes on a new connection."""

    async def scenario(hub):
        proxy = await CutProxy(hub.port, rule="blackhole-server", match='"type":"offer"').start()
        try:
            options = {"pingInterval": 500, "pongTimeout": 1000}
            result = await run_pair(
                tmp_path, hub.http + "/test/e2e.html", ws=hub.ws, wsB=proxy.ws, room="silent", peerA=PEER_A, peerB=PEER_B, options=options
            )
            return result, proxy.events
        finally:
            await proxy.stop()

    hub = start_hub_with_proxy_origin(start_hub)
    result, events = asyncio.run(scenario(hub))

    assert any(e[1].startswith("blackhole") for e in events), events
    assert result["ok"], result
    b = result["clients"]["B"]
    assert b["stats"]["deadSockets"] >= 1 and b["stats"]["resumes"] >= 1, b["stats"]
    check_clean_delivery(result)


async def wait_text(page, selector, text, timeout=15):
    await page.wait_for(f"document.querySelector({json.dumps(selector)}).textContent.includes({json.dumps(text)})", timeout=timeout)


def test_demo_page_two_tabs_chat(start_hub, tmp_path):
    """The demo page at / in two tabs: both join a room, see each other, and chat over the data channel.
    With DEMO_SCREENSHOT=path set, the first tab's screenshot is saved there (Docs/demo.png)."""
    hub = start_hub(*web_args())
    screenshot = os.environ.get("DEMO_SCREENSHOT")

    async def scenario():
        async with Chromium.launch(str(tmp_path)) as browser:
            alice = await browser.open(hub.http + "/?room=demo&name=Alice&autojoin=1")
            await alice.wait_for("document.getElementById('joined-box').hidden === false")
            bob = await browser.open(hub.http + "/?room=demo&name=Bob&autojoin=1")
            connected = "[...window.demo.people.values()].some((p) => p.state === 'connected')"
            try:
                await alice.wait_for(connected)
                await bob.wait_for(connected)

                async def say(page, text):
                    await page.evaluate(
                        f"(() => {{ const t = document.getElementById('text'); t.value = {json.dumps(text)};"
                        " document.getElementById('composer').requestSubmit(); return true; })()"
                    )

                await say(alice, "Hi Bob! This goes over an RTCDataChannel, not through the hub.")
                await wait_text(bob, "#messages", "This goes over an RTCDataChannel")
                await say(bob, "Hi Alice, got it. The hub only carried the offer, answer and ICE candidates.")
                await wait_text(alice, "#messages", "The hub only carried the offer")
                await say(alice, "Perfect negotiation sorted out who answers.")
                await wait_text(bob, "#messages", "Perfect negotiation")
                people = await alice.evaluate("[...document.querySelectorAll('#people li')].map((li) => li.textContent)")
                signals = await alice.evaluate("document.querySelectorAll('#signals .sig').length")
                status = await alice.evaluate("document.getElementById('status').textContent")
                if screenshot:
                    await alice.evaluate("document.activeElement && document.activeElement.blur(), true")
                    await alice.screenshot(screenshot)
                return people, signals, status
            except Exception as error:
                raise AssertionError(f"{error!r}\n--- console ---\n{browser.console_text()}") from None

    people, signals, status = asyncio.run(scenario())
    assert len(people) == 2 and "Alice (you)" in people[0] and "Bob" in people[1] and "connected" in people[1], people
    assert signals >= 5  # welcome, join/joined, offer/answer, candidates
    assert status.startswith("connected as "), status


def test_a_session_past_its_grace_period_is_restarted_and_rejoins_its_rooms(start_hub, tmp_path):
    """B is cut off longer than the hub's grace period: its resume gets 4002, the SDK opens a fresh
    session with the same peer id, joins its rooms again (A sees B leave and come back) and tells the
    app (`reset`), after which a new peer connection works."""
    hub = start_hub_with_proxy_origin(start_hub, "--resume-grace", "1")

    async def scenario():
        proxy = await CutProxy(hub.port).start()
        try:
            async with Chromium.launch(str(tmp_path)) as browser:
                page = await browser.open(hub.http + "/test/e2e.html")
                await page.wait_for("window.e2eReady === true")
                args = {"ws": hub.ws, "wsB": proxy.ws, "room": "reset", "peerA": PEER_A, "peerB": PEER_B, "options": {"minDelay": 200, "maxDelay": 400}}
                try:
                    await page.evaluate(f"e2e.resetStart({json.dumps(args)})")
                    proxy.refusing = True
                    proxy.cut_all()
                    await asyncio.sleep(3)  # grace 1 s, checked about once a second
                    proxy.refusing = False
                    return await page.evaluate("e2e.resetFinish({timeout: 20000})", timeout=45), proxy.events
                except Exception as error:
                    raise AssertionError(f"{error!r}\n--- page console ---\n{browser.console_text()}") from None
        finally:
            await proxy.stop()

    result, events = asyncio.run(scenario())
    assert any(e[1] == "refused" for e in events), events  # B really tried while cut off
    assert result["ok"], result
    assert result["reset"] == {"peer": PEER_B, "previousPeer": PEER_B}
    assert result["presence"] == [f"joined {PEER_B} B", f"left {PEER_B}", f"joined {PEER_B} B"], result["presence"]
    assert result["rooms"] == ["reset"]
    b = result["clients"]["B"]
    assert b["stats"]["resets"] == 1 and b["stats"]["resumes"] == 0, b["stats"]
    # The fresh session has its own seq counter from 1; within each session no seq repeats or goes back.
    seqs = b["seqs"]
    drops = [i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]]
    assert len(drops) <= 1 and all(seqs[i] == 1 for i in drops), seqs


def test_the_sdk_refreshes_its_token_in_band_and_shows_the_expiry_close(start_hub, tmp_path):
    """Chromium, auth on: A's token function mints 4 s tokens, so the SDK sends a fresh one in band
    (`auth`) before each expires and A stays open for 10 s; B's single 4 s token ends its session with
    close 4001 "token expired", which the SDK reports as terminal."""
    secret = "browser-token-lifetime-secret-0123456789"
    hub = start_hub(*web_args(), "--jwt-secret", secret)

    async def run():
        async with Chromium.launch(str(tmp_path)) as browser:
            page = await browser.open(hub.http + "/test/e2e.html")
            await page.wait_for("window.e2eReady === true")
            args = {"ws": hub.ws, "secret": secret, "peerA": "tok-a", "peerB": "tok-b", "ttl": 4, "runFor": 10000}
            try:
                return await page.evaluate(f"e2e.tokenLifetime({json.dumps(args)})", timeout=30)
            except Exception as error:
                raise AssertionError(f"{error!r}\n--- page console ---\n{browser.console_text()}") from None

    result = asyncio.run(run())
    assert result["aState"] == "open" and not result["aClosed"], result
    assert len(result["refreshed"]) >= 2, result
    assert result["minted"] == 1 + len(result["refreshed"]), result
    assert result["closeB"] == {"code": 4001, "reason": "token expired"}, result
    assert result["bState"] == "closed", result
    assert [e["message"] for e in result["bErrors"]] == ["token expired"], result


def test_the_sdk_shows_peer_updated_and_volatile_messages(start_hub, tmp_path):
    """Chromium, through the SDK: A's `update(room, meta)` reaches B as a `peer-updated` event and a later
    joiner sees the new meta; A's volatile broadcast and volatile message reach B without a `seq`."""
    hub = start_hub(*web_args())

    async def run():
        async with Chromium.launch(str(tmp_path)) as browser:
            page = await browser.open(hub.http + "/test/e2e.html")
            await page.wait_for("window.e2eReady === true")
            args = {"ws": hub.ws, "room": "live", "peerA": "live-a", "peerB": "live-b", "peerC": "live-c"}
            try:
                return await page.evaluate(f"e2e.presence({json.dumps(args)})", timeout=30)
            except Exception as error:
                raise AssertionError(f"{error!r}\n--- page console ---\n{browser.console_text()}") from None

    result = asyncio.run(run())
    meta = {"name": "A", "typing": True}
    assert result["updated"]["type"] == "updated" and result["updated"]["room"] == "live", result
    event = result["event"]
    assert event["type"] == "peer-updated" and event["peer"] == "live-a" and event["room"] == "live", event
    assert event["meta"] == meta and isinstance(event["seq"], int), event
    assert result["aRooms"] == {"live": meta}, "the SDK rejoins with the updated meta after a reset"
    assert result["broadcastAck"]["type"] == "ack" and not result["broadcastAck"].get("queued"), result
    assert result["directAck"]["type"] == "ack" and not result["directAck"].get("queued"), result
    for message in (result["broadcast"], result["direct"]):
        assert message["from"] == "live-a" and message["volatile"] is True and "seq" not in message, message
    assert result["broadcast"]["data"] == {"typing": True} and result["direct"]["data"] == "psst"
    # B joined after A, so its sequenced messages are the peer-updated and (maybe already) C's peer-joined:
    # the volatile messages took no seq.
    assert result["seqsB"][0] == event["seq"], result["seqsB"]
    assert len(result["seqsB"]) == 1 + result["receivedB"].get("peer-joined", 0), result
    assert result["receivedB"].get("message") == 2 and not result["errorsB"], result
    peers = {p["peer"]: p["meta"] for p in result["joinedC"]["peers"]}
    assert peers == {"live-a": meta, "live-b": {"name": "B"}}, result["joinedC"]
