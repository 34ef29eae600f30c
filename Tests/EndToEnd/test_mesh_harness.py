"""The harness's process backend (`signal-mesh-harness`, an executable of its own beside `signal`), kept
from rotting: a short steady run through real `signal` processes
(one plain hub, four mesh nodes) must report every figure and deliver; `loss` is refused with the reason,
and `partition` too unless network namespaces work (root, `ip netns`), in which case a short partition
run must cut delivery across the split, recover after the heal and leave no namespace or link behind
(also when interrupted); a mesh node's /metrics carries the counters the harness reads."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SIGNAL, free_port

SECRET = "a mesh secret for the harness smoke test, long enough"
HARNESS = os.path.join(os.path.dirname(SIGNAL), "signal-mesh-harness")


def run_harness(tmp_path, *args, timeout=180):
    return subprocess.run(
        [HARNESS, "--backend", "process", "--signal", SIGNAL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_the_signal_server_has_no_harness():
    result = subprocess.run([SIGNAL, "mesh", "harness", "--backend", "sim"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, result.stdout
    with open(SIGNAL, "rb") as binary:
        assert b"NetnsNetwork" not in binary.read()


def test_process_backend_steady_smoke(tmp_path):
    report_path = tmp_path / "report.json"
    svg_path = tmp_path / "report.svg"
    result = run_harness(
        tmp_path,
        "--nodes", "4", "--scenario", "steady", "--duration", "6",
        "--json", str(report_path), "--svg", str(svg_path),
    )
    assert result.returncode == 0, result.stderr
    assert "| steady | mesh |" in result.stdout and "| steady | hub |" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["backend"] == "process"
    assert report["setup"].startswith("Processes: 4 ")
    [steady] = report["scenarios"]
    assert steady["scenario"] == "steady" and steady["nodes"] == 4
    for name in ("hub", "mesh"):
        figures = steady[name]
        for field in (
            "eligible", "delivered", "deliveryRatio", "latencyMs", "hops", "signalMessagesPerDelivered",
            "ackMessagesPerDelivered", "bytesPerDelivered", "controlBytesPerSecondPerNode", "timeline", "cdf",
        ):
            assert field in figures, (name, field)
        assert figures["eligible"] > 100, (name, figures["eligible"])
        assert figures["deliveryRatio"] > 0.99, (name, figures["deliveryRatio"], result.stderr)
        assert figures["duplicates"] == 0
        assert 0 < figures["latencyMs"]["p50"] <= figures["latencyMs"]["p95"] <= figures["latencyMs"]["p99"]
    mesh = steady["mesh"]
    # Pairs are on different nodes: signals cross the mesh in 1 hop (2 through a home node).
    assert sum(mesh["hops"].get(h, 0) for h in ("1", "2")) >= 0.99 * mesh["delivered"], mesh["hops"]
    # Each signal crosses once, and its recipient's node answers it once (the sender's ack waits for that).
    assert 1.5 <= mesh["signalMessagesPerDelivered"] < 2.5
    assert mesh["bytesPerDelivered"] > 300  # the 300-byte signal plus framing and its ack
    assert 0 < mesh["controlBytesPerSecondPerNode"] < 5000
    assert steady["hub"]["signalMessagesPerDelivered"] == 0  # one process: nothing crosses nodes
    assert steady["stretch"]["p95"] > 0
    assert svg_path.read_text().startswith("<svg")


def netns_problem():
    """Why this machine cannot run the partition scenario (None when it can)."""
    if os.geteuid() != 0:
        return "not root: network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    probe = f"sigmesh-{os.getpid()}-probe"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` fails: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


NETNS_PROBLEM = netns_problem()


def leftovers(pid):
    """Namespaces and interfaces a harness run with this pid created and did not remove."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line for line in namespaces.splitlines() if line.startswith(f"sigmesh-{pid}-")] + [
        line for line in links.splitlines() if re.search(rf"^\d+: sm{pid}[bhv]\d*[@:]", line)
    ]


def test_process_backend_refuses_what_needs_root(tmp_path):
    result = run_harness(tmp_path, "--nodes", "4", "--scenario", "loss", timeout=30)
    assert result.returncode != 0
    assert "netem" in result.stderr and "--backend sim" in result.stderr
    result = run_harness(tmp_path, "--nodes", "4", "--scenario", "partition", "--isolation", "loopback", timeout=30)
    assert result.returncode != 0 and "loopback cannot be split" in result.stderr
    if NETNS_PROBLEM is not None:
        result = run_harness(tmp_path, "--nodes", "4", "--scenario", "partition", timeout=30)
        assert result.returncode != 0 and ("root" in result.stderr or "namespace" in result.stderr)


