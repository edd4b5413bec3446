"""Headless Chromium (Debian's package, installed by scripts/setup.sh test) for the tests
that must see a page as a browser renders it: the HTML report, the dashboard.

Flags as this machine needs them: no sandbox (we run as root), no GPU, and no background
networking (the network is closed; Chromium's own calls home would fail noisily).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    """Chromium's path; without it the test fails in CI (it must run there), else skips."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "headless Chromium is not installed (scripts/setup.sh test installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _run(url: str, *flags: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="llmperf-chromium-") as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *flags, url],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def rendered_dom(url: str, wait_ms: int = 10_000) -> str:
    """The page's DOM after its scripts ran for up to `wait_ms` of virtual time."""
    out = _run(url, f"--virtual-time-budget={wait_ms}", "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def screenshot(url: str, png: Path, width: int = 1400, height: int = 3000) -> Path:
    out = _run(url, f"--screenshot={png}", f"--window-size={width},{height}")
    assert out.returncode == 0 and png.is_file(), out.stderr[-2000:]
    return png


def page_text(url: str, expect: str, timeout_s: float = 60.0) -> str:
    """The page's visible text once it contains `expect` (or at the deadline).

    For pages that keep rendering after load (Streamlit draws its app over a websocket),
    which `--dump-dom` would catch empty: drive Chromium over the DevTools protocol and
    read `document.body.innerText` until the expected text is there.
    """
    import asyncio

    return asyncio.run(_page_text(url, expect, timeout_s))


async def _page_text(url: str, expect: str, timeout_s: float) -> str:
    import asyncio
    import re
    import time

    import aiohttp

    with tempfile.TemporaryDirectory(prefix="llmperf-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            browser_ws = ""
            while not browser_ws:
                line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
                assert line, "Chromium exited before it listened for DevTools"
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                browser_ws = found.group(1) if found else ""
            port = re.search(r":(\d+)/", browser_ws).group(1)  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                page = next(t for t in targets if t["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    ids = iter(range(1, 1_000_000))

                    async def call(method: str, **params: object) -> dict[str, object]:
                        number = next(ids)
                        await ws.send_json({"id": number, "method": method, "params": params})
                        while True:
                            message = await ws.receive_json(timeout=30)
                            if message.get("id") == number:
                                return message.get("result", {})  # type: ignore[no-any-return]

                    await call("Page.navigate", url=url)
                    deadline = time.monotonic() + timeout_s
                    text = ""
                    while time.monotonic() < deadline:
                        result = await call(
                            "Runtime.evaluate",
                            expression="document.body ? document.body.innerText : ''",
                            returnByValue=True,
                        )
                        text = str(result.get("result", {}).get("value", ""))  # type: ignore[union-attr]
                        if expect in text:
                            break
                        await asyncio.sleep(0.5)
                    return text
        finally:
            process.kill()
            await process.wait()
