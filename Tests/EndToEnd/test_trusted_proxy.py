"""`signal serve --trusted-proxy` behind a real HAProxy with `option forwardfor` (README "Behind a load
balancer"). HAProxy connects to the hub from 127.0.0.9 (`source 127.0.0.9`) and clients connect to HAProxy
from other loopback addresses (Linux routes all of 127/8 to lo), so the hub sees one address for every
client, and the client's own only in X-Forwarded-For.

With `--trusted-proxy 127.0.0.9` the per-IP cap counts each client: the third connection of 127.0.0.2 gets
503 while 127.0.0.3 still connects and relays; a closed connection frees its slot; an X-Forwarded-For the
client sends itself does not help it (HAProxy appends the real address after it). Without the flag the
header is ignored and every client behind HAProxy counts as 127.0.0.9. (nginx's `X-Forwarded-For` line
of README is the same header; test_load_balancers.py runs nginx with it.)"""

import time

from e2e_helpers import metric
from rawws import RawWS
from test_load_balancers import HAProxy

PROXY_SOURCE = "127.0.0.9"


def forwarding_config(port, nodes):
    """One hub behind HAProxy: `option forwardfor` appends the client's address to X-Forwarded-For, and
    the connections to the hub come from PROXY_SOURCE. No health checks: they would be connections of
    their own from the proxy."""
    (name, hub_port), = nodes
    return f"""global
    maxconn 4096

defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout client-fin 5s

frontend signal
    bind 127.0.0.1:{port}
    default_backend hub

backend hub
    server {name} 127.0.0.1:{hub_port} source {PROXY_SOURCE}
"""


def connect(proxy, source, peer, headers=None):
    """A connection through HAProxy from `source`; welcomed when the hub took it."""
    ws = RawWS(proxy.port, f"/ws?peer={peer}", source=source, headers=headers)
    if ws.status == 101:
        ws.read_welcome()
    return ws


def assert_refused(ws):
    """The hub's 503 (plain text, like every refusal of its connection caps), not one of HAProxy's own
    error pages (HTML)."""
    assert ws.status == 503, ws.response_head
    assert "content-type: text/plain" in ws.response_head.lower(), ws.response_head
    ws.close()


def relays(sender, recipient, to, tag):
    """`sender` signals `to` (the peer id of `recipient`), which gets it."""
    reply = sender.request({"type": "message", "to": to, "data": tag, "id": tag})
    assert reply["type"] == "ack", reply
    got = recipient.recv_until(lambda m: m.get("type") == "message" and m.get("data") == tag)
    assert got["to"] == to


def close(ws):
    ws.send_close()
    ws.close()


def connect_once_freed(proxy, source, peer, timeout=5):
    """Connects from `source` once the hub has seen a closed connection of it go (a close travels through
    HAProxy first): 503s until then, 101 within `timeout`."""
    deadline = time.time() + timeout
    while True:
        ws = connect(proxy, source, peer)
        if ws.status == 101 or time.time() > deadline:
            return ws
        ws.close()
        time.sleep(0.1)


def test_a_trusted_proxys_clients_are_limited_each_by_its_own_address(start_hub, tmp_path):
    hub = start_hub("--trusted-proxy", PROXY_SOURCE, "--max-connections-per-ip", "2")
    proxy = HAProxy(tmp_path, [("hub", hub.port)], config=forwarding_config)
    held = []
    try:
        a1 = connect(proxy, "127.0.0.2", "a1")
        a2 = connect(proxy, "127.0.0.2", "a2")
        held += [a1, a2]
        assert a1.status == 101 and a2.status == 101, (a1.response_head, a2.response_head)
        # 127.0.0.2 is at its cap; 127.0.0.3, behind the same proxy, is not.
        assert_refused(connect(proxy, "127.0.0.2", "a3"))
        b1 = connect(proxy, "127.0.0.3", "b1")
        held.append(b1)
        assert b1.status == 101, b1.response_head
        relays(a1, b1, "b1", "a1-to-b1")
        relays(b1, a2, "a2", "b1-to-a2")

        # A header of the client's own does not let it out: HAProxy appends 127.0.0.2 after whatever it
        # claims (another client, or the proxy itself), and the right-most untrusted address is its own.
        assert_refused(connect(proxy, "127.0.0.2", "s1", headers={"X-Forwarded-For": "198.51.100.7"}))
        assert_refused(connect(proxy, "127.0.0.2", "s2", headers={"X-Forwarded-For": f"192.0.2.1, {PROXY_SOURCE}"}))

        # Closing one of 127.0.0.2's connections frees its slot, for 127.0.0.2 only once.
        close(a1)
        held.remove(a1)
        a3 = connect_once_freed(proxy, "127.0.0.2", "a3")
        held.append(a3)
        assert a3.status == 101, a3.response_head
        assert_refused(connect(proxy, "127.0.0.2", "a4"))
        relays(a3, b1, "b1", "a3-to-b1")
        assert metric(hub, "signal_connections_refused_total") >= 4
        assert metric(hub, "signal_connections") == 3
    finally:
        for ws in held:
            ws.close()
        proxy.stop()


def test_without_trusted_proxy_every_client_behind_the_proxy_counts_as_the_proxy(start_hub, tmp_path):
    hub = start_hub("--max-connections-per-ip", "2")
    proxy = HAProxy(tmp_path, [("hub", hub.port)], config=forwarding_config)
    held = []
    try:
        a1 = connect(proxy, "127.0.0.2", "a1")
        b1 = connect(proxy, "127.0.0.3", "b1", headers={"X-Forwarded-For": "198.51.100.7"})
        held += [a1, b1]
        assert a1.status == 101 and b1.status == 101, (a1.response_head, b1.response_head)
        relays(a1, b1, "b1", "a1-to-b1")
        # Two connections of 127.0.0.9 in all: a third client is refused, whatever the header says.
        assert_refused(connect(proxy, "127.0.0.4", "c1"))
        assert_refused(connect(proxy, "127.0.0.4", "c2", headers={"X-Forwarded-For": "192.0.2.9"}))
        # A client straight to the hub has its own count.
        direct = RawWS(hub.port, "/ws?peer=d1", source="127.0.0.4")
        held.append(direct)
        assert direct.status == 101, direct.response_head
        # Closing one through the proxy frees a slot for any client behind it.
        close(a1)
        held.remove(a1)
        c3 = connect_once_freed(proxy, "127.0.0.5", "c3")
        held.append(c3)
        assert c3.status == 101, c3.response_head
    finally:
        for ws in held:
            ws.close()
        proxy.stop()
