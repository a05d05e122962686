"""`/settings`: every per-channel setting in one place (see bot/options.py)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.answer import channel_settings
from bot.app import Gemcord
from bot.checks import can_moderate
from bot.options import OPTIONS, effective
from bot.sink import NO_PINGS

NEEDS_MANAGE_MESSAGES = "You need the Manage Messages permission to do that."
CHOICE_OPTIONS = [name for name, option in OPTIONS.items() if option.choices]


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
    @app_commands.choices(option=[app_commands.Choice(name=n, value=n) for n in CHOICE_OPTIONS])
    async def set_(self, interaction: discord.Interaction, option: str, value: str) -> None:
        """Needs Manage Messages; the value must be one of the option's choices or 'default'."""
        if not can_moderate(interaction.channel, interaction.user):
            await self._private(interaction, NEEDS_MANAGE_MESSAGES)
            return
        choices = OPTIONS[option].choices
        value = value.strip().lower()
        if value != "default" and value not in choices:
            await self._private(
                interaction,
                f"`{option}` can be {', '.join(f'`{c}`' for c in choices)} or `default`.",
            )
            return
        channel_id = interaction.channel_id or 0
        await self.bot.store.set_setting(channel_id, option, None if value == "default" else value)
        now = effective(await self.bot.store.get_channel_settings(channel_id), option)
        await interaction.response.send_message(
            f"`{option}` is now `{now}` in this channel.", allowed_mentions=NO_PINGS
        )

    @set_.autocomplete("value")
    async def _values(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        option = OPTIONS.get(getattr(interaction.namespace, "option", "") or "")
        names = [*option.choices, "default"] if option else ["default"]
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n]

    async def _private(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Settings(bot))
