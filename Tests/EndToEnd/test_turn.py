"""TURN credentials against a real coturn (Debian's `coturn`, started here on loopback with
`use-auth-secret`): the hub mints each session's credentials with the same secret (`--turn-secret`), two
aiortc peers restricted to relay candidates connect through the relay with them, a forged or expired
credential is refused by coturn (401), and a refreshed credential (`ice-servers`) still allocates after
the welcome's one expired; the same with a relay-only Chromium pair through the SDK."""

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest
import websockets
from aioice import turn

from cluster_helpers import RedisServer
from conftest import free_port, stop_process
from e2e_helpers import web_args
from test_aiortc import finish, start_peer
from test_browser import run_pair

SECRET = "turn-secret-for-the-e2e-tests-0123"
RETIRING = "retiring-turn-secret-for-the-tests"

class Coturn:
    """A coturn on loopback that checks `use-auth-secret` credentials against `secrets`."""

    def __init__(self, tmp_path, secrets):
        self.port = free_port()
        low = 40000 + (self.port % 200) * 100
        self.log_path = tmp_path / "coturn.log"
        args = [
            "turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}", f"--min-port={low}", f"--max-port={low + 99}",
            "--use-auth-secret", "--realm=signal.test", "--fingerprint",
            "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",  # peers on 127.0.0.1 only
            "--log-file=stdout", "--simple-log",
            f"--userdb={tmp_path / 'turndb'}", f"--pidfile={tmp_path / 'turnserver.pid'}",
        ] + [f"--static-auth-secret={secret}" for secret in secrets]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log_path.read_text()}")
            if "Total General servers" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError("turnserver did not start")

    @property
    def url(self):
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def stop(self):
        stop_process(self.proc)
        self.log.close()


@pytest.fixture
def coturn(tmp_path):
    server = Coturn(tmp_path, [SECRET, RETIRING])
    yield server
    server.stop()


def credential(secret, username):
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def allocate(server, username, password):
    """Asks coturn for a relay allocation; returns "ok" or coturn's error code (e.g. 401)."""

    async def run():
        try:
            transport, _ = await asyncio.wait_for(
                turn.create_turn_endpoint(asyncio.DatagramProtocol, ("127.0.0.1", server.port), username, password),
                5,
            )
        except Exception as error:
            response = getattr(error, "response", None)
            if response is not None and "ERROR-CODE" in response.attributes:
                return response.attributes["ERROR-CODE"][0]
            return repr(error)
        transport.close()
        return "ok"

    return asyncio.run(run())


def welcome_of(hub, peer, wait_for_refresh=0.0):
    """Connects as `peer`; returns the welcome and the `ice-servers` refreshes that arrive within
    `wait_for_refresh` seconds."""

    async def run():
        async with websockets.connect(f"{hub.ws}?peer={peer}") as ws:
            welcome = json.loads(await ws.recv())
            refreshes = []
            deadline = time.monotonic() + wait_for_refresh
            while time.monotonic() < deadline:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
                except asyncio.TimeoutError:
                    break
                if message["type"] == "ice-servers":
                    refreshes.append((time.monotonic(), message))
            return welcome, refreshes

    return asyncio.run(run())


def turn_entry(ice_servers):
    return next(s for s in ice_servers if "username" in s)


def test_welcome_credentials_allocate_and_forged_or_expired_ones_are_refused(start_hub, coturn):
    hub = start_hub("--turn-secret", SECRET, "--turn-url", coturn.url, "--turn-ttl", "600",
                    "--ice-server", "stun:127.0.0.1:3478")
    welcome, _ = welcome_of(hub, "alice")
    servers = welcome["iceServers"]
    assert servers[0] == {"urls": "stun:127.0.0.1:3478"}
    entry = turn_entry(servers)
    assert entry["urls"] == [coturn.url]
    expiry, peer = entry["username"].split(":")
    assert peer == "alice" and abs(int(expiry) - time.time() - 600) < 5
    assert entry["credential"] == credential(SECRET, entry["username"])

    assert allocate(coturn, entry["username"], entry["credential"]) == "ok"
    # forged: signed with another secret, or the peer id changed under the same credential
    assert allocate(coturn, entry["username"], credential("not-the-secret-at-all-0123456789", entry["username"])) == 401
    assert allocate(coturn, f"{expiry}:mallory", entry["credential"]) == 401
    # expired: correctly signed, but its expiry has passed
    stale = f"{int(time.time()) - 5}:alice"
    assert allocate(coturn, stale, credential(SECRET, stale)) == 401
    # the retiring secret is still accepted by coturn during a rotation (the hub signs with the first)
    fresh = f"{int(time.time()) + 60}:alice"
    assert allocate(coturn, fresh, credential(RETIRING, fresh)) == "ok"


