"""The renderer's MessageSink over discord.py: a channel reply, or an interaction response."""

from __future__ import annotations

import asyncio
import io
import logging

import discord

from bot.streaming import Buttons, SinkMessageGone, SinkRateLimited

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()


def view_of(buttons: Buttons) -> discord.ui.View | None:
    """The buttons as a discord.py view (None: no components).

    The view is stopped before it is sent, so discord.py keeps no copy of it per message:
    clicks are dispatched by custom id to the bot's DynamicItems (bot/buttons.py) instead.
    """
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for b in buttons:
        if b.url:
            view.add_item(discord.ui.Button(label=b.label, url=b.url, emoji=b.emoji or None))
        else:
            view.add_item(
                discord.ui.Button(
                    label=b.label,
                    custom_id=b.action,
                    emoji=b.emoji or None,
                    style=discord.ButtonStyle.secondary,
                )
            )
    view.stop()
    return view


def _files(files: list[tuple[str, bytes]]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), filename=name) for name, data in files]


THREAD_ARCHIVED = 50083
"""Discord's error code for a write in a thread someone archived (or locked) meanwhile."""


def _translate(exc: discord.HTTPException) -> Exception:
    # Deleted, archived, or no longer allowed to write here: either way the reply cannot go
    # on, and retrying a 403 only counts towards Discord's invalid-request ban.
    if isinstance(exc, discord.NotFound | discord.Forbidden) or exc.code == THREAD_ARCHIVED:
        return SinkMessageGone(str(exc))
    if exc.status == 429:
        retry = getattr(exc, "retry_after", None) or 1.0
        return SinkRateLimited(float(retry))
    return exc


class ChannelSink:
    """Posts the first message as a non-pinging reply to the question, the rest in the channel."""

    def __init__(
        self, channel: discord.abc.Messageable, question: discord.Message | None = None
    ) -> None:
        self.channel = channel
        self.question = question
        self._messages: dict[int, discord.Message] = {}

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        """Send a new message; the first one references the question without pinging."""
        reference = None
        if self.question is not None and not self._messages:
            reference = self.question.to_reference(fail_if_not_exists=False)
        extra = {"view": view} if (view := view_of(buttons)) else {}
        try:
            # a view only when there are buttons (discord.py types a given view as not None)
            msg = await self.channel.send(  # type: ignore[call-overload]
                text,
                reference=reference,
                mention_author=False,
                allowed_mentions=NO_PINGS,
                **extra,
            )
        except discord.HTTPException as exc:
            raise _translate(exc) from exc
        self._messages[msg.id] = msg
        return msg.id

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        """Replace a message's content and buttons (mentions off again: edits parse them too)."""
        msg = self._messages.get(message_id)
        view = view_of(buttons)
        try:
            if msg is not None:
                self._messages[message_id] = await msg.edit(
                    content=text, view=view, allowed_mentions=NO_PINGS
                )
            else:
                partial = self.channel.get_partial_message(message_id)  # type: ignore[attr-defined]
                await partial.edit(content=text, view=view, allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            raise _translate(exc) from exc

    async def attach(self, message_id: int, files: list[tuple[str, bytes]]) -> None:
        """Add files to a message already written (its text and buttons stay)."""
        msg = self._messages.get(message_id) or self.channel.get_partial_message(message_id)  # type: ignore[attr-defined]
        try:
            await msg.edit(attachments=_files(files), allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            raise _translate(exc) from exc

    async def typing(self) -> None:
        """Show 'Gemcord is typing…' (Discord keeps it for about 10 seconds).

        The request is shielded: the renderer stops typing by cancelling, and discord.py 2.7.1
        never reopens its global rate-limit gate if a request is cancelled while it waits out
        a global 429, which would freeze every later request of the bot.
        """
        await asyncio.shield(self._typing_once())

    async def _typing_once(self) -> None:
        try:
            await self.channel.typing()
        except Exception as exc:  # it finishes on its own: nobody is left to tell
            log.debug("typing indicator failed: %r", exc)


class InteractionSink:
    """For a deferred slash command: the first text fills the original response, then follow-ups."""

    def __init__(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        """Follow-ups only the user sees, like the (ephemeral) deferred response."""
        self._original = False
        self._followups: dict[int, discord.WebhookMessage] = {}
        self._original_id: int | None = None

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        """The first call edits the deferred response; later calls send follow-up messages."""
        view = view_of(buttons)
        try:
            if not self._original:
                msg = await self.interaction.edit_original_response(
                    content=text, view=view, allowed_mentions=NO_PINGS
                )
                self._original, self._original_id = True, msg.id
                return msg.id
            extra = {"view": view} if view else {}
            follow = await self.interaction.followup.send(  # type: ignore[call-overload]
                text, wait=True, ephemeral=self.ephemeral, allowed_mentions=NO_PINGS, **extra
            )
        except discord.HTTPException as exc:
            raise _translate(exc) from exc
        self._followups[follow.id] = follow
        return follow.id

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        """Edit the original response or one of the follow-ups."""
        view = view_of(buttons)
        try:
            if message_id == self._original_id:
                await self.interaction.edit_original_response(
                    content=text, view=view, allowed_mentions=NO_PINGS
                )
            else:
                await self.interaction.followup.edit_message(
                    message_id, content=text, view=view, allowed_mentions=NO_PINGS
                )
        except discord.HTTPException as exc:
            raise _translate(exc) from exc

    async def attach(self, message_id: int, files: list[tuple[str, bytes]]) -> None:
        """Add files to the original response or a follow-up (its text and buttons stay)."""
        try:
            if message_id == self._original_id:
                await self.interaction.edit_original_response(
                    attachments=_files(files), allowed_mentions=NO_PINGS
                )
            else:
                await self.interaction.followup.edit_message(
                    message_id, attachments=_files(files), allowed_mentions=NO_PINGS
                )
        except discord.HTTPException as exc:
            raise _translate(exc) from exc

    async def typing(self) -> None:
        """A deferred interaction already shows 'is thinking…'."""
