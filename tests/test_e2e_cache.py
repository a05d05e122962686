"""End to end: a cache-friendly prompt. Gemini caches a byte-identical prompt prefix (the
system instruction, the persona, the oldest turns); the fake Gemini models that cache, so a
second question in a channel is reported with cached tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.conversation import today_note
from storage import TokenUsage, utc_day
from tests.fakes.gemini import RecordedRequest
from tests.harness import world

pytestmark = pytest.mark.timeout(60)


def serialized(request: RecordedRequest) -> list[str]:
    """The prompt as the cache sees it: the system instruction, then every part in order."""
    units = [json.dumps(request.system_instruction())]
    for content in request.contents():
        units += [json.dumps([content.get("role"), p], sort_keys=True) for p in content["parts"]]
    return units


async def test_questions_share_a_byte_stable_prefix_and_hit_the_cache(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        assert w.bot is not None
        w.gemini.cache_min_tokens = 64
        asked = ("what is a prime number?", "and a perfect number?", "give an example")
        for text in asked:
            await w.reply_done((await w.mention(w.general, w.alice, text)).id)
        first, second, third = w.gemini.requests

        # the system instruction is the same each time, and each request is the one before it
        # (but for the date line that only the newest question carries) plus the new tail: the
        # reply, then the next question

        assert first.system_instruction() == second.system_instruction()
        for request, text in zip(w.gemini.requests, asked, strict=True):
            assert request.question_text() == f"[alice] {text}"
        for before, after in ((first, second), (second, third)):
            stable = serialized(before)[:-1]
            assert serialized(before)[-1] == json.dumps(["user", {"text": today_note()}])
            assert serialized(after)[: len(stable)] == stable

        # the fake's implicit cache saw those prefixes again
        assert first.implicit_cached == 0
        assert 0 < second.implicit_cached < third.implicit_cached
        assert second.usage is not None and second.usage["cachedContentTokenCount"] > 0

        # the ledger keeps the cached tokens, and /stats shows the hit ratio
        day = utc_day(w.bot.clock())
        total = TokenUsage()
        for row in await w.bot.store.usage_by_model(day, day, channel_id=w.general.id):
            total += row.usage
        assert total.cached_tokens == second.implicit_cached + third.implicit_cached
        ratio = total.cached_tokens / total.prompt_tokens
        assert ratio > 0
        stats = await w.discord.slash_command(w.general, w.alice, "stats")
        await stats.wait_for_callback()
        assert f"{ratio * 100:.0f} % here" in (stats.original or object()).content
