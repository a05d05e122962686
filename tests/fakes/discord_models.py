"""Data model of the fake Discord: snowflakes, permissions, users, guilds, messages, mentions.

Everything here is plain Python state plus the JSON payloads Discord would send for it
(``payload()`` methods), shaped after what discord.py 2.7 parses. The server itself lives in
:mod:`tests.fakes.discord`.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DISCORD_EPOCH_MS",
    "FORUM_TYPES",
    "THREAD_TYPES",
    "AttachmentSpec",
    "Call",
    "FakeChannel",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "GatewayEvent",
    "Intent",
    "Perm",
    "Pings",
    "RateLimitHit",
    "Revision",
    "Upload",
    "compute_pings",
    "iso_now",
    "snowflake",
    "snowflake_time",
]

DISCORD_EPOCH_MS = 1420070400000

_snowflake_lock = threading.Lock()
_snowflake_state = {"ms": 0, "inc": 0}


def snowflake() -> int:
    """A new, unique, increasing Discord snowflake whose timestamp part is now."""
    with _snowflake_lock:
        ms = int(time.time() * 1000)
        if ms <= _snowflake_state["ms"]:
            ms = _snowflake_state["ms"]
            _snowflake_state["inc"] += 1
            if _snowflake_state["inc"] >= 4096:
                ms += 1
                _snowflake_state["inc"] = 0
        else:
            _snowflake_state["inc"] = 0
        _snowflake_state["ms"] = ms
        return ((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17) | _snowflake_state["inc"]


def snowflake_time(value: int) -> dt.datetime:
    """The UTC creation time encoded in a snowflake."""
    return dt.datetime.fromtimestamp(((value >> 22) + DISCORD_EPOCH_MS) / 1000, dt.UTC)


def iso_now() -> str:
    """The current time as Discord writes timestamps (ISO 8601, microseconds, +00:00)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class Perm(enum.IntFlag):
    """Discord permission bits (the ones a chat bot meets)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38

    @classmethod
    def all(cls) -> int:
        """Every permission bit Discord defines (as Administrator grants)."""
        return (1 << 53) - 1

    @classmethod
    def default_everyone(cls) -> int:
        """What @everyone may do in a new Discord server (mentioning @everyone included)."""
        return int(
            cls.CREATE_INSTANT_INVITE
            | cls.ADD_REACTIONS
            | cls.VIEW_CHANNEL
            | cls.SEND_MESSAGES
            | cls.EMBED_LINKS
            | cls.ATTACH_FILES
            | cls.READ_MESSAGE_HISTORY
            | cls.MENTION_EVERYONE
            | cls.USE_EXTERNAL_EMOJIS
            | cls.CHANGE_NICKNAME
            | cls.USE_APPLICATION_COMMANDS
            | cls.SEND_MESSAGES_IN_THREADS
        )

    @classmethod
    def default_bot(cls) -> int:
        """What a chat bot's invite link typically grants its managed role."""
        return int(
            cls.VIEW_CHANNEL
            | cls.SEND_MESSAGES
            | cls.SEND_MESSAGES_IN_THREADS
            | cls.EMBED_LINKS
            | cls.ATTACH_FILES
            | cls.READ_MESSAGE_HISTORY
            | cls.ADD_REACTIONS
            | cls.MANAGE_MESSAGES
            | cls.USE_EXTERNAL_EMOJIS
            | cls.USE_APPLICATION_COMMANDS
        )


class Intent(enum.IntFlag):
    """Gateway intent bits."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15

    @classmethod
    def privileged(cls) -> int:
        """The intents a bot must switch on in the developer portal."""
        return int(cls.GUILD_MEMBERS | cls.GUILD_PRESENCES | cls.MESSAGE_CONTENT)


# --------------------------------------------------------------------------------------------
# Users, guilds, channels


@dataclass
class FakeUser:
    """A Discord user (or the bot itself)."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        """``<@id>``, as typed in message content."""
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        """The user object Discord sends."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "primary_guild": None,
            "collectibles": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class FakeRole:
    """A guild role (the role whose id equals the guild id is @everyone)."""

    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    mentionable: bool = False
    hoist: bool = False
    managed: bool = False
    bot_id: int | None = None

    @property
    def mention(self) -> str:
        """``<@&id>`` (``@everyone`` for the default role)."""
        return "@everyone" if self.id == self.guild_id else f"<@&{self.id}>"

    def payload(self) -> dict[str, Any]:
        """The role object Discord sends."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": self.hoist,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class FakeMember:
    """A user's membership of a guild."""

    user_id: int
    guild_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso_now)

    def payload(self, user: FakeUser | None = None) -> dict[str, Any]:
        """The guild member object (with ``user`` when given), including ``flags``."""
        data: dict[str, Any] = {
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in self.roles],
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if user is not None:
            data["user"] = user.payload()
        return data


