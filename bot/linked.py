"""Discord messages a question points at, put into it as quoted context: messages it links to
(``https://discord.com/channels/<guild>/<channel>/<message>``) that both the asker and the bot
may read, and the messages it forwards (Discord's message snapshots, which carry no author).
"""

from __future__ import annotations

import logging

import discord

from bot.conversation import quote_line
from bot.links import MESSAGE_LINK

log = logging.getLogger(__name__)

MAX_LINKED = 3
"""Message links read per question (each costs a request to Discord)."""


def forwarded(message: discord.Message) -> list[str]:
    """A quoted line for each message this one forwards."""
    lines = []
    for snapshot in message.message_snapshots:
        text = snapshot.content
        names = ", ".join(a.filename for a in snapshot.attachments)
        if names:
            text = f"{text} [attached: {names}]" if text else f"[attached: {names}]"
        if text.strip():
            lines.append(quote_line("forwarded message", text))
    return lines


def _readable(channel: object, asker: object) -> bool:
    """Whether both the asker and the bot may read the channel's message history."""
    permissions_for = getattr(channel, "permissions_for", None)
    guild = getattr(channel, "guild", None)
    if permissions_for is None or guild is None:
        return False  # a DM or an unknown channel: never someone else's conversation
    member = asker if getattr(asker, "guild", None) == guild else guild.get_member(asker.id)  # type: ignore[attr-defined]
    if member is None or guild.me is None:
        return False
    for who in (member, guild.me):
        perms = permissions_for(who)
        if not (perms.view_channel and perms.read_message_history):
            return False
    return True


async def linked(client: discord.Client, text: str, asker: object) -> list[str]:
    """A quoted line for each Discord message ``text`` links to, where the asker and the bot
    may both read it (others are left as they are: plain links)."""
    lines = []
    seen: set[int] = set()
    for match in MESSAGE_LINK.finditer(text):
        if len(seen) >= MAX_LINKED:
            break
        if match[1] == "@me":
            continue
        channel_id, message_id = int(match[2]), int(match[3])
        if message_id in seen:
            continue
        seen.add(message_id)
        channel = client.get_channel(channel_id)
        if channel is None or getattr(getattr(channel, "guild", None), "id", None) != int(match[1]):
            continue
        if not _readable(channel, asker):
            log.info("not quoting linked message %s: not readable by both", message_id)
            continue
        try:
            found = await channel.fetch_message(message_id)  # type: ignore[union-attr]
        except discord.HTTPException as exc:
            log.info("could not fetch linked message %s: %s", message_id, exc)
            continue
        body = found.clean_content
        if found.attachments:
            body += f" [attached: {', '.join(a.filename for a in found.attachments)}]"
        lines.append(quote_line(f"linked message by {found.author.display_name}", body))
    return lines
