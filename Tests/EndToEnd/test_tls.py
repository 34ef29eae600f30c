"""TLS: wss:// and https:// on one port, private CAs, plain-text clients, SIGHUP certificate reload."""

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
from websockets.sync.client import connect

from conftest import SIGNAL, free_port, stop_process
from tls_helpers import client_context


def tls_hub(start_hub, pki, tmp_path, *extra):
    cert = tmp_path / "live.pem"
    key = tmp_path / "live.key"
    shutil.copy(pki / "server.pem", cert)
    shutil.copy(pki / "server.key", key)
    port = free_port()
    # Health is checked over plain HTTP by the fixture, so start the hub by hand here.
    proc = subprocess.Popen([SIGNAL, "serve", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    return proc, port, cert, key


def stop(proc):
    stop_process(proc, timeout=15)


def peer_serial(port, pki):
    ctx = client_context(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # the hub picks http/1.1
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
        return s.getpeercert()["serialNumber"], s.version(), s.selected_alpn_protocol()


def test_wss_session_with_offer_answer_and_candidates(start_hub, pki, tmp_path):
    proc, port, _, _ = tls_hub(start_hub, pki, tmp_path)
    try:
        url = f"wss://localhost:{port}/ws"
        ctx = client_context(pki)
        with connect(url + "?peer=alice", ssl=ctx) as alice, connect(url + "?peer=bob", ssl=ctx) as bob:
            assert json.loads(alice.recv(timeout=5))["type"] == "welcome"
            assert json.loads(bob.recv(timeout=5))["type"] == "welcome"
            alice.send(json.dumps({"type": "offer", "to": "bob", "sdp": "v=0 offer", "id": "o"}))
            assert json.loads(bob.recv(timeout=5))["sdp"] == "v=0 offer"
            bob.send(json.dumps({"type": "answer", "to": "alice", "sdp": "v=0 answer", "id": "a"}))
            assert json.loads(alice.recv(timeout=5))["type"] == "ack"
            assert json.loads(alice.recv(timeout=5))["sdp"] == "v=0 answer"
            alice.send(json.dumps({"type": "candidate", "to": "bob", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}))
            assert json.loads(bob.recv(timeout=5))["type"] == "ack"  # for bob's answer
            assert json.loads(bob.recv(timeout=5))["type"] == "candidate"
        # https on the same port, TLS 1.2+ and ALPN http/1.1.
        _, version, alpn = peer_serial(port, pki)
        assert version in ("TLSv1.2", "TLSv1.3")
        assert alpn == "http/1.1"
        import urllib.request
        with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=ctx, timeout=5) as r:
            assert r.status == 200
        # TLS 1.1 is refused.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(pki / "ca.pem"))
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", port)) as raw, old.wrap_socket(raw, server_hostname="localhost"):
                pass
    finally:
        stop(proc)


def test_cli_peer_over_wss_with_ca_and_refused_without(start_hub, pki, tmp_path):
    proc, port, _, _ = tls_hub(start_hub, pki, tmp_path)
    try:
        url = f"wss://localhost:{port}/ws"
        ok = subprocess.run([SIGNAL, "peer", "--url", url, "--ca", str(pki / "ca.pem"), "--linger", "0.2"],
                            input="ping\n", text=True, capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        types = [json.loads(line)["type"] for line in ok.stdout.splitlines()]
        assert types[0] == "welcome" and "pong" in types
        refused = subprocess.run([SIGNAL, "peer", "--url", url], input="", text=True, capture_output=True, timeout=30)
        assert refused.returncode != 0
        assert "cannot connect" in refused.stderr
        insecure = subprocess.run([SIGNAL, "peer", "--url", url, "--insecure", "--linger", "0.2"], input="", text=True,
                                  capture_output=True, timeout=30)
        assert insecure.returncode == 0
        assert "warning" in insecure.stderr
    finally:
        stop(proc)


def test_untrusting_client_and_plain_text_client_are_refused(start_hub, pki, tmp_path):
    proc, port, _, _ = tls_hub(start_hub, pki, tmp_path, "--handshake-timeout", "1")
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(f"wss://localhost:{port}/ws", ssl=ssl.create_default_context(), open_timeout=5)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 400")
            assert b"TLS" in reply
            assert s.recv(4096) == b""  # then closed
        # A TCP connection that never starts TLS is closed within the handshake timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            started = time.time()
            assert s.recv(1) == b""
            assert time.time() - started < 3
    finally:
        stop(proc)


def test_sighup_reload_keeps_sessions_and_serves_the_new_certificate(start_hub, pki, tmp_path):
    proc, port, cert, key = tls_hub(start_hub, pki, tmp_path)
    try:
        before, _, _ = peer_serial(port, pki)
        ctx = client_context(pki)
        with connect(f"wss://localhost:{port}/ws?peer=steady", ssl=ctx) as steady:
            assert json.loads(steady.recv(timeout=5))["type"] == "welcome"
            shutil.copy(pki / "renewed.pem", cert)
            shutil.copy(pki / "renewed.key", key)
            proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            after = before
            while after == before and time.time() < deadline:
                time.sleep(0.1)
                after, _, _ = peer_serial(port, pki)
            assert after != before, "new connections see the renewed certificate"
            steady.send(json.dumps({"type": "ping", "id": "still-here"}))
            assert json.loads(steady.recv(timeout=5)) == {"type": "pong", "id": "still-here"}
            # A broken file on reload keeps the current certificate.
            (tmp_path / "live.key").write_text("garbage")
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert peer_serial(port, pki)[0] == after
            steady.send(json.dumps({"type": "ping", "id": "again"}))
            assert json.loads(steady.recv(timeout=5))["id"] == "again"
    finally:
        stop(proc)


def test_a_client_hello_longer_than_one_read_completes(start_hub, pki, tmp_path):
    proc, port, _, _ = tls_hub(start_hub, pki, tmp_path)
    try:
        ctx = client_context(pki)
        # Long ALPN names make a ClientHello of about 4 KB; the hub still picks http/1.1.
        ctx.set_alpn_protocols(["x" * 200 + str(i) for i in range(16)] + ["http/1.1"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                assert s.selected_alpn_protocol() == "http/1.1"
    finally:
        stop(proc)


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "mismatched", "not-pem"])
def test_bad_certificate_files_stop_startup_with_a_clear_message(pki, tmp_path, case):
    cert, key = str(pki / "server.pem"), str(pki / "server.key")
    if case == "missing-cert":
        cert = str(tmp_path / "nope.pem")
        named = cert
    elif case == "missing-key":
        key = str(tmp_path / "nope.key")
        named = key
    elif case == "mismatched":
        key = str(pki / "other.key")
        named = key
    else:
        bogus = tmp_path / "bogus.pem"
        bogus.write_text("hello")
        cert = str(bogus)
        named = cert
    result = subprocess.run([SIGNAL, "serve", "--port", str(free_port()), "--tls-cert", cert, "--tls-key", key],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert named in result.stderr
