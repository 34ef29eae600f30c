"""A real load balancer in front of a cluster: Debian's `haproxy` and `nginx` (installed by
Scripts/test-all), each with README's configuration ("Behind a load balancer"), round robin with no
stickiness, in front of three `signal serve --redis` nodes on one real redis-server. Peers connect through
the balancer only; one node is killed with SIGKILL and its clients resume through the balancer on the
others with nothing lost (Docs/scaling.md). HAProxy finds the dead node by its health check (`/readyz`),
nginx (open source: no active checks) by the refused connect, which `proxy_next_upstream` retries on the
next node."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from cluster_helpers import Peer, RedisServer, eventually
from conftest import free_port, stop_process
from e2e_helpers import metric

GRACE = 10
HAPROXY = os.environ.get("HAPROXY") or shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"


def haproxy_config(port, nodes):
    """The configuration of README's "Behind a load balancer", on loopback: round robin, no stickiness,
    WebSocket-friendly timeouts (`timeout tunnel` applies once the connection is upgraded), /readyz as the
    health check, and a failed connect retried on another node."""
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{node_port} check inter 500ms fall 2 rise 2" for name, node_port in nodes
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    timeout client-fin 5s
    retries 3
    option redispatch 1
    option forwardfor

frontend signal
    bind 127.0.0.1:{port}
    default_backend signal_nodes

backend signal_nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


class Balancer:
    """A balancer process in the foreground, listening on `port` once ``launch`` returns."""

    name = "balancer"

    def launch(self, command, log_path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while True:
            assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}: {self.log_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert time.time() < deadline, f"{self.name} is not listening: {self.log_text()}"
                time.sleep(0.05)

    def log_text(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    @property
    def ws(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self):
        stop_process(self.proc)
        self.log.close()


class HAProxy(Balancer):
    """`haproxy` in the foreground (`-db`) with a configuration written by the test: `config(port, nodes)`
    (README's, by default) for a frontend on `port`."""

    name = "haproxy"

    def __init__(self, directory, nodes, config=haproxy_config):
        assert os.path.exists(HAPROXY), "haproxy is missing: Scripts/test-all installs it (apt-get install haproxy)"
        self.port = free_port()
        self.config = os.path.join(str(directory), "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(config(self.port, nodes))
        check = subprocess.run([HAPROXY, "-c", "-f", self.config], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.launch([HAPROXY, "-db", "-f", self.config], os.path.join(str(directory), "haproxy.log"))


def nginx_config(directory, port, nodes):
    """README's nginx configuration, on loopback: round robin (no `ip_hash`), the WebSocket upgrade
    passed on, tunnel-long read and send timeouts, X-Forwarded-For appended, and a failed connect retried
    on the next node. Around it, what running it from a test directory needs (foreground, one worker, its
    pid, logs and temporary files there)."""
    servers = "\n".join(f"        server 127.0.0.1:{node_port} max_fails=2 fail_timeout=5s;" for _, node_port in nodes)
    temp = "\n".join(f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                               "uwsgi", "scgi"))
    return f"""daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx.log warn;
events {{ worker_connections 1024; }}

http {{
    access_log off;
{temp}

    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}

    upstream signal_nodes {{
{servers}
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://signal_nodes;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


class Nginx(Balancer):
    """`nginx` in the foreground (`daemon off`) with README's configuration (``nginx_config``); its errors
    go to `nginx.log`."""

    name = "nginx"

    def __init__(self, directory, nodes):
        assert os.path.exists(NGINX), "nginx is missing: Scripts/test-all installs it (apt-get install nginx)"
        directory = str(directory)
        self.port = free_port()
        log = os.path.join(directory, "nginx.log")
        with open(os.path.join(directory, "nginx.conf"), "w") as f:
            f.write(nginx_config(directory, self.port, nodes))
        command = [NGINX, "-p", directory, "-c", os.path.join(directory, "nginx.conf"), "-e", log]
        check = subprocess.run(command + ["-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.launch(command, log)


@pytest.fixture
def redis(tmp_path):
    # The nodes connect as the least-privilege user of Docs/redis-users.acl (default prefix `sig`).
    server = RedisServer(tmp_path, least_privilege=True)
    server.allow_prefix("sig")
    yield server
    server.close()


def sessions(hub):
    return int(metric(hub, "signal_sessions"))


def counter_of(msg):
    return int(msg["id"].rsplit("-", 1)[1])


def delivered_once_in_order(peer, sender):
    """The ids of the `message`s `peer` got from `sender`: each once, in the order sent."""
    got = [m for m in peer.messages if m.get("from") == sender and m["type"] == "message"]
    ids = [m["id"] for m in got]
    assert len(ids) == len(set(ids)), f"{peer.name} got a signal of {sender} twice"
    counters = [counter_of(m) for m in got]
    assert counters == sorted(counters), f"{peer.name} got {sender}'s signals out of order"
    return set(ids)


BALANCERS = {"HAProxy": HAProxy, "nginx": Nginx}


@pytest.mark.parametrize("balancer", list(BALANCERS))
def test_peers_behind_a_load_balancer_survive_a_killed_node(start_hub, redis, tmp_path, balancer):
    nodes = [
        start_hub("--redis", redis.url, "--node-id", name, "--resume-grace", str(GRACE), "--cluster-refresh", "1",
                  "--log-level", "warning")
        for name in "abc"
    ]
    proxy = BALANCERS[balancer](tmp_path, [(name, hub.port) for name, hub in zip("abc", nodes)])
    try:
        asyncio.run(scenario(proxy, nodes, balancer))
    finally:
        proxy.stop()


async def scenario(proxy, nodes, balancer):
    assert proxy.proc.poll() is None, f"{balancer} exited with {proxy.proc.returncode}"
    # Six peers, one after another, through the balancer: round robin puts two on each node. Which node took
    # a peer is read from the nodes' session gauges.
    peers, home = [], {}
    for i in range(6):
        before = [sessions(h) for h in nodes]
        peer = Peer(f"lb{i}")
        await peer.connect(proxy.ws)
        await eventually(lambda b=before: sum(sessions(h) for h in nodes) == sum(b) + 1, what=f"{peer.name}'s session")
        grew = [k for k, h in enumerate(nodes) if sessions(h) > before[k]]
        assert len(grew) == 1, grew
        home[peer.name] = grew[0]
        peers.append(peer)
    placement = sorted(home.values())
    assert placement == [0, 0, 1, 1, 2, 2], f"{balancer} did not spread the peers round robin: {home}"

    listed = {}
    for p in peers:
        reply = await p.request({"type": "join", "room": "lb"})
        assert reply["type"] == "joined", reply
        listed[p.name] = {x["peer"] for x in reply["peers"]}
    everyone = {p.name for p in peers}
    for p in peers:
        await eventually(
            lambda p=p: listed[p.name] | {m["peer"] for m in p.of_type("peer-joined")} == everyone - {p.name},
            what=f"presence at {p.name}",
        )

    # Everyone signals everyone through the balancer, across nodes.
    for a in peers:
        for b in peers:
            if a is not b:
                reply = await a.request({"type": "offer", "to": b.name, "sdp": f"v=0 {a.name}>{b.name}"})
                assert reply["type"] == "ack" and not reply.get("queued"), reply
    for b in peers:
        await eventually(lambda b=b: len(b.of_type("offer")) == len(peers) - 1, what=f"offers to {b.name}")

    # Kill one node while the others' peers stream signals to its peers.
    dead = home[peers[0].name]
    victims = [p for p in peers if home[p.name] == dead]
    senders = [p for p in peers if home[p.name] != dead]
    outcomes = {}  # id -> (sender, recipient, "ack", "error CODE" or "silent")
    queued = []  # acknowledged while the recipient was away
    stop = asyncio.Event()

    async def stream(sender, to):
        n = 0
        while not stop.is_set():
            n += 1
            try:
                reply = await sender.request({"type": "message", "to": to.name, "data": {"n": n}}, timeout=10)
                outcome = reply["type"] if reply["type"] == "ack" else f"error {reply.get('code')}"
                outcomes[reply["id"]] = (sender.name, to.name, outcome)
                if reply.get("queued"):
                    queued.append(reply["id"])
            except asyncio.TimeoutError:
                outcomes[f"silent-{len(outcomes)}"] = (sender.name, to.name, "silent")
            await asyncio.sleep(0.01)

    streams = [asyncio.ensure_future(stream(s, v)) for s in senders for v in victims]
    await asyncio.sleep(1.0)
    nodes[dead].stop(signal.SIGKILL)
    killed_at = time.time()
    await eventually(lambda: all(v.closed is not None for v in victims), what=f"the drop, seen through {balancer}")
    assert all(v.closed == 1006 for v in victims), [v.closed for v in victims]
    alive = [h for k, h in enumerate(nodes) if k != dead]
    for v in victims:
        before = sum(sessions(h) for h in alive)
        # The balancer may still pick the dead node (HAProxy until its health check fails, nginx until two
        # connects failed): `retries` and `option redispatch`, or `proxy_next_upstream error`, send the
        # connect to another node.
        welcome = await v.connect(proxy.ws, resume=True)
        assert welcome.get("resumed") is True and not welcome.get("gap"), welcome
        await eventually(lambda b=before: sum(sessions(h) for h in alive) == b + 1, what=f"{v.name} on a live node")
    resumed_after = time.time() - killed_at
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*streams)

    # Nothing silent; every acknowledged signal delivered exactly once, in order; nothing refused delivered.
    silent = [k for k, (_, _, outcome) in outcomes.items() if outcome == "silent"]
    assert not silent, f"{len(silent)} signals got no answer: {silent[:5]}"
    for v in victims:
        for s in senders:
            acked = {k for k, (a, b, o) in outcomes.items() if a == s.name and b == v.name and o == "ack"}
            assert acked, f"no signal from {s.name} to {v.name} was acknowledged"
            await eventually(lambda v=v, s=s, acked=acked: delivered_once_in_order(v, s.name) >= acked,
                             what=f"{s.name}'s signals replayed to {v.name}")
            assert delivered_once_in_order(v, s.name) == acked, f"{v.name} got a signal of {s.name} that was refused"
        seqs = [m["seq"] for m in v.messages]
        assert seqs == list(range(1, len(seqs) + 1)), f"{v.name}: seq has a gap or a repeat"
    refused = sorted({o for _, _, o in outcomes.values() if o != "ack"})

    # The resumed peers signal from their new nodes; nobody saw a peer leave.
    for v in victims:
        reply = await v.request({"type": "answer", "to": senders[0].name, "sdp": f"v=0 back {v.name}"})
        assert reply["type"] == "ack", reply
    await eventually(lambda: len([m for m in senders[0].of_type("answer")]) == len(victims), what="answers after resume")
    for p in peers:
        assert not p.of_type("peer-left"), f"{p.name} saw {p.of_type('peer-left')}"
    print(f"\nthrough {balancer}: {len(outcomes)} signals to the killed node's {len(victims)} peers, "
          f"{sum(1 for o in outcomes.values() if o[2] == 'ack')} acknowledged ({len(queued)} queued) and delivered once "
          "in order, "
          f"refused {refused or 'none'}, 0 silent; resumed {resumed_after:.1f} s after the kill")
    for p in peers:
        await p.close()
