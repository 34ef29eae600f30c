"""Headless Chromium driven over the DevTools protocol (CDP), with nothing but `websockets`.

    async with Chromium.launch(tmp_path) as browser:
        page = await browser.open("http://127.0.0.1:8080/test/e2e.html")
        await page.wait_for("window.e2eReady === true")
        result = await page.evaluate("e2e.pair({...})")

Console output and uncaught exceptions of every page are collected in `browser.console`, so a failing
test can show what the page said.
"""

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websockets

from conftest import stop_process

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # containers rarely allow Chromium's sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
    # Several tabs run at once: keep the ones in the background at full speed.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # Host candidates as plain IPs (not mDNS names), so a non-browser peer can reach them without mDNS.
    "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter",
    "--allow-loopback-in-peer-connection",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def find_chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class CDPError(Exception):
    pass


class Page:
    def __init__(self, browser, target_id, session_id):
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id

    async def send(self, method, params=None, timeout=30):
        return await self.browser.send(method, params, session_id=self.session_id, timeout=timeout)

    async def evaluate(self, expression, timeout=60):
        """Evaluates `expression` (awaiting a promise) and returns its JSON value; raises on exceptions."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": timeout * 1000},
            timeout=timeout + 5,
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"page threw: {text}")
        return reply["result"].get("value")

    async def wait_for(self, expression, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(f"Boolean({expression})", timeout=5):
                    return
            except CDPError:
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(f"page never satisfied {expression!r}")

    async def navigate(self, url):
        await self.send("Page.navigate", {"url": url})

    async def screenshot(self, path, width=None, height=None):
        if width and height:
            await self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        await self.send("Page.bringToFront")
        reply = await self.send("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(reply["data"]))

    async def close(self):
        with contextlib.suppress(Exception):
            await self.browser.send("Target.closeTarget", {"targetId": self.target_id})


class Chromium:
    """One headless Chromium process and a CDP connection to its browser target (flat sessions)."""

    def __init__(self, proc, profile, ws):
        self.proc = proc
        self.profile = profile
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting = {}
        self.console = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, workdir=None, extra_flags=()):
        binary = find_chromium()
        if not binary:
            raise RuntimeError("chromium not found (install the Debian package 'chromium')")
        profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
        log = open(os.path.join(profile, "chromium.log"), "wb")
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        browser = None
        try:
            port = await cls._devtools_port(proc, profile)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=5) as r:
                url = json.load(r)["webSocketDebuggerUrl"]
            ws = await websockets.connect(url, max_size=None, ping_interval=None)
            browser = cls(proc, profile, ws)
            yield browser
        finally:
            if browser:
                await browser._shutdown()
            stop_process(proc)
            log.close()
            shutil.rmtree(profile, ignore_errors=True)

    @staticmethod
    async def _devtools_port(proc, profile, timeout=30):
        path = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = open(os.path.join(profile, "chromium.log"), errors="replace").read()
                raise RuntimeError(f"chromium exited with {proc.returncode}:\n{output[-3000:]}")
            if os.path.exists(path):
                lines = open(path).read().split()
                if lines:
                    return int(lines[0])
            await asyncio.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    future = self.waiting.pop(msg["id"], None)
                    if future and not future.done():
                        if "error" in msg:
                            future.set_exception(CDPError(f"{msg['error'].get('message')} ({msg['error'].get('data', '')})"))
                        else:
                            future.set_result(msg.get("result", {}))
                elif msg.get("method") == "Runtime.consoleAPICalled":
                    args = msg["params"].get("args", [])
                    text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                    self.console.append(f"[{msg['params'].get('type')}] {text}")
                elif msg.get("method") == "Runtime.exceptionThrown":
                    details = msg["params"]["exceptionDetails"]
                    self.console.append(f"[exception] {details.get('exception', {}).get('description') or details.get('text')}")
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(CDPError("DevTools connection closed"))

    async def send(self, method, params=None, session_id=None, timeout=30):
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        future = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        await self.ws.send(json.dumps(msg))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(msg_id, None)

    async def open(self, url, width=1280, height=800):
        """Opens `url` in a new tab and returns its Page once the page has loaded."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, target["targetId"], attached["sessionId"])
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        await page.navigate(url)
        await page.wait_for("document.readyState === 'complete'")
        return page

    def console_text(self, last=200):
        return "\n".join(self.console[-last:])

    async def _shutdown(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader
