"""Real parts for the cluster tests: a `redis-server` on a loopback port, a TCP proxy that can cut a node
off from it, and an asyncio signaling peer that records everything it receives and can resume."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import websockets

from conftest import free_port, stop_process


# The least-privilege user (name, password) of Docs/redis-users.acl that the tests' nodes connect as.
ACL_USER = ("signal", "signal-test-pw")


def acl_rule(password):
    """The rule of Docs/redis-users.acl for `ACL SETUSER`, with `password` and no key or channel pattern
    (`allow_prefix` adds each prefix's)."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "Docs", "redis-users.acl")
    line = next(line for line in open(path) if line.startswith("user "))
    tokens = line.split()[2:]
    assert ">CHANGE-ME" in tokens and "~sig:*" in tokens and "&sig:*" in tokens, tokens
    return [f">{password}" if t == ">CHANGE-ME" else t for t in tokens if t not in ("~sig:*", "&sig:*")]


def acl_patterns(prefix):
    """The key and channel patterns that let the user reach a node's `--redis-prefix` PREFIX."""
    return [f"~{prefix}:*", f"&{prefix}:*"]


class LeastPrivilege:
    """A Redis (one server or a cluster) whose nodes connect as `ACL_USER` when `user` is set: its URLs
    carry the user, and `close()` stops it and fails when it refused that user anything (`denied()`)."""

    user = None

    def credentials(self):
        return f"{self.user[0]}:{self.user[1]}@" if self.user else ""

    def close(self):
        denied = self.denied()
        self.stop()
        assert not denied, f"Redis refused the nodes' user of Docs/redis-users.acl:\n{denied}"


class RedisServer(LeastPrivilege):
    """`redis-server` with an append-only file fsynced on every write, so a restart keeps the cluster's
    state (the configuration Docs/scaling.md recommends)."""

    def __init__(self, directory, pki=None, least_privilege=False):
        self.directory = str(directory)
        self.pki = pki  # with a test PKI (tls_helpers.make_pki): TLS only, with its server certificate
        self.port = free_port()
        self.proc = None
        # With `least_privilege`: `url` names the user of Docs/redis-users.acl, allowed the keys and channels
        # of each prefix given to `allow_prefix` (set up again on every start: a restart forgets users).
        self.user = ACL_USER if least_privilege else None
        self.prefixes = []
        self.binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start()

    @property
    def url(self):
        return f"{'rediss' if self.pki else 'redis'}://{self.credentials()}127.0.0.1:{self.port}"

    def start(self):
        self.log = open(os.path.join(self.directory, "redis.log"), "ab")
        listen = ["--port", str(self.port)]
        if self.pki:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.pki / "server.pem"),
                      "--tls-key-file", str(self.pki / "server.key"), "--tls-ca-cert-file", str(self.pki / "ca.pem"),
                      "--tls-auth-clients", "no"]
        # The user is part of the configuration the server starts with, so it exists before the port opens:
        # set afterwards, a node reconnecting the moment a restarted Redis listens was refused its `AUTH`.
        user = []
        if self.user:
            patterns = [pattern for prefix in self.prefixes for pattern in acl_patterns(prefix)]
            user = ["--user", self.user[0], *acl_rule(self.user[1]), *patterns]
        self.proc = subprocess.Popen(
            [self.binary, *listen, "--bind", "127.0.0.1", "--dir", self.directory, "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no", *user],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                    s = ssl.create_default_context(cafile=str(self.pki / "ca.pem")).wrap_socket(raw, server_hostname="localhost") if self.pki else raw
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")

    def allow_prefix(self, prefix):
        """Lets the least-privilege user reach the keys and channels of a node started with `--redis-prefix`."""
        if self.user and prefix not in self.prefixes:
            self.prefixes.append(prefix)
            self.call("ACL", "SETUSER", self.user[0], *acl_patterns(prefix))

    def call(self, *args):
        """A command as the default user, over plain TCP; returns the reply's first line (`+OK`, `:1`)."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(request.encode())
            reply = s.recv(4096).split(b"\r\n")[0].decode()
            assert not reply.startswith("-"), (args[:3], reply)
            return reply

    def denied(self):
        """What Redis refused the least-privilege user (`ACL LOG`, as redis-cli prints it); empty when nothing."""
        if not self.user or not self.proc or self.proc.poll() is not None:
            return ""
        cli = os.path.join(os.path.dirname(self.binary), "redis-cli")
        cli = cli if os.path.exists(cli) else (shutil.which("redis-cli") or "redis-cli")
        return subprocess.run([cli, "-p", str(self.port), "ACL", "LOG"], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    def integer(self, *args):
        """An integer-answering command (`EXISTS`, `LLEN`, `SADD`, `SCARD`, ...), over plain TCP (for
        servers started without TLS)."""
        reply = self.call(*args)
        assert reply.startswith(":"), reply
        return int(reply[1:])

    def exists(self, key):
        """Whether `key` exists."""
        return self.integer("EXISTS", key) == 1

    def llen(self, key):
        """The length of list `key`."""
        return self.integer("LLEN", key)

    def pause(self):
        """Stops the process (SIGSTOP): connections stay open, nothing is answered (a stalled Redis)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.resume()
            stop_process(self.proc, timeout=10)
        self.log.close()


class CuttableTCPProxy:
    """A loopback TCP proxy (its own thread and event loop) that can cut every connection through it and
    refuse new ones until healed: a network partition between one node and Redis."""

    def __init__(self, target_port):
        import threading

        self.target_port = target_port
        self.port = free_port()
        self.cut = False
        self.writers = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    async def _handle(self, reader, writer):
        if self.cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers.update({writer, up_writer})

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while not self.cut:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            for w in (writer, up_writer):
                w.close()
                self.writers.discard(w)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def set_cut(self, cut):
        def apply():
            self.cut = cut
            if cut:
                for w in list(self.writers):
                    w.transport.abort()
                self.writers.clear()

        self.loop.call_soon_threadsafe(apply)

    def close(self):
        self.set_cut(True)

        async def shutdown():
            self.server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


class Peer:
    """A protocol-v1 client that records every message, answers requests by id, and can resume."""

    def __init__(self, name):
        self.name = name
        self.token = None
        self.last = 0
        self.ws = None
        self.messages = []  # every sequenced message, in arrival order
        self.replies = {}
        self.waiters = {}
        self.closed = None  # close code of the latest connection, once it closed
        self.welcomes = []
        self.reader = None
        self.counter = 0

    async def connect(self, url, resume=False):
        query = f"resume={self.token}&last={self.last}" if resume else f"peer={self.name}"
        self.ws = await websockets.connect(f"{url}?{query}", max_queue=None, ping_interval=None)
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"{self.name}: expected welcome, got {welcome}")
        self.welcomes.append(welcome)
        self.token = welcome["session"]
        self.closed = None
        self.reader = asyncio.ensure_future(self._read(self.ws))
        return welcome

    async def _read(self, ws):
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if "seq" in msg:
                    self.messages.append(msg)
                    self.last = max(self.last, msg["seq"])
                elif msg.get("id") is not None:
                    self.replies[msg["id"]] = msg
                    fut = self.waiters.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
        except websockets.ConnectionClosed:
            pass
        self.closed = ws.close_code if ws.close_code is not None else 1006

    async def request(self, msg, timeout=15):
        self.counter += 1
        msg = dict(msg)
        msg.setdefault("id", f"{self.name}-{self.counter}")
        fut = asyncio.get_running_loop().create_future()
        self.waiters[msg["id"]] = fut
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    async def close(self):
        if self.ws:
            await self.ws.close()
        if self.reader:
            with contextlib.suppress(Exception):
                await self.reader

    def of_type(self, *types):
        return [m for m in self.messages if m["type"] in types]