def split_figures(note):
    """(delivered during, sent during, delivered within 1 s after the heal, sent after) across the split."""
    match = re.search(
        r"sent during the partition: (\d+)/(\d+) delivered during it.*across after the heal: (\d+)/(\d+) within 1 s",
        note,
    )
    assert match, note
    return tuple(int(group) for group in match.groups())


@pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"partition needs network namespaces: {NETNS_PROBLEM}")
def test_process_backend_partition_in_namespaces(tmp_path):
    report_path = tmp_path / "report.json"
    harness = subprocess.Popen(
        [HARNESS, "--backend", "process", "--signal", SIGNAL, "--nodes", "4", "--scenario", "partition",
         "--duration", "9", "--json", str(report_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        stdout, stderr = harness.communicate(timeout=180)
    finally:
        harness.kill()
    assert harness.returncode == 0, stderr
    assert "| partition | mesh |" in stdout
    assert leftovers(harness.pid) == []
    [partition] = json.loads(report_path.read_text())["scenarios"]
    assert partition["scenario"] == "partition"
    notes = partition["notes"]
    assert any("network namespaces on 10.77." in note for note in notes), notes
    for name in ("hub", "mesh"):
        [note] = [note for note in notes if note.startswith(f"{name}: across the split")]
        during, sent_during, after, sent_after = split_figures(note)
        # Blackhole routes between the sides: (almost) nothing crosses while the split lasts (a signal
        # sent within the milliseconds the routes take to install may still get through) ...
        assert sent_during > 10 and during <= 0.1 * sent_during, (name, note)
        # ... and after the heal, signals across are delivered again within a second.
        assert sent_after > 10 and after >= 0.95 * sent_after, (name, note, stderr)
    mesh = partition["mesh"]
    assert mesh["deliveryRatio"] > 0.9, mesh["deliveryRatio"]
    assert mesh["recoverySeconds"] <= 5, mesh["recoverySeconds"]


@pytest.mark.skipif(NETNS_PROBLEM is not None, reason=f"partition needs network namespaces: {NETNS_PROBLEM}")
def test_process_backend_partition_cleans_up_on_sigint(tmp_path):
    harness = subprocess.Popen(
        [HARNESS, "--backend", "process", "--signal", SIGNAL, "--nodes", "4", "--scenario", "partition",
         "--duration", "9"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        deadline = time.time() + 30
        while not leftovers(harness.pid):
            assert time.time() < deadline and harness.poll() is None, "the harness never created its namespaces"
            time.sleep(0.2)
        time.sleep(2)  # the hub run is under way
        harness.send_signal(signal.SIGINT)
        _, stderr = harness.communicate(timeout=30)
    finally:
        harness.kill()
    assert harness.returncode != 0
    assert "network namespaces removed" in stderr
    assert leftovers(harness.pid) == []


def test_mesh_nodes_export_their_counters(start_hub, tmp_path):
    secret = tmp_path / "mesh.secret"
    secret.write_text(SECRET)
    ports = [free_port(), free_port()]
    hubs = []
    for i, port in enumerate(ports):
        args = ["--mesh-listen", f"127.0.0.1:{port}", "--mesh-secret-file", str(secret), "--log-level", "warning"]
        if i:
            args += ["--mesh-seed", f"127.0.0.1:{ports[0]}"]
        hubs.append(start_hub(*args))

    def value(text, series):
        match = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    deadline = time.time() + 15
    while time.time() < deadline:
        texts = [hub.metrics() for hub in hubs]
        if all(value(text, "signal_mesh_members_live") == 2 for text in texts):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the two nodes never counted each other live: {texts}")
    for text in texts:
        assert value(text, 'signal_mesh_messages_sent_total{kind="control"}') > 0
        assert value(text, 'signal_mesh_sent_bytes_total{kind="control"}') > 0
        assert value(text, 'signal_mesh_received_bytes_total{kind="control"}') > 0
        assert value(text, "signal_mesh_members_suspect") == 0
        assert value(text, "signal_mesh_invalid_payloads_total") == 0
        assert re.search(r'^signal_mesh_member_live\{node="[0-9a-f]{12}"\} 1', text, re.M), text
    hubs[1].stop()
    deadline = time.time() + 15
    while value(hubs[0].metrics(), "signal_mesh_members_live") != 1:
        assert time.time() < deadline, "the node that left is still counted live"
        time.sleep(0.2)
    assert re.search(r'^signal_mesh_member_live\{node="[0-9a-f]{12}"\} 0', hubs[0].metrics(), re.M)
