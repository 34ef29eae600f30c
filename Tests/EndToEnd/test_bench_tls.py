"""`signal bench` over wss://: a private CA with --ca, a clear certificate error without it, --insecure."""

from test_bench_smoke import LOAD_LIMITS, bench, check_common
from tls_helpers import tls_args


def tls_hub(start_hub, pki):
    return start_hub(*LOAD_LIMITS, *tls_args(pki), tls_ca=pki / "ca.pem")


def test_relay_and_connect_over_wss_with_a_private_ca(start_hub, pki):
    hub = tls_hub(start_hub, pki)
    ca = str(pki / "ca.pem")
    status, report, stderr = bench(
        "relay", "--url", hub.ws, "--ca", ca, "--pairs", "3", "--rate", "max", "--duration", "1", "--warmup", "0.2",
    )
    assert status == 0, stderr
    check_common(report, "relay")
    assert report["url"].startswith("wss://")
    assert report["connections"] == 6
    assert report["signals"] == report["sent"] > 0

    status, report, stderr = bench(
        "connect", "--url", hub.ws, "--ca", ca, "--connections", "20", "--room-size", "4",
        "--duration", "0.5", "--settle", "0.1", "--probe-rate", "100", "--probe-pairs", "2",
    )
    assert status == 0, stderr
    check_common(report, "connect")
    assert report["connections"] == 20
    assert report["server_pid"] == hub.proc.pid


def test_an_untrusted_certificate_fails_clearly_and_insecure_warns(start_hub, pki):
    hub = tls_hub(start_hub, pki)
    status, report, stderr = bench("connect", "--url", hub.ws, "--connections", "3", "--duration", "0")
    assert status == 1
    assert report["connections"] == 0
    assert report["error_detail"]["connect_failed"] == 3
    assert "certificate verification failed" in report["error_detail"]["first_error"]
    assert "certificate verification failed" in stderr and "--ca" in stderr, stderr

    status, report, stderr = bench("connect", "--url", hub.ws, "--insecure", "--connections", "3", "--duration", "0")
    assert status == 0, stderr
    assert report["connections"] == 3
    assert "warning: --insecure" in stderr


def test_tls_options_need_a_wss_url(pki):
    status, _, stderr = bench("connect", "--url", "ws://127.0.0.1:9/ws", "--ca", str(pki / "ca.pem"))
    assert status != 0
    assert "wss://" in stderr
