"""The optional HTTP server for operators: /healthz and /metrics (the web chat adds its routes
to the same application, see :func:`operator_app`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from bot.app import Gemcord
    from bot.metrics import Metrics

log = logging.getLogger(__name__)

DB_TIMEOUT = 2.0
"""Seconds the database may take to answer a health check."""


async def health(bot: Gemcord) -> str | None:
    """Why the bot is unhealthy (one short reason), or None when it is healthy."""
    shards = bot.shards
    if bot.is_closed() or not shards or any(s.is_closed() for s in shards.values()):
        return "not connected to the Discord gateway"
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            return await bot.store.health()  # e.g. a shard lock it lost
    except Exception as exc:
        return f"the database does not answer ({type(exc).__name__})"


def operator_app(metrics: Metrics, check: Callable[[], Awaitable[str | None]]) -> web.Application:
    """An aiohttp application with /healthz (``check()``: why unhealthy, or None) and /metrics,
    for any front-end (the Discord bot, the web chat)."""

    async def healthz(_request: web.Request) -> web.Response:
        problem = await check()
        body = json.dumps({"ok": problem is None, "reason": problem or "ok"})
        return web.Response(
            status=503 if problem else 200, text=body, content_type="application/json"
        )

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


def make_app(bot: Gemcord) -> web.Application:
    """The aiohttp application with the operators' routes for the Discord bot."""
    return operator_app(bot.metrics, lambda: health(bot))


async def start_server(bot: Gemcord, host: str, port: int) -> web.AppRunner:
    """Serve the operators' routes on host:port until the runner is cleaned up."""
    runner = web.AppRunner(make_app(bot), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving /healthz and /metrics on http://%s:%d", host, port)
    return runner
