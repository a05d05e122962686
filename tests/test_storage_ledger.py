"""The token ledger in storage (SQLite and PostgreSQL): per-day totals, scopes, budgets, and
what deletes leave."""

from __future__ import annotations

import pytest

from storage import GuildBudget, TokenUsage, utc_day
from tests.backends import Backend

DAY = 20_000 * 86_400.0  # a UTC midnight


async def test_totals_by_scope_and_day_survive_deleting_the_turns(backend: Backend) -> None:
    store = await backend.open()
    try:
        q = await store.add_user_turn(
            channel_id=10, guild_id=1, author_id=7, author_name="a", text="?"
        )
        r = await store.start_model_turn(channel_id=10, guild_id=1, reply_to=q, model="m")
        one = TokenUsage(100, 20, 5, 40, 0, 125)
        await store.record_usage(
            turn_id=r, user_id=7, channel_id=10, guild_id=1, model="m", at=DAY + 5, usage=one
        )
        await store.record_usage(  # counted once per turn
            turn_id=r, user_id=7, channel_id=10, guild_id=1, model="m", at=DAY + 6, usage=one
        )
        await store.record_usage(
            user_id=8, channel_id=11, guild_id=1, model="n", at=DAY + 86_399, usage=one
        )
        await store.record_usage(user_id=7, channel_id=12, model="m", at=DAY + 86_400, usage=one)
        day = utc_day(DAY)
        assert await store.tokens_used(day, user_id=7) == 125
        assert await store.tokens_used(day, guild_id=1) == 250
        assert await store.tokens_used(day + 1, user_id=7) == 125  # the next day, in a DM
        assert await store.tokens_used(day + 1, guild_id=1) == 0
        both = await store.usage_by_model(day, day + 1, user_id=7)
        assert [(t.model, t.replies, t.usage) for t in both] == [("m", 2, one + one)]
        server = await store.usage_by_model(day, day, guild_id=1)
        assert [(t.model, t.replies) for t in server] == [("m", 1), ("n", 1)]
        with pytest.raises(ValueError):
            await store.usage_by_model(day, day, user_id=7, guild_id=1)
        # /forget deletes the conversation, not what it cost
        assert await store.forget_user(7) == 2
        assert await store.tokens_used(day, user_id=7) == 125
        assert "usage_daily_user" in " ".join(await store.usage_plan())  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_guild_budgets_are_kept_per_server(backend: Backend) -> None:
    store = await backend.open()
    try:
        assert await store.get_guild_budget(1) == GuildBudget(1)
        await store.set_guild_budget(GuildBudget(1, server_tokens=5000, user_tokens=0))
        await store.set_guild_budget(GuildBudget(2, user_tokens=100))
        assert await store.get_guild_budget(1) == GuildBudget(1, 5000, 0)
        await store.set_guild_budget(GuildBudget(1))
        assert await store.get_guild_budget(1) == GuildBudget(1)
        assert await store.get_guild_budget(2) == GuildBudget(2, None, 100)
    finally:
        await store.close()
