"""`signal serve` and `signal peer` as processes: scripted sessions, resume, graceful shutdown."""

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time

from websockets.sync.client import connect

from conftest import SIGNAL


class PeerProcess:
    """A `signal peer` process whose stdin we write and whose stdout lines we read."""

    def __init__(self, url, *args):
        self.proc = subprocess.Popen(
            [SIGNAL, "peer", "--url", url, "--linger", "0.5"] + list(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        self.status = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_status, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def _read_status(self):
        for line in self.proc.stderr:
            self.status.append(line.strip())

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, type_, timeout=10, **fields):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                message = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if message.get("type") == type_ and all(message.get(k) == v for k, v in fields.items()):
                return message
        raise AssertionError(f"no {type_} {fields} from signal peer; stderr: {self.status}")

    def finish(self, timeout=10):
        self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)


def test_two_cli_peers_complete_an_offer_answer_exchange(start_hub, tmp_path):
    hub = start_hub()
    offer = tmp_path / "offer.sdp"
    offer.write_text("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
    answer = tmp_path / "answer.sdp"
    answer.write_text("v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")

    alice = PeerProcess(hub.ws, "--peer", "alice", "--room", "demo")
    alice.expect("welcome", peer="alice")
    alice.expect("joined", room="demo")
    bob = PeerProcess(hub.ws, "--peer", "bob", "--room", "demo")
    bob.expect("welcome", peer="bob")
    joined = bob.expect("joined", room="demo")
    assert [p["peer"] for p in joined["peers"]] == ["alice"]
    alice.expect("peer-joined", peer="bob")

    alice.command(f"offer bob {offer}")
    got_offer = bob.expect("offer", **{"from": "alice"})
    assert got_offer["sdp"] == offer.read_bytes().decode()
    alice.expect("ack")
    bob.command(f"answer alice {answer}")
    got_answer = alice.expect("answer", **{"from": "bob"})
    assert got_answer["sdp"] == answer.read_bytes().decode()
    alice.command('candidate bob {"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}')
    assert bob.expect("candidate")["candidate"]["sdpMid"] == "0"
    bob.command("say demo hello everyone")
    assert alice.expect("message")["data"] == "hello everyone"
    bob.command("quit")
    assert bob.finish() == 0
    alice.expect("peer-left", peer="bob")
    assert alice.finish() == 0


def test_cli_peer_exits_nonzero_when_refused(start_hub):
    hub = start_hub("--allow-origin", "https://app.example")
    holder = PeerProcess(hub.ws, "--peer", "taken")
    holder.expect("welcome")
    second = subprocess.run([SIGNAL, "peer", "--url", hub.ws, "--peer", "taken"], input="", text=True, capture_output=True, timeout=20)
    assert second.returncode != 0
    assert "4009" in second.stderr
    refused = subprocess.run([SIGNAL, "peer", "--url", f"ws://127.0.0.1:{hub.port + 1 if hub.port < 65535 else 1}/ws"], input="", text=True, capture_output=True, timeout=20)
    assert refused.returncode != 0
    holder.finish()


class CuttableProxy:
    """A TCP proxy on loopback whose connections can be cut abruptly (RST, no close frame)."""

    def __init__(self, upstream_port):
        import socket

        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass

    def cut(self):
        import socket
        import struct

        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv
                s.close()
            except OSError:
                pass


def test_cli_peer_resumes_after_a_dropped_connection(start_hub):
    hub = start_hub()
    proxy = CuttableProxy(hub.port)
    bob = PeerProcess(f"ws://127.0.0.1:{proxy.port}/ws", "--peer", "bob")
    bob.expect("welcome")
    with connect(hub.ws + "?peer=alice") as alice:
        json.loads(alice.recv())
        for round_ in range(3):
            alice.send(json.dumps({"type": "message", "to": "bob", "data": f"before-{round_}", "id": f"b{round_}"}))
            assert bob.expect("message")["data"] == f"before-{round_}"
            proxy.cut()
            time.sleep(0.2)
            alice.send(json.dumps({"type": "message", "to": "bob", "data": f"while-away-{round_}", "id": f"w{round_}"}))
            welcome = bob.expect("welcome", peer="bob")
            assert welcome["resumed"] is True
            assert bob.expect("message")["data"] == f"while-away-{round_}"
        acks = [json.loads(alice.recv(timeout=5)) for _ in range(6)]
        assert all(a["type"] == "ack" for a in acks)
        assert sorted(a["id"] for a in acks) == ["b0", "b1", "b2", "w0", "w1", "w2"]
    # Nothing was delivered twice.
    assert bob.lines.empty()
    assert any("resuming" in line for line in bob.status)
    bob.finish()


def test_sigterm_closes_clients_with_1001_and_exits_zero(start_hub):
    hub = start_hub()
    clients = [connect(hub.ws) for _ in range(3)]
    for c in clients:
        assert json.loads(c.recv())["type"] == "welcome"
    hub.proc.send_signal(signal.SIGTERM)
    codes = []
    for c in clients:
        try:
            while True:
                c.recv(timeout=5)
        except Exception:
            pass
        codes.append(c.protocol.close_rcvd.code if c.protocol.close_rcvd else None)
    assert codes == [1001, 1001, 1001]
    assert hub.proc.wait(timeout=15) == 0


def test_serve_exits_when_its_backend_cannot_start(tmp_path):
    # A mesh node whose mesh port is taken: the server must not go on serving without its backend.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    secret = tmp_path / "mesh.secret"
    secret.write_text("a mesh secret for the end-to-end tests, long enough")
    result = subprocess.run(
        [SIGNAL, "serve", "--port", "0", "--mesh-listen", f"127.0.0.1:{taken.getsockname()[1]}",
         "--mesh-secret-file", str(secret)],
        capture_output=True, text=True, timeout=30,
    )
    taken.close()
    assert result.returncode != 0, result.stderr
    assert "Address already in use" in result.stderr, result.stderr
