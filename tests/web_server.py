"""Starts the real `gemcord web` in a subprocess on a free 127.0.0.1 port, for the web tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Page

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DEMO_DELAY = "0.02"
"""Seconds between the demo model's chunks in tests: quick, yet a long answer can be stopped."""


def web_env(db: Path, **extra: str) -> dict[str, str]:
    """A hermetic environment for `gemcord web` (no key: the demo model answers)."""
    return {
        "PATH": "/usr/bin:/bin",
        "GEMCORD_DB": str(db),
        "GEMCORD_DEMO_DELAY": DEMO_DELAY,
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


@contextlib.asynccontextmanager
async def web_server(db: Path, *args: str, demo: bool = True, **env: str) -> AsyncIterator[str]:
    """Run `gemcord web [--demo] --port 0 ARGS`; yields its base URL (http://127.0.0.1:PORT)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "web",
        *(("--demo",) if demo else ()),
        "--port",
        "0",
        *args,
        "--env-file",
        "/dev/null",
        cwd=ROOT,
        env=web_env(db, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if not line:
                raise AssertionError("gemcord web exited:\n" + "".join(seen))
            seen.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if found:
                break
        drain = asyncio.create_task(proc.stdout.read())
        yield found.group(1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain


@contextlib.asynccontextmanager
async def chat_page(url: str, path: str = "/", *, microphone: bool = False) -> AsyncIterator[Page]:
    """The web chat at `url` + `path` in headless Chromium (1000×700), once its channels are
    shown; `microphone`: a fake one, allowed."""
    from playwright.async_api import async_playwright

    args = ["--no-sandbox"]
    if microphone:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = await browser.new_context(viewport={"width": 1000, "height": 700})
            if microphone:
                await context.grant_permissions(["microphone"], origin=url)
            page = await context.new_page()
            await page.goto(url + path)
            await page.wait_for_selector("#channel-list button.active")
            yield page
        finally:
            await browser.close()
