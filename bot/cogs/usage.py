"""Costs: /usage (tokens and an estimated cost, per person, channel or server) and /budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Gemcord
from bot.budget import budgets, reset_words
from bot.checks import can_manage_server, can_moderate
from bot.ledger import PERIOD_NAMES, cache_ratio, percent, period_days
from bot.prices import Price, cost, price_for
from bot.sink import NO_PINGS
from storage import GuildBudget, TokenUsage, UsageTotals, utc_day

Scope = Literal["me", "channel", "server"]
ESTIMATE_NOTE = (
    "-# Estimated at the list prices in the bot's settings (USD per million tokens, "
    "`GEMCORD_PRICES`): a guide, not Google's bill."
)
MAX_BUDGET = 10**12


def money(usd: float) -> str:
    """A dollar amount with cents, or four decimals below a dollar."""
    return f"${usd:,.2f}" if usd >= 1 else f"${usd:.4f}"


def tokens_line(usage: TokenUsage) -> str:
    """Tokens by kind, in one line."""
    parts = [
        f"prompt {usage.prompt_tokens:,} (cached {usage.cached_tokens:,}, "
        f"{percent(cache_ratio(usage))})",
        f"output {usage.output_tokens:,}",
    ]
    if usage.thoughts_tokens:
        parts.append(f"thinking {usage.thoughts_tokens:,}")
    if usage.tool_use_prompt_tokens:
        parts.append(f"tool use {usage.tool_use_prompt_tokens:,}")
    return ", ".join(parts)


def usage_report(heading: str, rows: Sequence[UsageTotals], prices: Mapping[str, Price]) -> str:
    """The /usage answer: totals, tokens by kind, one line per model with its estimated cost."""
    if not rows:
        return f"**{heading}**\nNo replies counted."
    total = TokenUsage()
    for row in rows:
        total += row.usage
    replies = sum(row.replies for row in rows)
    lines = [
        f"**{heading}**",
        f"{replies:,} repl{'y' if replies == 1 else 'ies'}, {total.total_tokens:,} tokens: "
        + tokens_line(total),
    ]
    estimated, unpriced = 0.0, []
    for row in rows:
        price = price_for(row.model, prices)
        line = f"• `{row.model}`: {row.replies:,} × reply, {row.usage.total_tokens:,} tokens"
        if price is None:
            unpriced.append(row.model)
            line += ", no price known"
        else:
            estimated += cost(row.usage, price)
            line += f", ≈ {money(cost(row.usage, price))}"
        lines.append(line)
    head = f"**Estimated cost: ≈ {money(estimated)}**"
    if unpriced:
        head += " (without the models that have no price)"
    lines += [head, ESTIMATE_NOTE]
    return "\n".join(lines)


class Usage(commands.Cog):
    """What the bot costs, and the daily budgets."""

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot

    async def _private(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(
            text[:2000], ephemeral=True, allowed_mentions=NO_PINGS
        )

    @app_commands.command(name="usage", description="Tokens used and their estimated cost.")
    @app_commands.describe(
        scope="Yours (default), this channel's (Manage Messages) or this server's (Manage Server)",
        period="Today (UTC), the last 7 days or the last 30 days",
    )
    async def usage(
        self,
        interaction: discord.Interaction,
        scope: Scope = "me",
        period: Literal["today", "7d", "30d"] = "today",
    ) -> None:
        """Answer privately with the scope's tokens by kind and their estimated cost."""
        user = interaction.user
        if scope == "channel" and not can_moderate(interaction.channel, user):
            await self._private(
                interaction, "You need the Manage Messages permission to see a channel's usage."
            )
            return
        if scope == "server" and interaction.guild_id is None:
            await self._private(interaction, "There is no server here: try `me` or `channel`.")
            return
        if scope == "server" and not can_manage_server(user):
            await self._private(
                interaction, "You need the Manage Server permission to see the server's usage."
            )
            return
        now = self.bot.clock()
        first, last = period_days(period, now)
        where = {
            "me": {"user_id": user.id},
            "channel": {"channel_id": interaction.channel_id or 0},
            "server": {"guild_id": interaction.guild_id or 0},
        }[scope]
        rows = await self.bot.store.usage_by_model(first, last, **where)
        whose = {"me": "Your", "channel": "This channel's", "server": "This server's"}[scope]
        text = usage_report(f"{whose} usage {PERIOD_NAMES[period]}", rows, self.bot.settings.prices)
        if scope != "channel":
            text += "\n" + await self._budget_line(scope, user.id, interaction.guild_id, now)
        await self._private(interaction, text)

    async def _budget_line(
        self, scope: Scope, user_id: int, guild_id: int | None, now: float
    ) -> str:
        """Today's use against the daily budget in force, and when it resets."""
        per_user, per_server = await budgets(self.bot, guild_id)
        limit = per_user if scope == "me" else per_server
        if not limit:
            return "No daily token budget applies."
        day = utc_day(now)
        if scope == "me":
            used = await self.bot.store.tokens_used(day, user_id=user_id)
        else:
            used = await self.bot.store.tokens_used(day, guild_id=guild_id)
        return (
            f"Today: {used:,} of {limit:,} tokens in the daily budget; it resets at "
            f"{reset_words(now)}."
        )

    @app_commands.command(name="budget", description="Show or set this server's daily budgets.")
    @app_commands.describe(
        server="Tokens the whole server may use a day (0: unlimited)",
        person="Tokens each person may use a day (0: unlimited)",
        default="Go back to the bot's settings",
    )
    @app_commands.guild_only()
    async def budget(
        self,
        interaction: discord.Interaction,
        server: app_commands.Range[int, 0, MAX_BUDGET] | None = None,
        person: app_commands.Range[int, 0, MAX_BUDGET] | None = None,
        default: bool = False,
    ) -> None:
        """Without options, show the budgets in force; otherwise set them (Manage Server)."""
        guild_id = interaction.guild_id
        if guild_id is None:
            await self._private(interaction, "Budgets are per server: use this in a server.")
            return
        store = self.bot.store
        if server is not None or person is not None or default:
            if not can_manage_server(interaction.user):
                await self._private(
                    interaction, "You need the Manage Server permission to change budgets."
                )
                return
            own = await store.get_guild_budget(guild_id)
            if default:
                own = GuildBudget(guild_id)
            own = GuildBudget(
                guild_id,
                server if server is not None else own.server_tokens,
                person if person is not None else own.user_tokens,
            )
            await store.set_guild_budget(own)
        per_user, per_server = await budgets(self.bot, guild_id)

        def words(n: int) -> str:
            return f"{n:,} tokens a day" if n else "unlimited"

        await self._private(
            interaction,
            f"Daily budgets here: the server {words(per_server)}, each person "
            f"{words(per_user)}; they reset at 00:00 UTC."
            + (" Moderators are exempt." if self.bot.settings.budget_exempt_moderators else ""),
        )


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Usage(bot))
