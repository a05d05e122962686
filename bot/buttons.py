"""The buttons under a reply, and what a click on each does.

The renderer puts `reply_buttons(request, live)` on the reply's last message (see
`render_stream`); a click comes back as a component interaction whose custom id one of the
DynamicItems below matches, so no per-message state lives in discord.py.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot.checks import may_stop
from bot.sink import NO_PINGS
from bot.streaming import Button, Buttons

if TYPE_CHECKING:
    from bot.answer import Request
    from bot.app import Gemcord

log = logging.getLogger(__name__)

STOP = "gemcord:stop"
NOT_YOURS = "Only the person who asked, or a moderator, can stop this reply."
FINISHED = "This reply has already finished."


def reply_buttons(request: Request, live: bool) -> Buttons:
    """Stop while the reply streams; its final message carries none of these."""
    return (Button("Stop", action=STOP, emoji="🛑"),) if live else ()


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


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