@dataclass
class FakeGuild:
    """A guild with its roles, members and channel ids."""

    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    thread_ids: list[int] = field(default_factory=list)
    """Threads (of any channel), oldest first; not part of ``channel_ids`` (as in Discord)."""
    joined_at: str = field(default_factory=iso_now)

    @property
    def everyone(self) -> FakeRole:
        """The @everyone role."""
        return self.roles[self.id]

    def base_permissions(self, user_id: int) -> int:
        """Guild-level permissions of a member (owner and Administrator get everything)."""
        if user_id == self.owner_id:
            return Perm.all()
        perms = self.everyone.permissions
        member = self.members.get(user_id)
        if member is not None:
            for role_id in member.roles:
                role = self.roles.get(role_id)
                if role is not None:
                    perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return Perm.all()
        return perms


THREAD_TYPES = frozenset({10, 11, 12})
"""Channel types of threads: announcement (10), public (11) and private (12) threads."""
FORUM_TYPES = frozenset({15, 16})
"""Channel types that hold only threads (posts): forum (15) and media (16) channels."""
# What a member keeps in a thread without Send Messages in Threads (as discord.py computes it).
_THREAD_SEND_DEPENDENT = int(
    Perm.SEND_TTS_MESSAGES | Perm.MENTION_EVERYONE | Perm.EMBED_LINKS | Perm.ATTACH_FILES
)


