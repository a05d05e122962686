"""🔁 Regenerate: a new answer to the channel's last question, streamed into the same messages.

The button is on the final write of the channel's newest finished reply (see
`bot.buttons.reply_buttons`); :class:`Offers` takes it off that message when a newer reply
starts in the channel. A click by the asker or a moderator answers the stored question again
(`Question.asked_as`): the new answer overwrites the old messages in place (extra ones are
deleted), and the old reply stays in the store marked "replaced".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord

from bot.admission import QueueFull
from bot.answer import Request, answer
from bot.budget import over_budget
from bot.checks import allowed_here, may_stop
from bot.conversation import Question
from bot.model_reply import stored_buttons
from bot.sink import NO_PINGS, ChannelSink, view_of
from bot.streaming import Buttons
from storage import Media, Turn

if TYPE_CHECKING:
    from bot.app import Gemcord

log = logging.getLogger(__name__)

REGENERATE = "gemcord:regenerate"
NOT_YOURS = "Only the person who asked, or a moderator, can regenerate this answer."
NOT_LAST = "Only the newest answer here can be regenerated."
BUSY = "This answer is still being written."
GONE = "This answer can't be regenerated any more."


class Offers:
    """Which reply in each channel shows a Regenerate button: only the newest one."""

    def __init__(self, bot: Gemcord) -> None:
        self.bot = bot
        self.newest: dict[int, int] = {}
        """Per channel: the newest reply (model turn) that started streaming."""
        self.shown: dict[int, int] = {}
        """Per channel: the reply whose last message carries the button."""
        self._tasks: set[asyncio.Task[None]] = set()

    def started(self, channel_id: int, turn_id: int) -> None:
        """A reply starts streaming: an older reply's button goes."""
        self.newest[channel_id] = max(turn_id, self.newest.get(channel_id, 0))
        self._replace(channel_id, None)

    def finishing(self, channel_id: int, turn_id: int) -> bool:
        """A reply is about to be written in its final state (perhaps its first write):
        whether it gets the button, not when a newer reply started meanwhile."""
        if turn_id < self.newest.get(channel_id, 0):
            return False
        self.newest[channel_id] = turn_id
        self._replace(channel_id, turn_id)
        return True

    def _replace(self, channel_id: int, turn_id: int | None) -> None:
        """`turn_id` (None: no reply) shows the button now; the one that did loses it."""
        old = self.shown.pop(channel_id, None)
        if turn_id is not None:
            self.shown[channel_id] = turn_id
        if old is not None and old != turn_id:
            task = asyncio.create_task(self._take_off(channel_id, old))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def taken(self, channel_id: int) -> None:
        """The button was removed with the click's own response."""
        self.shown.pop(channel_id, None)

    async def _take_off(self, channel_id: int, turn_id: int) -> None:
        turn = await self.bot.store.get_turn(turn_id)
        if turn is None or not turn.message_ids:
            return
        channel = self.bot.get_partial_messageable(channel_id, guild_id=turn.guild_id)
        try:
            async with self.bot.pacers.get(channel_id).budget("edit").write():
                await channel.get_partial_message(turn.message_ids[-1]).edit(
                    view=view_of(stored_buttons(turn)), allowed_mentions=NO_PINGS
                )
        except discord.HTTPException as exc:
            log.info("could not take the Regenerate button off %s: %s", turn.message_ids, exc)


