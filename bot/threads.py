"""Auto-threads: a question in a text channel answered in a public thread opened on it."""

from __future__ import annotations

import logging
from typing import Final

import discord

log = logging.getLogger(__name__)

THREAD_NAME_LIMIT = 100
"""Discord's longest thread name."""
ARCHIVE_MINUTES: Final = 1440
"""A thread nobody writes in is archived after a day (it reopens with the next message)."""


def thread_name(text: str, author_name: str) -> str:
    """A thread's name from the question: its first words, on one line, at most 100
    characters (cut at a word, with an ellipsis); for an image alone, whose question it is."""
    line = " ".join(text.split())
    if not line:
        return f"{author_name}'s question"[:THREAD_NAME_LIMIT]
    if len(line) <= THREAD_NAME_LIMIT:
        return line
    cut = line[: THREAD_NAME_LIMIT - 1]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return cut.rstrip(" ,.;:") + "…"


async def open_thread(
    message: discord.Message, text: str, perms: discord.Permissions | None
) -> discord.Thread | str:
    """A public thread on `message`, named after its question `text`; or why there is none
    (the bot's `perms` in the channel lack what it needs, or Discord refused)."""
    if perms is not None and not perms.create_public_threads:
        return "I need the Create Public Threads permission"
    if perms is not None and not perms.send_messages_in_threads:
        return "I need the Send Messages in Threads permission"
    try:
        return await message.create_thread(
            name=thread_name(text, message.author.display_name),
            auto_archive_duration=ARCHIVE_MINUTES,
        )
    except discord.HTTPException as exc:
        log.warning("could not open a thread on message %s: %s", message.id, exc)
        return "Discord refused to open a thread"
