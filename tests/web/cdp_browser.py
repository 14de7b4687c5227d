"""Headless Debian Chromium driven over the DevTools protocol (a small websocket client on aiohttp).

A missing browser is a test FAILURE, not a skip: `./dev setup` installs it (apt-get install chromium).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--lang=en-US"]


def chromium_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.fail("Debian chromium is missing: run `./dev setup` as root or `apt-get install -y chromium`")
    return path


class Browser:
    """One Chromium process with one page; `async with Browser() as b: await b.goto(url)`."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width, self.height = width, height
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.event_waiters: list[tuple[str, asyncio.Future]] = []

    async def __aenter__(self) -> "Browser":
        self.profile = tempfile.mkdtemp(prefix="airwatt-chromium-")
        self.proc = await asyncio.create_subprocess_exec(
            chromium_path(), *FLAGS, "--user-data-dir=" + self.profile, "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1", "--window-size=%d,%d" % (self.width, self.height),
            "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(600):  # up to 30 s on a loaded machine
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            if self.proc.returncode is not None:
                pytest.fail("chromium exited with %s before it listened" % self.proc.returncode)
            await asyncio.sleep(0.05)
        else:
            pytest.fail("chromium did not open its DevTools port within 30 s")
        port = int(port_file.read_text().splitlines()[0])
        self.http = aiohttp.ClientSession()
        async with self.http.get("http://127.0.0.1:%d/json/list" % port) as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Log.enable")  # CSP violations and failed loads are reported here
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:  # a clean close lets chromium end its helper processes itself (no answer is awaited)
            await self.ws.send_json({"id": next(self.ids), "method": "Browser.close", "params": {}})
            await asyncio.wait_for(self.proc.wait(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.reader.cancel()
        await self.ws.close()
        await self.http.close()
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                if data["method"] in ("Log.entryAdded", "Runtime.exceptionThrown"):
                    self.events.append(data)
                for name, fut in list(self.event_waiters):
                    if name == data["method"] and not fut.done():
                        fut.set_result(data)
                        self.event_waiters.remove((name, fut))

    async def send(self, method: str, **params: object) -> dict:
        n = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        await self.ws.send_json({"id": n, "method": method, "params": params})
        data = await asyncio.wait_for(fut, 30)
        if "error" in data:
            raise AssertionError("%s failed: %s" % (method, data["error"]))
        return data["result"]

    def _expect(self, event: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.event_waiters.append((event, fut))
        return fut

    def problems(self) -> list[str]:
        """Errors the pages caused so far: log entries of level error (a CSP violation is one) and exceptions."""
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"]))
            elif p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out

    async def goto(self, url: str) -> None:
        loaded = self._expect("Page.loadEventFired")
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(loaded, 30)

    async def js(self, expression: str) -> object:
        """Evaluate in the page and return the JSON value."""
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError("page script failed: %s" % res["exceptionDetails"])
        return res["result"].get("value")

    async def js_and_wait(self, expression: str) -> None:
        """Run a script that navigates (click, reload) and wait for the new page's load."""
        loaded = self._expect("Page.loadEventFired")
        await self.js(expression)
        await asyncio.wait_for(loaded, 30)

    async def click_and_wait(self, selector: str) -> None:
        """Click an element that navigates (link, submit button) and wait for the new page's load."""
        await self.js_and_wait("document.querySelector(%s).click()" % json.dumps(selector))

    async def screenshot(self, path: Path) -> Path:
        """A full-page PNG."""
        height = await self.js("document.documentElement.scrollHeight")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=int(height),
                        deviceScaleFactor=1, mobile=False)
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await self.send("Emulation.clearDeviceMetricsOverride")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