@dataclass
class FakeChannel:
    """A guild text channel (type 0), a DM channel (type 1), a forum channel (type 15), or a
    thread (public 11 or private 12) of a text or forum channel (``parent``)."""

    id: int
    type: int
    name: str | None = None
    guild_id: int | None = None
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    overwrites: list[dict[str, Any]] = field(default_factory=list)
    recipient_ids: list[int] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    parent_id: int | None = None
    """Threads: the text or forum channel the thread belongs to."""
    owner_id: int | None = None
    """Threads: who started it."""
    member_ids: list[int] = field(default_factory=list)
    """Threads: the thread's members (for a private thread, who may see it)."""
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    archive_timestamp: str = field(default_factory=iso_now)
    created_at: str = field(default_factory=iso_now)
    deleted: bool = False
    parent: FakeChannel | None = field(default=None, repr=False, compare=False)

    @property
    def is_dm(self) -> bool:
        """True for a DM channel."""
        return self.type == 1

    @property
    def is_thread(self) -> bool:
        """True for a thread (announcement, public or private)."""
        return self.type in THREAD_TYPES

    @property
    def is_forum(self) -> bool:
        """True for a forum or media channel (it holds posts, not messages)."""
        return self.type in FORUM_TYPES

    @property
    def mention(self) -> str:
        """``<#id>``."""
        return f"<#{self.id}>"

    @property
    def last_message_id(self) -> int | None:
        """The newest message id in this channel, if any."""
        return self.message_ids[-1] if self.message_ids else None

    def payload(self, users: Mapping[int, FakeUser] | None = None) -> dict[str, Any]:
        """The channel object Discord sends (DMs carry their recipients)."""
        last = self.last_message_id
        if self.is_dm:
            return {
                "id": str(self.id),
                "type": 1,
                "flags": 0,
                "last_message_id": str(last) if last else None,
                "recipients": [users[u].payload() for u in self.recipient_ids] if users else [],
            }
        if self.is_thread:
            return self.thread_payload()
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "flags": 0,
            "parent_id": None,
            "topic": self.topic,
            "nsfw": self.nsfw,
            "last_message_id": str(last) if last else None,
            "rate_limit_per_user": 0,
            "permission_overwrites": [dict(o) for o in self.overwrites],
        }
        if self.is_forum:
            data.update(
                available_tags=[],
                default_reaction_emoji=None,
                default_sort_order=None,
                default_forum_layout=0,
                default_thread_rate_limit_per_user=0,
                default_auto_archive_duration=1440,
            )
        return data

    def thread_payload(self, *, member_of: int | None = None) -> dict[str, Any]:
        """A thread's channel object; ``member_of``: the thread member object of this user
        (Discord adds the current user's when it is a member, e.g. in THREAD_CREATE)."""
        sent = sum(1 for m in self.message_ids if m != self.id)  # a forum post's starter: no
        last = self.last_message_id
        metadata: dict[str, Any] = {
            "archived": self.archived,
            "auto_archive_duration": self.auto_archive_duration,
            "archive_timestamp": self.archive_timestamp,
            "locked": self.locked,
            "create_timestamp": self.created_at,
        }
        if self.type == 12:
            metadata["invitable"] = self.invitable
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "parent_id": str(self.parent_id),
            "owner_id": str(self.owner_id),
            "name": self.name,
            "flags": 0,
            "last_message_id": str(last) if last else None,
            "rate_limit_per_user": 0,
            "message_count": sent,
            "total_message_sent": sent,
            "member_count": min(50, len(self.member_ids)),
            "thread_metadata": metadata,
        }
        if self.parent is not None and self.parent.is_forum:
            data["applied_tags"] = []
        if member_of is not None and member_of in self.member_ids:
            data["member"] = {
                "id": str(self.id),
                "user_id": str(member_of),
                "join_timestamp": self.created_at,
                "flags": 0,
            }
        return data

    def permissions_for(self, guild: FakeGuild | None, user_id: int) -> int:
        """A user's permissions here, with channel overwrites applied like Discord does.

        A thread has no overwrites of its own: it takes its parent's permissions; without
        Send Messages in Threads a member also loses embeds, files, TTS and @everyone there
        (as discord.py computes it), and a private thread is hidden from anyone who is neither
        a member of it nor allowed to Manage Threads.
        """
        if self.is_thread and self.parent is not None:
            perms = self.parent.permissions_for(guild, user_id)
            if not perms & Perm.VIEW_CHANNEL:
                return 0
            if (
                self.type == 12
                and user_id not in self.member_ids
                and not perms & Perm.MANAGE_THREADS
            ):
                return 0
            if not perms & Perm.SEND_MESSAGES_IN_THREADS:
                perms &= ~_THREAD_SEND_DEPENDENT
            return perms
        if self.is_dm or guild is None:
            return int(
                Perm.VIEW_CHANNEL
                | Perm.SEND_MESSAGES
                | Perm.READ_MESSAGE_HISTORY
                | Perm.ADD_REACTIONS
                | Perm.EMBED_LINKS
                | Perm.ATTACH_FILES
                | Perm.USE_EXTERNAL_EMOJIS
                | Perm.USE_APPLICATION_COMMANDS
            )
        perms = guild.base_permissions(user_id)
        if perms == Perm.all():
            return perms
        member = guild.members.get(user_id)
        member_roles = set(member.roles) if member else set()
        by_id = {int(o["id"]): o for o in self.overwrites}
        everyone = by_id.get(guild.id)
        if everyone is not None:
            perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for oid, ow in by_id.items():
            if ow["type"] == 0 and oid in member_roles:
                allow |= int(ow["allow"])
                deny |= int(ow["deny"])
        perms = (perms & ~deny) | allow
        own = by_id.get(user_id)
        if own is not None and own["type"] == 1:
            perms = (perms & ~int(own["deny"])) | int(own["allow"])
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        return perms


# --------------------------------------------------------------------------------------------
# Attachments


