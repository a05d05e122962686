"""/forget: a person's questions and the replies to them leave the bot's memory.

A reply still being answered (streaming, or waiting for an admission slot) is stopped first,
as deleting its question in Discord stops it ("deleted": its message keeps the text so far,
marked stopped, and no longer streams), and waited for until nothing more of it will be
written; only then is the exchange deleted, so nothing of it is written after the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.inflight import InFlight

if TYPE_CHECKING:
    from bot.answer import Engine

log = logging.getLogger(__name__)

STOP_WAIT = 30.0
"""Seconds a stopped reply may take to write its last text (paced like any write)."""


async def forget_last_exchange(bot: Engine, user_id: int, channel_id: int) -> int:
    """Delete the person's newest question still in the channel's conversation and the
    replies to it; returns how many turns went (0: there was none)."""
    question = await bot.store.last_question(user_id, channel_id)
    if question is None:
        return 0
    await _end(bot, user_id, lambda reply: reply.question_turn == question)
    count = await bot.store.forget_question(question)
    # a reply that registered while the question was being deleted (its start raced this)
    await _end(bot, user_id, lambda reply: reply.question_turn == question)
    return count


async def forget_everything(bot: Engine, user_id: int) -> int:
    """Delete every question the person asked, everywhere, and the replies to them; returns
    how many turns went."""
    await _end(bot, user_id, lambda reply: True)
    count = await bot.store.forget_user(user_id)
    # a reply that registered while its question was being deleted (its start raced this)
    running = {r.question_turn for r in bot.inflight.asked_by(user_id) if r.question_turn}
    gone = {turn for turn in running if await bot.store.get_turn(turn) is None}
    if gone:
        await _end(bot, user_id, lambda reply: reply.question_turn in gone)
    return count


async def _end(bot: Engine, user_id: int, keep: Callable[[InFlight], bool]) -> None:
    """Stop the person's running replies that `keep` chooses, and wait until they ended."""
    count = await bot.inflight.end(
        lambda reply: reply.requester_id == user_id and keep(reply), "deleted", user_id, STOP_WAIT
    )
    if count:
        log.info("stopped %d repl(ies) to %s before forgetting them", count, user_id)
