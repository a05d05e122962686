"""A fake Discord (REST API v10 + gateway) on 127.0.0.1 that the real discord.py runs against.

Point discord.py at it by setting ``discord.http.Route.BASE = fake.api_base`` before the
client logs in (the bot does this from ``DISCORD_API_BASE_URL``), and use an
``AutoShardedBot``/``AutoShardedClient``: those ask ``GET /gateway/bot``, which answers with
this server's own websocket. Nothing in discord.py or the bot is mocked::

    async with FakeDiscord(rate_limit=(5, 5.0)) as fake:
        guild = fake.add_guild("Test server")
        chan = fake.add_text_channel(guild, "general")
        alice = fake.add_user("alice")
        discord.http.Route.BASE = fake.api_base
        await bot.login(fake.token)
        task = asyncio.create_task(bot.connect())
        await fake.wait_until_ready()
        question = await fake.user_message(chan, alice, f"{fake.bot_user.mention} hi")
        reply = await fake.wait_for_message(chan, lambda m: m.reply_to == question.id)

The Discord rules it enforces are listed on :class:`FakeDiscord`. Every REST call is recorded
(:attr:`FakeDiscord.calls`) with ``time.monotonic()`` start and end times, every message keeps
its revisions (create and each edit, with the ``allowed_mentions`` sent and who would have been
pinged), and every 429 the fake answered is in :attr:`FakeDiscord.rate_limit_hits`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.fakes.discord_gateway import Gateway, NotConnectedError
from tests.fakes.discord_interactions import InteractionRoutes
from tests.fakes.discord_models import (
    AttachmentSpec,
    Call,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    GatewayEvent,
    Intent,
    Perm,
    Pings,
    RateLimitHit,
    Revision,
    Upload,
    compute_pings,
    iso_now,
    snowflake,
)
from tests.fakes.discord_ratelimit import (
    BUCKET_MODELS,
    BucketModel,
    Decision,
    RateLimiter,
    bucket_for,
)
from tests.fakes.discord_rules import (
    CANNOT_EDIT_OTHERS,
    DEFAULT_ROUTE_LIMIT,
    DM_ACTION,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    MAX_REACTIONS,
    MAX_REACTIONS_REACHED,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    NON_TEXT_CHANNEL,
    NOT_FOUND,
    THREAD_ALREADY_CREATED,
    THREAD_ARCHIVED,
    TYPE_DEFAULT,
    TYPE_REPLY,
    UNAUTHORIZED,
    UNKNOWN_CHANNEL,
    UNKNOWN_GUILD,
    UNKNOWN_MEMBER,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    ApiError,
    api_error,
    as_id,
    form_error,
    invalid_form,
    opt_int,
    parse_emoji,
    validate_message_body,
)

IS_VOICE_MESSAGE = 1 << 13
"""The message flag of a voice message."""

__all__ = [
    "API_PREFIX",
    "AttachmentSpec",
    "Call",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "GatewayEvent",
    "Intent",
    "NotConnectedError",
    "Perm",
    "Pings",
    "RateLimitHit",
    "Revision",
    "Upload",
]

API_PREFIX = "/api/v10"


@dataclass
class _StoredAttachment:
    id: int
    channel_id: int
    filename: str
    content_type: str | None
    data: bytes
    payload: dict[str, Any]


class FakeDiscord:
    """The fake Discord server. See the module docstring for how to point discord.py at it.

    Rules enforced like Discord: the bot token on every authenticated route (401 otherwise;
    IDENTIFY with a wrong token is closed with 4004); content over 2,000 characters (400 code
    50035, ``errors.content``); empty messages (50006); unknown channel/message/interaction
    (10003/10008/10062); editing someone else's message (50005); channel permissions
    (50001/50013); the 3-second interaction deadline and double acknowledgement (40060);
    per-route rate-limit buckets per channel (message create and message edit:
    ``rate_limit`` = 5 per 5 s by default, a fixed window opening at the first request, like
    Discord's ``reset_after``) plus a global 50 requests/s, answered with Discord's 429 (JSON
    ``retry_after``, ``Retry-After``, ``X-RateLimit-Scope``, ``Via``). With
    ``send_ratelimit_headers`` every response carries ``X-RateLimit-Limit/Remaining/Reset/
    Reset-After/Bucket`` so discord.py waits before it would hit a 429. ``bucket_model``
    (see :mod:`tests.fakes.discord_ratelimit`) says how creates and edits share buckets:
    ``"discord"`` (default, like Discord) counts them in separate windows but answers both
    with one ``X-RateLimit-Bucket`` hash; ``"separate"`` gives each its own hash too;
    ``"shared"`` counts both in one window.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        rate_limit: tuple[int, float] = (5, 5.0),
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        global_rate_limit: tuple[int, float] | None = (50, 1.0),
        send_ratelimit_headers: bool = True,
        bucket_model: BucketModel = "discord",
        shard_count: int = 1,
        heartbeat_interval_ms: int = 41250,
        interaction_deadline: float = 3.0,
        interaction_token_lifetime: float = 900.0,
        attachment_size_limit: int = 10 * 1024 * 1024,
        privileged_intents: int = Intent.privileged(),
        bot_username: str = "gemcord",
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token or (
            f"{secrets.token_urlsafe(18)}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        )
        self.send_ratelimit_headers = send_ratelimit_headers
        self.shard_count = shard_count
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_deadline = interaction_deadline
        self.interaction_token_lifetime = interaction_token_lifetime
        self.attachment_size_limit = attachment_size_limit
        self.privileged_intents = int(privileged_intents)
        self.host = host
        self.route_limits: dict[str, tuple[int, float]] = {
            "message_create": rate_limit,
            "message_edit": rate_limit,
            "webhook_create": rate_limit,
            "webhook_edit": rate_limit,
            "reaction": (1, 0.25),
        }
        self.route_limits.update(rate_limits or {})
        self.global_rate_limit = global_rate_limit
        if bucket_model not in BUCKET_MODELS:
            raise ValueError(f"bucket_model must be one of {BUCKET_MODELS}, not {bucket_model!r}")
        if bucket_model == "shared" and (
            self.route_limits["message_create"] != self.route_limits["message_edit"]
        ):
            raise ValueError('bucket_model="shared" needs one limit for creates and edits')
        self.bucket_model: BucketModel = bucket_model

        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self._messages: dict[int, FakeMessage] = {}
        self._attachments: dict[int, _StoredAttachment] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self._interactions_by_token: dict[str, FakeInteraction] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.command_syncs: list[tuple[float, int | None, list[str]]] = []
        """(monotonic time, guild id or None for global, command names) per bulk overwrite."""

        self.calls: list[Call] = []
        self.rate_limit_hits: list[RateLimitHit] = []
        self.cdn_hold: asyncio.Event | None = None
        """While set to an unset event, CDN downloads wait for it (a slow download)."""
        self._limiter = RateLimiter()

        self.application_id = snowflake()
        self.bot_user = self._new_user(bot_username, bot=True, user_id=self.application_id)
        self.owner = self._new_user("owner")
        self.verify_key = secrets.token_hex(32)

        self.gateway = Gateway(self)
        self._interaction_routes = InteractionRoutes(self)
        self._pending_events: list[tuple[str, dict[str, Any], int | None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------------------------
    # life cycle

    async def start(self) -> Self:
        """Listen on 127.0.0.1 (a free port)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Close every websocket and stop the server."""
        for task in list(self._tasks):
            task.cancel()
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` / ``DISCORD_API_BASE_URL`` must be set to."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The websocket URL ``GET /gateway/bot`` hands out."""
        return f"ws://{self.host}:{self.port}/gateway"

    # ------------------------------------------------------------------------------------
    # world building

    def _new_user(
        self, username: str, *, bot: bool = False, user_id: int | None = None
    ) -> FakeUser:
        user = FakeUser(id=user_id or snowflake(), username=username, bot=bot)
        self.users[user.id] = user
        return user

    def add_user(
        self, username: str, *, bot: bool = False, global_name: str | None = None
    ) -> FakeUser:
        """A new Discord user (not yet in any guild; messages add them as members)."""
        user = self._new_user(username, bot=bot)
        user.global_name = global_name
        return user

    def add_guild(
        self,
        name: str = "Test server",
        *,
        owner: FakeUser | int | None = None,
        everyone_permissions: int | None = None,
        bot_permissions: int | None = None,
        guild_id: int | None = None,
    ) -> FakeGuild:
        """A guild the bot is in: @everyone, the bot's managed role, the owner and bot members.

        Its id (a new snowflake unless given) decides its shard: ``(id >> 22) % shard_count``.
        """
        gid = guild_id or snowflake()
        owner_id = as_id(owner) if owner is not None else self.owner.id
        guild = FakeGuild(id=gid, name=name, owner_id=owner_id)
        everyone = Perm.default_everyone() if everyone_permissions is None else everyone_permissions
        guild.roles[gid] = FakeRole(id=gid, guild_id=gid, name="@everyone", permissions=everyone)
        bot_role = FakeRole(
            id=snowflake(),
            guild_id=gid,
            name=self.bot_user.username,
            permissions=Perm.default_bot() if bot_permissions is None else bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[owner_id] = FakeMember(user_id=owner_id, guild_id=gid)
        guild.members[self.bot_user.id] = FakeMember(
            user_id=self.bot_user.id, guild_id=gid, roles=[bot_role.id]
        )
        self.guilds[gid] = guild
        self._queue_event("GUILD_CREATE", lambda: self._guild_create_payload(guild), gid)
        return guild

    def bot_role(self, guild: FakeGuild | int) -> FakeRole:
        """The bot's managed role in a guild."""
        g = self._guild(guild)
        return next(r for r in g.roles.values() if r.bot_id == self.bot_user.id)

    def add_role(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        permissions: int = 0,
        mentionable: bool = False,
        hoist: bool = False,
    ) -> FakeRole:
        """A new role in a guild."""
        g = self._guild(guild)
        role = FakeRole(
            id=snowflake(),
            guild_id=g.id,
            name=name,
            permissions=int(permissions),
            position=len(g.roles),
            mentionable=mentionable,
            hoist=hoist,
        )
        g.roles[role.id] = role
        self._queue_event(
            "GUILD_ROLE_CREATE", lambda: {"guild_id": str(g.id), "role": role.payload()}, g.id
        )
        return role

    def add_member(
        self,
        guild: FakeGuild | int,
        user: FakeUser | int,
        *,
        roles: Iterable[FakeRole | int] = (),
        nick: str | None = None,
    ) -> FakeMember:
        """Make a user a member of a guild (or update their roles and nick)."""
        g = self._guild(guild)
        uid = as_id(user)
        if uid not in self.users:
            raise KeyError(f"unknown user {uid}")
        member = FakeMember(user_id=uid, guild_id=g.id, roles=[as_id(r) for r in roles], nick=nick)
        is_new = uid not in g.members
        g.members[uid] = member
        if is_new:
            self._queue_event(
                "GUILD_MEMBER_ADD",
                lambda: {**member.payload(self.users[uid]), "guild_id": str(g.id)},
                g.id,
            )
        return member

    def add_text_channel(
        self,
        guild: FakeGuild | int,
        name: str = "general",
        *,
        topic: str | None = None,
        nsfw: bool = False,
        overwrites: Iterable[Mapping[str, Any]] = (),
    ) -> FakeChannel:
        """A text channel; ``overwrites`` are built with :meth:`overwrite`."""
        g = self._guild(guild)
        chan = FakeChannel(
            id=snowflake(),
            type=0,
            name=name,
            guild_id=g.id,
            position=len(g.channel_ids),
            topic=topic,
            nsfw=nsfw,
            overwrites=[dict(o) for o in overwrites],
        )
        self.channels[chan.id] = chan
        g.channel_ids.append(chan.id)
        self._queue_event("CHANNEL_CREATE", lambda: chan.payload(), g.id)
        return chan

    @staticmethod
    def overwrite(
        target: FakeRole | FakeUser | FakeGuild, *, allow: int = 0, deny: int = 0
    ) -> dict[str, Any]:
        """A permission overwrite for a role (a guild means @everyone) or a member."""
        kind = 1 if isinstance(target, FakeUser) else 0
        return {
            "id": str(target.id),
            "type": kind,
            "allow": str(int(allow)),
            "deny": str(int(deny)),
        }

    def add_dm_channel(self, user: FakeUser | int) -> FakeChannel:
        """The DM channel between the bot and a user (created once)."""
        uid = as_id(user)
        for chan in self.channels.values():
            if chan.is_dm and chan.recipient_ids == [uid]:
                return chan
        chan = FakeChannel(id=snowflake(), type=1, recipient_ids=[uid])
        self.channels[chan.id] = chan
        return chan

    @staticmethod
    def attachment(
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        description: str | None = None,
        size: int | None = None,
    ) -> AttachmentSpec:
        """A file for :meth:`user_message` or an attachment option of :meth:`slash_command`.

        ``size`` is the size the attachment object declares (default ``len(data)``): a huge
        file can be declared without holding its bytes; the CDN serves ``data``.
        """
        return AttachmentSpec(filename, data, content_type, description, size)

    # ------------------------------------------------------------------------------------
    # threads and forums

    def add_thread(
        self,
        parent: FakeChannel | int,
        name: str = "thread",
        *,
        type: int = 11,
        owner: FakeUser | int | None = None,
        members: Iterable[FakeUser | int] = (),
        auto_archive_duration: int = 1440,
        invitable: bool = True,
    ) -> FakeChannel:
        """A thread of a text channel (``type`` 11 public, 12 private) or a forum post's thread
        (type 11 only; see :meth:`add_forum_post` for one with its starter message).

        Like Discord: the thread is a channel of its own (``parent_id``, ``owner_id``,
        ``thread_metadata``) and not one of the guild's ``channels``; it is announced with
        THREAD_CREATE (``newly_created``), or, before the bot's READY, listed in the
        GUILD_CREATE's ``threads``. A private thread is seen only by its members (the owner,
        ``members``) and by those who may Manage Threads in the parent; the bot is sent the
        thread (and its messages) only then. Its permissions are the parent's, with Send
        Messages in Threads in place of Send Messages.
        """
        par = self._channel(parent)
        if par.guild_id is None or par.type not in (0, 5, 15, 16):
            raise ValueError(f"channel {par.id} (type {par.type}) cannot have threads")
        if type not in (11, 12) or (par.is_forum and type != 11):
            raise ValueError(f"thread type {type} is not possible in a type {par.type} channel")
        guild = self._guild(par.guild_id)
        owner_user = self._user(owner if owner is not None else guild.owner_id)
        if owner_user.id not in guild.members:
            self.add_member(guild, owner_user)
        thread = FakeChannel(
            id=snowflake(),
            type=type,
            name=name,
            guild_id=guild.id,
            parent_id=par.id,
            owner_id=owner_user.id,
            member_ids=[owner_user.id],
            auto_archive_duration=auto_archive_duration,
            invitable=invitable,
            parent=par,
        )
        return self._open_thread(thread, members)

    def _open_thread(self, thread: FakeChannel, members: Iterable[FakeUser | int]) -> FakeChannel:
        guild = self._guild(thread.guild_id or 0)
        for m in members:
            uid = as_id(m)
            if uid != self.bot_user.id and uid not in guild.members:
                self.add_member(guild, uid)
            if uid not in thread.member_ids:
                thread.member_ids.append(uid)
        self.channels[thread.id] = thread
        guild.thread_ids.append(thread.id)
        if self._bot_sees(thread):
            self._queue_event(
                "THREAD_CREATE",
                lambda: {
                    **thread.thread_payload(member_of=self.bot_user.id),
                    "newly_created": True,
                },
                guild.id,
            )
        return thread

    def add_forum_channel(
        self, guild: FakeGuild | int, name: str = "forum", *, topic: str | None = None
    ) -> FakeChannel:
        """A forum channel (type 15): it holds posts (threads), never messages of its own."""
        g = self._guild(guild)
        chan = FakeChannel(
            id=snowflake(),
            type=15,
            name=name,
            guild_id=g.id,
            position=len(g.channel_ids),
            topic=topic,
        )
        self.channels[chan.id] = chan
        g.channel_ids.append(chan.id)
        self._queue_event("CHANNEL_CREATE", lambda: chan.payload(), g.id)
        return chan

    async def add_forum_post(
        self,
        forum: FakeChannel | int,
        user: FakeUser | int,
        title: str,
        content: str = "",
        *,
        mentions: Iterable[FakeUser | int] = (),
        attachments: Iterable[AttachmentSpec] = (),
    ) -> tuple[FakeChannel, FakeMessage]:
        """A user opens a forum post: a public thread whose starter message has the thread's
        id (as in Discord); THREAD_CREATE, then the starter's MESSAGE_CREATE."""
        chan = self._channel(forum)
        if not chan.is_forum:
            raise ValueError(f"channel {chan.id} is not a forum")
        author = self._user(user)
        thread = self.add_thread(chan, title, type=11, owner=author)
        await self._flush_pending()
        message = await self.user_message(
            thread,
            author,
            content,
            mentions=mentions,
            attachments=attachments,
            message_id=thread.id,
        )
        return thread, message

    async def archive_thread(
        self, thread: FakeChannel | int, *, archived: bool = True, locked: bool = False
    ) -> None:
        """Archive (or, with ``archived=False``, reopen) a thread: THREAD_UPDATE.

        In an archived thread the bot's edits get 400 (50083); a new message reopens it,
        unless it is also ``locked`` (then 50083 too, for a bot without Manage Threads).
        """
        chan = self._channel(thread)
        if not chan.is_thread:
            raise ValueError(f"channel {chan.id} is not a thread")
        chan.archived, chan.locked = archived, locked
        await self._thread_changed(chan)

    async def _thread_changed(self, chan: FakeChannel) -> None:
        chan.archive_timestamp = iso_now()
        if self._bot_sees(chan):
            await self._dispatch(
                "THREAD_UPDATE",
                chan.thread_payload(member_of=self.bot_user.id),
                chan.guild_id,
                require_connection=False,
            )

    async def delete_thread(self, thread: FakeChannel | int) -> None:
        """Delete a thread: THREAD_DELETE; any later call on it gets 404 (10003)."""
        chan = self._channel(thread)
        if not chan.is_thread:
            raise ValueError(f"channel {chan.id} is not a thread")
        seen = self._bot_sees(chan)
        chan.deleted = True
        if seen:
            data = {
                "id": str(chan.id),
                "guild_id": str(chan.guild_id),
                "parent_id": str(chan.parent_id),
                "type": chan.type,
            }
            await self._dispatch("THREAD_DELETE", data, chan.guild_id, require_connection=False)

    async def delete_channel(self, channel: FakeChannel | int) -> None:
        """An admin deletes a guild channel: CHANNEL_DELETE with the channel object."""
        chan = self._channel(channel)
        if chan.is_dm or chan.is_thread:
            raise ValueError(f"channel {chan.id} is not a guild channel")
        guild = self._guild(chan.guild_id)  # type: ignore[arg-type]
        payload = chan.payload()
        chan.deleted = True
        if chan.id in guild.channel_ids:
            guild.channel_ids.remove(chan.id)
        await self._dispatch("CHANNEL_DELETE", payload, chan.guild_id, require_connection=False)

    def _bot_sees(self, chan: FakeChannel) -> bool:
        """Whether the bot may view a channel (a private thread: member or Manage Threads)."""
        if chan.is_dm:
            return True
        return bool(
            chan.permissions_for(self._guild_of(chan), self.bot_user.id) & Perm.VIEW_CHANNEL
        )

    # ------------------------------------------------------------------------------------
    # queries

    def message(self, message_id: int | FakeMessage) -> FakeMessage:
        """A stored message by id (deleted ones included)."""
        return self._messages[as_id(message_id)]

    def messages(
        self,
        channel: FakeChannel | int,
        *,
        include_deleted: bool = True,
        include_ephemeral: bool = True,
    ) -> list[FakeMessage]:
        """Messages of a channel, oldest first (interaction responses included)."""
        chan = self._channel(channel)
        return [
            m
            for m in (self._messages[i] for i in chan.message_ids)
            if (include_deleted or not m.deleted) and (include_ephemeral or not m.ephemeral)
        ]

    def bot_messages(self, channel: FakeChannel | int | None = None) -> list[FakeMessage]:
        """Messages the bot wrote (in one channel, or everywhere), oldest first."""
        if channel is None:
            found = [m for m in self._messages.values() if m.author_id == self.bot_user.id]
            return sorted(found, key=lambda m: m.id)
        return [m for m in self.messages(channel) if m.author_id == self.bot_user.id]

    def calls_for(
        self,
        route: str | None = None,
        *,
        channel: FakeChannel | int | None = None,
        method: str | None = None,
        status: int | None = None,
    ) -> list[Call]:
        """Recorded calls filtered by route kind, channel, method and status."""
        cid = None if channel is None else as_id(channel)
        return [
            c
            for c in self.calls
            if (route is None or c.route == route)
            and (cid is None or c.channel_id == cid)
            and (method is None or c.method == method)
            and (status is None or c.status == status)
        ]

    @property
    def gateway_events(self) -> list[GatewayEvent]:
        """Every dispatch the fake produced, in order (``delivered=False``: filtered out)."""
        return self.gateway.events

    @property
    def identifies(self) -> list[dict[str, Any]]:
        """IDENTIFY payloads received (token included)."""
        return self.gateway.identifies

    @property
    def invalid_request_count(self) -> int:
        """Answers of 401, 403 and 429 (Discord bans an IP after 10,000 in 10 minutes)."""
        return sum(1 for c in self.calls if c.status in (401, 403, 429))

    @property
    def intents(self) -> int | None:
        """Intents of the latest IDENTIFY."""
        return int(self.gateway.identifies[-1].get("intents") or 0) if self.identifies else None

    def commands(self, guild: FakeGuild | int | None = None) -> list[dict[str, Any]]:
        """Registered application commands (global, or of one guild)."""
        if guild is None:
            return self.global_commands
        return self.guild_commands.get(as_id(guild), [])

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float = 5.0,
        interval: float = 0.01,
        message: str | None = None,
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(message or f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    async def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Wait until every shard IDENTIFYed and got READY plus its GUILD_CREATEs."""
        await self.wait_for(
            self.gateway.ready, timeout=timeout, message="the bot never completed IDENTIFY/READY"
        )

    async def wait_for_message(
        self,
        channel: FakeChannel | int | None = None,
        predicate: Callable[[FakeMessage], Any] | None = None,
        *,
        timeout: float = 5.0,
        author: FakeUser | int | None = None,
    ) -> FakeMessage:
        """The first message (default: by the bot) matching ``predicate``, waiting for it."""
        author_id = self.bot_user.id if author is None else as_id(author)

        def find() -> FakeMessage | None:
            pool = (
                self.messages(channel)
                if channel is not None
                else sorted(self._messages.values(), key=lambda m: m.id)
            )
            for msg in pool:
                if msg.author_id == author_id and (predicate is None or predicate(msg)):
                    return msg
            return None

        return await self.wait_for(find, timeout=timeout, message="no matching message")

    async def disconnect(self, shard_id: int = 0, code: int = 4000) -> None:
        """Drop the shard's gateway connection (4000: discord.py reconnects and RESUMEs)."""
        await self.gateway.disconnect(shard_id, code)

    # ------------------------------------------------------------------------------------
    # injected user activity

    async def user_message(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        content: str = "",
        *,
        mentions: Iterable[FakeUser | int] = (),
        attachments: Iterable[AttachmentSpec] = (),
        embeds: Sequence[Mapping[str, Any]] = (),
        reply_to: FakeMessage | int | None = None,
        ping_reply: bool = True,
        message_id: int | None = None,
        flags: int = 0,
        forward_of: FakeMessage | int | None = None,
    ) -> FakeMessage:
        """A user posts a message: stored, then MESSAGE_CREATE goes to the bot.

        ``forward_of`` makes it a forward, as Discord sends one: a ``message_reference`` of
        type 1 (FORWARD) and ``message_snapshots`` holding the forwarded message's content,
        embeds and attachments (no author), with no ``referenced_message``.

        ``<@id>`` in ``content`` (and ``mentions``) become the message's mentions;
        ``reply_to`` makes it a reply (pinging the replied-to author unless ``ping_reply`` is
        False). Users are added to the guild as members when needed.

        In a thread (see :meth:`add_thread`) the poster joins the thread; a message there
        reopens an archived thread (a locked one refuses: ValueError); mentioning the bot in
        a private thread it cannot see adds it to the thread (THREAD_CREATE with its thread
        member first), and messages of a private thread the bot cannot see are not sent to
        it. A forum takes posts, not messages (:meth:`add_forum_post`).
        """
        chan = self._channel(channel)
        author = self._user(user)
        guild = self._guild_of(chan)
        if chan.is_forum:
            raise ValueError(f"channel {chan.id} is a forum: open a post with add_forum_post")
        if chan.deleted:
            raise ValueError(f"channel {chan.id} was deleted")
        if chan.is_thread and chan.archived:
            if chan.locked:
                raise ValueError(f"thread {chan.id} is locked")
            chan.archived = False
            await self._thread_changed(chan)
        self._check_participant(chan, guild, author)
        reference = None
        replied_author = None
        snapshots: list[dict[str, Any]] = []
        if reply_to is not None:
            ref_msg = self.message(reply_to)
            reference = self._reference_of(ref_msg)
            replied_author = ref_msg.author_id if ping_reply else None
        elif forward_of is not None:
            fwd = self.message(forward_of)
            reference = {**self._reference_of(fwd), "type": 1}
            snapshots.append({"message": self._snapshot_of(fwd)})
        pings = compute_pings(
            content,
            None,
            guild=guild,
            known_users=self.users,
            author_id=author.id,
            author_can_mention_everyone=self._can(chan, author.id, Perm.MENTION_EVERYONE),
            replied_author_id=replied_author,
        )
        extra = {as_id(u) for u in mentions}
        if extra:
            pings = Pings(pings.users | extra, pings.roles, pings.everyone)
        if chan.type == 12 and self.bot_user.id in pings.users:
            await self._join_private_thread(chan)
        msg_id = snowflake() if message_id is None else message_id
        if msg_id in self._messages:
            raise ValueError(f"message id {msg_id} is taken")
        stored = [self._store_attachment(chan.id, spec) for spec in attachments]
        msg = FakeMessage(
            id=msg_id,
            channel_id=chan.id,
            guild_id=chan.guild_id,
            author_id=author.id,
            revisions=[Revision(content, time.monotonic(), iso_now(), None, pings)],
            type=TYPE_REPLY if reference and not snapshots else TYPE_DEFAULT,
            attachments=[a.payload for a in stored],
            embeds=[dict(e) for e in embeds],
            reference=reference,
            flags=flags,
            snapshots=snapshots,
        )
        self._add_message(msg)
        await self._dispatch_message("MESSAGE_CREATE", msg, require_connection=True)
        return msg

    async def voice_message(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        data: bytes,
        duration_secs: float,
        *,
        reply_to: FakeMessage | int | None = None,
    ) -> FakeMessage:
        """A user sends a voice message: no text, one ``voice-message.ogg`` (``audio/ogg``)
        with its duration and waveform, and the message flag IS_VOICE_MESSAGE (1 << 13)."""
        spec = AttachmentSpec(
            "voice-message.ogg",
            data,
            "audio/ogg",
            duration_secs=duration_secs,
            waveform=bytes((i * 37) % 256 for i in range(max(1, round(duration_secs * 10)))),
        )
        return await self.user_message(
            channel, user, "", attachments=[spec], reply_to=reply_to, flags=IS_VOICE_MESSAGE
        )

    async def _join_private_thread(self, chan: FakeChannel) -> None:
        """The bot, mentioned in a private thread, is added to it (if it sees the parent)."""
        if self.bot_user.id in chan.member_ids:
            return
        parent = chan.parent
        if parent is None or not self._bot_sees(parent):
            return
        seen_before = self._bot_sees(chan)
        chan.member_ids.append(self.bot_user.id)
        if not seen_before:
            await self._dispatch(
                "THREAD_CREATE",
                chan.thread_payload(member_of=self.bot_user.id),
                chan.guild_id,
                require_connection=False,
            )

    async def redeliver(self, message: FakeMessage | int) -> bool:
        """MESSAGE_CREATE once more for a message the bot was already sent, as a gateway may
        deliver an event twice (e.g. replayed after a RESUME): the payload first delivered,
        under a new sequence number. Returns whether the bot was sent it."""
        msg = self.message(message)
        key = str(msg.id)
        first = next(
            (
                e.data
                for e in self.gateway.events
                if e.name == "MESSAGE_CREATE" and e.delivered and e.data.get("id") == key
            ),
            None,
        )
        if first is None:
            return await self._dispatch_message("MESSAGE_CREATE", msg, require_connection=True)
        return await self._dispatch("MESSAGE_CREATE", first, msg.guild_id, require_connection=True)

    async def bulk_delete(
        self, channel: FakeChannel | int, messages: Iterable[FakeMessage | int]
    ) -> None:
        """A moderator deletes up to 100 messages at once: one MESSAGE_DELETE_BULK."""
        chan = self._channel(channel)
        if chan.is_dm:
            raise ValueError("messages cannot be bulk-deleted in a DM")
        msgs = [self.message(m) for m in messages]
        if not 1 <= len(msgs) <= 100:
            raise ValueError("bulk delete takes 1 to 100 messages")
        for msg in msgs:
            if msg.channel_id != chan.id:
                raise KeyError(f"message {msg.id} is not in channel {chan.id}")
        now = time.monotonic()
        for msg in msgs:
            msg.deleted = True
            msg.t_deleted = now
        data: dict[str, Any] = {
            "ids": [str(m.id) for m in msgs if not m.ephemeral],
            "channel_id": str(chan.id),
            "guild_id": str(chan.guild_id),
        }
        if data["ids"] and self._bot_sees(chan):
            await self._dispatch(
                "MESSAGE_DELETE_BULK", data, chan.guild_id, require_connection=False
            )

    async def user_edit(self, message: FakeMessage | int, content: str) -> FakeMessage:
        """A user edits their message: new revision, then MESSAGE_UPDATE."""
        msg = self.message(message)
        chan = self.channels[msg.channel_id]
        pings = compute_pings(
            content,
            None,
            guild=self._guild_of(chan),
            known_users=self.users,
            author_id=msg.author_id,
            author_can_mention_everyone=self._can(chan, msg.author_id, Perm.MENTION_EVERYONE),
        )
        msg.revisions.append(Revision(content, time.monotonic(), iso_now(), None, pings))
        await self._dispatch_message("MESSAGE_UPDATE", msg, require_connection=True)
        return msg

    async def user_reaction(
        self,
        channel: FakeChannel | int,
        message: FakeMessage | int,
        user: FakeUser | int,
        emoji: str,
    ) -> None:
        """A user reacts (``"🛑"``, ``"name:id"`` or ``"<:name:id>"``): MESSAGE_REACTION_ADD."""
        chan = self._channel(channel)
        msg = self.message(message)
        author = self._user(user)
        key, emoji_payload = parse_emoji(emoji)
        users = msg.reactions.setdefault(key, [])
        if author.id not in users:
            users.append(author.id)
        await self._dispatch(
            "MESSAGE_REACTION_ADD",
            self._reaction_event(chan, msg, author.id, emoji_payload, add=True),
            chan.guild_id,
            require_connection=True,
        )

    async def user_reaction_remove(
        self,
        channel: FakeChannel | int,
        message: FakeMessage | int,
        user: FakeUser | int,
        emoji: str,
    ) -> None:
        """A user takes a reaction back: MESSAGE_REACTION_REMOVE."""
        chan = self._channel(channel)
        msg = self.message(message)
        author = self._user(user)
        key, emoji_payload = parse_emoji(emoji)
        users = msg.reactions.get(key, [])
        if author.id in users:
            users.remove(author.id)
            if not users:
                del msg.reactions[key]
        await self._dispatch(
            "MESSAGE_REACTION_REMOVE",
            self._reaction_event(chan, msg, author.id, emoji_payload, add=False),
            chan.guild_id,
            require_connection=True,
        )

    async def delete_message(self, channel: FakeChannel | int, message: FakeMessage | int) -> None:
        """A moderator deletes a message: MESSAGE_DELETE; later edits get 404 (10008)."""
        chan = self._channel(channel)
        msg = self.message(message)
        if msg.channel_id != chan.id:
            raise KeyError(f"message {msg.id} is not in channel {chan.id}")
        await self._delete(msg, require_connection=False)

    async def slash_command(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        permissions: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """A user runs a registered slash command: INTERACTION_CREATE (type 2).

        ``name`` may include subcommands (``"config set"``). Option values are converted by
        the registered option type: strings/numbers/booleans as given, a :class:`FakeUser`,
        :class:`FakeRole` or :class:`FakeChannel` (or an id) for those types, and an
        :class:`AttachmentSpec` for attachment options (stored and served like any upload).
        ``permissions`` overrides the member's computed channel permissions. Raises
        LookupError for a command that is not registered (globally, or for this guild),
        PermissionError where Discord's client would not offer it (``contexts``,
        ``dm_permission``, ``default_member_permissions``), ValueError for a missing required
        or unknown option.
        """
        return await self._interaction_routes.slash_command(
            channel, user, name, options, permissions=permissions, locale=locale
        )

    async def click(
        self, message: FakeMessage | int, user: FakeUser | int, custom_id: str
    ) -> FakeInteraction:
        """A user clicks a button the message shows: INTERACTION_CREATE (type 3)."""
        return await self._interaction_routes.click(self.message(message), user, custom_id)

    async def autocomplete(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        name: str,
        options: Mapping[str, Any],
        focused: str,
    ) -> FakeInteraction:
        """A user types option `focused` of a slash command (``options`` holds what is filled
        in, the focused one's text included): an autocomplete interaction (type 4); the bot's
        answer is in :attr:`FakeInteraction.choices`."""
        return await self._interaction_routes.slash_command(
            channel, user, name, options, focused=focused
        )

    async def message_command(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        name: str,
        target: FakeMessage | int,
        *,
        permissions: int | None = None,
    ) -> FakeInteraction:
        """A user picks a registered message command (Apps menu) on message `target`."""
        return await self._interaction_routes.message_command(
            channel, user, name, target, permissions=permissions
        )

    async def submit_modal(
        self, opened_by: FakeInteraction, values: Mapping[str, str]
    ) -> FakeInteraction:
        """The user submits the modal the bot opened on `opened_by` (values by input id)."""
        return await self._interaction_routes.submit_modal(opened_by, values)

    # ------------------------------------------------------------------------------------
    # helpers: lookups, permissions, payloads

    def _guild(self, guild: FakeGuild | int) -> FakeGuild:
        return guild if isinstance(guild, FakeGuild) else self.guilds[as_id(guild)]

    def _channel(self, channel: FakeChannel | int) -> FakeChannel:
        return channel if isinstance(channel, FakeChannel) else self.channels[as_id(channel)]

    def _user(self, user: FakeUser | int) -> FakeUser:
        return user if isinstance(user, FakeUser) else self.users[as_id(user)]

    def _guild_of(self, chan: FakeChannel) -> FakeGuild | None:
        return self.guilds.get(chan.guild_id) if chan.guild_id else None

    def _check_participant(
        self, chan: FakeChannel, guild: FakeGuild | None, user: FakeUser
    ) -> None:
        """Guild channels: make the user a member if needed. DMs: only the recipient talks."""
        if guild is not None:
            if user.id not in guild.members:
                self.add_member(guild, user)
            if chan.is_thread and user.id not in chan.member_ids:
                chan.member_ids.append(user.id)
        elif user.id not in chan.recipient_ids:
            raise ValueError(f"{user.username} is not the recipient of DM channel {chan.id}")

    def _can(self, chan: FakeChannel, user_id: int, perm: int) -> bool:
        return bool(chan.permissions_for(self._guild_of(chan), user_id) & perm)

    def _require(self, chan: FakeChannel, *perms: int) -> None:
        """403 like Discord: no VIEW_CHANNEL → 50001, another permission missing → 50013."""
        have = chan.permissions_for(self._guild_of(chan), self.bot_user.id)
        if not have & Perm.VIEW_CHANNEL:
            raise api_error(MISSING_ACCESS)
        for perm in perms:
            if not have & perm:
                raise api_error(MISSING_PERMISSIONS)

    def _add_message(self, msg: FakeMessage) -> None:
        self._messages[msg.id] = msg
        self.channels[msg.channel_id].message_ids.append(msg.id)

    def _snapshot_of(self, msg: FakeMessage) -> dict[str, Any]:
        """A forwarded message's snapshot: what it showed, without its author."""
        return {
            "type": msg.type,
            "content": msg.content,
            "embeds": [dict(e) for e in msg.embeds],
            "attachments": [dict(a) for a in msg.attachments],
            "timestamp": msg.timestamp,
            "edited_timestamp": msg.edited_timestamp,
            "flags": msg.flags,
            "mentions": [],
            "mention_roles": [],
            "components": [],
        }

    def _reference_of(self, msg: FakeMessage) -> dict[str, Any]:
        ref: dict[str, Any] = {
            "type": 0,
            "message_id": str(msg.id),
            "channel_id": str(msg.channel_id),
        }
        if msg.guild_id:
            ref["guild_id"] = str(msg.guild_id)
        return ref

    def _store_attachment(self, channel_id: int, spec: AttachmentSpec) -> _StoredAttachment:
        att_id = snowflake()
        name = urllib.parse.quote(spec.filename.replace(" ", "_"), safe="._-")
        now = int(time.time())
        sig = hashlib.sha256(f"{att_id}{now}".encode()).hexdigest()
        query = f"?ex={now + 86400:x}&is={now:x}&hm={sig}&"
        path = f"/attachments/{channel_id}/{att_id}/{name}"
        payload: dict[str, Any] = {
            "id": str(att_id),
            "filename": spec.filename,
            "size": spec.declared_size,
            "url": f"{self.base_url}{path}{query}",
            "proxy_url": f"{self.base_url}/media{path}{query}",
        }
        if spec.content_type:
            payload["content_type"] = spec.content_type
        if spec.description:
            payload["description"] = spec.description
        if spec.duration_secs is not None:  # a voice message's recording
            payload["duration_secs"] = spec.duration_secs
            payload["waveform"] = base64.b64encode(spec.waveform or bytes(64)).decode()
        size = spec.image_size()
        if size is not None:
            payload["width"], payload["height"] = size
        stored = _StoredAttachment(
            att_id, channel_id, spec.filename, spec.content_type, spec.data, payload
        )
        self._attachments[att_id] = stored
        return stored

    def _user_payload_with_member(self, user_id: int, guild: FakeGuild | None) -> dict[str, Any]:
        data = self.users[user_id].payload()
        if guild is not None and user_id in guild.members:
            data["member"] = guild.members[user_id].payload()
        return data

    def message_payload(self, msg: FakeMessage, *, gateway: bool = False) -> dict[str, Any]:
        """The message object Discord sends (``gateway=True``: with ``guild_id``/``member``)."""
        chan = self.channels[msg.channel_id]
        guild = self._guild_of(chan)
        rev = msg.revisions[-1]
        data: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "type": msg.type,
            "content": rev.content,
            "author": self.users[msg.author_id].payload(),
            "timestamp": msg.timestamp,
            "edited_timestamp": msg.edited_timestamp,
            "tts": False,
            "mention_everyone": rev.pings.everyone,
            "mentions": [
                self._user_payload_with_member(u, guild if gateway else None)
                for u in sorted(rev.pings.users)
            ],
            "mention_roles": [str(r) for r in sorted(rev.pings.roles)],
            "attachments": [dict(a) for a in msg.attachments],
            "embeds": [dict(e) for e in msg.embeds],
            "components": [dict(c) for c in msg.components],
            "pinned": False,
            "flags": msg.flags,
        }
        if chan.is_thread and msg.id in chan.message_ids:
            data["position"] = chan.message_ids.index(msg.id)  # its place in the thread
        if msg.reactions:
            data["reactions"] = [
                {
                    "emoji": parse_emoji(key)[1],
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "burst_colors": [],
                    "me": self.bot_user.id in users,
                    "me_burst": False,
                }
                for key, users in msg.reactions.items()
            ]
        if msg.nonce is not None:
            data["nonce"] = msg.nonce
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
        if msg.application_id is not None:
            data["application_id"] = str(msg.application_id)
        if msg.interaction_id is not None:
            inter = self.interactions.get(msg.interaction_id)
            if inter is not None:
                meta: dict[str, Any] = {
                    "id": str(inter.id),
                    "type": 2,
                    "name": inter.name,
                    "command_type": 1,
                    "user": self.users[inter.user_id].payload(),
                    "authorizing_integration_owners": inter.payload.get(
                        "authorizing_integration_owners", {}
                    ),
                }
                if inter.original_id is not None and inter.original_id != msg.id:
                    meta["original_response_message_id"] = str(inter.original_id)
                data["interaction_metadata"] = meta
        if msg.snapshots:
            data["message_snapshots"] = [dict(snap) for snap in msg.snapshots]
        if msg.reference is not None and msg.reference.get("type") == 1:
            data["message_reference"] = dict(msg.reference)  # a forward: no referenced_message
        elif msg.reference is not None:
            data["message_reference"] = dict(msg.reference)
            ref_id = opt_int(msg.reference.get("message_id"))
            ref = self._messages.get(ref_id) if ref_id else None
            if ref is None or ref.deleted:
                data["referenced_message"] = None
            else:
                data["referenced_message"] = self.message_payload(ref)
        if gateway:
            if guild is not None:
                data["guild_id"] = str(guild.id)
                if msg.author_id in guild.members and msg.webhook_id is None:
                    data["member"] = guild.members[msg.author_id].payload()
            data["channel_type"] = chan.type
        return data

    def _ready_payload(self, session: Any, guilds: list[FakeGuild]) -> dict[str, Any]:
        user = self.bot_user.payload()
        user.update(verified=True, mfa_enabled=False, flags=0, email=None)
        return {
            "v": 10,
            "user": user,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": [session.shard_id, session.shard_count],
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "user_settings": {},
            "auth": {},
            "_trace": ['["gateway-fake",{"micros":0}]'],
        }

    def _application_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.privileged_intents & Intent.GUILD_PRESENCES:
            flags |= 1 << 12
        if self.privileged_intents & Intent.GUILD_MEMBERS:
            flags |= 1 << 14
        if self.privileged_intents & Intent.MESSAGE_CONTENT:
            flags |= 1 << 18
        return flags

    def _guild_create_payload(self, guild: FakeGuild) -> dict[str, Any]:
        channels = [self.channels[c].payload() for c in guild.channel_ids]
        for ch in channels:
            ch.pop("guild_id", None)
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": str(guild.channel_ids[0]) if guild.channel_ids else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "widget_enabled": False,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": channels,
            "threads": [
                t.thread_payload(member_of=self.bot_user.id)
                for t in (self.channels[i] for i in guild.thread_ids)
                if not t.deleted and not t.archived and self._bot_sees(t)
            ],
            "members": [m.payload(self.users[m.user_id]) for m in guild.members.values()],
            "member_count": len(guild.members),
            "large": False,
            "unavailable": False,
            "joined_at": guild.joined_at,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
            "application_command_counts": {},
            "incidents_data": None,
        }

    def _reaction_event(
        self,
        chan: FakeChannel,
        msg: FakeMessage,
        user_id: int,
        emoji: dict[str, Any],
        *,
        add: bool,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(chan.id),
            "message_id": str(msg.id),
            "emoji": emoji,
            "burst": False,
            "type": 0,
        }
        if add:
            data["message_author_id"] = str(msg.author_id)
            data["burst_colors"] = []
        guild = self._guild_of(chan)
        if guild is not None:
            data["guild_id"] = str(guild.id)
            if add and user_id in guild.members:
                data["member"] = guild.members[user_id].payload(self.users[user_id])
        return data

    # ------------------------------------------------------------------------------------
    # helpers: dispatch

    def _queue_event(
        self, name: str, make: Callable[[], dict[str, Any]], guild_id: int | None
    ) -> None:
        """Dispatch a world-building change if the bot is already connected (else READY has it)."""
        session = self.gateway.by_shard.get(self.gateway.shard_of(guild_id))
        if session is None or not session.ready:
            return
        self._pending_events.append((name, make(), guild_id))
        with contextlib.suppress(RuntimeError):
            self._spawn(self._flush_pending())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_pending(self) -> None:
        while self._pending_events:
            name, data, guild_id = self._pending_events.pop(0)
            await self.gateway.dispatch(name, data, guild_id=guild_id, require_connection=False)

    async def _dispatch(
        self,
        name: str,
        data: dict[str, Any],
        guild_id: int | None,
        *,
        require_connection: bool,
        content_visible: bool = True,
    ) -> bool:
        await self._flush_pending()
        return await self.gateway.dispatch(
            name,
            data,
            guild_id=guild_id,
            require_connection=require_connection,
            content_visible=content_visible,
        )

    async def _dispatch_message(
        self, name: str, msg: FakeMessage, *, require_connection: bool
    ) -> bool:
        chan = self.channels[msg.channel_id]
        if chan.is_thread and not self._bot_sees(chan):
            return False  # a private thread the bot is not in
        visible = (
            msg.author_id == self.bot_user.id
            or self.bot_user.id in msg.pings.users
            or msg.guild_id is None
        )
        return await self._dispatch(
            name,
            self.message_payload(msg, gateway=True),
            msg.guild_id,
            require_connection=require_connection,
            content_visible=visible,
        )

    async def _delete(self, msg: FakeMessage, *, require_connection: bool) -> None:
        msg.deleted = True
        msg.t_deleted = time.monotonic()
        data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id:
            data["guild_id"] = str(msg.guild_id)
        if not msg.ephemeral:
            await self._dispatch(
                "MESSAGE_DELETE", data, msg.guild_id, require_connection=require_connection
            )

    # ------------------------------------------------------------------------------------
    # HTTP plumbing

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        a = self._route
        ir = self._interaction_routes
        # users, application, gateway
        r.add_get(API_PREFIX + "/users/@me", a("get_current_user", self._h_me))
        r.add_post(API_PREFIX + "/users/@me/channels", a("create_dm", self._h_create_dm))
        r.add_get(API_PREFIX + "/users/{user_id}", a("get_user", self._h_get_user))
        r.add_get(API_PREFIX + "/oauth2/applications/@me", a("application_info", self._h_app))
        r.add_get(API_PREFIX + "/applications/@me", a("application_info", self._h_app))
        r.add_get(API_PREFIX + "/gateway", a("gateway", self._h_gateway, auth=False))
        r.add_get(API_PREFIX + "/gateway/bot", a("gateway_bot", self._h_gateway_bot))
        # channels and messages
        ch = API_PREFIX + "/channels/{channel_id}"
        msg = ch + "/messages/{message_id}"
        react = msg + "/reactions"
        r.add_get(ch, a("get_channel", self._h_get_channel))
        r.add_post(ch + "/typing", a("typing", self._h_typing))
        r.add_post(ch + "/messages", a("message_create", self._h_create_message))
        r.add_get(ch + "/messages", a("message_list", self._h_list_messages))
        r.add_get(msg, a("message_get", self._h_get_message))
        r.add_patch(msg, a("message_edit", self._h_edit_message))
        r.add_delete(msg, a("message_delete", self._h_delete_message))
        r.add_post(msg + "/threads", a("thread_create", self._h_start_thread))
        r.add_put(react + "/{emoji}/@me", a("reaction", self._h_add_reaction))
        r.add_delete(react + "/{emoji}/@me", a("reaction", self._h_remove_own_reaction))
        r.add_delete(react + "/{emoji}/{user_id}", a("reaction", self._h_remove_user_reaction))
        r.add_get(react + "/{emoji}", a("reaction_list", self._h_list_reactions))
        r.add_delete(react + "/{emoji}", a("reaction", self._h_clear_emoji))
        r.add_delete(react, a("reaction", self._h_clear_reactions))
        # guilds
        g = API_PREFIX + "/guilds/{guild_id}"
        r.add_get(g, a("get_guild", self._h_get_guild))
        r.add_get(g + "/channels", a("guild_channels", self._h_guild_channels))
        r.add_get(g + "/roles", a("guild_roles", self._h_guild_roles))
        r.add_get(g + "/members/{user_id}", a("get_member", self._h_get_member))
        # interactions and their webhooks (token-authenticated, outside the global limit)
        r.add_post(
            API_PREFIX + "/interactions/{interaction_id}/{token}/callback",
            a("interaction_callback", ir.callback, auth=False, global_limit=False),
        )
        wh = API_PREFIX + "/webhooks/{app_id}/{token}"
        for method, kind, handler in (
            ("GET", "webhook_get", ir.webhook_get),
            ("PATCH", "webhook_edit", ir.webhook_edit),
            ("DELETE", "webhook_delete", ir.webhook_delete),
        ):
            view = a(kind, handler, auth=False, global_limit=False)
            r.add_route(method, wh + "/messages/@original", view)
            r.add_route(method, wh + "/messages/{message_id}", view)
        r.add_post(wh, a("webhook_create", ir.followup, auth=False, global_limit=False))
        # application commands
        for base in ("/applications/{app_id}", "/applications/{app_id}/guilds/{guild_id}"):
            cmds = API_PREFIX + base + "/commands"
            r.add_get(cmds, a("commands_get", ir.commands_get))
            r.add_put(cmds, a("commands_put", ir.commands_put))
            r.add_post(cmds, a("command_create", ir.command_create))
            r.add_get(cmds + "/{command_id}", a("command_get", ir.command_get))
            r.add_patch(cmds + "/{command_id}", a("command_edit", ir.command_edit))
            r.add_delete(cmds + "/{command_id}", a("command_delete", ir.command_delete))
        r.add_route("*", API_PREFIX + "/{tail:.*}", a("unknown", self._h_unknown))
        # CDN and gateway
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        r.add_get("/media/attachments/{channel_id}/{attachment_id}/{filename}", self._h_cdn)
        r.add_get("/gateway", self.gateway.handle)

    def _route(
        self,
        kind: str,
        handler: Callable[[web.Request, Call], Awaitable[Any]],
        *,
        auth: bool = True,
        global_limit: bool = True,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def view(request: web.Request) -> web.StreamResponse:
            t0 = time.monotonic()
            mi = request.match_info
            call = Call(
                method=request.method,
                path=request.path[len(API_PREFIX) :],
                route=kind,
                channel_id=opt_int(mi.get("channel_id")),
                json=None,
                query=dict(request.query),
                t_start=t0,
            )
            self.calls.append(call)
            headers: dict[str, str] = {}
            try:
                await self._read_body(request, call)
                if auth and not self._authorized(request):
                    raise api_error(UNAUTHORIZED)
                major = mi.get("channel_id") or mi.get("token") or mi.get("guild_id") or ""
                limited = self._take_ratelimit(kind, major, global_limit, call, headers)
                if limited is not None:
                    response = limited
                else:
                    result = await handler(request, call)
                    response = self._to_response(result)
            except ApiError as exc:
                call.response = exc.body()
                response = self._json(exc.status, exc.body())
            for key, value in headers.items():
                response.headers.setdefault(key, value)
            call.status = response.status
            call.headers = {
                k: v
                for k, v in response.headers.items()
                if k.lower().startswith(("x-ratelimit", "retry-after", "via", "content-type"))
            }
            if call.response is None and isinstance(response, web.Response) and response.body:
                with contextlib.suppress(ValueError, TypeError):
                    call.response = json.loads(response.body)  # type: ignore[arg-type]
            call.t_end = time.monotonic()
            return response

        return view

    @staticmethod
    def _json(status: int, data: Any, headers: Mapping[str, str] | None = None) -> web.Response:
        """A JSON response with ``Content-Type: application/json`` exactly (no charset)."""
        response = web.Response(
            status=status, body=json.dumps(data, ensure_ascii=False).encode(), headers=headers
        )
        response.headers["Content-Type"] = "application/json"
        return response

    def _to_response(self, result: Any) -> web.StreamResponse:
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        if isinstance(result, tuple):
            status, body = result
            return web.Response(status=204) if body is None else self._json(status, body)
        return self._json(200, result)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return secrets.compare_digest(header, f"Bot {self.token}")

    async def _read_body(self, request: web.Request, call: Call) -> None:
        """Parse JSON or multipart (``payload_json`` + ``files[n]``) into the call record."""
        call_files: list[Upload] = []
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""  # type: ignore[union-attr]
                data = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    try:
                        call.json = json.loads(data)
                    except ValueError:
                        raise ApiError(
                            400, 50109, "The request body contains invalid JSON."
                        ) from None
                elif part.filename:  # type: ignore[union-attr]
                    call_files.append(
                        Upload(
                            name,
                            part.filename,  # type: ignore[union-attr]
                            part.headers.get("Content-Type"),  # type: ignore[union-attr]
                            bytes(data),
                        )
                    )
            call.files = [f.filename for f in call_files]
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    call.json = json.loads(raw)
                except ValueError:
                    raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        call.uploads = call_files

    def _take_ratelimit(
        self,
        kind: str,
        major: str,
        global_limit: bool,
        call: Call,
        headers: dict[str, str],
    ) -> web.Response | None:
        # the window that counts this request and the hash its response carries (for message
        # creates and edits these differ under the "discord" model: two windows, one hash)
        limit, per = self.route_limits.get(kind, DEFAULT_ROUTE_LIMIT)
        window, bucket = bucket_for(kind, self.bucket_model)
        key = f"{window}:{major}"
        decision = self._limiter.take(key, limit, per)
        if self.send_ratelimit_headers:
            headers.update(self._ratelimit_headers(decision, bucket))
        if not decision.allowed:
            return self._too_many(kind, bucket, call, decision.reset_after, is_global=False)
        if global_limit and self.global_rate_limit is not None:
            g_limit, g_per = self.global_rate_limit
            g = self._limiter.take("global", g_limit, g_per)
            if not g.allowed:
                self._limiter.refund(key)
                return self._too_many(kind, bucket, call, g.reset_after, is_global=True)
        return None

    @staticmethod
    def _ratelimit_headers(decision: Decision, bucket: str) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(decision.limit),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": f"{time.time() + decision.reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{decision.reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    def _too_many(
        self, kind: str, bucket: str, call: Call, retry_after: float, *, is_global: bool
    ) -> web.Response:
        retry_after = max(retry_after, 0.001)
        self.rate_limit_hits.append(
            RateLimitHit(
                route=kind,
                bucket=bucket,
                channel_id=call.channel_id,
                path=call.path,
                retry_after=retry_after,
                is_global=is_global,
                t=time.monotonic(),
            )
        )
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        body["global"] = is_global
        headers = {
            "Retry-After": str(max(1, int(-(-retry_after // 1)))),
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        call.response = body
        return self._json(429, body, headers)

    # ------------------------------------------------------------------------------------
    # validation shared by messages, interaction responses and webhooks

    def _make_message(
        self,
        chan: FakeChannel,
        body: Mapping[str, Any],
        uploads: Sequence[Upload],
        *,
        msg_type: int = TYPE_DEFAULT,
        flags: int = 0,
        interaction: FakeInteraction | None = None,
    ) -> FakeMessage:
        """Build (not store) a bot message from a validated create payload."""
        guild = self._guild_of(chan)
        reference = None
        replied_author = None
        ref = body.get("message_reference")
        if ref and int(ref.get("type", 0) or 0) == 0 and ref.get("message_id") is not None:
            ref_id = opt_int(ref.get("message_id"))
            ref_chan = opt_int(ref.get("channel_id")) or chan.id
            target = self._messages.get(ref_id) if ref_id else None
            if target is None or target.deleted or target.channel_id != ref_chan:
                if ref.get("fail_if_not_exists", True):
                    raise invalid_form(
                        {
                            "message_reference": form_error(
                                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                            )
                        }
                    )
            else:
                reference = self._reference_of(target)
                replied_author = target.author_id
                msg_type = TYPE_REPLY if msg_type == TYPE_DEFAULT else msg_type
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        pings = compute_pings(
            content,
            allowed,
            guild=guild,
            known_users=self.users,
            author_id=self.bot_user.id,
            author_can_mention_everyone=self._can(chan, self.bot_user.id, Perm.MENTION_EVERYONE),
            replied_author_id=replied_author,
        )
        msg_id = snowflake()
        stored = [
            self._store_attachment(chan.id, AttachmentSpec(u.filename, u.data, u.content_type))
            for u in uploads
        ]
        keep_flags = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS
        if interaction is not None:
            keep_flags |= FLAG_EPHEMERAL
        msg = FakeMessage(
            id=msg_id,
            channel_id=chan.id,
            guild_id=chan.guild_id,
            author_id=self.bot_user.id,
            revisions=[
                Revision(
                    content,
                    time.monotonic(),
                    iso_now(),
                    dict(allowed) if isinstance(allowed, dict) else None,
                    pings,
                    payload=dict(body),
                )
            ],
            type=msg_type,
            attachments=[a.payload for a in stored],
            embeds=[dict(e) for e in body.get("embeds") or []],
            components=[dict(c) for c in body.get("components") or []],
            flags=(int(body.get("flags") or 0) & keep_flags) | flags,
            reference=reference,
            nonce=body.get("nonce"),
        )
        if interaction is not None:
            msg.webhook_id = self.application_id
            msg.application_id = self.application_id
            msg.interaction_id = interaction.id
        return msg

    def _apply_edit(
        self, msg: FakeMessage, body: Mapping[str, Any], uploads: Sequence[Upload]
    ) -> None:
        """Apply a validated PATCH: a new revision with the edit's own allowed_mentions."""
        chan = self.channels[msg.channel_id]
        content = body["content"] if "content" in body else msg.content
        content = content or ""
        allowed = body.get("allowed_mentions")
        pings = compute_pings(
            content,
            allowed,
            guild=self._guild_of(chan),
            known_users=self.users,
            author_id=msg.author_id,
            author_can_mention_everyone=self._can(chan, msg.author_id, Perm.MENTION_EVERYONE),
        )
        if "embeds" in body:
            msg.embeds = [dict(e) for e in body.get("embeds") or []]
        if "components" in body:
            msg.components = [dict(c) for c in body.get("components") or []]
        if "attachments" in body:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            msg.attachments = [a for a in msg.attachments if a["id"] in keep]
        for u in uploads:
            stored = self._store_attachment(
                chan.id, AttachmentSpec(u.filename, u.data, u.content_type)
            )
            msg.attachments.append(stored.payload)
        if "flags" in body and body["flags"] is not None:
            keep = FLAG_SUPPRESS_EMBEDS
            msg.flags = (msg.flags & ~keep) | (int(body["flags"]) & keep)
        msg.flags &= ~FLAG_LOADING
        msg.revisions.append(
            Revision(
                content,
                time.monotonic(),
                iso_now(),
                dict(allowed) if isinstance(allowed, dict) else None,
                pings,
                payload=dict(body),
            )
        )

    def _live_message(self, chan: FakeChannel, message_id: Any) -> FakeMessage:
        msg = self._messages.get(opt_int(message_id) or 0)
        if msg is None or msg.deleted or msg.channel_id != chan.id or msg.ephemeral:
            raise api_error(UNKNOWN_MESSAGE)
        return msg

    def _req_channel(self, request: web.Request) -> FakeChannel:
        chan = self.channels.get(opt_int(request.match_info["channel_id"]) or 0)
        if chan is None or chan.deleted:
            raise api_error(UNKNOWN_CHANNEL)
        return chan

    # ------------------------------------------------------------------------------------
    # handlers: users, application, gateway

    async def _h_me(self, request: web.Request, call: Call) -> Any:
        data = self.bot_user.payload()
        data.update(verified=True, mfa_enabled=False, flags=0, email=None, locale="en-US")
        return data

    async def _h_get_user(self, request: web.Request, call: Call) -> Any:
        user = self.users.get(opt_int(request.match_info["user_id"]) or 0)
        if user is None:
            raise api_error(UNKNOWN_USER)
        return user.payload()

    async def _h_create_dm(self, request: web.Request, call: Call) -> Any:
        body = call.json or {}
        uid = opt_int(body.get("recipient_id"))
        if uid is None or uid not in self.users:
            raise invalid_form(
                {"recipient_id": form_error("NUMBER_TYPE_COERCE", "Value is not snowflake.")}
            )
        if uid == self.bot_user.id:
            raise ApiError(400, 50007, "Cannot send messages to this user")
        return self.add_dm_channel(uid).payload(self.users)

    async def _h_app(self, request: web.Request, call: Call) -> Any:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": self.verify_key,
            "owner": self.owner.payload(),
            "team": None,
            "flags": self._application_flags(),
            "bot": self.bot_user.payload(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
        }

    async def _h_gateway(self, request: web.Request, call: Call) -> Any:
        return {"url": self.gateway_url}

    async def _h_gateway_bot(self, request: web.Request, call: Call) -> Any:
        return {
            "url": self.gateway_url,
            "shards": self.shard_count,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    # ------------------------------------------------------------------------------------
    # handlers: channels and messages

    async def _h_get_channel(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        if not chan.is_dm:
            self._require(chan)
        return chan.payload(self.users)

    @staticmethod
    def _send_perm(chan: FakeChannel) -> int:
        """What posting needs: Send Messages, or in a thread Send Messages in Threads."""
        return Perm.SEND_MESSAGES_IN_THREADS if chan.is_thread else Perm.SEND_MESSAGES

    async def _h_typing(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan, self._send_perm(chan))
        return None

    async def _h_create_message(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        body = call.json if isinstance(call.json, dict) else {}
        uploads: list[Upload] = call.uploads
        if chan.is_forum:
            self._require(chan)
            raise api_error(NON_TEXT_CHANNEL)
        needed = [self._send_perm(chan)]
        if body.get("message_reference"):
            needed.append(Perm.READ_MESSAGE_HISTORY)
        if uploads:
            needed.append(Perm.ATTACH_FILES)
        self._require(chan, *needed)
        validate_message_body(body, uploads=uploads)
        if chan.is_thread and chan.archived:
            if chan.locked and not self._can(chan, self.bot_user.id, Perm.MANAGE_THREADS):
                raise api_error(THREAD_ARCHIVED)
            chan.archived = False
            await self._thread_changed(chan)
        msg = self._make_message(chan, body, uploads)
        self._add_message(msg)
        await self._dispatch_message("MESSAGE_CREATE", msg, require_connection=False)
        return self.message_payload(msg)

    async def _h_list_messages(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan)
        if not self._can(chan, self.bot_user.id, Perm.READ_MESSAGE_HISTORY):
            return []
        q = request.query
        limit = max(1, min(100, int(q.get("limit", 50))))
        live = [m for m in self.messages(chan) if not m.deleted and not m.ephemeral]
        if "before" in q:
            live = [m for m in live if m.id < int(q["before"])]
        if "after" in q:
            live = [m for m in live if m.id > int(q["after"])]
            live = live[:limit]
        if "around" in q:
            around = int(q["around"])
            older = [m for m in live if m.id <= around][-((limit + 1) // 2) :]
            newer = [m for m in live if m.id > around][: limit // 2]
            live = older + newer
        live = live[-limit:]
        return [self.message_payload(m) for m in reversed(live)]

    async def _h_get_message(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan, Perm.READ_MESSAGE_HISTORY)
        return self.message_payload(self._live_message(chan, request.match_info["message_id"]))

    async def _h_edit_message(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan)
        msg = self._live_message(chan, request.match_info["message_id"])
        if msg.author_id != self.bot_user.id:
            raise api_error(CANNOT_EDIT_OTHERS)
        if chan.is_thread and chan.archived:
            raise api_error(THREAD_ARCHIVED)
        body = call.json if isinstance(call.json, dict) else {}
        uploads: list[Upload] = call.uploads
        validate_message_body(body, uploads=uploads, partial=True, existing=msg)
        self._apply_edit(msg, body, uploads)
        await self._dispatch_message("MESSAGE_UPDATE", msg, require_connection=False)
        return self.message_payload(msg)

    async def _h_start_thread(self, request: web.Request, call: Call) -> Any:
        """Start Thread from Message: a public thread (an announcement thread in an
        announcement channel) whose id is the message's; needs Create Public Threads; one per
        message (160004). THREAD_CREATE goes out (the bot, its creator, is a member)."""
        chan = self._req_channel(request)
        if chan.type not in (0, 5):
            self._require(chan)
            raise api_error(NON_TEXT_CHANNEL)
        self._require(chan, Perm.CREATE_PUBLIC_THREADS, Perm.READ_MESSAGE_HISTORY)
        msg = self._live_message(chan, request.match_info["message_id"])
        body = call.json if isinstance(call.json, dict) else {}
        name = body.get("name")
        errors: dict[str, Any] = {}
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
            errors["name"] = form_error(
                "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        duration = body.get("auto_archive_duration")
        if duration is not None and duration not in (60, 1440, 4320, 10080):
            errors["auto_archive_duration"] = form_error(
                "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}."
            )
        if errors:
            raise invalid_form(errors)
        if msg.id in self.channels:
            raise api_error(THREAD_ALREADY_CREATED)
        thread = FakeChannel(
            id=msg.id,
            type=10 if chan.type == 5 else 11,
            name=name.strip(),  # type: ignore[union-attr]
            guild_id=chan.guild_id,
            parent_id=chan.id,
            owner_id=self.bot_user.id,
            member_ids=[self.bot_user.id],
            auto_archive_duration=int(duration or 1440),
            parent=chan,
        )
        self.channels[thread.id] = thread
        self._guild(chan.guild_id or 0).thread_ids.append(thread.id)
        await self._dispatch(
            "THREAD_CREATE",
            {**thread.thread_payload(member_of=self.bot_user.id), "newly_created": True},
            chan.guild_id,
            require_connection=False,
        )
        return (201, thread.thread_payload(member_of=self.bot_user.id))

    async def _h_delete_message(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan)
        msg = self._live_message(chan, request.match_info["message_id"])
        if msg.author_id != self.bot_user.id:
            if chan.is_dm:
                raise api_error(DM_ACTION)
            self._require(chan, Perm.MANAGE_MESSAGES)
        await self._delete(msg, require_connection=False)
        return None

    async def _h_add_reaction(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan, Perm.READ_MESSAGE_HISTORY)
        msg = self._live_message(chan, request.match_info["message_id"])
        key, emoji = parse_emoji(request.match_info["emoji"])
        users = msg.reactions.get(key)
        if users is None:
            self._require(chan, Perm.ADD_REACTIONS)
            if len(msg.reactions) >= MAX_REACTIONS:
                raise api_error(MAX_REACTIONS_REACHED)
            users = msg.reactions[key] = []
        if self.bot_user.id not in users:
            users.append(self.bot_user.id)
            await self._dispatch(
                "MESSAGE_REACTION_ADD",
                self._reaction_event(chan, msg, self.bot_user.id, emoji, add=True),
                chan.guild_id,
                require_connection=False,
            )
        return None

    async def _remove_reaction(
        self, chan: FakeChannel, msg: FakeMessage, key: str, emoji: dict[str, Any], uid: int
    ) -> None:
        users = msg.reactions.get(key, [])
        if uid in users:
            users.remove(uid)
            if not users:
                del msg.reactions[key]
            await self._dispatch(
                "MESSAGE_REACTION_REMOVE",
                self._reaction_event(chan, msg, uid, emoji, add=False),
                chan.guild_id,
                require_connection=False,
            )

    async def _h_remove_own_reaction(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan)
        msg = self._live_message(chan, request.match_info["message_id"])
        key, emoji = parse_emoji(request.match_info["emoji"])
        await self._remove_reaction(chan, msg, key, emoji, self.bot_user.id)
        return None

    async def _h_remove_user_reaction(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        uid = opt_int(request.match_info["user_id"])
        if uid != self.bot_user.id:
            if chan.is_dm:
                raise api_error(DM_ACTION)
            self._require(chan, Perm.MANAGE_MESSAGES)
        else:
            self._require(chan)
        msg = self._live_message(chan, request.match_info["message_id"])
        key, emoji = parse_emoji(request.match_info["emoji"])
        if uid is None or uid not in self.users:
            raise api_error(UNKNOWN_USER)
        await self._remove_reaction(chan, msg, key, emoji, uid)
        return None

    async def _h_list_reactions(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        self._require(chan, Perm.READ_MESSAGE_HISTORY)
        msg = self._live_message(chan, request.match_info["message_id"])
        key, _ = parse_emoji(request.match_info["emoji"])
        limit = max(1, min(100, int(request.query.get("limit", 25))))
        return [self.users[u].payload() for u in msg.reactions.get(key, [])[:limit]]

    async def _h_clear_emoji(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        if chan.is_dm:
            raise api_error(DM_ACTION)
        self._require(chan, Perm.MANAGE_MESSAGES)
        msg = self._live_message(chan, request.match_info["message_id"])
        key, emoji = parse_emoji(request.match_info["emoji"])
        if msg.reactions.pop(key, None) is not None:
            data = {
                "channel_id": str(chan.id),
                "message_id": str(msg.id),
                "emoji": emoji,
                "guild_id": str(chan.guild_id),
            }
            await self._dispatch(
                "MESSAGE_REACTION_REMOVE_EMOJI", data, chan.guild_id, require_connection=False
            )
        return None

    async def _h_clear_reactions(self, request: web.Request, call: Call) -> Any:
        chan = self._req_channel(request)
        if chan.is_dm:
            raise api_error(DM_ACTION)
        self._require(chan, Perm.MANAGE_MESSAGES)
        msg = self._live_message(chan, request.match_info["message_id"])
        msg.reactions.clear()
        data = {
            "channel_id": str(chan.id),
            "message_id": str(msg.id),
            "guild_id": str(chan.guild_id),
        }
        await self._dispatch(
            "MESSAGE_REACTION_REMOVE_ALL", data, chan.guild_id, require_connection=False
        )
        return None

    # ------------------------------------------------------------------------------------
    # handlers: guilds

    def _req_guild(self, request: web.Request) -> FakeGuild:
        guild = self.guilds.get(opt_int(request.match_info["guild_id"]) or 0)
        if guild is None:
            raise api_error(UNKNOWN_GUILD)
        return guild

    async def _h_get_guild(self, request: web.Request, call: Call) -> Any:
        data = self._guild_create_payload(self._req_guild(request))
        for key in ("channels", "members", "threads", "voice_states", "presences", "joined_at"):
            data.pop(key, None)
        return data

    async def _h_guild_channels(self, request: web.Request, call: Call) -> Any:
        guild = self._req_guild(request)
        return [self.channels[c].payload() for c in guild.channel_ids]

    async def _h_guild_roles(self, request: web.Request, call: Call) -> Any:
        return [r.payload() for r in self._req_guild(request).roles.values()]

    async def _h_get_member(self, request: web.Request, call: Call) -> Any:
        guild = self._req_guild(request)
        uid = opt_int(request.match_info["user_id"]) or 0
        member = guild.members.get(uid)
        if member is None:
            raise api_error(UNKNOWN_MEMBER)
        return member.payload(self.users[uid])

    # ------------------------------------------------------------------------------------
    # handlers: interactions

    # ------------------------------------------------------------------------------------
    # handlers: application commands

    # ------------------------------------------------------------------------------------
    # catch-all, CDN

    async def _h_unknown(self, request: web.Request, call: Call) -> Any:
        raise api_error(NOT_FOUND)

    async def _h_cdn(self, request: web.Request) -> web.StreamResponse:
        t0 = time.monotonic()
        att = self._attachments.get(opt_int(request.match_info["attachment_id"]) or 0)
        call = Call(
            method=request.method,
            path=request.path,
            route="cdn",
            channel_id=opt_int(request.match_info["channel_id"]),
            json=None,
            query=dict(request.query),
            t_start=t0,
        )
        self.calls.append(call)
        if self.cdn_hold is not None:
            await self.cdn_hold.wait()
        if att is None or str(att.channel_id) != request.match_info["channel_id"]:
            response = web.Response(status=404, text="This content is no longer available.")
        else:
            # the type as uploaded, parameters and all ("text/plain; charset=utf-8")
            content_type = att.content_type or "application/octet-stream"
            response = web.Response(body=att.data, headers={"Content-Type": content_type})
        call.status = response.status
        call.t_end = time.monotonic()
        return response
