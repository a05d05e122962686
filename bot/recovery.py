"""After a crash: finish in Discord the replies it cut off, whose last message still shows the
live marker, with the same line a restart leaves, and keep in history the text people saw."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bot.sink import NO_PINGS
from bot.splitting import LIMIT
from bot.streaming import DEFAULT_STYLE

if TYPE_CHECKING:
    from bot.app import Gemcord

log = logging.getLogger(__name__)


LIVE = DEFAULT_STYLE.live_marker


def finished(content: str) -> str:
    """A live message's content without its marker, with the interruption line added."""
    style = DEFAULT_STYLE
    text = content.removesuffix(LIVE).rstrip()
    ending = style.separator + style.interrupted if text else style.interrupted
    return text + ending if len(text) + len(ending) <= LIMIT else text


async def repair_interrupted(bot: Gemcord) -> int:
    """Finish each reply the last process left streaming; returns how many were repaired.

    The reply's stored text becomes what its messages show (its checkpoint stays where they
    cannot be read).
    """
    repaired = 0
    for turn in await bot.store.take_interrupted():
        channel = bot.get_partial_messageable(turn.channel_id)
        try:
            shown = [await channel.get_partial_message(m).fetch() for m in turn.message_ids]
        except discord.HTTPException as exc:
            log.info("could not read interrupted reply %d in Discord: %s", turn.id, exc)
            continue
        if not shown:
            continue
        last = shown[-1]
        visible = "".join(m.content for m in shown[:-1]) + last.content.removesuffix(LIVE)
        try:
            if (content := finished(last.content)) != last.content:
                async with bot.pacers.get(turn.channel_id).budget("edit").write():
                    await last.edit(content=content, allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            log.info("could not finish interrupted reply %d in Discord: %s", turn.id, exc)
        await bot.store.finish_model_turn(
            turn.id, text=visible, status="interrupted", message_ids=turn.message_ids
        )
        repaired += 1
    if repaired:
        log.info("finished %d reply(ies) that the last shutdown cut off", repaired)
    return repaired
