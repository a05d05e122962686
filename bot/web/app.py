"""`gemcord web`: the reply engine without Discord, served with the chat page and the operators'
routes on one aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from bot.breaker import Breaker
from bot.config import ConfigError, Settings
from bot.demo import DemoModel
from bot.inflight import InFlightRegistry
from bot.llm import GeminiClient
from bot.metrics import Metrics
from bot.pacing import PacerRegistry
from bot.server import operator_app
from bot.web.chat import WebChat
from storage import Store

log = logging.getLogger(__name__)

WRITES_PER_SECOND = 10
"""Updates a second each channel's replies may send to the browser (still buffered)."""
DB_TIMEOUT = 2.0


@dataclass
class WebEngine:
    """The services :func:`bot.answer.answer` needs, for the web chat."""

    settings: Settings
    store: Store
    llm: GeminiClient | DemoModel
    pacers: PacerRegistry = field(default_factory=lambda: PacerRegistry(WRITES_PER_SECOND, 1.0))
    inflight: InFlightRegistry = field(default_factory=InFlightRegistry)
    metrics: Metrics = field(init=False)
    breaker: Breaker = field(default_factory=lambda: Breaker(0, 0.0))
    """Never open: the person at the page sees each failure anyway."""
    clock: Callable[[], float] = time.time
    display_name: str = "gemcord"

    def __post_init__(self) -> None:
        self.metrics = Metrics(lambda: len(self.inflight), lambda: 0)

    async def health(self) -> str | None:
        """Why the web chat is unhealthy (one short reason), or None."""
        try:
            async with asyncio.timeout(DB_TIMEOUT):
                return await self.store.health()
        except Exception as exc:
            return f"the database does not answer ({type(exc).__name__})"


def check_host(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without GEMCORD_WEB_TOKEN."""
    if token or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            "GEMCORD_WEB_TOKEN",
            f"is needed to serve the web chat on {host}",
            "set it to a long random string, or leave out --host to stay on 127.0.0.1",
        )


def make_model(settings: Settings, demo: bool) -> GeminiClient | DemoModel:
    """Gemini with a key, the scripted demo model with ``--demo`` or without a key."""
    if demo or not settings.gemini_api_key:
        return DemoModel(delay=float(os.environ.get("GEMCORD_DEMO_DELAY") or 0.12))
    return GeminiClient(
        settings.gemini_api_key,
        base_url=settings.gemini_base_url,
        first_chunk_timeout=settings.first_chunk_timeout,
        chunk_timeout=settings.idle_timeout,
        total_timeout=settings.total_timeout,
    )


def make_web_app(engine: WebEngine, token: str | None) -> web.Application:
    """The operators' routes plus the chat page and its WebSocket."""
    app = operator_app(engine.metrics, engine.health)
    llm = engine.llm
    label = llm.label if isinstance(llm, DemoModel) else engine.settings.gemini_model
    # the demo model stands in for GeminiClient: the engine calls its stream() and Files API calls
    models = not isinstance(llm, DemoModel)  # the demo model has none to choose from
    chat = WebChat(engine, token=token, model_label=label, models=models)  # type: ignore[arg-type]
    chat.add_routes(app)
    return app


async def run_web(
    settings: Settings, *, demo: bool, host: str, port: int, token: str | None
) -> int:
    """Serve the web chat on host:port until interrupted (SIGINT or SIGTERM)."""
    from storage import open_store

    engine = WebEngine(settings, await open_store(settings.database), make_model(settings, demo))
    runner = web.AppRunner(make_web_app(engine, token), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        query = "/?token=…" if token else "/"
        model = "the demo model" if isinstance(engine.llm, DemoModel) else settings.gemini_model
        print(f"gemcord web: chat with {model} at http://{shown}:{bound}{query}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()
        await engine.llm.aclose()
        await engine.store.close()
