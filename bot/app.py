"""The bot: one `commands.AutoShardedBot` subclass owning the store, Gemini and pacing."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import discord
import yarl
from aiohttp import web
from discord.ext import commands

from bot.admission import Admission
from bot.breaker import Breaker
from bot.config import DEFAULT_DISCORD_API, ConfigError, Settings
from bot.inflight import InFlightRegistry
from bot.llm import GeminiClient, warn_if_model_unknown
from bot.metrics import Metrics, RateLimitCounter
from bot.pacing import PacerRegistry
from bot.recovery import repair_interrupted
from bot.regenerate import Offers
from bot.retention import tidy_forever
from bot.server import start_server
from storage import open_store

if TYPE_CHECKING:
    from storage import Store

log = logging.getLogger(__name__)

INITIAL_EXTENSIONS = (
    "bot.cogs.chat",
    "bot.cogs.control",
    "bot.cogs.usage",
    "bot.cogs.settings",
    "bot.cogs.actions",
)
SHUTDOWN_GRACE = 7.0
"""Seconds a shutdown waits for running replies to show that they were interrupted."""


def make_intents() -> discord.Intents:
    """Only what gemcord reads: guilds, messages (with content), and reactions."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    return intents


class Gemcord(commands.AutoShardedBot):
    """The Discord client; features live in cogs, shared services hang off this object."""

    store: Store
    llm: GeminiClient

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=make_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            chunk_guilds_at_startup=False,
            max_messages=2000,
        )
        self.settings = settings
        self.pacers = PacerRegistry(
            settings.edits_per_window,
            settings.edit_window_seconds,
            requests_per_second=settings.requests_per_second,
        )
        self.inflight = InFlightRegistry()
        self.offers = Offers(self)
        """Which reply shows the Regenerate button in each channel."""
        self.admission = Admission(
            settings.replies_per_user,
            settings.replies_per_channel,
            settings.replies_per_process,
            settings.queue_per_channel,
        )
        self.metrics = Metrics(
            streaming=lambda: self.admission.streaming, queued=lambda: self.admission.queued
        )
        self._rate_limits = RateLimitCounter(self.metrics)
        self._server: web.AppRunner | None = None
        self.closing = False
        """Set when a shutdown begins: new questions are turned away."""
        self._background: set[asyncio.Task[object]] = set()
        self.cooldown: commands.CooldownMapping[int] = commands.CooldownMapping.from_cooldown(
            1, settings.cooldown_seconds, lambda user_id: user_id
        )
        self.clock: Callable[[], float] = time.time
        """Wall-clock time for the ledger and the daily budgets (tests set their own)."""
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_seconds)
        """Stops calling Gemini for a while after repeated quota, key or server failures."""

    async def setup_hook(self) -> None:
        """Open the store and the Gemini client, load every cog, sync slash commands once."""
        if self.settings.discord_api_base_url != DEFAULT_DISCORD_API:
            # discord.py reconnects to its built-in gateway after an outage (and shards there
            # when their count is given): point it at this API's own gateway instead.
            _, url, _ = await self.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.store = await open_store(self.settings.db_path)
        s = self.settings
        self.llm = GeminiClient(
            s.gemini_api_key or "",
            base_url=s.gemini_base_url,
            first_chunk_timeout=s.first_chunk_timeout,
            chunk_timeout=s.idle_timeout,
            total_timeout=s.total_timeout,
        )
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        # REST works before the gateway is up: replies a crash cut off are finished at once.
        self._in_background(repair_interrupted(self))
        self._in_background(self.metrics.watch_loop_lag())
        self._in_background(tidy_forever(self))
        self._in_background(warn_if_model_unknown(self.llm, self.settings.gemini_model))
        logging.getLogger("discord.http").addHandler(self._rate_limits)
        if self.settings.http_port is not None:
            self._server = await start_server(
                self, self.settings.http_host, self.settings.http_port
            )
        guild_id = self.settings.dev_guild_id
        try:
            if guild_id:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
            else:
                synced = await self.tree.sync()
            log.info("synced %d slash commands (%s)", len(synced), guild_id or "global")
        except discord.HTTPException as exc:
            log.warning("could not sync slash commands: %s", exc)

    def _in_background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def display_name(self) -> str:
        """The bot's name in Discord (before login: "Gemcord")."""
        return self.user.display_name if self.user else "Gemcord"

    async def on_message(self, message: discord.Message) -> None:
        """Messages are handled by the chat cog's listener; no prefix commands exist."""

    def cooldown_retry_after(self, user_id: int, *, consume: bool = True) -> float:
        """Seconds the user must still wait before asking again (0 when they may ask now).

        With ``consume`` (the default) a 0 answer also starts the user's next cooldown; without
        it the bucket is only looked at (to refuse early without using up the user's turn).
        """
        if self.settings.cooldown_seconds <= 0:
            return 0.0
        bucket = self.cooldown.get_bucket(user_id)
        if bucket is None:
            return 0.0
        if not consume:
            return bucket.get_retry_after()
        return bucket.update_rate_limit() or 0.0

    async def close(self) -> None:
        """Turn new questions away, end every running reply as interrupted by a restart (for
        at most SHUTDOWN_GRACE seconds), then close Discord, Gemini and the store in that order.

        A reply that could not show its last line in time is left streaming in the store, and
        the next start finishes it in Discord like one a crash cut off.
        """
        self.closing = True
        self.inflight.cancel_all("restart")
        await self.inflight.wait_idle(timeout=SHUTDOWN_GRACE)
        for task in list(self._background):
            task.cancel()
        logging.getLogger("discord.http").removeHandler(self._rate_limits)
        if self._server is not None:
            await self._server.cleanup()
        await super().close()
        if hasattr(self, "llm"):
            await self.llm.aclose()
        if hasattr(self, "store"):
            await self.store.close()


def apply_discord_base(settings: Settings) -> None:
    """Point discord.py's REST routes (and so the gateway lookup) at the configured base URL."""
    discord.http.Route.BASE = settings.discord_api_base_url.rstrip("/")


async def run_bot(settings: Settings) -> int:
    """Run until stopped by a signal or a fatal error; returns the exit code."""
    apply_discord_base(settings)
    bot = Gemcord(settings)
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[None]] = []  # the shutdown a signal started, awaited to the end
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, lambda: closing.append(asyncio.create_task(bot.close())))
        except (NotImplementedError, RuntimeError):
            pass
    try:
        async with bot:
            await bot.start(settings.discord_token or "")
        for task in closing:
            await task
    except discord.LoginFailure:
        raise ConfigError(
            "DISCORD_TOKEN",
            "was refused by Discord",
            "copy a fresh token from the Bot page of your application in the developer portal",
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise ConfigError(
            "DISCORD_TOKEN",
            "belongs to a bot without the Message Content intent",
            "enable 'Message Content Intent' on the Bot page of the developer portal",
        ) from None
    return 0
