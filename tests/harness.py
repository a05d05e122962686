"""End-to-end harness: the real gemcord bot against the fake Discord and the fake Gemini."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import discord

from bot.app import Gemcord, apply_discord_base
from bot.config import load_settings
from storage import Turn
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_models import FakeChannel, FakeGuild, FakeInteraction, FakeUser
from tests.fakes.gemini import FakeGemini

API_KEY = "test-gemini-key-0123456789"


@dataclass
class World:
    """Both fakes, one guild with a #general and a #random, two people, and the running bot."""

    discord: FakeDiscord
    gemini: FakeGemini
    db_path: Path
    guild: FakeGuild
    general: FakeChannel
    random: FakeChannel
    alice: FakeUser
    bob: FakeUser
    env: dict[str, str]
    bot: Gemcord | None = None
    at_end: list[Callable[[], None]] = field(default_factory=list, repr=False)
    """Checks run once the test's body is done and the bot has shut down, when nothing can
    change any more (e.g. that a finished reply was never written to again)."""
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start_bot(self) -> Gemcord:
        """Start (or restart) the bot on the same database and wait for its READY."""
        settings = load_settings(self.env, env_file=None)
        apply_discord_base(settings)
        bot = Gemcord(settings)
        identifies = len(self.discord.identifies)
        self._task = asyncio.create_task(bot.start(settings.discord_token or ""))
        await self.discord.wait_for(
            lambda: len(self.discord.identifies) > identifies or self._task.done(),  # type: ignore[union-attr]
            timeout=20,
        )
        if self._task.done():
            self._task.result()
        await self.discord.wait_until_ready(timeout=20)
        self.bot = bot
        return bot

    async def stop_bot(self) -> None:
        """Close the bot as a shutdown would."""
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        self.bot, self._task = None, None

    async def mention(self, channel: FakeChannel, user: FakeUser, text: str, **kw: object):
        """A message from `user` that starts with the bot's mention."""
        return await self.discord.user_message(
            channel,
            user,
            f"{self.discord.bot_user.mention} {text}",
            mentions=[self.discord.bot_user],
            **kw,  # type: ignore[arg-type]
        )

    async def reply_done(self, question_id: int, timeout: float = 15.0) -> list[str]:
        """Wait until the reply to `question_id` is stored as finished; its message contents."""
        assert self.bot is not None

        async def finished() -> list[int] | None:
            turn = await reply_turn(self, question_id)
            return turn.message_ids if turn is not None and turn.status != "streaming" else None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if (ids := await finished()) is not None and self.bot.inflight.by_message(
                question_id
            ) is None:
                return [self.discord.message(i).content for i in ids]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no finished reply to {question_id} within {timeout} s")

    async def interaction_done(
        self, interaction: FakeInteraction, timeout: float = 15.0
    ) -> list[str]:
        """Wait until the reply streamed into an interaction's response is stored as finished;
        the contents of the response and its follow-ups."""
        assert self.bot is not None
        store = self.bot.store

        async def finished() -> bool:
            first = interaction.original_id
            if first is None or interaction.original is None or interaction.original.loading:
                return False
            turn = await store.find_turn_by_message(first)
            return (
                turn is not None
                and turn.role == "model"
                and turn.status != "streaming"
                and self.bot is not None
                and self.bot.inflight.by_message(first) is None
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await finished():
                return [m.content for m in interaction.messages]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no finished reply to /{interaction.name} within {timeout} s")


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path, env: Mapping[str, str] | None = None, *, start: bool = True, **fake_kw: object
) -> AsyncIterator[World]:
    """Start both fakes (and, unless start=False, the bot); everything stops at the end."""
    route_base = discord.http.Route.BASE
    async with FakeDiscord(**fake_kw) as fake_discord, FakeGemini() as fake_gemini:  # type: ignore[arg-type]
        guild = fake_discord.add_guild("Test server")
        general = fake_discord.add_text_channel(guild, "general")
        random = fake_discord.add_text_channel(guild, "random")
        alice = fake_discord.add_user("alice")
        bob = fake_discord.add_user("bob")
        fake_discord.add_member(guild, alice)
        fake_discord.add_member(guild, bob)
        settings_env = {
            "DISCORD_TOKEN": fake_discord.token,
            "GEMINI_API_KEY": API_KEY,
            "GEMINI_BASE_URL": fake_gemini.base_url,
            "DISCORD_API_BASE_URL": fake_discord.api_base,
            "GEMCORD_DB": str(tmp_path / "gemcord.db"),
            "GEMCORD_DEV_GUILD": str(guild.id),
            "GEMCORD_COOLDOWN_SECONDS": "0",
            "GEMCORD_NOTICE_SECONDS": "0",
            "LOG_LEVEL": "DEBUG",
            **(env or {}),
        }
        w = World(
            fake_discord,
            fake_gemini,
            tmp_path / "gemcord.db",
            guild,
            general,
            random,
            alice,
            bob,
            settings_env,
        )
        try:
            if start:
                await w.start_bot()
            yield w
            await w.stop_bot()
            for check in w.at_end:
                check()
        finally:
            await w.stop_bot()
            discord.http.Route.BASE = route_base


async def reply_turn(w: World, question_id: int) -> Turn | None:
    """The stored model turn answering the question with Discord message `question_id`
    (withdrawn or not)."""
    assert w.bot is not None
    sql = (
        "SELECT r.id FROM answered AS a JOIN turns AS r ON r.reply_to = a.turn_id"
        " WHERE a.message_id = ? ORDER BY r.id LIMIT 1"
    )
    if url := w.env.get("GEMCORD_DATABASE_URL"):
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            row = await conn.fetchrow(sql.replace("?", "$1"), question_id)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True) as db:
            row = db.execute(sql, (question_id,)).fetchone()
    return None if row is None else await w.bot.store.get_turn(row[0])  # type: ignore[attr-defined]


async def react(w: World, channel: FakeChannel, message: int, user: FakeUser, emoji: str) -> float:
    """`user` adds `emoji` to `message`; returns when the fake dispatched the event (monotonic)."""
    seen = len(w.discord.gateway_events)
    await w.discord.user_reaction(channel, message, user, emoji)
    return next(
        e.t
        for e in w.discord.gateway_events[seen:]
        if e.name == "MESSAGE_REACTION_ADD" and e.data["message_id"] == str(message)
    )
