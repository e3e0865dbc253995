"""Headless Chromium driven over the DevTools protocol: load a page, collect its console errors,
read every image's natural size and take a full-page screenshot.

Chromium comes from the system packages (Debian: ``apt-get install chromium``); nothing is
downloaded. Tests that need it skip when it is missing, unless ``PIPELINE_REQUIRE_BROWSER=1`` or ``CI`` is set
(``.ci/run`` sets it after installing Chromium), where a missing browser fails them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .cluster import stop_group

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0"]  # fmt: skip


def browser_available() -> bool:
    """Whether Chromium is installed, or must be (PIPELINE_REQUIRE_BROWSER=1: then :func:`render` fails without it)."""
    return _required() or any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))


def _required() -> bool:
    """In CI (``CI`` set) or with ``PIPELINE_REQUIRE_BROWSER=1`` a missing Chromium fails the tests that need it."""
    return os.environ.get("PIPELINE_REQUIRE_BROWSER") == "1" or os.environ.get("CI", "").lower() not in (
        "",
        "0",
        "false",
    )


def chromium() -> str:
    """The Chromium binary, or skip (fail under PIPELINE_REQUIRE_BROWSER=1)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if _required():
        pytest.fail("Chromium not found (apt-get install chromium)")
    pytest.skip("Chromium not found (apt-get install chromium)")


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # {alt, complete, width, height}
    title: str = ""
    screenshot: bytes = b""


async def _drive(ws_url: str, url: str, width: int) -> PageResult:
    import aiohttp

    result, ids = PageResult(), iter(range(1, 10**6))
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:

        async def call(method: str, **params) -> dict:
            msg_id = next(ids)
            await ws.send_json({"id": msg_id, "method": method, "params": params})
            while True:
                msg = json.loads((await ws.receive(timeout=60)).data)
                if msg.get("id") == msg_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]
                event(msg)

        def event(msg: dict) -> None:
            method, p = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                result.errors.append(
                    "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                )
            elif method == "Runtime.exceptionThrown":
                result.errors.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                result.errors.append(f"log: {p['entry'].get('text', '')} {p['entry'].get('url', '')}")
            elif method == "Page.loadEventFired":
                loaded.set()

        loaded = asyncio.Event()
        for domain in ("Page", "Runtime", "Log"):
            await call(f"{domain}.enable")
        await call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        while not loaded.is_set():
            event(json.loads((await ws.receive(timeout=60)).data))
        js = "JSON.stringify({title: document.title, h: document.documentElement.scrollHeight, images: Array.from(document.images)" \
             ".map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))})"  # fmt: skip
        page = json.loads((await call("Runtime.evaluate", expression=js, returnByValue=True))["result"]["value"])
        result.title, result.images = page["title"], page["images"]
        await call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=min(page["h"], 16000),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await call("Page.captureScreenshot", format="png")
        result.screenshot = base64.b64decode(shot["data"])
    return result


def render(url: str, width: int = 1200) -> PageResult:
    """Load ``url`` in a fresh headless Chromium; its console errors, images and a full-page screenshot."""
    import urllib.request

    binary = chromium()
    profile = tempfile.mkdtemp(prefix="chromium-")
    # Its own process group: the renderer and crash handler it forks go down with it, so
    # none is still writing into the profile while the profile is removed.
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        return asyncio.run(_drive(target["webSocketDebuggerUrl"], url, width))
    finally:
        stop_group(proc)
        for _ in range(50):
            shutil.rmtree(profile, ignore_errors=True)
            if not os.path.exists(profile):
                break
            time.sleep(0.1)
