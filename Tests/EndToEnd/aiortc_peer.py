"""A WebRTC peer built on aiortc that speaks the hub's protocol directly (no SDK), run as a process:

    python aiortc_peer.py --url ws://127.0.0.1:8080/ws --peer py-a --room r1 [--remote ID] [--count 100]

It connects, joins the room, waits for `--remote` (or the first other peer) to be there and opens a
negotiated data channel (label "data", id 0, as the browser SDK does) with it:

- Trickle ICE through the hub: aiortc gathers its candidates inside setLocalDescription and writes them
  into the SDP; this peer strips them from the SDP it sends and sends each as a `candidate` signal (then
  `candidate: null`), so the connection can only come up if the hub relays the candidates.
- Glare follows the contract: the peer whose id sorts greater is polite. aiortc cannot roll back an
  offer, so this peer only offers when it is impolite; when polite it waits for the other side's offer.
  As the impolite side it ignores a colliding offer (and that offer's candidates), as perfect
  negotiation prescribes. With `--glare` the impolite side holds its offer until the other side's
  offer has arrived, so the two offers always cross (the other side must roll back).
- Then the counting exchange the test page also speaks: `count` x {"n": i}, then {"done": count}; on
  the other side's "done" it answers {"ack": received}. It finishes when the other side acknowledged
  all its messages and it received all of the other side's.

With `--relay-only` the peer gathers relay candidates only (`iceTransportPolicy: "relay"`; aiortc has
no such option, so the policy is handed to aioice directly): it needs a TURN server with credentials in
the hub's `welcome`, and its data can only flow through that relay.

The last stdout line is `RESULT {json}`; the exit status is 0 when the exchange succeeded.
"""

import argparse
import asyncio
import itertools
import json
import sys
import time

import websockets
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp


def log(*parts):
    print(f"{time.strftime('%H:%M:%S')} [aiortc]", *parts, file=sys.stderr, flush=True)


def split_candidates(sdp):
    """Returns the SDP without its candidate lines, and the candidates as trickle-ICE objects."""
    kept, candidates = [], []
    mline, mid = -1, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": mline})
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        kept.append(line)
    for candidate in candidates:
        if candidate["sdpMid"] is None:  # a=mid came after the candidates in that section
            candidate["sdpMid"] = mid_of_section(sdp, candidate["sdpMLineIndex"])
    return "\r\n".join(kept) + "\r\n", candidates


def mid_of_section(sdp, index):
    sections = sdp.split("\nm=")
    for line in sections[index + 1].splitlines() if index + 1 < len(sections) else []:
        if line.startswith("a=mid:"):
            return line[len("a=mid:") :].strip()
    return None


def ice_ufrag(sdp):
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:") :].strip()
    return None


