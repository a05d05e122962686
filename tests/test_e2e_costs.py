"""End to end: what the bot costs — the token ledger, /usage, /budget and the daily budgets.

Each test drives the real bot through the fake Discord and the fake Gemini; the ledger is
checked against what the fake reported (each request's last ``usageMetadata``), and time is
the bot's injected clock, never the wall clock.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from storage import TokenUsage, utc_day
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