@dataclass
class AttachmentSpec:
    """A file a test user attaches (see ``FakeDiscord.attachment``); stored when used."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None
    size: int | None = None
    """The size Discord reports (``None``: ``len(data)``); a larger one stands for a huge file
    without holding its bytes (the CDN still serves ``data``)."""
    duration_secs: float | None = None
    """A voice message's length (Discord sends it, with ``waveform``, on voice messages only)."""
    waveform: bytes | None = None
    """A voice message's amplitudes, one byte per sample (sent base64-encoded)."""

    @property
    def declared_size(self) -> int:
        """The ``size`` of the attachment object."""
        return len(self.data) if self.size is None else self.size

    def image_size(self) -> tuple[int, int] | None:
        """(width, height) when the data is an image Pillow can read, else None."""
        if not (self.content_type or "").startswith("image/"):
            return None
        try:
            from PIL import Image

            with Image.open(io.BytesIO(self.data)) as img:
                return img.size
        except Exception:
            return None


# --------------------------------------------------------------------------------------------
# Mentions


_USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
_ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")
_EVERYONE = re.compile(r"@(everyone|here)\b")


@dataclass(frozen=True)
class Pings:
    """Who a message (revision) notifies, computed as Discord does."""

    users: frozenset[int] = frozenset()
    roles: frozenset[int] = frozenset()
    everyone: bool = False


class AllowedMentionsError(ValueError):
    """An ``allowed_mentions`` payload Discord refuses (400 50035); ``errors`` is its tree."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("invalid allowed_mentions")
        self.errors = errors


def _form_error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def validate_allowed_mentions(am: Any) -> None:
    """Raise :class:`AllowedMentionsError` for payloads Discord answers with 50035."""
    if am is None:
        return
    if not isinstance(am, dict):
        raise AllowedMentionsError(
            {"allowed_mentions": _form_error("DICT_TYPE_CONVERT", "Only dictionaries may be used.")}
        )
    parse = am.get("parse", [])
    errors: dict[str, Any] = {}
    if not isinstance(parse, list):
        errors["parse"] = _form_error("LIST_TYPE_CONVERT", "Only iterables may be used.")
        parse = []
    for i, value in enumerate(parse):
        if value not in ("users", "roles", "everyone"):
            errors.setdefault("parse", {})[str(i)] = _form_error(
                "BASE_TYPE_CHOICES",
                f"Value must be one of {{'everyone', 'roles', 'users'}}. (got {value!r})",
            )
    for kind in ("users", "roles"):
        ids = am.get(kind)
        if ids and kind in parse:
            errors.setdefault("_errors", []).append(
                {
                    "code": "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    "message": f'parse:["{kind}"] and {kind}: [ids] are mutually exclusive.',
                }
            )
        if ids is not None and len(ids) > 100:
            errors[kind] = _form_error("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
    if errors:
        raise AllowedMentionsError({"allowed_mentions": errors})


def compute_pings(
    content: str,
    allowed_mentions: Mapping[str, Any] | None,
    *,
    guild: FakeGuild | None,
    known_users: Iterable[int],
    author_id: int,
    author_can_mention_everyone: bool,
    replied_author_id: int | None = None,
) -> Pings:
    """Who gets notified: mentions in ``content`` filtered by ``allowed_mentions``.

    Without ``allowed_mentions`` Discord's defaults apply (users, roles and @everyone are
    parsed, and a reply pings the replied-to author). Role mentions ping when the role is
    mentionable or the author may mention everyone; ``@everyone``/``@here`` only in guilds and
    only with that permission (which @everyone has by default in new servers).
    """
    known = set(known_users)
    if allowed_mentions is None:
        parse = {"users", "roles", "everyone"}
        allowed_users: set[int] = set()
        allowed_roles: set[int] = set()
        replied_user = True
    else:
        parse = set(allowed_mentions.get("parse") or [])
        allowed_users = {int(u) for u in allowed_mentions.get("users") or []}
        allowed_roles = {int(r) for r in allowed_mentions.get("roles") or []}
        replied_user = bool(allowed_mentions.get("replied_user", False))

    users = set()
    for match in _USER_MENTION.finditer(content or ""):
        uid = int(match.group(1))
        if uid in known and ("users" in parse or uid in allowed_users):
            users.add(uid)
    if replied_author_id is not None and replied_user and replied_author_id != author_id:
        users.add(replied_author_id)

    roles = set()
    if guild is not None:
        for match in _ROLE_MENTION.finditer(content or ""):
            rid = int(match.group(1))
            role = guild.roles.get(rid)
            if role is None or rid == guild.id:
                continue
            if ("roles" in parse or rid in allowed_roles) and (
                role.mentionable or author_can_mention_everyone
            ):
                roles.add(rid)

    everyone = (
        guild is not None
        and "everyone" in parse
        and author_can_mention_everyone
        and _EVERYONE.search(content or "") is not None
    )
    return Pings(frozenset(users), frozenset(roles), bool(everyone))


# --------------------------------------------------------------------------------------------
# Messages


@dataclass
class Revision:
    """One state of a message's content: the create, or one edit."""

    content: str
    t: float
    """``time.monotonic()`` when the fake applied it."""
    timestamp: str
    allowed_mentions: dict[str, Any] | None
    """What the author sent (None: the key was absent, so Discord's defaults applied)."""
    pings: Pings
    payload: dict[str, Any] | None = None
    """The JSON body of the REST call (None for messages a test injected)."""
    placeholder: bool = False
    """True for the empty "thinking…" state a deferred interaction response starts in."""


