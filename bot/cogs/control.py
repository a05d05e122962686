"""Control: 🛑 reactions and /stop, /stats, /help."""

from __future__ import annotations

import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Gemcord
from bot.buttons import RegenerateButton, StopButton, ThoughtsButton
from bot.checks import can_moderate, may_stop
from bot.inflight import stop_summary
from bot.ledger import cache_ratio, percent
from bot.sink import NO_PINGS
from storage import TokenUsage, utc_day

log = logging.getLogger(__name__)

STOP_ALIASES = ("⏹️", "⏹")

HELP = """\
**How to talk to me**
• Mention me with a question — I answer from this channel's conversation so far.
  Attach files to ask about them: images, text and code, PDF, audio, video.
• Send me a voice message (in a DM, as a reply to me, or in my thread): I answer in text.
• Reply to one of my messages to continue without a mention. In DMs, just write.
• Press Stop under my reply, or react 🛑 to it (or to your question): the text so far stays.
• Press Regenerate under the newest answer for a new one in its place (asker or moderators).
• Right-click a message → Apps: **Ask Gemini about this** (a question about it, with its files),
  or **Summarize from here** (only you see the summary).
• Moderators choose per channel with `/settings`: whose conversation I see (`scope`: everyone's
  or each person's own), `auto_thread` (answer a mention in a new thread), `answer_mode`
  (`all`: every message is a question). I never answer @everyone, @here, or a message for
  someone else.
• I read web links and linked Discord messages in your question; 💭 Thoughts under a reply
  shows what I thought. Moderators may turn on Google Search and running code with `/settings`.

**Commands**
`/ask` — ask, optionally with a file
`/stop` — stop your running reply here (`all`: every reply, for moderators)
`/reset` — forget this channel's conversation (moderators)
`/history` — get this channel's conversation as a file
`/model` — show or set the Gemini model for this channel (moderators)
`/persona` — show or set how I behave in this channel (moderators)
`/settings` — `show` this channel's settings; `set` one (moderators)
`/stats` — usage figures
`/usage` — tokens used and their estimated cost (yours; moderators: channel or server)
`/budget` — this server's daily token budgets (Manage Server to change them)
`/forget` — `last`: your last question here and my answer; `all`: everything you said, everywhere
"""


REGISTRATION_WAIT = 3.0
"""How long a 🛑 on a message not (yet) known as part of a running reply waits for it."""
RECENT = 30.0
"""Only messages younger than this (by their snowflake's time) may still get registered."""


def _recent(message_id: int) -> bool:
    """Whether the message was created in the last :data:`RECENT` seconds (or in the future,
    by a clock that runs behind Discord's)."""
    created = discord.utils.snowflake_time(message_id)
    return (discord.utils.utcnow() - created).total_seconds() < RECENT


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _fmt_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


