"""The three backends of `signal serve`, started for the backend conformance suite (test_backends.py).

- `memory`: one `signal serve` (the in-memory hub).
- `cluster`: two `signal serve --redis` nodes on a real `redis-server` (Docs/scaling.md).
- `mesh`: two `signal serve --mesh-listen` nodes joined by PeerMesh, started once the mesh converged
  (Docs/mesh.md).

Every node of every backend gets the same flags (`LIMITS`, plus `--jwt-secret` when auth is on), so one
set of scenarios runs against all three. A `Backend` hands out node URLs by index (`url(i)` wraps
around, so on the single-node backend every index is the one node) and mints HS256 tokens with
`sub` and an optional `rooms` claim, as `signal token` does.

A scenario that needs peers on different nodes puts them on `node 0` and `node 1`; on `memory` both
are the same node.
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from cluster_helpers import RedisServer
from conftest import Hub, free_port
from e2e_helpers import metric
from rawws import Closed, RawWS

KINDS = ("memory", "cluster", "mesh")

JWT_SECRET = "backend-conformance-secret-0123456789abcdef"
MESH_SECRET = "a mesh secret for the backend conformance suite, long enough"

# Small limits, one set for every scenario and every backend (the scenarios are written around them).
GRACE = 3  # --resume-grace, seconds
LIMITS = {
    "max_rooms_per_peer": 3,
    "max_peers_per_room": 3,
    "max_message_bytes": 4096,
    "rate_burst": 40,
    "rate_per_second": 20,
    "rate_max_strikes": 5,
    "resume_grace": GRACE,
    "resume_buffer_messages": 8,
}
# A cluster node refreshes its live sessions every second, so an abandoned session ends within
# GRACE + 1 s (+ the sweep, every second) there; the single hub and the mesh end it within GRACE + 0.25 s.
CLUSTER_REFRESH = 1


def limit_args():
    args = []
    for name, value in LIMITS.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return args + ["--log-level", "warning"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_token(secret, sub, rooms=None, ttl=3600, tenant=None):
    """An HS256 JWT with `sub`, `exp` and (when given) a `rooms` and a `tenant` claim: what `signal token`
    mints."""
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": sub, "exp": int(time.time()) + ttl}
    if rooms is not None:
        claims["rooms"] = list(rooms)
    if tenant is not None:
        claims["tenant"] = tenant
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + b64url(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


class Backend:
    """Running nodes of one backend kind."""

    def __init__(self, kind, hubs, auth, cleanup):
        self.kind = kind
        self.hubs = hubs
        self.auth = auth
        self._cleanup = cleanup

    @property
    def nodes(self):
        return len(self.hubs)

    def hub(self, index):
        return self.hubs[index % len(self.hubs)]

    def url(self, index):
        return self.hub(index).ws

    def port(self, index):
        return self.hub(index).port

    def token(self, sub, rooms=None, ttl=3600, tenant=None):
        return mint_token(JWT_SECRET, sub, rooms, ttl, tenant)

    def raw(self, index, query="", source=None):
        """A RawWS to node `index` (the upgrade done, nothing read yet), from the loopback address
        `source` when given (all of 127/8 reaches lo)."""
        ws = RawWS(self.port(index), "/ws" + ("?" + query if query else ""), source=source)
        assert ws.status == 101, ws.response_head
        return ws

    def client(self, index, query="", source=None):
        return Client(self.raw(index, query, source))

    def connect(self, index, peer, rooms=None, token_rooms=None, query="", ttl=3600, tenant=None, source=None):
        """A welcomed peer on node `index`: with auth, its token's `sub` is `peer` (and `token_rooms`
        its `rooms` claim, `ttl` its lifetime in seconds, `tenant` its tenant claim); without auth it asks
        for `peer=`. Joins each of `rooms`. From `source` (a loopback address) when given."""
        params = []
        if self.auth:
            params.append("token=" + self.token(peer, token_rooms, ttl, tenant))
        else:
            params.append("peer=" + peer)
        if query:
            params.append(query)
        client = self.client(index, "&".join(params), source)
        welcome = client.wait(lambda m: m["type"] == "welcome")
        assert welcome["peer"] == peer and not welcome.get("resumed"), welcome
        for room in rooms or ():
            reply = client.request({"type": "join", "room": room, "id": "join-" + room})
            assert reply["type"] == "joined", reply
        return client

    def resume_query(self, peer, session, last, token_rooms=None, tenant=None):
        query = f"resume={session}&last={last}"
        if self.auth:
            query += "&token=" + self.token(peer, token_rooms, tenant=tenant)
        return query

    def settle(self):
        """Lets what a node announced reach the others. On the mesh a peer's location record and room
        announcements travel by gossip and signed records (Docs/mesh.md); the cluster and the single
        hub decide in one place, so there is nothing to wait for."""
        if self.kind == "mesh":
            time.sleep(0.6)

    def stop(self):
        self._cleanup()


def _start_hub(directory, name, args):
    return Hub(args, free_port(), os.path.join(directory, f"{name}.log"))


def _ready(hub):
    try:
        with urllib.request.urlopen(hub.http + "/readyz", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False
    except OSError:
        return False


def _wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_backend(kind, directory, auth=True, redis=None, prefix="sig", node_args=None):
    """Starts `kind` (with `--jwt-secret` when `auth`); `redis` is a RedisServer for `cluster`, a
    RedisClusterNodes for `redis-cluster` (the cluster backend on a Redis Cluster: not in KINDS, a module
    that wants it adds it, as test_server_api.py does).
    `node_args(i)`, when given, returns more flags for node `i` (its API port, say)."""
    directory = str(directory)
    common = limit_args() + (["--jwt-secret", JWT_SECRET] if auth else [])
    extra = node_args or (lambda i: [])
    hubs = []

    def stop_all():
        for hub in hubs:
            hub.stop(signal.SIGKILL if hub.proc.poll() is None else signal.SIGTERM, timeout=5)

    try:
        if kind == "memory":
            hubs.append(_start_hub(directory, "memory", common + extra(0)))
        elif kind == "cluster":
            if hasattr(redis, "allow_prefix"):
                redis.allow_prefix(prefix)
            for i in range(2):
                hubs.append(_start_hub(directory, f"{prefix}-n{i}", common + extra(i) + [
                    "--redis", redis.url, "--redis-prefix", prefix, "--node-id", f"{prefix}-n{i}",
                    "--cluster-refresh", str(CLUSTER_REFRESH),
                ]))
            for hub in hubs:
                _wait(lambda hub=hub: _ready(hub), 15, "a cluster node to be ready")
        elif kind == "redis-cluster":
            if hasattr(redis, "allow_prefix"):
                redis.allow_prefix(prefix)
            # `redis` is a RedisClusterNodes (cluster_helpers); two seeds a node, as test_redis_cluster.py.
            urls = redis.urls
            for i in range(2):
                hubs.append(_start_hub(directory, f"{prefix}-n{i}", common + extra(i) + [
                    "--redis", urls[i % len(urls)], "--redis", urls[(i + 1) % len(urls)], "--redis-cluster",
                    "--redis-prefix", prefix, "--node-id", f"{prefix}-n{i}",
                    "--cluster-refresh", str(CLUSTER_REFRESH),
                ]))
            for hub in hubs:
                _wait(lambda hub=hub: _ready(hub), 20, "a Redis Cluster node to be ready")
        elif kind == "mesh":
            secret = os.path.join(directory, "mesh.secret")
            with open(secret, "w") as f:
                f.write(MESH_SECRET)
            ports = [free_port() for _ in range(2)]
            for i in range(2):
                args = common + extra(i) + ["--mesh-listen", f"127.0.0.1:{ports[i]}", "--mesh-secret-file", secret]
                if i:
                    args += ["--mesh-seed", f"127.0.0.1:{ports[0]}"]
                hubs.append(_start_hub(directory, f"mesh-n{i}", args))
            _wait(lambda: all(metric(h, "signal_mesh_members_live") == len(hubs) for h in hubs), 20, "the mesh to converge")
            time.sleep(0.3)  # one more gossip round for the records (as test_mesh.wait_converged)
        else:
            raise ValueError(kind)
    except BaseException:
        stop_all()
        raise
    return Backend(kind, hubs, auth, stop_all)


class Redis:
    """One redis-server for the module (backends use different key prefixes)."""

    def __init__(self, directory):
        self.server = None
        self.directory = directory

    def get(self):
        if self.server is None:
            # The nodes connect as the least-privilege user of Docs/redis-users.acl: every command they or
            # their scripts send must be one it allows (checked when the module ends).
            self.server = RedisServer(self.directory, least_privilege=True)
        return self.server

    def stop(self):
        if self.server is not None:
            self.server.close()


REPLY_TYPES = ("ack", "authed", "error", "joined", "updated", "left", "pong")


class Client:
    """A RawWS that keeps every message it read, so a scenario can wait for one message without
    losing the others (presence may arrive before or after a reply, depending on the backend).

    `wait` returns the first message matching a predicate that no earlier `wait` returned, reading
    more when none has arrived yet. `closed` is (code, reason) once the server closed (code None: the
    connection dropped without a close frame)."""

    def __init__(self, ws):
        self.ws = ws
        self.log = []
        self.taken = set()
        self.closed = None
        self.counter = 0

    @property
    def welcome(self):
        return next(m for m in self.log if m["type"] == "welcome")

    def _read(self, deadline):
        if self.closed is not None:
            raise Closed(*self.closed)
        try:
            message = self.ws.recv_message(max(0.001, deadline - time.monotonic()))
        except Closed as closed:
            self.closed = (closed.code, closed.reason)
            raise
        self.log.append(message)

    def wait(self, predicate, timeout=5):
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            while index < len(self.log):
                if index not in self.taken and predicate(self.log[index]):
                    self.taken.add(index)
                    return self.log[index]
                index += 1
            self._read(deadline)

    def collect(self, duration):
        """Reads whatever arrives for `duration` seconds (or until the server closes)."""
        deadline = time.monotonic() + duration
        try:
            while time.monotonic() < deadline:
                self._read(deadline)
        except (TimeoutError, Closed):
            pass

    def send(self, message):
        self.ws.send_json(message)

    def request(self, message, timeout=5):
        """Sends `message` (with an `id`, made up when it has none) and returns its first reply."""
        if "id" not in message:
            self.counter += 1
            message = dict(message, id=f"r{self.counter}")
        self.send(message)
        return self.wait(lambda m: m.get("id") == message["id"] and m["type"] in REPLY_TYPES, timeout)

    def replies(self, request_id):
        return [m for m in self.log if m.get("id") == request_id and m["type"] in REPLY_TYPES]

    def received(self, predicate=lambda m: True):
        """Every sequenced message read so far that matches."""
        return [m for m in self.log if "seq" in m and predicate(m)]

    def seqs(self):
        return [m["seq"] for m in self.log if "seq" in m]

    def expect_close(self, timeout=5):
        """Reads until the server closes; returns (code, reason)."""
        deadline = time.monotonic() + timeout
        while self.closed is None:
            try:
                self._read(deadline)
            except Closed:
                break
        return self.closed

    def drop(self):
        """Goes away without a close frame (as a lost network does): the session waits for a resume."""
        self.ws.close()

    def close(self):
        """Ends the session with a close frame."""
        if self.closed is None:
            self.ws.send_close(1000)
        self.ws.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """One redis-server for the module, started only when a cluster backend asks for it."""
    redis = Redis(tmp_path_factory.mktemp("redis"))
    yield redis
    redis.stop()


@pytest.fixture(scope="module", params=KINDS)
def backend(request, tmp_path_factory, redis_server):
    """Each backend in turn, with auth on (so `--require-shared-room` is on), started once per module."""
    redis = redis_server.get() if request.param == "cluster" else None
    running = start_backend(request.param, tmp_path_factory.mktemp(request.param), auth=True, redis=redis, prefix="auth")
    yield running
    running.stop()


@pytest.fixture(scope="module", params=KINDS)
def open_backend(request, tmp_path_factory, redis_server):
    """Each backend in turn without auth: what only an open hub can show (`id-taken` needs a client
    whose token does not own the id, and with auth every id a token may ask for is its own)."""
    redis = redis_server.get() if request.param == "cluster" else None
    running = start_backend(request.param, tmp_path_factory.mktemp("open-" + request.param), auth=False, redis=redis, prefix="open")
    yield running
    running.stop()