@dataclass
class FakeMessage:
    """A message as the fake stores it; ``revisions[0]`` is the create, the rest are edits."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    revisions: list[Revision]
    type: int = 0
    attachments: list[dict[str, Any]] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    reference: dict[str, Any] | None = None
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    """A forward's ``message_snapshots`` (each ``{"message": {...}}``)."""
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    nonce: str | int | None = None
    reactions: dict[str, list[int]] = field(default_factory=dict)
    """Emoji key (``🛑`` or ``name:id``) → ids of the users who reacted, in order."""
    deleted: bool = False
    t_deleted: float | None = None

    @property
    def content(self) -> str:
        """The current content."""
        return self.revisions[-1].content

    @property
    def t_created(self) -> float:
        """``time.monotonic()`` of the create."""
        return self.revisions[0].t

    @property
    def timestamp(self) -> str:
        """ISO creation time."""
        return self.revisions[0].timestamp

    @property
    def edits(self) -> list[Revision]:
        """The edits, oldest first (revisions after the create)."""
        return self.revisions[1:]

    @property
    def edit_times(self) -> list[float]:
        """Monotonic times of the edits."""
        return [r.t for r in self.revisions[1:]]

    @property
    def edited_timestamp(self) -> str | None:
        """ISO time of the last edit, or None."""
        return self.revisions[-1].timestamp if len(self.revisions) > 1 else None

    @property
    def allowed_mentions(self) -> list[dict[str, Any] | None]:
        """``allowed_mentions`` sent with the create and each edit, in order.

        The placeholder of a deferred interaction response (no content, nothing sent) is left
        out.
        """
        return [r.allowed_mentions for r in self.revisions if not r.placeholder]

    @property
    def mentions_disabled(self) -> bool:
        """True if the create and every edit sent ``allowed_mentions`` that allow no ping.

        That is ``parse`` empty, no ``users``/``roles`` lists and no ``replied_user`` — what
        ``AllowedMentions.none()`` sends (with ``mention_author=False`` it adds
        ``"replied_user": false``).
        """
        for am in self.allowed_mentions:
            if not isinstance(am, dict) or am.get("parse") != [] or am.get("replied_user"):
                return False
            if am.get("users") or am.get("roles"):
                return False
        return True

    @property
    def pings(self) -> Pings:
        """Mentions of the current revision (what the message payload shows)."""
        return self.revisions[-1].pings

    @property
    def pinged_users(self) -> frozenset[int]:
        """Users notified by the create or any edit."""
        return frozenset().union(*(r.pings.users for r in self.revisions))

    @property
    def pinged_roles(self) -> frozenset[int]:
        """Roles notified by the create or any edit."""
        return frozenset().union(*(r.pings.roles for r in self.revisions))

    @property
    def pinged_everyone(self) -> bool:
        """True if the create or any edit pinged @everyone/@here."""
        return any(r.pings.everyone for r in self.revisions)

    @property
    def ephemeral(self) -> bool:
        """True for an ephemeral interaction message."""
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        """True while this is a deferred interaction's 'thinking…' message."""
        return bool(self.flags & 128)

    @property
    def reply_to(self) -> int | None:
        """Id of the message this replies to, if any."""
        if self.reference is None or self.reference.get("type", 0) != 0:
            return None
        mid = self.reference.get("message_id")
        return int(mid) if mid is not None else None


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Upload:
    """A file part of a multipart request (``files[n]``)."""

    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Call:
    """One HTTP request the fake answered."""

    method: str
    path: str
    """Path below the API base (``/channels/1/messages``), or the full path for CDN and gateway."""
    route: str
    """Route kind, e.g. ``message_create``, ``message_edit``, ``interaction_callback``."""
    channel_id: int | None
    json: Any
    query: dict[str, str]
    t_start: float
    status: int = 0
    t_end: float | None = None
    response: Any = None
    """The JSON body answered (None for 204 and non-JSON answers)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers about rate limits (``X-RateLimit-*``, ``Retry-After``, ``Via``) and
    ``Content-Type``."""
    files: list[str] = field(default_factory=list)
    """Names of the files uploaded with the request (multipart)."""
    uploads: list[Upload] = field(default_factory=list, repr=False)
    """The uploaded files themselves."""


