"""A loopback TCP proxy in front of the hub that can cut a WebSocket at a chosen message.

It reads the WebSocket frames going through it (unmasking the client's), so a test can say "when the
hub sends this client its first offer, drop that frame and kill the TCP connection" — the network
failure a resume must repair: the hub sees the connection vanish without a close frame (so it keeps
the session), the browser sees a close with 1006, and the frame in flight is lost.

Only the first connection that matches is cut; later connections (the client's resume) pass through.

Rules:
  drop-server-frame   a hub->client frame containing `match` is dropped, then both sides are cut
  drop-client-frame   a client->hub frame containing `match` is dropped, then both sides are cut
  cut-before-ack      a client->hub frame containing `match` is forwarded; the hub's `ack` for it (same
                      `id`) is dropped and both sides are cut, so the client must resend a request
                      the hub has already handled
  blackhole-server    from a hub->client frame containing `match` on, nothing is forwarded either way
                      but the sockets stay open (a dead path only a ping can notice)
"""

import asyncio
import json
import contextlib
import socket


def _is_ack(text, request_id):
    try:
        msg = json.loads(text)
    except ValueError:
        return False
    return msg.get("type") == "ack" and msg.get("id") == request_id


class Frame:
    __slots__ = ("raw", "opcode", "payload")

    def __init__(self, raw, opcode, payload):
        self.raw = raw
        self.opcode = opcode
        self.payload = payload


class FrameReader:
    """Splits a byte stream into the HTTP head and then WebSocket frames."""

    def __init__(self):
        self.buffer = bytearray()
        self.in_head = True

    def feed(self, data):
        self.buffer += data
        out = []
        if self.in_head:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            out.append(("head", bytes(self.buffer[: end + 4])))
            del self.buffer[: end + 4]
            self.in_head = False
        while True:
            frame = self._frame()
            if frame is None:
                return out
            out.append(("frame", frame))

    def _frame(self):
        b = self.buffer
        if len(b) < 2:
            return None
        opcode = b[0] & 0x0F
        masked = b[1] & 0x80
        length = b[1] & 0x7F
        pos = 2
        if length == 126:
            if len(b) < 4:
                return None
            length = int.from_bytes(b[2:4], "big")
            pos = 4
        elif length == 127:
            if len(b) < 10:
                return None
            length = int.from_bytes(b[2:10], "big")
            pos = 10
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key = bytes(b[pos : pos + 4])
            pos += 4
        if len(b) < pos + length:
            return None
        payload = bytes(b[pos : pos + length])
        if key:
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        raw = bytes(b[: pos + length])
        del b[: pos + length]
        return Frame(raw, opcode, payload)


class CutProxy:
    def __init__(self, upstream_port, rule=None, match=None, host="127.0.0.1"):
        self.upstream = (host, upstream_port)
        self.rule = rule
        self.match = match.encode() if isinstance(match, str) else match
        self.armed = rule is not None
        self.events = []  # (connection number, what happened)
        self.connections = 0
        self.server = None
        self.tasks = set()
        self.aborts = set()
        self.refusing = False  # while True, new connections are accepted and dropped at once
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def ws(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def cuts(self):
        return [e for e in self.events if e[1].startswith(("cut", "blackhole"))]

    def cut_all(self):
        """Kills every open connection now, without close frames."""
        for abort in list(self.aborts):
            abort()
        self.events.append((self.connections, "cut all"))

    async def stop(self):
        if self.server:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, client_reader, client_writer):
        task = asyncio.current_task()
        self.connections += 1
        number = self.connections
        if self.refusing:
            self.events.append((number, "refused"))
            client_writer.transport.abort()
            return
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            self.tasks.discard(task)
            return
        self.events.append((number, "open"))
        state = {"cut": False, "blackhole": False, "ack_id": None}

        def hard_close():
            # Vanish without a close frame: abort both transports (RST where the kernel does so).
            for writer in (client_writer, up_writer):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                writer.transport.abort()

        async def pump(reader, writer, from_client):
            frames = FrameReader()
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    for kind, item in frames.feed(data):
                        if state["cut"]:
                            return
                        if state["blackhole"]:
                            continue
                        if kind == "head":
                            writer.write(item)
                            continue
                        text = item.payload if item.opcode in (0, 1) else b""
                        matches = self.armed and self.match is not None and self.match in text
                        if not from_client and state["ack_id"] is not None and _is_ack(text, state["ack_id"]):
                            state["cut"] = True
                            self.events.append((number, f"cut dropping hub frame {text[:80]!r}"))
                            hard_close()
                            return
                        if matches and from_client and self.rule == "drop-client-frame":
                            self.armed = False
                            state["cut"] = True
                            self.events.append((number, f"cut dropping client frame {text[:80]!r}"))
                            hard_close()
                            return
                        if matches and from_client and self.rule == "cut-before-ack":
                            self.armed = False
                            state["ack_id"] = json.loads(text)["id"]
                            writer.write(item.raw)
                            self.events.append((number, f"forwarded client frame {text[:80]!r}"))
                            continue
                        if matches and not from_client and self.rule == "drop-server-frame":
                            self.armed = False
                            state["cut"] = True
                            self.events.append((number, f"cut dropping hub frame {text[:80]!r}"))
                            hard_close()
                            return
                        if matches and not from_client and self.rule == "blackhole-server":
                            self.armed = False
                            state["blackhole"] = True
                            self.events.append((number, f"blackhole from hub frame {text[:80]!r}"))
                            continue
                        writer.write(item.raw)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                if not state["blackhole"]:
                    with contextlib.suppress(Exception):
                        writer.close()

        self.aborts.add(hard_close)
        try:
            await asyncio.gather(pump(client_reader, up_writer, True), pump(up_reader, client_writer, False))
        finally:
            self.events.append((number, "closed"))
            self.tasks.discard(task)
            self.aborts.discard(hard_close)
