"""The token ledger from the bot's side: one row per reply, and the periods /usage reads."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

from storage import TokenUsage, utc_day

if TYPE_CHECKING:
    from bot.answer import Engine
    from bot.conversation import Question
    from bot.llm import StreamOutcome

Period = Literal["today", "7d", "30d"]
PERIOD_DAYS: dict[str, int] = {"today": 1, "7d": 7, "30d": 30}
PERIOD_NAMES: dict[str, str] = {
    "today": "today",
    "7d": "the last 7 days",
    "30d": "the last 30 days",
}


def usage_of(outcome: StreamOutcome | None) -> TokenUsage | None:
    """The reply's token counts as Gemini reported them (None when it reported none)."""
    if outcome is None:
        return None
    counts = (
        outcome.prompt_tokens,
        outcome.output_tokens,
        outcome.thoughts_tokens,
        outcome.cached_tokens,
        outcome.tool_use_prompt_tokens,
    )
    if all(c is None for c in (*counts, outcome.total_tokens)):
        return None
    prompt, output, thoughts, cached, tool = (c or 0 for c in counts)
    total = outcome.total_tokens
    if total is None:
        total = prompt + output + thoughts + tool
    return TokenUsage(prompt, output, thoughts, cached, tool, total)


async def record(
    bot: Engine, question: Question, turn_id: int, model: str, outcome: StreamOutcome | None
) -> None:
    """Add a reply's usage to the ledger, at the bot's clock (nothing when Gemini sent none)."""
    usage = usage_of(outcome)
    if usage is None:
        return
    await bot.store.record_usage(
        turn_id=turn_id,
        user_id=question.author_id,
        channel_id=question.channel_id,
        guild_id=question.guild_id,
        model=model,
        at=bot.clock(),
        usage=usage,
    )


def period_days(period: str, now: float) -> tuple[int, int]:
    """The first and last UTC day numbers of a period ending today."""
    today = utc_day(now)
    return today - PERIOD_DAYS[period] + 1, today


def next_reset(now: float) -> dt.datetime:
    """The next UTC midnight: when daily budgets start again."""
    return dt.datetime.fromtimestamp((utc_day(now) + 1) * 86_400, dt.UTC)


def cache_ratio(usage: TokenUsage) -> float | None:
    """Cached ÷ prompt tokens (None before any prompt was counted)."""
    return usage.cached_tokens / usage.prompt_tokens if usage.prompt_tokens else None


def percent(ratio: float | None) -> str:
    """A ratio as a whole percentage ('–' when unknown)."""
    return "–" if ratio is None else f"{ratio * 100:.0f} %"
