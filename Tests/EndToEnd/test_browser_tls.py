"""Headless Chromium over https/wss: a TLS hub serves the SDK and the e2e page, and two SDK peers in
the page negotiate a real RTCDataChannel through wss://. Chromium trusts the hub's certificate by its
public-key hash (`--ignore-certificate-errors-spki-list`), the way a pinned private CA would be."""

import asyncio

from e2e_helpers import http_get, metric, web_args
from test_browser import PEER_A, PEER_B, check_clean_delivery, run_pair
from tls_helpers import spki_hash, tls_args


def test_two_browser_peers_exchange_a_message_over_wss(start_hub, pki, tmp_path):
    hub = start_hub(*web_args(), *tls_args(pki), tls_ca=pki / "ca.pem")
    assert hub.http.startswith("https://") and hub.ws.startswith("wss://")
    status, _, body = http_get(hub.http + "/test/e2e.html", context=hub.tls_context)
    assert status == 200 and "e2e.pair" in body

    flags = [f"--ignore-certificate-errors-spki-list={spki_hash(pki / 'server.pem')}"]
    result = asyncio.run(
        run_pair(tmp_path, hub.http + "/test/e2e.html", chromium_flags=flags, ws=hub.ws, room="tls", peerA=PEER_A, peerB=PEER_B)
    )

    assert result["ok"], result
    assert result["gotB"] == "hello from A" and result["gotA"] == "hello from B"
    assert "connected" in result["links"]["A"]["states"] and "connected" in result["links"]["B"]["states"]
    check_clean_delivery(result)
    # The negotiation went through the TLS hub.
    assert metric(hub, "signal_signals_relayed_total", type="offer") >= 1
    assert metric(hub, "signal_signals_relayed_total", type="answer") >= 1
