"""Cross-stack: a browser peer (headless Chromium, the SDK) and an aiortc peer (Python, the protocol
spoken directly) connect to each other through the hub and exchange messages over a data channel."""

import asyncio
import json
import os
import sys

import pytest

from cdp import Chromium
from e2e_helpers import HERE, metric, strictly_increasing, web_args

PEER_SCRIPT = os.path.join(HERE, "aiortc_peer.py")
COUNT = 50


@pytest.mark.parametrize(
    "browser_peer, python_peer",
    [
        # The browser sorts greater: it is polite. Both sides offer (the browser because its negotiated
        # data channel needs negotiation; aiortc, the impolite one, sends its offer as soon as the
        # browser's arrives, so they always cross): glare, the browser rolls back and answers.
        ("web-z", "py-a"),
        # The browser sorts first: it offers, aiortc (polite) answers.
        ("a-web", "py-z"),
    ],
)
def test_browser_and_aiortc_connect_through_the_hub(start_hub, tmp_path, browser_peer, python_peer):
    hub = start_hub(*web_args())

    async def scenario():
        async with Chromium.launch(str(tmp_path)) as browser:
            page = await browser.open(hub.http + "/test/e2e.html")
            await page.wait_for("window.e2eReady === true")
            args = {"ws": hub.ws, "room": "cross", "peer": browser_peer, "remote": python_peer, "count": COUNT, "timeout": 30000}
            python = await asyncio.create_subprocess_exec(
                sys.executable, "-u", PEER_SCRIPT, "--url", hub.ws, "--peer", python_peer, "--room", "cross",
                "--remote", browser_peer, "--count", str(COUNT), "--glare",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                web_result = await page.evaluate(f"e2e.single({json.dumps(args)})", timeout=60)
            except Exception as error:
                python.kill()
                out, err = await python.communicate()
                raise AssertionError(f"{error}\n--- page ---\n{browser.console_text()}\n--- aiortc ---\n{err.decode()[-3000:]}") from None
            out, err = await asyncio.wait_for(python.communicate(), 60)
            lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
            py_result = json.loads(lines[-1][7:]) if lines else {"ok": False}
            py_result["exit"] = python.returncode
            py_result["log"] = err.decode()[-3000:]
            return web_result, py_result, browser.console_text()

    web, py, console = asyncio.run(scenario())

    assert py["ok"] and py["exit"] == 0, py
    assert web["ok"], (web, console)
    assert web["received"] == COUNT and py["received"] == COUNT
    assert web["remote"] == python_peer and py["remote"] == browser_peer
    browser_polite = browser_peer > python_peer
    assert web["link"]["polite"] is browser_polite and py["polite"] is (not browser_polite)
    if browser_polite:
        # The glare case: aiortc's offer won, the browser's own offer was rolled back.
        assert py["stats"]["offers_sent"] == 1 and py["stats"]["ignored_offers"] == 1
        assert web["link"]["stats"]["offers"] == 1 and web["link"]["stats"]["rollbacks"] == 1
        assert web["link"]["stats"]["answers"] == 1
    else:
        assert py["stats"]["answers_sent"] == 1 and web["link"]["stats"]["offers"] >= 1
    assert "connected" in web["link"]["states"]
    assert py["stats"]["stripped_sdp"] and py["stats"]["candidates_added"] >= 1
    assert web["pair"]["local"].startswith("host ") and web["pair"]["remote"].startswith("host "), web["pair"]
    assert strictly_increasing(web["client"]["seqs"])
    assert metric(hub, "signal_signals_relayed_total", type="candidate") >= 2
