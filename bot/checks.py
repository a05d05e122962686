"""Who may use the bot where, and who may moderate it."""

from __future__ import annotations

import discord

from bot.config import Settings


def channel_ids(channel: object) -> set[int]:
    """The channel's id, plus its parent's for a thread."""
    ids = {getattr(channel, "id", 0)}
    parent = getattr(channel, "parent_id", None)
    if parent:
        ids.add(parent)
    return ids


def allowed_here(settings: Settings, channel: object, member: object) -> bool:
    """The allow-lists (empty = everywhere). With a role list, a DM is allowed only when its
    channel id is in the channel list, since a DM carries no roles."""
    ids = channel_ids(channel)
    if settings.allowed_channels and not (ids & settings.allowed_channels):
        return False
    if settings.allowed_roles:
        if isinstance(channel, discord.DMChannel):
            return bool(ids & settings.allowed_channels)
        return bool({r.id for r in getattr(member, "roles", ())} & settings.allowed_roles)
    return True


def may_stop(requester_id: int, user: object, channel: object) -> bool:
    """Whether `user` may stop a reply: the person who asked, or a moderator of the channel."""
    return getattr(user, "id", None) == requester_id or can_moderate(channel, user)


def can_moderate(channel: object, member: object) -> bool:
    """Manage Messages in that channel (always true in a DM, which only two people share).

    A member that came with an interaction carries Discord's own resolution of its permissions
    in the interaction's channel (roles, overwrites, administrator, timeouts), which is used
    as is; otherwise they are computed from the cached guild.
    """
    if isinstance(channel, discord.DMChannel | discord.GroupChannel) or channel is None:
        return isinstance(channel, discord.DMChannel)
    if not isinstance(member, discord.Member):
        return False
    resolved = member.resolved_permissions
    if resolved is not None:
        return resolved.manage_messages
    try:
        return channel.permissions_for(member).manage_messages  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return False


def can_manage_server(member: object) -> bool:
    """Manage Server in the member's server (never in a DM, which has no server).

    Like :func:`can_moderate`, an interaction's member carries Discord's own resolution of its
    permissions, used as is; otherwise they come from the member's roles.
    """
    if not isinstance(member, discord.Member):
        return False
    resolved = member.resolved_permissions
    if resolved is not None:
        return resolved.manage_guild
    return member.guild_permissions.manage_guild
