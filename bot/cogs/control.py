"""Control: 🛑 reactions and /stop, /stats, /help."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Gemcord
from bot.checks import can_moderate
from bot.sink import NO_PINGS

log = logging.getLogger(__name__)

STOP_ALIASES = ("⏹️", "⏹")

HELP = """\
**How to talk to me**
• Mention me with a question — I answer from this channel's conversation so far.
  Attach images (PNG, JPEG, WebP, HEIC, GIF) to ask about them.
• Reply to one of my messages to continue without a mention. In DMs, just write.
• React with 🛑 on my reply (or on your question) to stop it; the text so far stays.

**Commands**
`/ask` — ask, optionally with an image
`/stop` — stop your running reply here (`all`: every reply, for moderators)
`/reset` — forget this channel's conversation (moderators)
`/history` — get this channel's conversation as a file
`/model` — show or set the Gemini model for this channel (moderators)
`/persona` — show or set how I behave in this channel (moderators)
`/stats` — usage figures
"""


def _fmt_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


class Control(commands.Cog):
    """Stopping replies and telling people what the bot does."""

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot
        self.stop_emojis = {bot.settings.stop_emoji, *STOP_ALIASES}

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """🛑 on a streaming reply or on its question stops it, if the reactor may."""
        if str(payload.emoji) not in self.stop_emojis or payload.user_id == self.bot.user.id:  # type: ignore[union-attr]
            return
        reply = self.bot.inflight.by_message(payload.message_id)
        if reply is None:
            return
        channel = self.bot.get_channel(payload.channel_id)
        if payload.user_id != reply.requester_id and not can_moderate(channel, payload.member):
            log.info("ignored 🛑 from %s: neither the asker nor a moderator", payload.user_id)
            await self._remove_reaction(channel, payload)
            return
        if reply.token.cancel("stopped", payload.user_id):
            log.info(
                "reply in channel %s stopped by %s (reaction)", reply.channel_id, payload.user_id
            )

    async def _remove_reaction(
        self, channel: object, payload: discord.RawReactionActionEvent
    ) -> None:
        me = getattr(getattr(channel, "guild", None), "me", None)
        if me is None or not channel.permissions_for(me).manage_messages:  # type: ignore[attr-defined]
            return
        try:
            await channel.get_partial_message(payload.message_id).remove_reaction(  # type: ignore[attr-defined]
                payload.emoji, discord.Object(payload.user_id)
            )
        except discord.HTTPException:
            pass

    @app_commands.command(name="stop", description="Stop your running reply in this channel.")
    @app_commands.describe(all="Stop every running reply in this channel (moderators)")
    async def stop(self, interaction: discord.Interaction, all: bool = False) -> None:
        """Stop the caller's replies here, or with `all` (Manage Messages) every reply here."""
        channel_id = interaction.channel_id or 0
        if all and not can_moderate(interaction.channel, interaction.user):
            await interaction.response.send_message(
                "You need the Manage Messages permission to stop other people's replies.",
                ephemeral=True,
            )
            return
        count = self.bot.inflight.stop(
            channel_id, None if all else interaction.user.id, interaction.user.id
        )
        text = (
            f"Stopped {count} repl{'y' if count == 1 else 'ies'}."
            if count
            else ("Nothing is running here." if all else "Nothing of yours is running here.")
        )
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)

    @app_commands.command(name="stats", description="Usage figures for this channel and overall.")
    async def stats(self, interaction: discord.Interaction) -> None:
        """Questions, replies, tokens and latency, for this channel and the whole bot."""
        here = await self.bot.store.stats(interaction.channel_id or 0)
        everywhere = await self.bot.store.stats()
        lines = []
        for title, s in (("This channel", here), ("Everywhere", everywhere)):
            lines.append(
                f"**{title}** — {s.user_turns} questions, {s.model_turns} replies"
                + (f" in {s.channels} channels" if title == "Everywhere" else "")
                + f"; tokens in/out {s.prompt_tokens}/{s.output_tokens}; "
                f"first text {_fmt_ms(s.avg_first_chunk_latency)}, "
                f"whole reply {_fmt_ms(s.avg_total_time)} on average"
            )
            stopped = s.by_status.get("stopped", 0)
            failed = s.by_status.get("failed", 0) + s.by_status.get("blocked", 0)
            if stopped or failed:
                lines.append(f"  {stopped} stopped, {failed} failed or blocked")
        lines.append(f"Running now: {len(self.bot.inflight)} replies.")
        await interaction.response.send_message(
            "\n".join(lines), ephemeral=True, allowed_mentions=NO_PINGS
        )

    @app_commands.command(name="help", description="How to use this bot.")
    async def help(self, interaction: discord.Interaction) -> None:
        """Explain the bot in one message."""
        await interaction.response.send_message(HELP, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Control(bot))
