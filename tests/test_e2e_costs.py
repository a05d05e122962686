"""End to end: what the bot costs — the token ledger, /usage, /budget and the daily budgets.

Each test drives the real bot through the fake Discord and the fake Gemini; the ledger is
checked against what the fake reported (each request's last ``usageMetadata``), and time is
the bot's injected clock, never the wall clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from storage import TokenUsage, utc_day
from tests.fakes.discord import Perm
from tests.fakes.gemini import Reply, Usage
from tests.harness import World, world

pytestmark = pytest.mark.timeout(60)

NOON = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC).timestamp()
"""The injected clock's start: noon UTC, so midnight is 12 hours away."""


class Clock:
    """A settable clock for the bot (Unix seconds)."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def costs_world(tmp_path: Path, env: dict[str, str] | None = None):
    return world(tmp_path, {"GEMCORD_EDIT_WINDOW_SECONDS": "1", **(env or {})}, rate_limit=(5, 1.0))


def with_clock(w: World, clock: Clock) -> Clock:
    assert w.bot is not None
    w.bot.clock = clock
    return clock


def reported(w: World) -> TokenUsage:
    """The sum of the usage the fake Gemini reported, over every request."""
    total = TokenUsage()
    for request in w.gemini.requests:
        u = request.usage or {}
        total += TokenUsage(
            u.get("promptTokenCount", 0),
            u.get("candidatesTokenCount", 0),
            u.get("thoughtsTokenCount", 0),
            u.get("cachedContentTokenCount", 0),
            u.get("toolUsePromptTokenCount", 0),
            u.get("totalTokenCount", 0),
        )
    return total


async def ledger_total(w: World, **scope: int) -> TokenUsage:
    assert w.bot is not None
    day = utc_day(w.bot.clock())
    rows = await w.bot.store.usage_by_model(day, day, **scope)
    total = TokenUsage()
    for row in rows:
        total += row.usage
    return total


async def test_the_ledger_equals_what_gemini_reported(tmp_path: Path) -> None:
    async with costs_world(tmp_path) as w:
        with_clock(w, Clock())
        w.gemini.script(
            Reply(chunks=["one ", "two"], usage=Usage(cached_tokens=7)),
            Reply(chunks=["think"], thoughts=["hmm, let me see"], usage=Usage(thoughts_tokens=30)),
            Reply(chunks=["searched"], usage=Usage(tool_use_prompt_tokens=120)),
            Reply.error(429, retry_delay="30s"),  # no answer, no usage: nothing in the ledger
            Reply.blocked_prompt("SAFETY"),  # the prompt was counted
        )
        asked = [
            await w.mention(w.general, w.alice, "first"),
            await w.mention(w.general, w.bob, "second"),
            await w.mention(w.random, w.alice, "third"),
            await w.mention(w.random, w.alice, "fourth"),
            await w.mention(w.general, w.bob, "fifth"),
        ]
        for message in asked:
            await w.reply_done(message.id)
        await w.reply_done((await w.mention(w.general, w.alice, "sixth")).id)  # echo

        everything = await ledger_total(w)
        assert everything == reported(w)
        assert everything.cached_tokens == 7 and everything.thoughts_tokens == 30
        assert everything.tool_use_prompt_tokens == 120
        assert everything.total_tokens == (
            everything.prompt_tokens
            + everything.output_tokens
            + everything.thoughts_tokens
            + everything.tool_use_prompt_tokens
        )
        # per scope: the parts add up to the whole
        alice = await ledger_total(w, user_id=w.alice.id)
        bob = await ledger_total(w, user_id=w.bob.id)
        assert alice + bob == everything
        general = await ledger_total(w, channel_id=w.general.id)
        random = await ledger_total(w, channel_id=w.random.id)
        assert general + random == everything == await ledger_total(w, guild_id=w.guild.id)
        assert w.bot is not None
        rows = await w.bot.store.usage_by_model(0, utc_day(NOON))
        assert [(r.model, r.replies) for r in rows] == [("gemini-2.5-flash", 5)]


async def command(w: World, user, name: str, options=None, channel=None) -> str:
    """Run a slash command; the text of its (ephemeral) response."""
    inter = await w.discord.slash_command(channel or w.general, user, name, options)
    await inter.wait_for_callback()
    assert inter.ephemeral and inter.original is not None
    assert inter.original.mentions_disabled
    return inter.original.content


async def notice_to(w: World, question) -> str:
    """The bot's one-line notice in reply to a question."""
    message = await w.discord.wait_for_message(
        w.discord.channels[question.channel_id], lambda m: m.reply_to == question.id
    )
    return message.content


def costly(prompt: int, output: int, cached: int = 0) -> Reply:
    return Reply(
        chunks=["fine"],
        usage=Usage(prompt_tokens=prompt, output_tokens=output, cached_tokens=cached),
    )


