"""Conversation: mentions, replies to the bot, DMs, /ask, and the channel's memory and settings."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import re
import time
import unicodedata
from collections import OrderedDict
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.addressing import addressed_elsewhere, mentions_me
from bot.admission import QueueFull, Slot
from bot.answer import ArrivalOrder, Ticket, answer, channel_settings
from bot.app import Gemcord
from bot.attachments import (
    Collected,
    collect_files,
    human_size,
    limits_from,
    precheck,
    refusal,
)
from bot.budget import over_budget
from bot.buttons import reply_buttons
from bot.checks import allowed_here, can_moderate
from bot.cogs.settings import apply as apply_setting
from bot.conversation import Question, Quote
from bot.files import delete_gone_uploads
from bot.forget import forget_everything, forget_last_exchange
from bot.inflight import stop_summary
from bot.linked import forwarded, linked
from bot.options import effective, is_on
from bot.setting_change import suggestions
from bot.sink import NO_PINGS, ChannelSink, InteractionSink
from bot.threads import open_thread
from storage import ChannelSettings

log = logging.getLogger(__name__)

ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
BARE_MENTION_HINT = (
    "Hi! Ask me anything: mention me with your question (you can attach files), "
    "reply to one of my messages, or use `/ask`."
)


NEEDS_MANAGE_MESSAGES = "You need the Manage Messages permission to do that."
COOLDOWN_NOTICE_TTL = 8.0
SEEN_LIMIT = 4096
WAITING = "⏳"
RESTARTING = "↻ I'm restarting — ask again in a moment."
QUEUE_FULL = "⏳ I'm answering a lot of questions here right now: please ask again in a minute."


def cooldown_notice(wait: float) -> str:
    """The short notice for someone asking again too soon."""
    seconds = max(1, math.ceil(wait))
    return f"⏳ Easy there — you can ask again in {seconds} s."


UPLOAD_LIMIT = 10 * 1024 * 1024
"""Bytes one upload may have where Discord says no more (outside a server: its default)."""
HISTORY_COOLDOWN = 60.0
"""Seconds between two /history exports of one person."""


def split_bytes(data: bytes, limit: int) -> list[bytes]:
    """`data` in parts of at most `limit` bytes, cut after a newline where there is one."""
    parts: list[bytes] = []
    while len(data) > limit:
        cut = data.rfind(b"\n", 0, limit) + 1 or limit
        parts.append(data[:cut])
        data = data[cut:]
    return [*parts, data]


def own_role(message: discord.Message) -> discord.Role | None:
    """The bot's managed role in the message's server (people often mention it by mistake)."""
    guild = message.guild
    return guild.self_role if guild is not None else None


def prompt_text(message: discord.Message, bot_id: int) -> str:
    """The message text with the bot's mention removed and other mentions made readable;
    empty when only invisible characters are left."""
    text = message.content.replace(f"<@{bot_id}>", "").replace(f"<@!{bot_id}>", "")
    if (role := own_role(message)) is not None:
        text = text.replace(f"<@&{role.id}>", "")
    for user in message.mentions:
        name = f"@{user.display_name}"
        text = text.replace(f"<@{user.id}>", name).replace(f"<@!{user.id}>", name)
    for role in message.role_mentions:
        text = text.replace(f"<@&{role.id}>", f"@{role.name}")
    for channel in message.channel_mentions:
        text = text.replace(f"<#{channel.id}>", f"#{channel.name}")
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    return text if visible(text) else ""


def visible(text: str) -> bool:
    """Whether the text has a character that shows (not only spaces and invisible format
    characters such as zero-width spaces)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def shorten(text: str, limit: int = 2000) -> str:
    """Text that fits one Discord message, cut with an ellipsis when it must be."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def my_permissions(channel: object) -> discord.Permissions | None:
    """The bot's permissions in a server channel (None in a DM, or when they are unknown)."""
    guild = getattr(channel, "guild", None)
    me = getattr(guild, "me", None)
    if me is None:
        return None
    try:
        return channel.permissions_for(me)  # type: ignore[attr-defined]
    except (AttributeError, TypeError, discord.ClientException):
        return None