class Peer:
    def __init__(self, args):
        self.args = args
        self.ids = (f"py{n}" for n in itertools.count(1))
        self.replies = {}
        self.signals = asyncio.Queue()
        self.errors = []
        self.stats = {"offers_sent": 0, "answers_sent": 0, "candidates_sent": 0, "candidates_received": 0,
                      "candidates_added": 0, "ignored_offers": 0, "ignored_candidates": 0, "stripped_sdp": True}
        self.remote = args.remote
        self.pc = None
        self.remote_ufrag = None
        self.remote_end = False
        self.hold_offer = False

    # --- signaling ------------------------------------------------------------------------------------

    async def request(self, msg, wait=True):
        msg["id"] = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.replies[msg["id"]] = future
        await self.ws.send(json.dumps(msg))
        if wait:
            return await future
        return future

    async def signal(self, msg):
        msg.update({"to": self.remote, "room": self.args.room})
        future = await self.request(msg, wait=False)
        future.add_done_callback(self._check_ack)

    def _check_ack(self, future):
        reply = future.result()
        if reply.get("type") == "error":
            self.errors.append(reply)
            log("error", reply)

    async def read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind in ("ack", "error", "joined", "left", "pong") and msg.get("id") in self.replies:
                self.replies.pop(msg["id"]).set_result(msg)
            elif kind == "error":
                self.errors.append(msg)
                log("error", msg)
            else:
                await self.signals.put(msg)

    # --- negotiation ----------------------------------------------------------------------------------

    async def send_description(self):
        description = self.pc.localDescription
        sdp, candidates = split_candidates(description.sdp)
        if "a=candidate" in sdp:
            self.stats["stripped_sdp"] = False
        await self.signal({"type": description.type, "sdp": sdp})
        self.stats[f"{description.type}s_sent"] += 1
        for candidate in candidates:
            candidate["usernameFragment"] = ice_ufrag(description.sdp)
            await self.signal({"type": "candidate", "candidate": candidate})
            self.stats["candidates_sent"] += 1
        await self.signal({"type": "candidate", "candidate": None})
        log(f"sent {description.type} and {len(candidates)} candidates")

    async def on_description(self, msg):
        pc = self.pc
        if msg["type"] == "offer":
            if self.hold_offer:
                # --glare: the other side's offer is out; now send ours so the two cross, and ignore theirs.
                self.hold_offer = False
                self.stats["ignored_offers"] += 1
                log("got their offer first: ignoring it and offering (glare)")
                await pc.setLocalDescription(await pc.createOffer())
                await self.send_description()
                return
            if pc.signalingState != "stable":
                # Glare: only an impolite peer has an offer out (see the module doc); it ignores theirs.
                self.stats["ignored_offers"] += 1
                log("ignored a colliding offer")
                return
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            self.remote_ufrag, self.remote_end = ice_ufrag(msg["sdp"]), False
            await pc.setLocalDescription(await pc.createAnswer())
            await self.send_description()
        elif msg["type"] == "answer":
            if pc.signalingState != "have-local-offer":
                log("ignored an unexpected answer")
                return
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
            self.remote_ufrag, self.remote_end = ice_ufrag(msg["sdp"]), False
            log("answer applied")

    async def on_candidate(self, msg):
        self.stats["candidates_received"] += 1
        init = msg["candidate"]
        # Candidates arrive after the description they belong to, so one that comes while there is no
        # remote description (or with another ufrag) belongs to an offer we ignored.
        if self.pc.remoteDescription is None or self.remote_end:
            self.stats["ignored_candidates"] += 1
            return
        transport = self.pc.sctp.transport.transport if self.pc.sctp else None
        if init is None:
            self.remote_end = True
            if transport:
                await transport.addRemoteCandidate(None)
            return
        if init.get("usernameFragment") and self.remote_ufrag and init["usernameFragment"] != self.remote_ufrag:
            self.stats["ignored_candidates"] += 1
            return
        line = init["candidate"]
        candidate = candidate_from_sdp(line.split(":", 1)[1])
        if candidate.protocol.lower() != "udp":
            return
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)
        self.stats["candidates_added"] += 1

    async def negotiate(self):
        while True:
            msg = await self.signals.get()
            if msg.get("type") == "peer-joined" and not self.remote_known.is_set():
                if self.remote is None or self.remote == msg["peer"]:
                    self.remote = msg["peer"]
                    self.remote_known.set()
                continue
            if msg.get("from") != self.remote:
                continue
            try:
                if msg["type"] in ("offer", "answer"):
                    await self.on_description(msg)
                elif msg["type"] == "candidate":
                    await self.on_candidate(msg)
                elif msg["type"] == "bye":
                    log("remote said bye")
            except Exception as error:  # report, keep serving: the test decides from the result
                self.errors.append({"exception": repr(error), "while": msg.get("type")})
                log("failed handling", msg.get("type"), repr(error))

    # --- the run --------------------------------------------------------------------------------------

    async def run(self):
        args = self.args
        url = f"{args.url}?peer={args.peer}"
        self.ws = await websockets.connect(url, max_size=1 << 20)
        welcome = json.loads(await self.ws.recv())
        assert welcome["type"] == "welcome", welcome
        me = welcome["peer"]
        log("welcome as", me)
        ice = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in welcome.get("iceServers", [])]
        self.stats["ice_servers"] = [{"urls": s["urls"], "username": s.get("username")} for s in welcome.get("iceServers", [])]
        if args.relay_only:
            relay_only()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        channel = self.pc.createDataChannel("data", negotiated=True, id=0)
        states = []
        self.pc.on("connectionstatechange", lambda: states.append(self.pc.connectionState))
        reader = asyncio.create_task(self.read())
        self.remote_known = asyncio.Event()
        joined = await self.request({"type": "join", "room": args.room, "meta": {"name": "aiortc"}})
        if joined["type"] != "joined":
            raise RuntimeError(f"join failed: {joined}")
        present = [p["peer"] for p in joined["peers"]]
        if self.remote is None and present:
            self.remote = present[0]
        if self.remote is not None and self.remote in present:
            self.remote_known.set()  # otherwise wait for it to join (signals to an absent peer fail)
        negotiator = asyncio.create_task(self.negotiate())
        await self.remote_known.wait()
        polite = me > self.remote
        self.hold_offer = args.glare and not polite
        log("remote", self.remote, "polite" if polite else "impolite")


        got, out_of_order = [], 0
        finished = asyncio.get_running_loop().create_future()
        state = {"acked": False, "done": False}
        opened = asyncio.Event()

        @channel.on("open")
        def on_open():
            opened.set()

        @channel.on("message")
        def on_message(data):
            nonlocal out_of_order
            m = json.loads(data)
            if "n" in m:
                if m["n"] != len(got):
                    out_of_order += 1
                got.append(m["n"])
            if "done" in m:
                state["done"] = True
                channel.send(json.dumps({"ack": len(got)}))
            if "ack" in m:
                state["acked"] = m["ack"] == args.count
            if state["acked"] and state["done"] and not finished.done():
                finished.set_result(True)

        if not polite and not args.glare:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await self.send_description()

        started = time.monotonic()
        await asyncio.wait_for(opened.wait(), args.timeout)
        log(f"channel open after {time.monotonic() - started:.2f}s")
        # Read while ICE is fresh: aioice may let go of its candidate list once the pair is settled.
        types_at_open = self.local_candidate_types()
        for n in range(args.count):
            channel.send(json.dumps({"n": n, "text": f"aiortc message {n}"}))
        channel.send(json.dumps({"done": args.count}))
        await asyncio.wait_for(finished, args.timeout)
        await asyncio.sleep(0.3)  # let the last ack leave before closing

        result = {
            "ok": len(got) == args.count and out_of_order == 0 and not self.errors,
            "peer": me, "remote": self.remote, "polite": polite, "received": len(got), "out_of_order": out_of_order,
            "errors": self.errors, "stats": self.stats, "pair": self.selected_pair(),
            "local_candidate_types": types_at_open or self.local_candidate_types(),
            "connection_states": states,
        }
        negotiator.cancel()
        await self.pc.close()
        await self.ws.close()
        reader.cancel()
        return result

    def local_candidate_types(self):
        try:
            return sorted({c.type for c in self.pc.sctp.transport.transport._connection.local_candidates})
        except Exception:
            return None

    def selected_pair(self):
        try:
            connection = self.pc.sctp.transport.transport._connection
            pair = next(iter(connection._nominated.values()))
            return {"local": f"{pair.local_candidate.type} {pair.local_candidate.host}",
                    "remote": f"{pair.remote_candidate.type} {pair.remote_candidate.host}"}
        except Exception:
            return None


def relay_only():
    """`iceTransportPolicy: "relay"` for aiortc, which does not take the option: aioice does."""
    from aioice import TransportPolicy
    from aiortc import rtcicetransport

    kwargs_of = rtcicetransport.connection_kwargs

    def relay_kwargs(servers):
        return {**kwargs_of(servers), "transport_policy": TransportPolicy.RELAY}

    rtcicetransport.connection_kwargs = relay_kwargs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--remote")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--relay-only", action="store_true", help="gather relay (TURN) candidates only")
    parser.add_argument("--glare", action="store_true", help="when impolite, offer only once the other side's offer arrived")
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(Peer(args).run(), args.timeout * 2))
    except Exception as error:
        result = {"ok": False, "exception": repr(error)}
    print("RESULT " + json.dumps(result), flush=True)
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()
