"""`/settings`: every per-channel setting in one place (see bot/options.py)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.answer import channel_settings
from bot.app import Gemcord
from bot.checks import can_moderate
from bot.options import OPTIONS
from bot.setting_change import PERSONA_LIMIT, change_setting, suggestions
from bot.sink import NO_PINGS

NEEDS_MANAGE_MESSAGES = "You need the Manage Messages permission to do that."


async def apply(bot: Gemcord, interaction: discord.Interaction, name: str, value: str) -> None:
    """Change setting `name` where the interaction was used: Manage Messages needed (anyone in
    a DM); a change is said to the channel, a refusal only to the caller."""
    if not can_moderate(interaction.channel, interaction.user):
        await _private(interaction, NEEDS_MANAGE_MESSAGES)
        return
    channel = interaction.channel
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    change = await change_setting(bot, interaction.channel_id or 0, parent_id, name, value)
    if not change.ok:
        await _private(interaction, change.text)
        return
    await interaction.response.send_message(change.text, allowed_mentions=NO_PINGS)


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


def show_settings(values: dict[str, str | None], defaults: dict[str, str]) -> str:
    """One line per setting: its value here, marked when it is the default."""
    lines = ["**Settings in this channel**"]
    for name, option in OPTIONS.items():
        own = values.get(name)
        shown = own if own is not None else defaults[name]
        if name == "persona":
            shown = f"{shown[:80]}…" if len(shown) > 80 else shown
        tag = "" if own is not None else " (default)"
        lines.append(f"- `{name}`: {shown or '—'}{tag} — {option.description}")
    lines.append("-# Change one with `/settings set` (needs Manage Messages).")
    return "\n".join(lines)[:2000]


class Settings(commands.Cog):
    """Show and change the channel's settings."""

    group = app_commands.Group(name="settings", description="This channel's settings.")

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot

    async def _current(self, interaction: discord.Interaction) -> dict[str, str | None]:
        channel = interaction.channel
        parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
        settings = await channel_settings(self.bot.store, interaction.channel_id or 0, parent_id)
        return {name: getattr(settings, name) for name in OPTIONS}

    def _defaults(self) -> dict[str, str]:
        defaults = {name: option.default for name, option in OPTIONS.items()}
        defaults["model"] = self.bot.settings.gemini_model
        defaults["persona"] = "the default persona"
        return defaults

    @group.command(name="show", description="List this channel's settings and their defaults.")
    async def show(self, interaction: discord.Interaction) -> None:
        """Everyone may look; the answer is private."""
        text = show_settings(await self._current(interaction), self._defaults())
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @group.command(name="set", description="Change one of this channel's settings.")
    @app_commands.describe(option="The setting", value="Its new value, or 'default'")
    @app_commands.choices(option=[app_commands.Choice(name=n, value=n) for n in OPTIONS])
    async def set_(
        self,
        interaction: discord.Interaction,
        option: str,
        value: app_commands.Range[str, 1, PERSONA_LIMIT],
    ) -> None:
        """Needs Manage Messages; the value is checked as the option wants (see
        bot/setting_change.py), also for the persona and the model."""
        await apply(self.bot, interaction, option, value)

    @set_.autocomplete("value")
    async def _values(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        option = getattr(interaction.namespace, "option", "") or ""
        if option not in OPTIONS:
            return []
        names = await suggestions(self.bot, option, current)
        return [app_commands.Choice(name=n, value=n) for n in names]


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Settings(bot))