@dataclass
class RateLimitHit:
    """A 429 the fake answered."""

    route: str
    bucket: str
    channel_id: int | None
    path: str
    retry_after: float
    is_global: bool
    t: float


@dataclass
class GatewayEvent:
    """One gateway dispatch the fake produced (delivered or filtered out by intents)."""

    t: float
    shard_id: int
    seq: int | None
    name: str
    data: dict[str, Any]
    delivered: bool


@dataclass
class FakeInteraction:
    """An interaction a test injected, and everything the bot did with it."""

    id: int
    token: str
    name: str
    channel_id: int
    guild_id: int | None
    user_id: int
    payload: dict[str, Any]
    t_created: float
    callback_type: int | None = None
    callback: dict[str, Any] | None = None
    t_callback: float | None = None
    original_id: int | None = None
    message_id: int | None = None
    """For a component interaction (a click): the message whose button was clicked."""
    followup_ids: list[int] = field(default_factory=list)
    deferred_first_followup_pending: bool = False
    errors: list[tuple[int, int, str]] = field(default_factory=list)
    """(HTTP status, Discord code, path) of every refused call on this interaction."""
    kind: int = 2
    """The interaction type: 2 a command, 3 a component, 4 autocomplete, 5 a modal submit."""
    _fake: Any = field(default=None, repr=False)

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot opened in answer (callback type 9): custom_id, title, components."""
        return (self.callback or {}).get("data") if self.callback_type == 9 else None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """The autocomplete choices the bot offered (callback type 8)."""
        if self.callback_type != 8:
            return None
        return list(((self.callback or {}).get("data") or {}).get("choices") or [])

    @property
    def acknowledged(self) -> bool:
        """True once the bot answered the callback."""
        return self.callback_type is not None

    @property
    def deferred(self) -> bool:
        """True when the callback was a deferral (type 5 or 6)."""
        return self.callback_type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        """True when the callback asked for an ephemeral response (flags 64)."""
        data = (self.callback or {}).get("data") or {}
        return bool(int(data.get("flags") or 0) & 64)

    @property
    def response_latency(self) -> float | None:
        """Seconds between dispatch and the callback."""
        return None if self.t_callback is None else self.t_callback - self.t_created

    @property
    def original(self) -> FakeMessage | None:
        """The original response message (the deferred one included), if any."""
        if self.original_id is None or self._fake is None:
            return None
        return self._fake.message(self.original_id)

    @property
    def followups(self) -> list[FakeMessage]:
        """Follow-up messages, oldest first (excluding one that replaced a deferral)."""
        if self._fake is None:
            return []
        return [self._fake.message(i) for i in self.followup_ids]

    @property
    def messages(self) -> list[FakeMessage]:
        """The original response and the follow-ups."""
        out = [] if self.original is None else [self.original]
        return out + self.followups

    async def wait_for_callback(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the bot answered the callback; returns its JSON body."""
        await self._fake.wait_for(lambda: self.callback is not None, timeout=timeout)
        assert self.callback is not None
        return self.callback
