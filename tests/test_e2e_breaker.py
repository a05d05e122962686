"""End to end: the circuit breaker in front of Gemini, proven by the fake Gemini's request count.

The breaker's clock is injected: the cool-down passes without waiting for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.gemini import Reply
from tests.harness import World, world

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def notice_to(w: World, question) -> str:
    message = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == question.id)
    return message.content


async def test_repeated_429s_open_the_breaker_until_the_hint_then_a_trial_closes_it(
    tmp_path: Path,
) -> None:
    env = {"GEMCORD_BREAKER_FAILURES": "2", "GEMCORD_BREAKER_SECONDS": "10"}
    async with world(tmp_path, env) as w:
        assert w.bot is not None
        clock = Clock()
        w.bot.breaker.clock = clock
        w.gemini.script(Reply.error(429, retry_delay="60s"), Reply.error(429, retry_delay="60s"))
        for text in ("one", "two"):
            reply = await w.reply_done((await w.mention(w.general, w.alice, text)).id)
            assert "rate-limited" in reply[-1]
        assert len(w.gemini.requests) == 2 and w.bot.breaker.state == "open"

        # open: an immediate, clear answer and no call to Gemini, for mentions and /ask
        refused = await w.mention(w.general, w.bob, "three")
        assert "over its quota" in await notice_to(w, refused)
        assert "60 seconds" in await notice_to(w, refused)
        ask = await w.discord.slash_command(w.general, w.alice, "ask", {"prompt": "four"})
        await ask.wait_for_callback()
        assert ask.ephemeral and "over its quota" in (ask.original or object()).content
        # past the breaker's own 10 s, but not the server's 60 s hint: still open
        clock.now += 30
        later = await w.mention(w.general, w.bob, "five")
        assert "30 seconds" in await notice_to(w, later)
        assert len(w.gemini.requests) == 2

        # after the hint: one trial call; it succeeds, so the breaker closes
        clock.now += 30
        trial = await w.mention(w.general, w.alice, "six")
        assert await w.reply_done(trial.id) == ["Echo: [alice] six"]
        assert len(w.gemini.requests) == 3 and w.bot.breaker.state == "closed"
        await w.reply_done((await w.mention(w.general, w.bob, "seven")).id)
        assert len(w.gemini.requests) == 4


async def test_a_failed_trial_opens_the_breaker_again(tmp_path: Path) -> None:
    env = {"GEMCORD_BREAKER_FAILURES": "1", "GEMCORD_BREAKER_SECONDS": "10"}
    async with world(tmp_path, env) as w:
        assert w.bot is not None
        clock = Clock()
        w.bot.breaker.clock = clock
        # (a 503 asking for more than the stream's own retries wait for is not retried)
        overloaded = Reply.error(503, retry_delay="20s")
        w.gemini.script(overloaded, overloaded)
        await w.reply_done((await w.mention(w.general, w.alice, "one")).id)
        assert w.bot.breaker.state == "open" and w.bot.breaker.reason == "server"
        clock.now += 10
        await w.reply_done((await w.mention(w.general, w.alice, "two")).id)
        assert w.bot.breaker.state == "open"
        tried = len(w.gemini.requests)
        assert tried == 2
        refused = await w.mention(w.general, w.bob, "three")
        assert "having trouble" in await notice_to(w, refused)
        assert len(w.gemini.requests) == tried
