"""Shared fixtures for the end-to-end tests: real `signal serve` processes on loopback ports."""

import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from tls_helpers import make_pki

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIGNAL = os.environ.get("SIGNAL_BIN", os.path.join(ROOT, ".build", "debug", "signal"))


def stop_process(proc, sig=signal.SIGTERM, timeout=5):
    """Stops `proc` with `sig` unless it has exited; kills it when it has not gone after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_handed_out = set()


def free_port():
    """A loopback port nothing listens on, for a server the test starts next. Chosen below the kernel's
    ephemeral range: a port from `bind(0)` is one the kernel may give the next outgoing connection (to
    Redis, a hub, a browser) as its source port before the server binds it, and the server then fails with
    "address already in use". Never the same port twice in one test run."""
    low = 10000 if _EPHEMERAL[0] > 20000 else _EPHEMERAL[1] + 1
    high = _EPHEMERAL[0] - 1 if _EPHEMERAL[0] > 20000 else 65535
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """A running `signal serve` process. With `tls_ca` (the CA file that signed its `--tls-cert`), it is
    reached over https/wss at localhost."""

    def __init__(self, args, port, log_path, tls_ca=None):
        self.port = port
        self.args = args
        self.tls_context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [SIGNAL, "serve", "--port", str(port)] + list(args),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signal serve exited with {self.proc.returncode}: {open(log_path).read()}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1, context=self.tls_context) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("signal serve did not become healthy")

    @property
    def http(self):
        return f"https://localhost:{self.port}" if self.tls_context else f"http://127.0.0.1:{self.port}"

    @property
    def ws(self):
        return f"wss://localhost:{self.port}/ws" if self.tls_context else f"ws://127.0.0.1:{self.port}/ws"

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def metrics(self):
        with urllib.request.urlopen(self.http + "/metrics", timeout=5, context=self.tls_context) as r:
            return r.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        stop_process(self.proc, sig, timeout)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_hub(tmp_path):
    """Returns a function that starts a hub with extra `signal serve` arguments (and `tls_ca`, see Hub)."""
    hubs = []

    def start(*args, port=None, tls_ca=None):
        hub = Hub(args, port or free_port(), str(tmp_path / f"hub-{len(hubs)}.log"), tls_ca=tls_ca)
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop(signal.SIGKILL if hub.proc.poll() is None else signal.SIGTERM, timeout=5)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A throw-away CA with two server certificates and an unrelated key (see tls_helpers.make_pki)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