async def test_usage_by_scope_and_period_with_an_estimated_cost(tmp_path: Path) -> None:
    async with costs_world(tmp_path) as w:
        clock = with_clock(w, Clock())
        w.gemini.script(
            costly(1_000_000, 100_000, cached=400_000), costly(200_000, 0), costly(50_000, 10_000)
        )
        for channel, user, text in (
            (w.general, w.alice, "one"),
            (w.general, w.alice, "two"),
            (w.random, w.bob, "three"),
        ):
            await w.reply_done((await w.mention(channel, user, text)).id)

        mine = await command(w, w.alice, "usage")
        assert "Your usage today" in mine and "2 replies, 1,300,000 tokens" in mine
        assert "cached 400,000, 33 %" in mine
        # gemini-2.5-flash: 800k uncached × 0.30 + 400k cached × 0.03 + 100k output × 2.50 per 1M
        assert "Estimated cost: ≈ $0.5020" in mine and "not Google's bill" in mine
        assert "No daily token budget applies." in mine

        # other scopes need permissions
        refused = await command(w, w.alice, "usage", {"scope": "channel"})
        assert "Manage Messages" in refused
        refused = await command(w, w.bob, "usage", {"scope": "server"})
        assert "Manage Server" in refused
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        admins = w.discord.add_role(w.guild, "admins", permissions=Perm.MANAGE_GUILD)
        w.discord.add_member(w.guild, w.bob, roles=[mods, admins])
        here = await command(w, w.bob, "usage", {"scope": "channel"}, channel=w.random)
        assert "This channel's usage today" in here and "1 reply, 60,000 tokens" in here
        server = await command(w, w.bob, "usage", {"scope": "server"})
        assert "This server's usage today" in server and "3 replies, 1,360,000 tokens" in server

        # periods are UTC days ending today, on the bot's clock
        clock.now += 3 * 86_400
        assert "No replies counted" in await command(w, w.alice, "usage")
        assert "2 replies" in await command(w, w.alice, "usage", {"period": "7d"})
        clock.now += 5 * 86_400
        assert "No replies counted" in await command(w, w.alice, "usage", {"period": "7d"})
        assert "2 replies" in await command(w, w.alice, "usage", {"period": "30d"})

        # /stats shows how much of the prompt came from Gemini's cache
        stats = await command(w, w.alice, "stats")
        assert "Prompt cache hits (cached ÷ prompt tokens): 33 % here, 32 % everywhere" in stats


async def test_a_person_over_the_daily_budget_waits_for_utc_midnight(tmp_path: Path) -> None:
    async with costs_world(tmp_path, {"GEMCORD_DAILY_TOKENS_PER_USER": "1000"}) as w:
        clock = with_clock(w, Clock())
        hold = asyncio.Event()
        w.gemini.script(
            Reply(chunks=["a"], usage=Usage(prompt_tokens=600, output_tokens=100), hold=hold),
            Reply(chunks=["b"], usage=Usage(prompt_tokens=600, output_tokens=100), hold=hold),
        )
        # two questions asked before either is counted: both are answered in full
        first = await w.mention(w.general, w.alice, "one")
        second = await w.mention(w.general, w.alice, "two")
        await w.gemini.wait_for_requests(2)
        hold.set()
        assert await w.reply_done(first.id) == ["a"] and await w.reply_done(second.id) == ["b"]

        over = await w.mention(w.general, w.alice, "three")
        refusal = await notice_to(w, over)
        assert "used your 1,000 tokens for today" in refusal
        assert "resets at 00:00 UTC on 11 March" in refusal
        midnight = int(dt.datetime(2026, 3, 11, tzinfo=dt.UTC).timestamp())
        assert f"<t:{midnight}:R>" in refusal
        asked = await command(w, w.alice, "ask", {"prompt": "four"})
        assert asked == refusal
        mine = await command(w, w.alice, "usage")
        assert "Today: 1,400 of 1,000 tokens in the daily budget" in mine
        assert len(w.gemini.requests) == 2  # refused questions never reach Gemini
        # bob has his own budget
        await w.reply_done((await w.mention(w.general, w.bob, "mine")).id)

        clock.now = midnight + 1.0
        again = await w.mention(w.general, w.alice, "a new day")
        assert await w.reply_done(again.id) == ["Echo: [alice] a new day"]


async def test_a_server_budget_set_by_manage_server_and_moderators_exempt(tmp_path: Path) -> None:
    env = {"GEMCORD_BUDGET_EXEMPT_MODERATORS": "true"}
    async with costs_world(tmp_path, env) as w:
        with_clock(w, Clock())
        refused = await command(w, w.alice, "budget", {"server": 1500})
        assert "Manage Server" in refused
        assert "the server unlimited, each person unlimited" in await command(w, w.alice, "budget")
        admins = w.discord.add_role(w.guild, "admins", permissions=Perm.MANAGE_GUILD)
        carol = w.discord.add_user("carol")
        w.discord.add_member(w.guild, carol, roles=[admins])
        done = await command(w, carol, "budget", {"server": 1500})
        assert "the server 1,500 tokens a day, each person unlimited" in done

        w.gemini.script(costly(900, 100), costly(900, 100))
        await w.reply_done((await w.mention(w.general, w.alice, "one")).id)
        await w.reply_done((await w.mention(w.random, w.bob, "two")).id)
        over = await w.mention(w.general, w.bob, "three")
        refusal = await notice_to(w, over)
        assert "This server has used its 1,500 tokens for today" in refusal
        assert "resets at 00:00 UTC on 11 March" in refusal
        # a moderator is exempt (with the setting), and a DM has no server budget
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        assert await w.reply_done((await w.mention(w.general, w.bob, "mod")).id)
        dm = w.discord.add_dm_channel(w.alice)
        answered = await w.discord.user_message(dm, w.alice, "in private")
        assert await w.reply_done(answered.id)
        # back to the bot's settings (unlimited)
        assert "the server unlimited" in await command(w, carol, "budget", {"default": True})
        assert await w.reply_done((await w.mention(w.general, w.alice, "free")).id)
