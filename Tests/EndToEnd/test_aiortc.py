"""aiortc: two Python WebRTC peers in separate processes speak the protocol directly, negotiate through
the hub with trickle ICE, open a data channel and exchange 100 messages each way."""

import json
import os
import subprocess
import sys
import time

import pytest

from e2e_helpers import HERE, metric

PEER_SCRIPT = os.path.join(HERE, "aiortc_peer.py")


def start_peer(hub, peer, room, *extra):
    return subprocess.Popen(
        [sys.executable, "-u", PEER_SCRIPT, "--url", hub.ws, "--peer", peer, "--room", room, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=60):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT ") :]) if lines else {"ok": False}
    result["exit"] = proc.returncode
    result["log"] = err[-4000:]
    return result


@pytest.mark.parametrize("first", ["impolite", "polite"])
def test_two_aiortc_processes_exchange_100_messages_through_the_hub(start_hub, first):
    hub = start_hub()
    # "py-a" sorts first: it is the impolite peer and makes the offer.
    order = ["py-a", "py-b"] if first == "impolite" else ["py-b", "py-a"]
    started = time.monotonic()
    procs = {}
    for peer in order:
        procs[peer] = start_peer(hub, peer, "aiortc", "--count", "100")
        time.sleep(0.3)  # the second one finds the first in `joined`, the first learns of it by `peer-joined`
    results = {peer: finish(proc) for peer, proc in procs.items()}
    elapsed = time.monotonic() - started

    for peer, result in results.items():
        assert result["ok"] and result["exit"] == 0, f"{peer}: {result}"
        assert result["received"] == 100 and result["out_of_order"] == 0
        assert "connected" in result["connection_states"], result["connection_states"]
        # Trickle ICE: the SDP went out without candidates, each candidate as its own signal.
        assert result["stats"]["stripped_sdp"] is True
        assert result["stats"]["candidates_sent"] >= 1
        assert result["stats"]["candidates_added"] >= 1
    a, b = results["py-a"], results["py-b"]
    assert a["remote"] == "py-b" and b["remote"] == "py-a"
    assert a["polite"] is False and b["polite"] is True
    assert a["stats"]["offers_sent"] == 1 and b["stats"]["answers_sent"] == 1
    # Every candidate signal of one side reached the other (plus the end-of-candidates marker).
    assert b["stats"]["candidates_received"] == a["stats"]["candidates_sent"] + 1
    assert a["stats"]["candidates_received"] == b["stats"]["candidates_sent"] + 1
    assert metric(hub, "signal_signals_relayed_total", type="candidate") == a["stats"]["candidates_sent"] + b["stats"]["candidates_sent"] + 2
    assert metric(hub, "signal_signals_relayed_total", type="offer") == 1
    assert metric(hub, "signal_signals_relayed_total", type="answer") == 1
    assert elapsed < 30