class ReuseSink:
    """A sink that writes a regenerated answer into the old answer's messages first (edits),
    then sends new ones; :meth:`drop_unused` deletes the old messages it did not need."""

    def __init__(self, inner: ChannelSink, message_ids: list[int]) -> None:
        self.inner = inner
        self.unused = list(message_ids)

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        """The next old message, rewritten; a new message once they are used up."""
        if self.unused:
            message_id = self.unused.pop(0)
            await self.inner.edit(message_id, text, buttons)
            return message_id
        return await self.inner.send(text, buttons)

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        """As the inner sink."""
        await self.inner.edit(message_id, text, buttons)

    async def typing(self) -> None:
        """As the inner sink."""
        await self.inner.typing()

    async def drop_unused(self) -> None:
        """Delete the old messages the new answer did not fill."""
        channel = self.inner.channel
        for message_id in self.unused:
            try:
                await channel.get_partial_message(message_id).delete()  # type: ignore[attr-defined]
            except discord.HTTPException as exc:
                log.info("could not delete message %s of a replaced answer: %s", message_id, exc)
        self.unused = []


async def regenerate(
    bot: Gemcord,
    interaction: discord.Interaction,
    buttons: Callable[[Request, bool], Buttons],
) -> None:
    """A click on a Regenerate button (see the module doc); `buttons` for the new answer."""
    message = interaction.message
    channel = interaction.channel
    turn = await bot.store.find_turn_by_message(message.id) if message else None
    asked = await bot.store.get_turn(turn.reply_to) if turn and turn.reply_to else None
    if message is None or turn is None or asked is None or turn.hidden is not None:
        await _take_off(interaction, GONE)
        return
    if not may_stop(asked.author_id, interaction.user, channel):
        log.info("refused a Regenerate click by %s", interaction.user.id)
        await _private(interaction, NOT_YOURS)
        return
    if bot.inflight.by_message(message.id) is not None:
        await _private(interaction, BUSY)
        return
    if not await _newest(bot, turn):
        await _take_off(interaction, NOT_LAST, stored_buttons(turn))
        return
    if not allowed_here(bot.settings, channel, interaction.user):
        await _private(interaction, "I'm not enabled in this channel.")
        return
    refusal = bot.breaker.blocked()
    why = refusal.user_message if refusal else await over_budget(bot, channel, interaction.user)
    if why:
        await _private(interaction, why)
        return
    try:
        slot = bot.admission.try_enter(turn.channel_id, asked.author_id)
    except QueueFull:
        await _private(interaction, "⏳ I'm answering a lot here right now: try again in a minute.")
        return
    try:
        # The button goes at once, with the click's own response: no channel write.
        await interaction.response.edit_message(view=None, allowed_mentions=NO_PINGS)
        bot.offers.taken(turn.channel_id)
        log.info("regenerating reply %s at the request of %s", turn.id, interaction.user.id)
        sink = ReuseSink(ChannelSink(channel, None), turn.message_ids)  # type: ignore[arg-type]
        await answer(bot, _again(asked, channel), sink, slot=slot, buttons=buttons)
        await sink.drop_unused()
    finally:
        slot.release()


def _again(asked: Turn, channel: object) -> Question:
    """The stored question, to be answered again."""
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    return Question(
        channel_id=asked.channel_id,
        author_id=asked.author_id,
        author_name=asked.author_name,
        text=asked.text,
        guild_id=asked.guild_id,
        thread_id=asked.thread_id,
        message_id=asked.message_ids[0] if asked.message_ids else None,
        images=[Media(i.data, i.mime_type, i.name) for i in asked.images if i.data is not None],
        in_dm=asked.guild_id is None,
        parent_id=parent_id,
        asked_as=asked.id,
    )


async def _newest(bot: Gemcord, turn: Turn) -> bool:
    """Whether the reply answers the newest question still in its channel's history."""
    recent = await bot.store.load_history(
        turn.channel_id, max_turns=4, max_tokens=2**31, image_turns=0
    )
    questions = [t.id for t in recent if t.role == "user"]
    return bool(questions) and questions[-1] == turn.reply_to


async def _take_off(interaction: discord.Interaction, text: str, keep: Buttons = ()) -> None:
    """Remove the stale button (the click's own response; the `keep` ones stay) and tell the
    clicker why."""
    await interaction.response.edit_message(view=view_of(keep), allowed_mentions=NO_PINGS)
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
