"""The buttons under a reply, and what a click on each does.

The renderer puts `reply_buttons(request, live)` on the reply's last message (see
`render_stream`); a click comes back as a component interaction whose custom id one of the
DynamicItems below matches, so no per-message state lives in discord.py. Stop while the reply
streams; Regenerate on the channel's newest finished reply (see bot/regenerate.py); Thoughts
and Search Suggestions on every finished reply that has them (bot/model_reply.py).
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.checks import may_stop
from bot.model_reply import THOUGHTS
from bot.regenerate import REGENERATE, regenerate
from bot.sink import NO_PINGS
from bot.splitting import split_message
from bot.streaming import Button, Buttons

if TYPE_CHECKING:
    from bot.answer import Request
    from bot.app import Gemcord

log = logging.getLogger(__name__)

STOP = "gemcord:stop"
NOT_YOURS = "Only the person who asked, or a moderator, can stop this reply."
FINISHED = "This reply has already finished."
NO_THOUGHTS = "The thoughts behind this reply are no longer stored."
MAX_PAGES = 3
"""A thought summary longer than this many messages is sent as a file."""


def reply_buttons(request: Request, live: bool) -> Buttons:
    """Stop while the reply streams. Once it is final: Regenerate, if it is the channel's
    newest reply and answers a message (a newer reply's start takes it off again), then the
    buttons it keeps: Thoughts and Search Suggestions (see `lasting_buttons`)."""
    stop = (Button("Stop", action=STOP, emoji="🛑"),)
    if request.question.private:  # only its asker sees it: it leaves the channel's alone
        return stop if live else ()
    offers = cast("Gemcord", request.bot).offers
    channel_id, turn_id = request.question.channel_id, request.turn_id or 0
    if live:
        offers.started(channel_id, turn_id)
        return stop
    lasting = request.reply.buttons(turn_id)
    if request.question.message_id is None:
        # An interaction's answer (/ask, a message action): only that interaction may edit its
        # messages, so it cannot be regenerated in place; it is newer than the others all the same.
        offers.started(channel_id, turn_id)
        return lasting
    if not offers.finishing(channel_id, turn_id):
        return lasting
    return (Button("Regenerate", action=REGENERATE, emoji="🔁"), *lasting)


class StopButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.escape(STOP)):
    """🛑 Stop under a streaming reply: the asker or a moderator stops it at once."""

    def __init__(self) -> None:
        super().__init__(discord.ui.Button(label="Stop", custom_id=STOP, emoji="🛑"))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> StopButton:
        """Every Stop button is the same: the message clicked says which reply."""
        return cls()

    async def callback(self, interaction: discord.Interaction[Gemcord]) -> None:  # type: ignore[override]
        """Stop the reply (no message: its final write removes the button), or say why not."""
        bot = interaction.client
        message_id = interaction.message.id if interaction.message else 0
        reply = bot.inflight.by_message(message_id)
        if reply is None:
            await _private(interaction, FINISHED)
            return
        if not may_stop(reply.requester_id, interaction.user, interaction.channel):
            log.info("refused a Stop click by %s on a reply", interaction.user.id)
            await _private(interaction, NOT_YOURS)
            return
        await interaction.response.defer()
        if reply.token.cancel("stopped", interaction.user.id):
            log.info(
                "reply in channel %s stopped by %s (button)", reply.channel_id, interaction.user.id
            )


class ThoughtsButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"gemcord:thoughts:(?P<turn>\d+)"
):
    """💭 Thoughts under a finished reply: its thought summary, shown only to the clicker."""

    def __init__(self, turn_id: int) -> None:
        super().__init__(
            discord.ui.Button(label="Thoughts", custom_id=THOUGHTS.format(turn=turn_id), emoji="💭")
        )
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ThoughtsButton:
        """The custom id names the stored reply."""
        return cls(int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Gemcord]) -> None:  # type: ignore[override]
        """Send the stored thought summary privately, in as many messages as it takes."""
        turn = await interaction.client.store.get_turn(self.turn_id)
        parts = turn.parts if turn is not None and turn.role == "model" else []
        summary = "\n\n".join(p.text.strip() for p in parts if p.kind == "thought")
        if not summary.strip():
            await _private(interaction, NO_THOUGHTS)
            return
        pages = split_message(f"**💭 Thoughts**\n{summary.strip()}")
        if len(pages) > MAX_PAGES:
            file = discord.File(io.BytesIO(summary.encode()), filename="thoughts.md")
            await interaction.response.send_message(
                "**💭 Thoughts** (long: attached)",
                file=file,
                ephemeral=True,
                allowed_mentions=NO_PINGS,
            )
            return
        await _private(interaction, pages[0])
        for page in pages[1:]:
            await interaction.followup.send(page, ephemeral=True, allowed_mentions=NO_PINGS)


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


class RegenerateButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.escape(REGENERATE)
):
    """🔁 Regenerate under the channel's newest finished reply."""

    def __init__(self) -> None:
        super().__init__(discord.ui.Button(label="Regenerate", custom_id=REGENERATE, emoji="🔁"))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RegenerateButton:
        """Every Regenerate button is the same: the message clicked says which reply."""
        return cls()

    async def callback(self, interaction: discord.Interaction[Gemcord]) -> None:  # type: ignore[override]
        """Answer the question again into the same messages, or say privately why not."""
        await regenerate(interaction.client, interaction, reply_buttons)
