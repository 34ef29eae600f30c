"""Smoke runs of `signal bench`: every mode for a second against a real hub, small N, `--json` checked.

They keep the load generator from rotting; the figures themselves are in Docs/benchmarks.md.
"""

import json
import signal
import socket
import subprocess
import time

from cluster_helpers import RedisServer
from conftest import SIGNAL
from e2e_helpers import metric

# Limits that let one client process load the hub (the defaults protect it from exactly that).
LOAD_LIMITS = (
    "--echo",
    "--rate-burst", "100000",
    "--rate-per-second", "1000000",
    "--max-connections-per-ip", "100000",
    "--max-peers-per-room", "1000",
)

LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max", "mean"}


def bench(*args, timeout=90):
    """Runs `signal bench … --json --quiet`; returns (exit status, parsed JSON or None, stderr)."""
    proc = subprocess.run(
        [SIGNAL, "bench", *args, "--json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, report, proc.stderr


def check_common(report, mode):
    assert report["mode"] == mode
    assert report["errors"] == 0, report["error_detail"]
    assert report["signals_per_sec"] > 0
    assert set(report["latency_ms"]) >= LATENCY_KEYS
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]


def test_connect_holds_sessions_and_reports_memory(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    status, report, stderr = bench(
        "connect", "--url", hub.ws, "--connections", "200", "--room-size", "4",
        "--duration", "1", "--settle", "0.2", "--probe-rate", "200", "--probe-pairs", "10",
        "--server-pid", str(hub.proc.pid),
    )
    assert status == 0, stderr
    check_common(report, "connect")
    assert report["connections"] == 200
    assert report["rooms"] == 50
    assert report["connects_per_sec"] > 0
    assert report["server_pid"] == hub.proc.pid
    assert "server_rss_bytes_per_connection" in report
    assert report["server_rss_bytes"] > 0
    # The probe ran at the asked rate: 200 messages/s for a second, all delivered.
    assert 120 <= report["signals"] <= 280
    assert report["signals"] == report["sent"]


def test_connect_finds_the_server_process_by_its_port(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    status, report, stderr = bench(
        "connect", "--url", hub.ws, "--connections", "20", "--duration", "0", "--settle", "0.1",
    )
    assert status == 0, stderr
    assert report["connections"] == 20
    assert report["server_pid"] == hub.proc.pid
    assert "server_rss_bytes_per_connection" in report


def test_relay_closed_loop(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    status, report, stderr = bench(
        "relay", "--url", hub.ws, "--pairs", "4", "--rate", "max", "--duration", "1",
        "--warmup", "0.2", "--size", "300", "--server-pid", str(hub.proc.pid),
    )
    assert status == 0, stderr
    check_common(report, "relay")
    assert report["connections"] == 8
    assert report["pairs"] == 4
    # Every measured signal arrived, and every signal was acknowledged.
    assert report["signals"] == report["sent"] > 0
    assert report["server_cpu_seconds"] > 0
    assert report["signals_per_server_cpu_sec"] > 0
    # One URL: the summary is what it always was, with no per-node part.
    assert report["url"] == hub.ws
    assert not {"urls", "nodes", "server_pids", "redis_pids"} & set(report)


def test_relay_across_two_cluster_nodes_reports_each_node(start_hub, tmp_path):
    # Two --urls: the two peers of every pair are on different nodes, so every signal crosses nodes
    # through Redis; the summary gives each node's share and sums the servers' CPU. A second, idle
    # redis-server given with --redis-pid stands for another shard: each process's share is reported too.
    redis = RedisServer(tmp_path)
    (tmp_path / "idle").mkdir()
    idle = RedisServer(tmp_path / "idle")
    try:
        nodes = [start_hub(*LOAD_LIMITS, "--redis", redis.url, "--node-id", name) for name in ("a", "b")]
        crossed_before = sum(metric(h, "signal_cluster_cross_node_signals_total") for h in nodes)
        status, report, stderr = bench(
            "relay", "--url", nodes[0].ws, "--url", nodes[1].ws, "--pairs", "4", "--rate", "max",
            "--duration", "1", "--warmup", "0.2",
            "--server-pid", str(nodes[0].proc.pid), "--server-pid", str(nodes[1].proc.pid),
            "--redis-pid", str(redis.proc.pid), "--redis-pid", str(idle.proc.pid),
        )
        crossed = sum(metric(h, "signal_cluster_cross_node_signals_total") for h in nodes) - crossed_before
    finally:
        redis.stop()
        idle.stop()
    assert status == 0, stderr
    check_common(report, "relay")
    assert report["connections"] == 8
    assert report["signals"] == report["sent"] > 0
    assert report["urls"] == [h.ws for h in nodes]
    assert report["server_pids"] == [h.proc.pid for h in nodes]
    per_node = report["nodes"]
    assert [n["url"] for n in per_node] == report["urls"]
    assert [n["server_pid"] for n in per_node] == report["server_pids"]
    for node in per_node:
        # Offerers on one node, answerers on the other: both send and receive.
        assert node["connections"] == 4
        assert node["sent"] > 0 and node["signals"] > 0 and node["signals_per_sec"] > 0
        assert node["errors"] == 0, node["error_detail"]
        assert node["server_cpu_seconds"] > 0
    assert sum(n["sent"] for n in per_node) == report["sent"]
    assert sum(n["signals"] for n in per_node) == report["signals"]
    # Signals per server CPU-second counts both nodes' CPU.
    assert abs(sum(n["server_cpu_seconds"] for n in per_node) - report["server_cpu_seconds"]) <= 0.02
    per_cpu = report["signals_per_server_cpu_sec"] * report["server_cpu_seconds"]
    assert abs(per_cpu - report["signals"]) <= 0.05 * report["signals"]
    assert report["redis_cpu_seconds"] > 0 and report["redis_cpu_us_per_signal"] > 0
    assert report["redis_pids"] == [redis.proc.pid, idle.proc.pid]
    busy, quiet = report["redis_cpu_us_per_signal_each"]
    assert busy > quiet >= 0
    assert abs(busy + quiet - report["redis_cpu_us_per_signal"]) <= 0.05 * report["redis_cpu_us_per_signal"] + 0.02
    # Every signal of the run (warm-up included) crossed nodes, as the nodes count them.
    assert crossed >= report["signals"], f"{crossed} cross-node signals for {report['signals']} measured"


def test_presence_across_two_cluster_nodes(start_hub, tmp_path):
    # Watchers on one node, movers on the other: every join reaches its watcher as peer-joined through
    # Redis, and each one is measured.
    redis = RedisServer(tmp_path)
    try:
        nodes = [start_hub(*LOAD_LIMITS, "--redis", redis.url, "--node-id", name) for name in ("a", "b")]
        status, report, stderr = bench(
            "presence", "--url", nodes[0].ws, "--url", nodes[1].ws, "--pairs", "4", "--rate", "200",
            "--duration", "1", "--warmup", "0.2", "--leaves",
        )
    finally:
        redis.stop()
    assert status == 0, stderr
    check_common(report, "presence")
    assert report["connections"] == 8 and report["pairs"] == 4
    assert report["signals"] == report["sent"] > 100
    watchers, movers = report["nodes"]
    assert watchers["signals"] == report["signals"] and watchers["sent"] == 0
    assert movers["sent"] == report["sent"] and movers["signals"] == 0


def test_connect_holds_until_sigterm_then_reports(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    proc = subprocess.Popen(
        [SIGNAL, "bench", "connect", "--url", hub.ws, "--connections", "100", "--probe-rate", "100",
         "--probe-pairs", "5", "--duration", "1", "--hold-until-signal", "--settle", "0.1", "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while metric(hub, "signal_sessions") < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        # --hold-until-signal outlasts --duration 1: 2 s after every session is held it still holds.
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    check_common(report, "connect")
    assert report["connections"] == 100
    assert report["duration_s"] >= 1.5


def test_relay_keeps_the_asked_rate(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    status, report, stderr = bench(
        "relay", "--url", hub.ws, "--pairs", "5", "--rate", "600", "--duration", "2", "--warmup", "0.2",
    )
    assert status == 0, stderr
    check_common(report, "relay")
    assert 400 <= report["signals_per_sec"] <= 800


def test_fanout_reaches_every_member(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    status, report, stderr = bench(
        "fanout", "--url", hub.ws, "--room-size", "5", "--rooms", "2", "--duration", "1", "--warmup", "0.2",
    )
    assert status == 0, stderr
    check_common(report, "fanout")
    assert report["connections"] == 10
    assert report["room_size"] == 5
    # Each broadcast reaches the 4 other members.
    assert report["signals"] == 4 * report["sent"]
    assert report["broadcasts_per_sec"] > 0


def test_echo_endpoint(start_hub):
    hub = start_hub(*LOAD_LIMITS)
    url = hub.ws[: -len("/ws")] + "/echo"
    status, report, stderr = bench("echo", "--url", url, "--connections", "4", "--duration", "1", "--warmup", "0.2")
    assert status == 0, stderr
    check_common(report, "echo")
    assert report["signals"] == report["sent"]


def test_state_reports_the_hubs_own_memory_per_session():
    # In-process: no server. The hub state's part of a session's memory, at a count sockets cannot reach here.
    proc = subprocess.run(
        [SIGNAL, "bench", "state", "--sessions", "20000", "--room-size", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == "state"
    assert report["sessions"] == 20000 and report["rooms"] == 5000
    # A session, its room membership and its tables' share: more than its 112-byte object, less than 4 KiB.
    assert 112 < report["hub_state_rss_bytes_per_session"] < 4096


def test_errors_are_counted_when_the_hub_rate_limits(start_hub):
    # The hub's default limits (a burst of 200, 100 messages/s) refuse a closed-loop relay: the bench must
    # say so instead of reporting a clean run.
    hub = start_hub()
    status, report, _ = bench("relay", "--url", hub.ws, "--pairs", "2", "--duration", "1", "--warmup", "0")
    assert status == 0
    assert report["errors"] > 0
    assert report["error_detail"]["error_messages"] > 0
    assert "rate-limited" in report["error_detail"]["first_error"]


def test_nothing_listening_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, report, _ = bench("connect", "--url", f"ws://127.0.0.1:{port}/ws", "--connections", "3", "--duration", "0")
    assert status == 1
    assert report["connections"] == 0
    assert report["error_detail"]["connect_failed"] == 3