def can_write(channel: object, perms: discord.Permissions | None) -> bool:
    """Whether the bot may post in the channel (in a thread: send messages in threads)."""
    if perms is None:
        return True
    if isinstance(channel, discord.Thread):
        return perms.send_messages_in_threads
    return perms.send_messages


def can_reference(perms: discord.Permissions | None) -> bool:
    """Whether the bot may post a Discord reply (that needs Read Message History)."""
    return perms is None or perms.read_message_history


def guild_and_thread_ids(channel: object) -> tuple[int | None, int | None]:
    """(guild id, thread id) of a channel."""
    guild = getattr(channel, "guild", None)
    thread = channel.id if isinstance(channel, discord.Thread) else None
    return (guild.id if guild else None), thread


class Chat(commands.Cog):
    """Answers questions and manages each channel's memory, persona and model."""

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot
        self.limits = limits_from(bot.settings)
        self.order = ArrivalOrder()
        self.seen: OrderedDict[int, None] = OrderedDict()
        """Recent message ids, so a duplicate delivery is dropped before anything is done."""
        self.noticed: dict[tuple[int, int], float] = {}
        """When each (channel, user) last got a notice."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.thread_fallback_told: set[int] = set()
        """Channels told once why their auto-thread could not be opened."""
        self.history_cooldown: commands.CooldownMapping[int] = (
            commands.CooldownMapping.from_cooldown(1, HISTORY_COOLDOWN, lambda user_id: user_id)
        )

    # --- messages -------------------------------------------------------------------------

    async def _is_reply_to_bot(self, message: discord.Message) -> bool:
        ref = message.reference
        if ref is None or ref.message_id is None or self.bot.user is None:
            return False
        if ref.type is not discord.MessageReferenceType.reply:
            return False  # a forward, not a reply
        resolved = ref.resolved
        if isinstance(resolved, discord.Message):
            return resolved.author.id == self.bot.user.id
        turn = await self.bot.store.find_turn_by_message(ref.message_id)
        return turn is not None and turn.role == "model"

    async def _quote(
        self, message: discord.Message
    ) -> tuple[Quote | None, list[discord.Attachment]]:
        """The message this one replies to (fetched if Discord did not include it), if any, and
        its files when they should go along (someone else's message the bot has not stored)."""
        ref = message.reference
        if ref is None or ref.message_id is None or self.bot.user is None:
            return None, []
        if ref.type is not discord.MessageReferenceType.reply:
            return None, []
        resolved = ref.resolved or ref.cached_message
        if resolved is None:
            try:
                resolved = await message.channel.fetch_message(ref.message_id)
            except discord.HTTPException as exc:
                log.info("could not fetch the message %s replies to: %s", message.id, exc)
                return None, []
        if not isinstance(resolved, discord.Message):
            return None, []  # deleted
        bot_id = self.bot.user.id
        quote = Quote(
            message_id=resolved.id,
            author_name=resolved.author.display_name,
            text=prompt_text(resolved, bot_id),
            by_bot=resolved.author.id == bot_id,
        )
        files = list(resolved.attachments) if not quote.by_bot else []
        if files and await self.bot.store.find_turn_by_message(resolved.id) is not None:
            files = []  # asked before: its files are in the history already
        return quote, files

    async def _voice_for_me(self, message: discord.Message) -> bool:
        """Whether a voice message is meant for the bot without a mention (it cannot carry
        one): in a thread where the bot has been answering."""
        if not message.flags.voice or not isinstance(message.channel, discord.Thread):
            return False
        if self.bot.user is not None and message.channel.owner_id == self.bot.user.id:
            return True
        recent = await self.bot.store.load_history(message.channel.id, max_turns=4)
        return any(turn.role == "model" for turn in recent)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer mentions, replies to the bot and DMs; ignore bots and system messages."""
        me = self.bot.user
        if me is None or message.author.bot or message.webhook_id is not None:
            return
        if message.type not in ANSWERED_TYPES:
            return
        in_dm = message.guild is None
        if not in_dm and addressed_elsewhere(message, me.id):
            return  # @everyone, @here, or someone else's mention: not a question for the bot
        mentioned = mentions_me(message, me.id)
        free = not (in_dm or mentioned) and await self._answers_everything(message.channel)
        if not (in_dm or mentioned or free or message.reference is not None or message.flags.voice):
            return
        if self._seen_before(message.id):
            log.info("ignored a duplicate delivery of message %s", message.id)
            return
        if self.bot.closing:
            if in_dm or mentioned:
                await self._notice(message, RESTARTING)
            return
        if not allowed_here(self.bot.settings, message.channel, message.author):
            if in_dm or mentioned:
                log.info("ignored message %s: channel or roles not allowed", message.id)
            return
        if not can_write(message.channel, my_permissions(message.channel)):
            # Answering would spend Gemini quota on a reply Discord refuses (403s, too).
            if in_dm or mentioned:
                log.info("ignored message %s: no permission to write here", message.id)
            return
        # Taken before the first await: questions are stored in the order they arrived.
        ticket = self.order.ticket(message.channel.id)
        try:
            for_me = in_dm or mentioned or free or await self._is_reply_to_bot(message)
            if not (for_me or await self._voice_for_me(message)):
                return
            await self._handle(message, in_dm, ticket, hint=in_dm or mentioned)
        except Exception:
            log.exception("failed to answer message %s", message.id)
            await self._notice(message, "⚠ Something went wrong on my side; the error was logged.")
        finally:
            ticket.release()

    async def _answers_everything(self, channel: object) -> bool:
        """Whether every human message here is a question: a free-response channel
        (`answer_mode` "all", which its threads inherit), or a thread the bot opened."""
        me = self.bot.user
        if isinstance(channel, discord.Thread) and me is not None and channel.owner_id == me.id:
            return True
        if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
            return False
        parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
        settings = await channel_settings(self.bot.store, channel.id, parent_id)
        return effective(settings, "answer_mode") == "all"

    def _seen_before(self, message_id: int) -> bool:
        if message_id in self.seen:
            return True
        self.seen[message_id] = None
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
        return False

    async def _notice(
        self, message: discord.Message, text: str, delete_after: float | None = None
    ) -> None:
        """A short notice in reply to `message`: at most one per person and channel every
        `notice_seconds`, sent within the channel's message budget."""
        key = (message.channel.id, message.author.id)
        now = time.monotonic()
        if now - self.noticed.get(key, -math.inf) < self.bot.settings.notice_seconds:
            log.info("notice to %s in channel %s throttled: %s", key[1], key[0], text[:80])
            return
        self.noticed[key] = now
        if len(self.noticed) > SEEN_LIMIT:
            cutoff = now - self.bot.settings.notice_seconds
            self.noticed = {k: t for k, t in self.noticed.items() if t >= cutoff}
        reference = None
        if can_reference(my_permissions(message.channel)):
            reference = message.to_reference(fail_if_not_exists=False)
        try:
            async with self.bot.pacers.get(message.channel.id).budget("send").write():
                sent = await message.channel.send(
                    shorten(text),
                    reference=reference,  # type: ignore[arg-type]
                    mention_author=False,
                    allowed_mentions=NO_PINGS,
                )
            if delete_after is not None:
                await sent.delete(delay=delete_after)
        except discord.HTTPException as exc:
            log.warning("could not send a notice in channel %s: %s", message.channel.id, exc)

    async def _not_now(self, channel: object, author: object) -> str | None:
        """Why a question cannot go to Gemini now: the circuit breaker is open, or a daily
        token budget is spent (None: it can)."""
        if (refusal := self.bot.breaker.blocked()) is not None:
            return refusal.user_message
        return await over_budget(self.bot, channel, author)

    async def _show_waiting(self, message: discord.Message, admitted: asyncio.Event) -> None:
        """A ⏳ on a queued question from the moment it waits until it is admitted (where the
        bot may react: that needs Add Reactions and Read Message History)."""
        perms = my_permissions(message.channel)
        if perms is not None and not (perms.add_reactions and perms.read_message_history):
            return
        reactions = self.bot.pacers.get(message.channel.id).reactions
        try:
            async with reactions.write():
                await message.add_reaction(WAITING)
            await admitted.wait()
            async with reactions.write():
                await message.remove_reaction(WAITING, discord.Object(self.bot.user.id))  # type: ignore[union-attr]
        except discord.HTTPException as exc:
            log.info("could not show the waiting sign on %s: %s", message.id, exc)

    async def _drop(
        self,
        message: discord.Message,
        ticket: Ticket,
        text: str,
        delete_after: float | None = None,
        slot: Slot | None = None,
    ) -> None:
        """Turn a question down with a notice. It is never stored, so it gives up its place in
        the channel's arrival order and its admission slot first: the questions after it need
        not wait for the notice, which may wait seconds for the channel's send budget. The
        notice waits for the replies admitted before it to show their first message."""
        ticket.release()
        if slot is not None:
            slot.release()
        sends = self.bot.pacers.get(message.channel.id).budget("send")
        with contextlib.suppress(TimeoutError):  # at most a window later
            async with asyncio.timeout(sends.window):
                await self.bot.admission.replies_shown(message.channel.id)
        await self._notice(message, text, delete_after)

    async def _handle(
        self, message: discord.Message, in_dm: bool, ticket: Ticket, *, hint: bool = True
    ) -> None:
        assert self.bot.user is not None
        text = prompt_text(message, self.bot.user.id)
        author_id = message.author.id
        if text.lower() in ("stop", "/stop") and not message.attachments:
            count = self.bot.inflight.stop(message.channel.id, requester_id=author_id, by=author_id)
            ticket.release()
            await self._notice(message, stop_summary(count))
            return
        # Claimed before the first await, like the ticket: slots go in the order questions
        # arrived, whatever each one's checks below cost.
        slot: Slot | None = None
        with contextlib.suppress(QueueFull):  # refused once it passes the other checks
            slot = self.bot.admission.try_enter(message.channel.id, author_id)
        try:
            if slot is None or slot.waiting:  # the questions admitted before it go first
                await self.bot.admission.after_admitted()
            await self._checked(message, in_dm, ticket, slot, text, hint)
        finally:
            if slot is not None:
                slot.release()

    async def _checked(
        self,
        message: discord.Message,
        in_dm: bool,
        ticket: Ticket,
        slot: Slot | None,
        text: str,
        hint: bool,
    ) -> None:
        """Answer `message` once it passes the checks every question gets."""
        quote, quoted_files = await self._quote(message)
        context = forwarded(message) + await linked(self.bot, text, message.author)
        if context:
            text = "\n".join([*context, text]) if text else "\n".join(context)
        if not text and not message.attachments and (quote is None or quote.by_bot):
            if hint:  # a sticker or an empty message in a free-response channel: let it be
                await self._drop(message, ticket, BARE_MENTION_HINT, slot=slot)
            return
        author_id = message.author.id
        if wait := self.bot.cooldown_retry_after(author_id, consume=False):
            await self._drop(
                message, ticket, cooldown_notice(wait), delete_after=COOLDOWN_NOTICE_TTL, slot=slot
            )
            return
        if refused := await self._not_now(message.channel, message.author):
            await self._drop(message, ticket, refused, slot=slot)
            return
        collected = await collect_files([*message.attachments, *quoted_files], self.limits)
        if message.attachments and not collected.files:
            await self._drop(message, ticket, refusal(collected.problems), slot=slot)
            return
        if wait := self.bot.cooldown_retry_after(author_id):
            await self._drop(
                message, ticket, cooldown_notice(wait), delete_after=COOLDOWN_NOTICE_TTL, slot=slot
            )
            return
        if slot is None:
            await self._drop(message, ticket, QUEUE_FULL)
            return
        admitted = asyncio.Event()
        try:
            if slot.waiting:
                sign = asyncio.create_task(self._show_waiting(message, admitted))
                self.tasks.add(sign)
                sign.add_done_callback(self.tasks.discard)
            if collected.problems:
                await self._notice(message, "\n".join(collected.problems))
            channel: discord.abc.Messageable = message.channel
            replied = message if can_reference(my_permissions(channel)) else None
            if (thread := await self._auto_thread(message, text)) is not None:
                channel, replied = thread, None  # the thread is the answer's own conversation
            question = self._question(channel, message.author, text)
            question.message_id, question.images = message.id, collected.files
            question.notes = collected.notes
            question.in_dm, question.quote = in_dm, quote
            result = await answer(
                self.bot,
                question,
                ChannelSink(channel, replied),
                ticket,
                slot,
                on_admitted=admitted.set,
                buttons=reply_buttons,
            )
            if result is None and self.bot.closing:
                await self._notice(message, RESTARTING)  # it was still waiting for its turn
        finally:
            admitted.set()

    async def _auto_thread(self, message: discord.Message, text: str) -> discord.Thread | None:
        """Where `auto_thread` is on in a text channel: a public thread opened on the question
        and named after it. Without the permission (or when Discord refuses) None, and the
        channel is told why once."""
        channel = message.channel
        if not isinstance(channel, discord.TextChannel):
            return None
        if not is_on(await channel_settings(self.bot.store, channel.id, None), "auto_thread"):
            return None
        opened = await open_thread(message, text, my_permissions(channel))
        if isinstance(opened, discord.Thread):
            return opened
        if channel.id not in self.thread_fallback_told:
            self.thread_fallback_told.add(channel.id)
            await self._notice(
                message, f"-# Auto-threads are on here, but {opened}, so I answer in the channel."
            )
        return None

    @staticmethod
    def _question(channel: object, author: discord.abc.User, text: str) -> Question:
        """A question asked by `author` in `channel` (where its history and settings live)."""
        guild_id, thread_id = guild_and_thread_ids(channel)
        return Question(
            channel_id=channel.id,  # type: ignore[attr-defined]
            author_id=author.id,
            author_name=author.display_name,
            text=text,
            guild_id=guild_id,
            thread_id=thread_id,
            parent_id=getattr(channel, "parent_id", None) if thread_id else None,
        )

    # --- slash commands ---------------------------------------------------------------------

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Tell the user a command failed (the tree logs why), so it never stays 'thinking…'."""
        text = "⚠ Something went wrong on my side; the error was logged."
        try:
            if interaction.response.is_done():
                # After a deferral the first follow-up fills the "thinking…" message.
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
            else:
                await self._reply_privately(interaction, text)
        except discord.HTTPException as exc:
            log.warning("could not report a failed /%s: %s", interaction.command, exc)

    async def _reply_privately(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)

    async def _settings(self, interaction: discord.Interaction) -> ChannelSettings:
        """The settings in force where the command was used (a thread inherits its parent's)."""
        channel = interaction.channel
        parent_id = getattr(channel, "parent_id", None)
        if not isinstance(channel, discord.Thread):
            parent_id = None
        return await channel_settings(self.bot.store, interaction.channel_id or 0, parent_id)

    @app_commands.command(name="ask", description="Ask Gemini something, optionally about a file.")
    @app_commands.describe(
        prompt="Your question", image="A file to ask about: image, text, PDF, audio or video"
    )
    @app_commands.rename(image="file")
    async def ask(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        image: discord.Attachment | None = None,
    ) -> None:
        """Stream an answer as the response to the command."""
        if not allowed_here(self.bot.settings, interaction.channel, interaction.user):
            await self._reply_privately(interaction, "I'm not enabled in this channel.")
            return
        text = prompt.strip()
        if not text:
            await self._reply_privately(interaction, "Ask me something: the prompt is empty.")
            return
        await self.answer_interaction(interaction, text, [image] if image else [], strict=True)

    async def answer_interaction(
        self,
        interaction: discord.Interaction,
        text: str,
        files: list[discord.Attachment],
        *,
        strict: bool = False,
        quote: Quote | None = None,
        private: bool = False,
    ) -> None:
        """Answer `text` (with `files`, and the message it is about, `quote`) as the response
        to an interaction, after the checks every question gets. `strict`: a file that cannot
        be used refuses the question (else it goes without it, saying so); `private`: only
        the asker sees the exchange, which stays out of the channel's conversation."""
        user_id = interaction.user.id
        if wait := self.bot.cooldown_retry_after(user_id, consume=False):
            await self._reply_privately(interaction, cooldown_notice(wait))
            return
        if strict and (problems := [p for f in files if (p := precheck(f, self.limits))]):
            await self._reply_privately(interaction, refusal(problems))
            return
        if refused := await self._not_now(interaction.channel, interaction.user):
            await self._reply_privately(interaction, refused)
            return
        ticket = self.order.ticket(interaction.channel_id or 0)  # before the first await
        try:
            await interaction.response.defer(thinking=True, ephemeral=private)
            collected: Collected = await collect_files(files, self.limits)
            if strict and files and not collected.files:
                await interaction.edit_original_response(
                    content=refusal(collected.problems), allowed_mentions=NO_PINGS
                )
                return
            if wait := self.bot.cooldown_retry_after(user_id):
                await interaction.edit_original_response(
                    content=cooldown_notice(wait), allowed_mentions=NO_PINGS
                )
                return
            if context := await linked(self.bot, text, interaction.user):
                text = "\n".join([*context, text])
            question = self._question(interaction.channel, interaction.user, text)
            question.images, question.in_dm = collected.files, interaction.guild_id is None
            question.quote, question.private = quote, private
            question.notes = collected.notes
            try:
                slot = self.bot.admission.try_enter(question.channel_id, user_id)
            except QueueFull:
                await interaction.edit_original_response(
                    content=QUEUE_FULL, allowed_mentions=NO_PINGS
                )
                return
            try:
                sink = InteractionSink(interaction, ephemeral=private)
                await answer(self.bot, question, sink, ticket, slot, buttons=reply_buttons)
            finally:
                slot.release()
        finally:
            ticket.release()

    @app_commands.command(name="reset", description="Forget this channel's conversation.")
    async def reset(self, interaction: discord.Interaction) -> None:
        """Archive the channel's history (needs Manage Messages in a server)."""
        if not can_moderate(interaction.channel, interaction.user):
            await self._reply_privately(interaction, NEEDS_MANAGE_MESSAGES)
            return
        count = await self.bot.store.reset_channel(interaction.channel_id or 0)
        await interaction.response.send_message(
            f"🧹 Forgot this channel's conversation ({count} messages). "
            "I'll start fresh from the next question.",
            allowed_mentions=NO_PINGS,
        )

    @app_commands.command(name="history", description="Export this channel's conversation.")
    @app_commands.describe(fmt="File format")
    @app_commands.rename(fmt="format")
    async def history(
        self, interaction: discord.Interaction, fmt: Literal["markdown", "json"] = "markdown"
    ) -> None:
        """Send the channel's history (including archived turns) as files, only to the caller:
        one file when it fits Discord's upload limit, else parts to join in order."""
        bucket = self.history_cooldown.get_bucket(interaction.user.id)
        if bucket is not None and (wait := bucket.update_rate_limit()):
            await self._reply_privately(
                interaction, f"⏳ You can export again in {math.ceil(wait)} s."
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        channel_id = interaction.channel_id or 0
        export = (await self.bot.store.export_channel(channel_id, fmt)).encode()
        stats = await self.bot.store.stats(channel_id)
        limit = interaction.guild.filesize_limit if interaction.guild else UPLOAD_LIMIT
        parts = split_bytes(export, limit)
        suffix = "json" if fmt == "json" else "md"
        text = (
            f"This channel's conversation: {stats.user_turns} questions, "
            f"{stats.model_turns} replies."
        )
        if len(parts) > 1:
            text += (
                f" It is {human_size(len(export))}, over Discord's upload limit, so it comes in "
                f"{len(parts)} files: join them in order."
            )
        for n, part in enumerate(parts, 1):
            name = f"history.part{n}.{suffix}" if len(parts) > 1 else f"history.{suffix}"
            await interaction.followup.send(
                text if n == 1 else "",
                file=discord.File(io.BytesIO(part), filename=name),
                ephemeral=True,
                allowed_mentions=NO_PINGS,
            )

    @app_commands.command(
        name="model", description="Show or set the Gemini model for this channel."
    )
    @app_commands.describe(name="A model name such as gemini-2.5-flash, or 'default'")
    async def model(self, interaction: discord.Interaction, name: str | None = None) -> None:
        """Without a name, show the model; with one, set it (`/settings set option:model`)."""
        if name is None:
            used = (await self._settings(interaction)).model or self.bot.settings.gemini_model
            await self._reply_privately(interaction, f"This channel uses `{used}`.")
            return
        await apply_setting(self.bot, interaction, "model", name)

    @model.autocomplete("name")
    async def _model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await suggestions(self.bot, "model", current)
        return [app_commands.Choice(name=n, value=n) for n in names]

    @app_commands.command(name="persona", description="Show, set or clear this channel's persona.")
    @app_commands.describe(
        instruction="How the bot should behave here (the system instruction)",
        clear="Go back to the default persona",
    )
    async def persona(
        self,
        interaction: discord.Interaction,
        instruction: app_commands.Range[str, 1, 2000] | None = None,
        clear: bool = False,
    ) -> None:
        """Without arguments, show the persona; otherwise change it (as `/settings set`)."""
        if instruction is None and not clear:
            current = (await self._settings(interaction)).persona
            text = (
                f"This channel's persona:\n>>> {current}"
                if current
                else ("This channel uses the default persona.")
            )
            await self._reply_privately(interaction, text[:2000])
            return
        value = "default" if clear or instruction is None else instruction
        await apply_setting(self.bot, interaction, "persona", value)

    forget = app_commands.Group(name="forget", description="Delete what you said to me.")

    @forget.command(name="last", description="Delete your last question here and my answer.")
    async def forget_last(self, interaction: discord.Interaction) -> None:
        """Erase the caller's newest exchange in this channel's conversation (its reply is
        stopped first if it is still being answered, see bot/forget.py)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await forget_last_exchange(
            self.bot, interaction.user.id, interaction.channel_id or 0
        )
        log.info("forgot the last exchange (%d turns) of user %s", count, interaction.user.id)
        text = (
            "🧽 Done: I deleted your last question here and my answer to it from my memory."
            if count
            else "There is no question of yours in this conversation to forget."
        )
        await interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)

    @forget.command(name="all", description="Delete everything you said to me, in every channel.")
    @app_commands.describe(confirm="Yes, delete my questions and the replies to them")
    async def forget_all(self, interaction: discord.Interaction, confirm: bool) -> None:
        """Erase the caller's questions (and the replies to them) from the bot's memory."""
        if not confirm:
            await self._reply_privately(
                interaction, "Nothing deleted: run `/forget all confirm:True` to do it."
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        count = await forget_everything(self.bot, interaction.user.id)
        log.info("forgot %d turns of user %s at their request", count, interaction.user.id)
        await interaction.edit_original_response(
            content=f"🧽 Done: I deleted {count} message{'s' if count != 1 else ''} "
            "(your questions and my replies to them) from my memory, in every channel.",
            allowed_mentions=NO_PINGS,
        )
        # After the answer (Discord waits 3 s for it): Gemini's copies of those files go too.
        await delete_gone_uploads(self.bot.llm, self.bot.store)


async def setup(bot: Gemcord) -> None:
    """Extension entry point."""
    await bot.add_cog(Chat(bot))
