"""Shared fixtures for the end-to-end tests: real `signal serve` processes on loopback ports."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIGNAL = os.environ.get("SIGNAL_BIN", os.path.join(ROOT, ".build", "debug", "signal"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """A running `signal serve` process."""

    def __init__(self, args, port, log_path):
        self.port = port
        self.args = args
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
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("signal serve did not become healthy")

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def metrics(self):
        with urllib.request.urlopen(self.http + "/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_hub(tmp_path):
    """Returns a function that starts a hub with extra `signal serve` arguments."""
    hubs = []

    def start(*args, port=None):
        hub = Hub(args, port or free_port(), str(tmp_path / f"hub-{len(hubs)}.log"))
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop(signal.SIGKILL if hub.proc.poll() is None else signal.SIGTERM, timeout=5)
