"""Daily token budgets, per person and per server: whether a question may still go to Gemini.

Budgets count total tokens (prompt, output, thinking, tool use) in the ledger since the last
UTC midnight. A server's own budgets (set with /budget) replace the settings there; 0 means
unlimited. A reply already streaming when a budget is crossed finishes; the next question is
refused with one sentence saying when the budget resets.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from bot.checks import can_moderate
from bot.coalesce import coalesced
from bot.ledger import next_reset
from storage import utc_day

if TYPE_CHECKING:
    from bot.app import Gemcord


async def budgets(bot: Gemcord, guild_id: int | None) -> tuple[int, int]:
    """(per person, per server) daily tokens in force in a server (or a DM); 0 = unlimited."""
    s = bot.settings
    per_user, per_server = s.daily_tokens_per_user, s.daily_tokens_per_server
    if guild_id is None:
        return per_user, 0
    store = bot.store
    key = ("budget", id(store), guild_id)
    own = await coalesced(key, functools.partial(store.get_guild_budget, guild_id))
    if own.user_tokens is not None:
        per_user = own.user_tokens
    if own.server_tokens is not None:
        per_server = own.server_tokens
    return per_user, per_server


def reset_words(now: float) -> str:
    """When budgets start again: the next UTC midnight, also as a Discord relative time."""
    reset = next_reset(now)
    return f"00:00 UTC on {reset.day} {reset:%B} (<t:{int(reset.timestamp())}:R>)"


async def over_budget(bot: Gemcord, channel: object, member: object) -> str | None:
    """The one-sentence refusal for someone whose (or whose server's) budget for today is
    spent; None when they may ask."""
    guild = getattr(channel, "guild", None)
    guild_id: int | None = getattr(guild, "id", None)
    per_user, per_server = await budgets(bot, guild_id)
    if not per_user and not per_server:
        return None
    if bot.settings.budget_exempt_moderators and guild_id is not None:
        if can_moderate(channel, member):
            return None
    now = bot.clock()
    day = utc_day(now)
    user_id: int = getattr(member, "id", 0)
    if per_user and await bot.store.tokens_used(day, user_id=user_id) >= per_user:
        return (
            f"📊 You've used your {per_user:,} tokens for today; your budget resets at "
            f"{reset_words(now)}."
        )
    if per_server and guild_id is not None:
        if await bot.store.tokens_used(day, guild_id=guild_id) >= per_server:
            return (
                f"📊 This server has used its {per_server:,} tokens for today; the budget resets "
                f"at {reset_words(now)}."
            )
    return None
