"""A raw RFC 6455 client for hostile-input tests, and bystander peers that keep signalling meanwhile.

`RawWS` speaks WebSocket over a plain socket so a test can send what no well-behaved library would:
unmasked frames, declared lengths with no data behind them, 100,000 fragments, invalid UTF-8. Frames
from the server are parsed strictly; pings are answered unless the test says otherwise.

`Bystanders` are two well-behaved peers in a room that exchange offer/answer round trips in a
background thread while an attack runs, and record how long each round trip took, the longest gap
between two completed round trips and every other message they saw (e.g. `peer-left`).
"""

import base64
import json
import os
import socket
import threading
import time

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server sent a close frame (code, reason) or dropped the connection (code None)."""

    def __init__(self, code, reason=""):
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


def mask_bytes(payload, key):
    if not payload:
        return b""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, declared_length=None):
    """One frame; `declared_length` puts a different length in the header than the payload has."""
    if isinstance(payload, str):
        payload = payload.encode()
    length = len(payload) if declared_length is None else declared_length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += length.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += length.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        head += key
        payload = mask_bytes(payload, key)
    return bytes(head) + payload


def http_request(port, raw, host="127.0.0.1", timeout=10, chunk=65536, source=None):
    """Sends raw request bytes; returns (status or None, response bytes, whether the server closed)."""
    sock = socket.socket()
    if source:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect((host, port))
    try:
        try:
            for i in range(0, len(raw), chunk):
                sock.sendall(raw[i:i + chunk])
        except OSError:
            pass  # the server may answer and close before it has read everything
        response = b""
        closed = False
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    closed = True
                    break
                response += data
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        status = None
        if response.startswith(b"HTTP/1.1 "):
            status = int(response[9:12])
        return status, response, closed
    finally:
        sock.close()


def upgrade_request(port, path="/ws", headers=None):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawWS:
    """A WebSocket connection over a plain socket."""

    def __init__(self, port, path="/ws", headers=None, timeout=10, source=None, rcvbuf=None, answer_pings=True):
        self.port = port
        self.answer_pings = answer_pings
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(upgrade_request(port, path, headers))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else None
        self.response_head = head.decode(errors="replace")
        self.pings = 0
        self.welcome = None
        # Text frames starting with one of these are dropped unparsed (a bystander in a busy room
        # skips the flood cheaply).
        self.ignore_prefixes = ()

    # -- sending ---------------------------------------------------------------------------------
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kwargs):
        self.sock.sendall(encode_frame(opcode, payload, **kwargs))

    def send_json(self, message):
        self.send_frame(TEXT, json.dumps(message, separators=(",", ":")))

    def send_close(self, code=1000):
        try:
            self.send_frame(CLOSE, code.to_bytes(2, "big"))
        except OSError:
            pass

    # -- receiving -------------------------------------------------------------------------------
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("no frame in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            raise Closed(None, "connection dropped without a close frame")
        self.buf += data

    def recv_frame(self, timeout=10):
        """(fin, opcode, payload) of the next frame; raises Closed(None) on EOF, TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            self._fill(deadline)

    def _parse(self):
        buf = self.buf
        if len(buf) < 2:
            return None
        fin, opcode, rsv = buf[0] >> 7, buf[0] & 0x0F, (buf[0] >> 4) & 0x7
        assert rsv == 0, "server set reserved bits"
        assert buf[1] & 0x80 == 0, "server frames must not be masked"
        length, offset = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < offset + length:
            return None
        payload = buf[offset:offset + length]
        self.buf = buf[offset + length:]
        return bool(fin), opcode, payload

    def recv_message(self, timeout=10):
        """The next text message as JSON; answers pings; raises Closed on a close frame or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            fin, opcode, payload = self.recv_frame(max(0.001, deadline - time.monotonic()))
            if opcode == PING:
                self.pings += 1
                if self.answer_pings:
                    self.send_frame(PONG, payload)
            elif opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode(errors="replace"))
            elif opcode == TEXT:
                assert fin, "the server sends whole messages"
                if self.ignore_prefixes and payload.startswith(self.ignore_prefixes):
                    continue
                return json.loads(payload)
            elif opcode != PONG:
                raise AssertionError(f"unexpected opcode {opcode}")

    def recv_until(self, predicate, timeout=10):
        """The first message matching `predicate`, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv_message(max(0.001, deadline - time.monotonic()))
            if predicate(message):
                return message

    def request(self, message, timeout=10):
        """Sends a message with an `id` and returns the reply carrying that id."""
        self.send_json(message)
        return self.recv_until(lambda m: m.get("id") == message["id"] and m.get("type") in ("ack", "error", "joined", "left", "pong"), timeout)

    def expect_close(self, timeout=10):
        """Reads until the server's close frame; returns (code, reason, messages seen before it).
        Code None means the connection dropped without a close frame."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.recv_message(max(0.001, deadline - time.monotonic())))
            except Closed as closed:
                return closed.code, closed.reason, seen

    def read_welcome(self, timeout=10):
        self.welcome = self.recv_until(lambda m: m.get("type") == "welcome", timeout)
        return self.welcome

    def is_closed_by_server(self, timeout=5):
        """Whether the server closed the TCP connection within `timeout` (reading and dropping data)."""
        deadline = time.monotonic() + timeout
        self.buf = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                if not self.sock.recv(262144):
                    return True
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def connect_peer(port, peer=None, room=None, query="", timeout=10, **kwargs):
    """A welcomed peer (optionally in `room`)."""
    path = "/ws"
    params = [p for p in (f"peer={peer}" if peer else "", query) if p]
    if params:
        path += "?" + "&".join(params)
    ws = RawWS(port, path, timeout=timeout, **kwargs)
    assert ws.status == 101, ws.response_head
    ws.read_welcome(timeout)
    if room:
        reply = ws.request({"type": "join", "room": room, "id": "join-" + room}, timeout)
        assert reply["type"] == "joined", reply
    return ws


class Bystanders:
    """Two peers in `room` exchanging offer/answer round trips until stopped."""

    def __init__(self, hub, room="lobby", interval=0.02, tag=None):
        tag = tag or os.urandom(3).hex()
        self.room = room
        self.interval = interval
        self.a_id, self.b_id = f"bystander-a-{tag}", f"bystander-b-{tag}"
        self.a = connect_peer(hub.port, self.a_id, room)
        self.b = connect_peer(hub.port, self.b_id, room)
        for ws in (self.a, self.b):
            ws.ignore_prefixes = (b'{"type":"message"',)  # app messages (an attacker's broadcasts)
        self.latencies = []
        self.completed = []  # monotonic times of completed round trips
        self.events = []  # (monotonic time, receiver, message) of other messages (not acks or app messages)
        self.error = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self.stopped = None
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _skip(self, who, message):
        # Acks are not events worth keeping.
        if message.get("type") != "ack":
            with self._lock:
                self.events.append((time.monotonic(), who, message))
        return False

    def _run(self):
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                sent = time.monotonic()
                self.a.send_json({"type": "offer", "to": self.b_id, "sdp": f"v=0 {n}", "id": f"o{n}"})
                offer = self.b.recv_until(
                    lambda m: (m.get("type") == "offer" and m.get("sdp") == f"v=0 {n}") or self._skip("b", m), 15
                )
                assert offer["from"] == self.a_id, offer
                self.b.send_json({"type": "answer", "to": self.a_id, "sdp": f"v=0 {n}", "id": f"a{n}"})
                self.a.recv_until(
                    lambda m: (m.get("type") == "answer" and m.get("sdp") == f"v=0 {n}") or self._skip("a", m), 15
                )
                done = time.monotonic()
                with self._lock:
                    self.latencies.append(done - sent)
                    self.completed.append(done)
                self._stop.wait(self.interval)
        except Exception as error:  # noqa: BLE001 - reported by check()
            if not self._stop.is_set():
                self.error = error

    def wait_event(self, predicate, timeout):
        """The first recorded (time, receiver, message) whose message matches, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events:
                    if predicate(event[2]):
                        return event
            if self.error:
                raise AssertionError(f"bystanders failed: {self.error!r}")
            time.sleep(0.02)
        return None

    def stop(self):
        if self.stopped is None:
            self.stopped = time.monotonic()
            self._stop.set()
            self._thread.join(timeout=20)
            for ws in (self.a, self.b):
                ws.send_close()
                ws.close()

    def check(self, max_round_trip, max_gap, min_rounds=10):
        """Asserts the two kept exchanging signals the whole time: no error, no round trip slower than
        `max_round_trip`, no stretch longer than `max_gap` without a completed round trip. Lets them
        go on (up to `max_gap`) until they have made `min_rounds` round trips, so a quick attack is
        followed by signalling that shows the hub is still fine."""
        deadline = time.monotonic() + max_gap
        while len(self.completed) < min_rounds and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stop()
        assert self.error is None, f"bystanders failed: {self.error!r}"
        times = [self.started] + self.completed + [self.stopped]
        gap = max(b - a for a, b in zip(times, times[1:]))
        worst = max(self.latencies) if self.latencies else float("inf")
        summary = f"{len(self.latencies)} round trips, slowest {worst * 1000:.0f} ms, longest gap {gap * 1000:.0f} ms"
        print("bystanders:", summary)
        assert len(self.latencies) >= min_rounds, summary
        assert worst <= max_round_trip, summary
        assert gap <= max_gap, summary
        return summary
