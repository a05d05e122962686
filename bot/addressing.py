"""Whom a message is for: the bot, someone else, or everyone (when the bot answers at all)."""

from __future__ import annotations

import re

import discord

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def own_role_id(message: discord.Message) -> int | None:
    """The id of the bot's managed role in the message's server, if any."""
    guild = message.guild
    role = guild.self_role if guild is not None else None
    return role.id if role is not None else None


def mentions_me(message: discord.Message, bot_id: int) -> bool:
    """Whether the message mentions the bot, by its user or by its own managed role."""
    content = message.content
    if any(int(uid) == bot_id for uid in _USER_MENTION.findall(content)):
        return True
    role = own_role_id(message)
    return role is not None and any(int(r) == role for r in _ROLE_MENTION.findall(content))


def addressed_elsewhere(message: discord.Message, bot_id: int) -> bool:
    """Whether the message is for others and never a question: it pings @everyone or @here
    (as Discord says: an author without that permission pings no one), or it mentions people or
    roles (a reply that pings its author included) but not the bot."""
    if message.mention_everyone:
        return True
    if mentions_me(message, bot_id):
        return False
    role = own_role_id(message)
    if any(int(r) != role for r in _ROLE_MENTION.findall(message.content)):
        return True
    users = {int(uid) for uid in _USER_MENTION.findall(message.content)}
    users |= {u.id for u in message.mentions}
    return bool(users - {bot_id})
