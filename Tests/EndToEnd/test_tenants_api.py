"""Tenants through the server API and the webhooks (issue 20, items 1, 2 and 4): an API key bound to a
tenant (`KEY TENANT` in `--api-key-file`) acts in that tenant's namespace only — it reaches the tenant's
`alice`, never another tenant's `alice` with the same id, lists only the tenant's rooms and cannot read,
message or kick another tenant's peers; webhook events name the tenant and the names as the tenant knows
them. On every backend (the in-memory hub, two Redis cluster nodes, two mesh nodes), auth on.
"""

import os
import time

import pytest

from backends import KINDS, redis_server, start_backend  # noqa: F401 - fixtures
from conftest import free_port
from test_server_api import API, SECRET, Receiver

ACME_KEY = "api-key-0123456789-acme"
GLOBEX_KEY = "api-key-0123456789-globex"
DEFAULT_KEY = "api-key-0123456789-default"


@pytest.fixture(scope="module", params=KINDS)
def setup(request, tmp_path_factory, redis_server):  # noqa: F811 - fixture
    directory = tmp_path_factory.mktemp("tenant-api-" + request.param)
    tag = os.urandom(3).hex()
    acme, globex = f"acme-{tag}", f"globex-{tag}"
    keys = directory / "api.keys"
    keys.write_text(f"{ACME_KEY} {acme}\n{GLOBEX_KEY} {globex}\n{DEFAULT_KEY}\n")
    secret = directory / "webhook.secret"
    secret.write_text(SECRET + "\n")
    receiver = Receiver()
    ports = [free_port(), free_port()]

    def node_args(i):
        return [
            "--api-listen", f"127.0.0.1:{ports[i]}", "--api-key-file", str(keys),
            "--webhook-url", receiver.url, "--webhook-secret-file", str(secret),
        ]

    redis = redis_server.get() if request.param == "cluster" else None
    backend = start_backend(request.param, directory, auth=True, redis=redis, prefix="tapi", node_args=node_args)
    yield backend, API(ports[0]), receiver, acme, globex
    backend.stop()
    receiver.stop()


def events_for(receiver, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with receiver.lock:
            found = [event for event, valid, _ in receiver.events if valid and predicate(event)]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_an_api_key_acts_in_its_tenant_only(setup):
    backend, api, receiver, acme, globex = setup
    tag = os.urandom(3).hex()
    alice, lobby = f"alice-{tag}", f"lobby-{tag}"
    # The API on node 0 and peers on node 0 (the mesh's API acts on its own node's sessions).
    acme_alice = backend.connect(0, alice, rooms=[lobby], tenant=acme)
    globex_alice = backend.connect(0, alice, rooms=[lobby], tenant=globex)
    backend.settle()

    # A message to `alice` with acme's key reaches acme's alice only.
    status, body, _ = api.call("POST", f"/v1/peers/{alice}/messages", {"data": {"for": "acme"}}, key=ACME_KEY)
    assert (status, body) == (200, {"delivered": 1, "queued": 0}), body
    message = acme_alice.wait(lambda m: m["type"] == "message")
    assert message["from"] == "@server" and message["to"] == alice and message["data"] == {"for": "acme"}, message
    # A room message in globex's lobby reaches globex's alice only.
    status, body, _ = api.call("POST", f"/v1/rooms/{lobby}/messages", {"data": "globex"}, key=GLOBEX_KEY)
    assert (status, body) == (200, {"delivered": 1, "queued": 0}), body
    message = globex_alice.wait(lambda m: m["type"] == "message")
    assert message["room"] == lobby and message["data"] == "globex", message
    globex_alice.collect(0.5)
    acme_alice.collect(0.5)
    assert [m["data"] for m in globex_alice.log if m["type"] == "message"] == ["globex"], globex_alice.log
    assert [m["data"] for m in acme_alice.log if m["type"] == "message"] == [{"for": "acme"}], acme_alice.log

    # Reads: each key sees its tenant's room and member, by the names its clients use.
    for key in (ACME_KEY, GLOBEX_KEY):
        status, body, _ = api.call("GET", f"/v1/rooms/{lobby}", key=key)
        assert status == 200 and [m["peer"] for m in body["members"]] == [alice], body
        status, body, _ = api.call("GET", "/v1/rooms", key=key)
        assert status == 200 and [r["room"] for r in body["rooms"]] == [lobby], body
    # The default tenant's key sees neither tenant's peer or room.
    assert api.call("GET", f"/v1/peers/{alice}", key=DEFAULT_KEY)[0] == 404
    assert api.call("GET", f"/v1/rooms/{lobby}", key=DEFAULT_KEY)[0] == 404
    status, body, _ = api.call("GET", "/v1/rooms", key=DEFAULT_KEY)
    assert lobby not in [r["room"] for r in body["rooms"]], body
    assert api.call("POST", f"/v1/peers/{alice}/messages", {"data": 1}, key=DEFAULT_KEY)[0] == 404

    # A kick with acme's key ends acme's alice; globex's alice stays.
    assert api.call("DELETE", f"/v1/peers/{alice}", key=ACME_KEY)[0] in (200, 204)
    assert acme_alice.expect_close() == (4003, "kicked"), acme_alice.log
    assert globex_alice.request({"type": "ping", "id": "p"})["type"] == "pong"
    assert api.call("GET", f"/v1/peers/{alice}", key=GLOBEX_KEY)[0] == 200

    # Webhook events name the tenant and the names its clients know.
    joined = events_for(receiver, lambda e: e["type"] == "peer.joined" and e.get("room") == lobby)
    assert {e["tenant"] for e in joined} >= {acme, globex}, joined
    assert all(e["peer"] == alice for e in joined), joined
    ended = events_for(receiver, lambda e: e["type"] == "session.ended" and e.get("tenant") == acme)
    assert ended and ended[0]["peer"] == alice and ended[0]["reason"] == "kicked", ended
    globex_alice.close()