class Control(commands.Cog):
    """Stopping replies and telling people what the bot does."""

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot
        self.stop_emojis = {bot.settings.stop_emoji, *STOP_ALIASES}

    async def cog_load(self) -> None:
        """Clicks on Stop, Regenerate and Thoughts buttons come here whatever message they
        are on."""
        self.bot.add_dynamic_items(StopButton, RegenerateButton, ThoughtsButton)

    async def cog_unload(self) -> None:
        """No more button clicks."""
        self.bot.remove_dynamic_items(StopButton, RegenerateButton, ThoughtsButton)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """🛑 on a streaming reply (any of its messages) or on its question stops it, if the
        reactor may: the asker, or someone with Manage Messages in the channel. Anyone else's
        🛑 is removed when the bot has Manage Messages there, and otherwise left alone."""
        if str(payload.emoji) not in self.stop_emojis:
            return
        me = self.bot.user
        if me is None or payload.user_id == me.id:
            return
        reply = self.bot.inflight.by_message(payload.message_id)
        if reply is None and _recent(payload.message_id):
            # Maybe a reply message whose send has not returned yet, or a question still
            # being stored: wait (briefly) for it to be registered.
            reply = await self.bot.inflight.wait_for_message(payload.message_id, REGISTRATION_WAIT)
        if reply is None:
            return  # not a running reply (finished already, or never ours): nothing to do
        channel = None
        if payload.user_id != reply.requester_id:
            channel = await self._channel(payload.channel_id)
        if not may_stop(
            reply.requester_id, payload.member or discord.Object(payload.user_id), channel
        ):
            log.info(
                "ignored 🛑 from %s on a reply in channel %s: neither the asker nor a moderator",
                payload.user_id,
                reply.channel_id,
            )
            await self._remove_reaction(channel, payload)
            return
        if reply.token.cancel("stopped", payload.user_id):
            log.info(
                "reply in channel %s stopped by %s (reaction, %.1f s in)",
                reply.channel_id,
                payload.user_id,
                time.monotonic() - reply.started,
            )

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """A deleted question stops its reply and leaves history; a deleted reply leaves it."""
        await self._deleted([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        """Like a delete, for each message a moderator purged."""
        await self._deleted(sorted(payload.message_ids))

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        """A deleted channel's conversation and settings are deleted with it."""
        await self._channel_gone(channel.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        """So is a deleted thread's."""
        await self._channel_gone(payload.thread_id)

    async def _channel_gone(self, channel_id: int) -> None:
        self.bot.inflight.stop(channel_id, None, 0)
        count = await self.bot.store.purge_channel(channel_id)
        log.info("channel %s was deleted: %d turn(s) deleted with it", channel_id, count)

    async def _deleted(self, message_ids: list[int]) -> None:
        for message_id in message_ids:
            reply = self.bot.inflight.by_message(message_id)
            if reply is not None and reply.question_id == message_id:
                reply.token.cancel("deleted")
            turn = await self.bot.store.withdraw_message(message_id)
            if turn is not None:
                log.info("%s turn %d left history: its message was deleted", turn.role, turn.id)

    async def _channel(self, channel_id: int) -> object | None:
        """The channel from the cache, or from Discord when it is not cached (None if gone)."""
        channel = self.bot.get_channel(channel_id)
        if channel is not None:
            return channel
        try:
            return await self.bot.fetch_channel(channel_id)
        except discord.HTTPException as exc:
            log.warning("could not look up channel %s: %s", channel_id, exc)
            return None

    async def _remove_reaction(
        self, channel: object, payload: discord.RawReactionActionEvent
    ) -> None:
        """Take someone's 🛑 back off, only where the bot may (a refused call costs us)."""
        me = getattr(getattr(channel, "guild", None), "me", None)
        if me is None or not channel.permissions_for(me).manage_messages:  # type: ignore[attr-defined]
            return
        try:
            async with self.bot.pacers.get(payload.channel_id).reactions.write():
                await channel.get_partial_message(payload.message_id).remove_reaction(  # type: ignore[attr-defined]
                    payload.emoji, discord.Object(payload.user_id)
                )
        except discord.HTTPException as exc:
            log.info("could not remove a 🛑 from %s: %s", payload.user_id, exc)

    @app_commands.command(name="stop", description="Stop your running reply in this channel.")
    @app_commands.describe(all="Stop every running reply in this channel (moderators)")
    async def stop(self, interaction: discord.Interaction, all: bool = False) -> None:
        """Stop the caller's replies here, or with `all` (Manage Messages) every reply here."""
        channel_id = interaction.channel_id or 0
        user_id = interaction.user.id
        if all and not can_moderate(interaction.channel, interaction.user):
            await interaction.response.send_message(
                "You need the Manage Messages permission to stop other people's replies.",
                ephemeral=True,
                allowed_mentions=NO_PINGS,
            )
            return
        count = self.bot.inflight.stop(channel_id, None if all else user_id, user_id)
        if count:
            log.info(
                "%d repl%s in channel %s stopped by %s (/stop%s)",
                count,
                "y" if count == 1 else "ies",
                channel_id,
                user_id,
                " all" if all else "",
            )
        await interaction.response.send_message(
            stop_summary(count, everyone=all), ephemeral=True, allowed_mentions=NO_PINGS
        )

    @app_commands.command(name="stats", description="Usage figures for this channel and overall.")
    async def stats(self, interaction: discord.Interaction) -> None:
        """Questions, replies, tokens and latency, for this channel and the whole bot."""
        here = await self.bot.store.stats(interaction.channel_id or 0)
        everywhere = await self.bot.store.stats()
        lines = []
        for title, s in (("This channel", here), ("Everywhere", everywhere)):
            lines.append(
                f"**{title}** — {_count(s.user_turns, 'question')}, "
                f"{_count(s.model_turns, 'reply', 'replies')}"
                + (f" in {_count(s.channels, 'channel')}" if title == "Everywhere" else "")
                + f"; tokens in/out {s.prompt_tokens}/{s.output_tokens}"
                + (f", thinking {s.thoughts_tokens}" if s.thoughts_tokens else "")
                + "; "
                f"first text {_fmt_ms(s.avg_first_chunk_latency)}, "
                f"whole reply {_fmt_ms(s.avg_total_time)} on average"
            )
            stopped = s.by_status.get("stopped", 0) + s.by_status.get("interrupted", 0)
            failed = s.by_status.get("failed", 0) + s.by_status.get("blocked", 0)
            if stopped or failed:
                lines.append(f"  {stopped} stopped or interrupted, {failed} failed or blocked")
        lines.append(await self._cache_line(interaction.channel_id or 0))
        lines.append(f"Running now: {_count(len(self.bot.inflight), 'reply', 'replies')}.")
        await interaction.response.send_message(
            "\n".join(lines), ephemeral=True, allowed_mentions=NO_PINGS
        )

    async def _cache_line(self, channel_id: int) -> str:
        """Gemini's implicit cache hit ratio (cached ÷ prompt tokens), here and everywhere."""
        today = utc_day(self.bot.clock())
        ratios = []
        for where in ({"channel_id": channel_id}, {}):
            total = TokenUsage()
            for row in await self.bot.store.usage_by_model(0, today, **where):
                total += row.usage
            ratios.append(percent(cache_ratio(total)))
        return (
            f"Prompt cache hits (cached ÷ prompt tokens): {ratios[0]} here, {ratios[1]} everywhere."
        )

    @app_commands.command(name="help", description="How to use this bot.")
    async def help(self, interaction: discord.Interaction) -> None:
        """Explain the bot in one message."""
        await interaction.response.send_message(HELP, ephemeral=True, allowed_mentions=NO_PINGS)


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Control(bot))
