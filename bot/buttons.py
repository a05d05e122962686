"""The buttons under a reply, and what a click on each does.

The renderer puts `reply_buttons(request, live)` on the reply's last message (see
`render_stream`); a click comes back as a component interaction whose custom id one of the
DynamicItems below matches, so no per-message state lives in discord.py.
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot.checks import may_stop
from bot.sink import NO_PINGS
from bot.splitting import split_message
from bot.streaming import Button, Buttons

if TYPE_CHECKING:
    from bot.answer import Request
    from bot.app import Gemcord

log = logging.getLogger(__name__)

STOP = "gemcord:stop"
THOUGHTS = "gemcord:thoughts:{turn}"
NOT_YOURS = "Only the person who asked, or a moderator, can stop this reply."
FINISHED = "This reply has already finished."
NO_THOUGHTS = "The thoughts behind this reply are no longer stored."
MAX_SUGGESTIONS = 5
"""Search Suggestions shown as link buttons (one row)."""
LABEL_LIMIT = 80
"""Discord's longest button label."""
MAX_PAGES = 3
"""A thought summary longer than this many messages is sent as a file."""


def reply_buttons(request: Request, live: bool) -> Buttons:
    """Stop while the reply streams. Once it ends: Thoughts (when the model shared any) and
    each Google search it made as a link to the results (Search Suggestions, which Google's
    terms ask grounded answers to show)."""
    if live:
        return (Button("Stop", action=STOP, emoji="🛑"),)
    buttons: list[Button] = []
    if request.reply.thought_summary and request.turn_id is not None:
        buttons.append(Button("Thoughts", THOUGHTS.format(turn=request.turn_id), emoji="💭"))
    for query, url in request.reply.citations.suggestions()[:MAX_SUGGESTIONS]:
        label = " ".join(query.split())
        if len(label) > LABEL_LIMIT:
            label = label[: LABEL_LIMIT - 1] + "…"
        buttons.append(Button(label, url=url, emoji="🔎"))
    return tuple(buttons)


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
        parts = await interaction.client.store.get_parts(self.turn_id)
        summary = "\n\n".join(p.text.strip() for p in parts or () if p.kind == "thought")
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