@pytest.mark.parametrize("mode", ["memory", "cluster"])
def test_refreshed_credentials_allocate_after_the_welcome_ones_expired(start_hub, coturn, mode, tmp_path, request):
    cluster = []
    if mode == "cluster":
        redis = RedisServer(tmp_path)
        request.addfinalizer(redis.stop)
        cluster = ["--redis", redis.url, "--node-id", "a"]
    hub = start_hub("--turn-secret", SECRET, "--turn-url", coturn.url, "--turn-ttl", "4", *cluster)
    started = time.monotonic()
    welcome, refreshes = welcome_of(hub, "bob", wait_for_refresh=4.0)
    first = turn_entry(welcome["iceServers"])
    assert refreshes, "no ice-servers message within the TTL"
    at, message = refreshes[0]
    assert 2.5 < at - started < 4.0, f"refreshed after {at - started:.2f}s, expected at 80% of 4 s"
    fresh = turn_entry(message["iceServers"])
    assert fresh["username"].endswith(":bob") and fresh["username"] != first["username"]
    # Once the welcome's credential expired, coturn refuses it; the refreshed one still allocates.
    time.sleep(max(0.0, started + 5.2 - time.monotonic()))
    assert allocate(coturn, first["username"], first["credential"]) == 401
    assert allocate(coturn, fresh["username"], fresh["credential"]) == "ok"


def test_two_relay_only_aiortc_peers_exchange_data_through_coturn(start_hub, coturn):
    hub = start_hub("--turn-secret", SECRET, "--turn-url", coturn.url, "--turn-ttl", "600")
    procs = {}
    for peer in ["py-a", "py-b"]:
        procs[peer] = start_peer(hub, peer, "turn", "--count", "50", "--relay-only")
        time.sleep(0.3)
    results = {peer: finish(proc) for peer, proc in procs.items()}
    for peer, result in results.items():
        assert result["ok"] and result["exit"] == 0, f"{peer}: {result}"
        assert result["received"] == 50
        assert result["stats"]["ice_servers"][0]["username"].endswith(f":{peer}")
        # Relay-only: the peer had no other candidate to connect with (the nominated pair, when aioice
        # has reported it by then, is relay/relay).
        assert result["local_candidate_types"] == ["relay"], f"{peer}: {result['local_candidate_types']}"
        pair = result["pair"]
        if pair is not None:
            assert pair["local"].startswith("relay ") and pair["remote"].startswith("relay "), f"{peer}: {pair}"


def test_a_relay_only_peer_without_turn_credentials_cannot_connect(start_hub, coturn):
    # The same pair with the hub not handing out credentials: relay-only has nothing to gather.
    hub = start_hub()
    procs = {peer: start_peer(hub, peer, "turn", "--count", "5", "--relay-only", "--timeout", "6") for peer in ["py-a", "py-b"]}
    results = {peer: finish(proc, timeout=30) for peer, proc in procs.items()}
    assert all(not result["ok"] for result in results.values()), results


def test_a_relay_only_chromium_pair_connects_through_coturn_and_applies_the_refresh(start_hub, coturn, tmp_path):
    # Two SDK peers in headless Chromium with iceTransportPolicy "relay": only the hub's TURN credentials
    # can connect them. A TTL of 5 s: A's next ice-servers message arrives while the channel is open and
    # the SDK hands it to the RTCPeerConnection (setConfiguration).
    hub = start_hub(*web_args(), "--turn-secret", SECRET, "--turn-url", coturn.url, "--turn-ttl", "5")
    result = asyncio.run(run_pair(
        tmp_path, hub.http + "/test/e2e.html", ws=hub.ws, room="turn", peerA="e2e-a", peerB="e2e-b",
        link={"configuration": {"iceTransportPolicy": "relay"}}, iceRefresh=True,
    ))
    assert result["ok"], result
    pair = result["pair"]
    assert pair["local"].startswith("relay ") and pair["remote"].startswith("relay "), pair
    ice = result["ice"]
    welcome, refreshed, configured = (turn_entry(ice[k]) for k in ("welcome", "refreshed", "configured"))
    assert welcome["username"].endswith(":e2e-a") and refreshed["username"] != welcome["username"]
    assert configured["username"] == refreshed["username"] and configured["credential"] == refreshed["credential"]
    assert result["links"]["A"]["stats"]["iceServerUpdates"] >= 1