async def eventually(predicate, timeout=15, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class RedisClusterNodes(LeastPrivilege):
    """A Redis Cluster on loopback: `primaries` primaries with `replicas` replicas each, every node a
    `redis-server --cluster-enabled yes` of its own (append-only, fsynced on every write), joined with
    `redis-cli --cluster create`; ready once every node says `cluster_state:ok`. `node_timeout` (ms) is how
    long a primary may be unreachable before its replica is promoted. With `least_privilege`, `urls` name the
    user of Docs/redis-users.acl on every node, allowed each prefix given to `allow_prefix`."""

    def __init__(self, directory, primaries=3, replicas=1, node_timeout=1000, least_privilege=False):
        self.binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.cli_binary = os.environ.get("REDIS_CLI") or os.path.join(os.path.dirname(self.binary), "redis-cli")
        self.procs = {}
        self.logs = []
        used = set()
        for i in range(primaries * (1 + replicas)):
            node_dir = os.path.join(str(directory), f"node{i}")
            os.makedirs(node_dir, exist_ok=True)
            log = open(os.path.join(node_dir, "redis.log"), "ab")
            self.logs.append(log)
            # A port picked as free can be taken by then (an outgoing connection's ephemeral port): retry.
            for _attempt in range(5):
                port, bus = free_port(), free_port()
                if {port, bus} & used or port == bus:
                    continue
                proc = subprocess.Popen(
                    [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", node_dir, "--save", "",
                     "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no",
                     "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                     "--cluster-port", str(bus), "--cluster-node-timeout", str(node_timeout),
                     "--cluster-allow-replica-migration", "no"],
                    stdout=log, stderr=subprocess.STDOUT,
                )
                if self._wait_ping(port, proc):
                    used |= {port, bus}
                    self.procs[port] = proc
                    break
                proc.kill()
                proc.wait()
            else:
                raise RuntimeError(f"redis-server did not start (see {node_dir}/redis.log)")
        self.ports = list(self.procs)
        self.cli(None, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", str(replicas), "--cluster-yes")
        self.wait_ok()
        # ACL users are per server (a Redis Cluster does not share them): every node gets the user.
        self.user = ACL_USER if least_privilege else None
        if self.user:
            for port in self.ports:
                self.cli(port, "ACL", "SETUSER", self.user[0], *acl_rule(self.user[1]))

    def allow_prefix(self, prefix):
        """Lets the least-privilege user reach the keys and channels of `--redis-prefix` PREFIX."""
        if self.user:
            for port in self.alive():
                self.cli(port, "ACL", "SETUSER", self.user[0], *acl_patterns(prefix))

    def denied(self):
        """What the nodes refused the least-privilege user (`ACL LOG` of each live node); empty when nothing."""
        if not self.user:
            return ""
        return "\n".join(log for log in (self.cli(p, "ACL", "LOG").strip() for p in self.alive()) if log)

    def _wait_ping(self, port, proc):
        deadline = time.time() + 10
        while time.time() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):
                if self.cli(port, "PING").strip() == "PONG":
                    time.sleep(0.05)  # a server that lost the race for the port exits right away
                    return proc.poll() is None
            time.sleep(0.05)
        return False

    def cli(self, port, *args):
        command = [self.cli_binary] + (["-p", str(port)] if port else []) + [str(a) for a in args]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=30).stdout

    def alive(self):
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            replication = [self.cli(p, "INFO", "replication") for p in self.alive()]
            synced = all("master_link_status:up" in r for r in replication if "role:slave" in r)
            if synced and all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.alive()):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    @property
    def urls(self):
        return [f"redis://{self.credentials()}127.0.0.1:{p}" for p in self.ports]

    def slot(self, key):
        return int(self.cli(self.alive()[0], "CLUSTER", "KEYSLOT", key))

    def primary_of(self, slot):
        """The port of the primary that serves `slot` now (as the first live node sees it)."""
        for line in self.cli(self.alive()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                start, _, end = part.partition("-")
                if start.isdigit() and int(start) <= slot <= int(end or start):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no primary serves slot {slot}")

    def replica_of(self, primary_port):
        """The port of a replica of the primary on `primary_port`."""
        primary_id = self.cli(primary_port, "CLUSTER", "MYID").strip()
        for line in self.cli(primary_port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if fields[3] == primary_id:
                return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"{primary_port} has no replica")

    def kill(self, port):
        """SIGKILL: no goodbye to anyone; its replica is promoted after the node timeout."""
        self.procs[port].kill()
        self.procs[port].wait()

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
