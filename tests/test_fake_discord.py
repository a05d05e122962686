"""The fake Discord against the real discord.py 2.7 client, plus the rules it enforces."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, Perm
from tests.fakes.discord_models import FakeGuild, compute_pings

pytestmark = pytest.mark.timeout(60)

NONE = {"parse": []}


def png_bytes(size: tuple[int, int] = (3, 2)) -> bytes:
    """A tiny real PNG."""
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


class MiniBot(commands.AutoShardedBot):
    """A minimal bot shaped like gemcord's: auto-sharded, no pings, message content intent."""

    def __init__(self, guild_id: int | None = None) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        intents.message_content = True
        intents.guild_reactions = True
        intents.dm_reactions = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            chunk_guilds_at_startup=False,
        )
        self.guild_id = guild_id
        self.received: list[discord.Message] = []
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self.command_log: list[Any] = []
        self.command_delay = 0.0

    async def setup_hook(self) -> None:
        """Register /ask on the test guild and sync it, as gemcord does with a dev guild."""
        if self.guild_id is None:
            return
        bot = self

        @app_commands.command(name="ask", description="Ask a question")
        @app_commands.describe(prompt="What to ask", image="An image")
        async def ask(
            interaction: discord.Interaction,
            prompt: str,
            image: discord.Attachment | None = None,
        ) -> None:
            bot.command_log.append(("invoked", prompt, image))
            if bot.command_delay:
                await asyncio.sleep(bot.command_delay)
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                bot.command_log.append(("defer_failed", exc.status, exc.code))
                return
            size = len(await image.read()) if image is not None else 0
            first = await interaction.followup.send(f"{prompt}: {size} bytes @everyone", wait=True)
            bot.command_log.append(("first", first.id))
            await interaction.edit_original_response(content=f"{prompt}: done")
            second = await interaction.followup.send("more", wait=True)
            await interaction.followup.edit_message(second.id, content="more, edited")
            bot.command_log.append(("second", second.id))

        @app_commands.command(name="ping", description="Latency, privately")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong @everyone", ephemeral=True)
            callback = interaction.response.type
            original = await interaction.original_response()
            bot.command_log.append(("ping", callback, original.id, interaction.guild_id))

        config = app_commands.Group(
            name="config",
            description="Settings",
            default_permissions=discord.Permissions(manage_guild=True),
        )

        @config.command(name="set", description="Set a key")
        async def config_set(interaction: discord.Interaction, key: str, value: int) -> None:
            bot.command_log.append(("config", key, value))
            await interaction.response.send_message("ok", ephemeral=True)

        guild = discord.Object(id=self.guild_id)
        self.tree.add_command(ask, guild=guild)
        self.tree.add_command(config, guild=guild)
        self.tree.add_command(ping)
        await self.tree.sync(guild=guild)
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        """Keep every message the gateway delivers."""
        self.received.append(message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """Keep every reaction event."""
        self.raw_reactions.append(payload)


@contextlib.asynccontextmanager
async def running(fake: FakeDiscord, bot: commands.AutoShardedBot) -> AsyncIterator[Any]:
    """Log the bot in against the fake and connect it; wait for READY, not on_ready."""
    old_base = discord.http.Route.BASE
    discord.http.Route.BASE = fake.api_base
    task: asyncio.Task[None] | None = None
    try:
        await bot.login(fake.token)
        task = asyncio.create_task(bot.connect())
        await fake.wait_until_ready(timeout=10)
        # ... and until discord.py has read it: READY and every guild's GUILD_CREATE (on a
        # loaded machine the client may still be parsing them when the fake is done). They go
        # out on the session, not through fake.gateway_events: every guild of the fake is sent.

        def cached(guild_id: int) -> bool:  # READY's stub is unavailable until GUILD_CREATE
            guild = bot.get_guild(guild_id)
            return guild is not None and not guild.unavailable

        await fake.wait_for(
            lambda: bot.user is not None and all(cached(g) for g in fake.guilds),
            timeout=10,
            message="discord.py never cached the guilds of READY",
        )
        yield bot
    finally:
        await bot.close()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        discord.http.Route.BASE = old_base


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A fake with a short edit window so bucket behaviour shows within seconds."""
    async with FakeDiscord(rate_limit=(5, 2.0)) as server:
        yield server


def world(fake: FakeDiscord) -> tuple[FakeGuild, Any, Any]:
    """One guild, one text channel, one human user."""
    guild = fake.add_guild("Test server")
    chan = fake.add_text_channel(guild, "general")
    alice = fake.add_user("alice")
    return guild, chan, alice


async def received(bot: MiniBot, fake: FakeDiscord, message_id: int) -> discord.Message:
    """Wait until the bot's on_message saw a message."""
    return await fake.wait_for(
        lambda: next((m for m in bot.received if m.id == message_id), None), timeout=5
    )


# ---------------------------------------------------------------------------------------------
# discord.py end to end


async def test_login_ready_and_cache(fake: FakeDiscord) -> None:
    guild, chan, _ = world(fake)
    bot = MiniBot()
    async with running(fake, bot):
        assert bot.user is not None and bot.user.id == fake.bot_user.id
        assert bot.application_id == fake.application_id
        assert bot.shard_count == 1
        cached = bot.get_guild(guild.id)
        assert cached is not None and cached.name == "Test server"
        assert [c.id for c in cached.text_channels] == [chan.id]
        assert cached.me is not None and cached.me.id == fake.bot_user.id
        perms = cached.get_channel(chan.id).permissions_for(cached.me)  # type: ignore[union-attr]
        assert perms.send_messages and perms.read_message_history
        routes = [c.route for c in fake.calls]
        assert routes[:3] == ["get_current_user", "application_info", "gateway_bot"]
        assert all(c.status == 200 for c in fake.calls)
        identify = fake.identifies[-1]
        assert identify["token"] == fake.token
        assert identify["shard"] == [0, 1]
        assert fake.intents == bot.intents.value
        assert fake.gateway.connections[0].compress == "zlib-stream"
        assert fake.gateway.connections[0].heartbeats >= 1


async def test_wrong_token_is_refused(fake: FakeDiscord) -> None:
    bot = MiniBot()
    old_base = discord.http.Route.BASE
    discord.http.Route.BASE = fake.api_base
    try:
        with pytest.raises(discord.LoginFailure):
            await bot.login("not-the-token")
    finally:
        await bot.close()
        discord.http.Route.BASE = old_base
    assert [(c.route, c.status) for c in fake.calls] == [("get_current_user", 401)]


async def test_mention_reply_and_paced_edits(fake: FakeDiscord) -> None:
    _, chan, alice = world(fake)
    bot = MiniBot()
    async with running(fake, bot):
        question = await fake.user_message(chan, alice, f"{fake.bot_user.mention} hello")
        msg = await received(bot, fake, question.id)
        assert bot.user in msg.mentions
        assert msg.content == f"<@{fake.bot_user.id}> hello"
        assert isinstance(msg.author, discord.Member) and msg.author.id == alice.id

        reply = await msg.reply(f"hi @everyone and {alice.mention}")
        for i in range(7):
            reply = await reply.edit(content=f"draft {i} @everyone")

        stored = fake.message(reply.id)
        assert stored.reply_to == question.id
        assert stored.content == "draft 6 @everyone"
        assert len(stored.edits) == 7
        # allowed_mentions none on the create and on every edit; so nobody was pinged
        assert stored.allowed_mentions == [NONE] * 8 and stored.mentions_disabled
        assert not stored.pinged_everyone and not stored.pinged_users
        # discord.py read the headers and waited: no 429, edits spread over > one window
        assert fake.rate_limit_hits == []
        edits = fake.calls_for("message_edit", channel=chan)
        assert len(edits) == 7 and all(c.status == 200 for c in edits)
        assert edits[-1].t_start - edits[0].t_start >= 2.0 - 0.05
        # within one window never more than 5 edits started
        starts = [c.t_start for c in edits]
        assert all(b - a >= 2.0 - 0.05 for a, b in zip(starts, starts[5:], strict=False))
        # the fake also dispatched the bot's own messages, as Discord does
        own = [m for m in bot.received if m.author.id == fake.bot_user.id]
        assert [m.id for m in own] == [reply.id]

        # control: the same text with Discord's defaults would have pinged
        loud = await chan_send(bot, chan.id, "@everyone look", discord.AllowedMentions.all())
        assert fake.message(loud).pinged_everyone
        assert not fake.message(loud).mentions_disabled


async def chan_send(bot: commands.Bot, channel_id: int, text: str, am: Any) -> int:
    """Send through discord.py with explicit allowed mentions; returns the message id."""
    channel = bot.get_channel(channel_id)
    assert isinstance(channel, discord.TextChannel)
    return (await channel.send(text, allowed_mentions=am)).id


async def test_discord_errors_reach_discord_py(fake: FakeDiscord) -> None:
    _, chan, alice = world(fake)
    bot = MiniBot()
    async with running(fake, bot):
        channel = bot.get_channel(chan.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        assert "content" in str(too_long.value)
        assert (await channel.send("x" * 2000)).content == "x" * 2000

        with pytest.raises(discord.HTTPException) as empty:
            await channel.send("   ")
        assert empty.value.code == 50006

        question = await fake.user_message(chan, alice, "not yours")
        with pytest.raises(discord.Forbidden) as forbidden:
            await channel.get_partial_message(question.id).edit(content="mine now")
        assert forbidden.value.code == 50005

        mine = await channel.send("soon deleted by a moderator")
        await fake.delete_message(chan, mine.id)
        with pytest.raises(discord.NotFound) as gone:
            await mine.edit(content="too late")
        assert gone.value.code == 10008
        assert fake.message(mine.id).deleted

        fetched = await channel.fetch_message(question.id)
        assert fetched.content == "not yours"

        await channel.typing()
        assert fake.calls_for("typing", channel=chan)[-1].status == 204

        upload = await channel.send("a file", file=discord.File(io.BytesIO(b"abc"), "notes.txt"))
        (att,) = upload.attachments
        assert att.filename == "notes.txt" and await att.read() == b"abc"
        assert fake.calls_for("message_create")[-1].files == ["notes.txt"]


async def test_attachment_reaction_and_dm(fake: FakeDiscord) -> None:
    guild, chan, alice = world(fake)
    bot = MiniBot()
    data = png_bytes((3, 2))
    async with running(fake, bot):
        question = await fake.user_message(
            chan,
            alice,
            f"{fake.bot_user.mention} what is this?",
            attachments=[fake.attachment("cat pic.png", data, "image/png")],
        )
        msg = await received(bot, fake, question.id)
        (att,) = msg.attachments
        assert att.content_type == "image/png" and (att.width, att.height) == (3, 2)
        assert att.url.startswith(fake.base_url) and "?ex=" in att.url
        assert await att.read() == data
        assert fake.calls_for("cdn")[-1].status == 200

        await fake.user_reaction(chan, question, alice, "🛑")
        await fake.wait_for(lambda: bot.raw_reactions, timeout=5)
        event = bot.raw_reactions[-1]
        assert str(event.emoji) == "🛑" and event.user_id == alice.id
        assert event.guild_id == guild.id and event.member is not None

        await msg.add_reaction("👀")
        await msg.remove_reaction("👀", bot.user)  # type: ignore[arg-type]
        reaction_calls = fake.calls_for("reaction")
        assert [(c.method, c.status) for c in reaction_calls] == [("PUT", 204), ("DELETE", 204)]
        assert fake.message(question.id).reactions == {"🛑": [alice.id]}

        dm = fake.add_dm_channel(alice)
        private = await fake.user_message(dm, alice, "psst")
        dm_msg = await received(bot, fake, private.id)
        assert dm_msg.guild is None and isinstance(dm_msg.channel, discord.DMChannel)
        assert dm_msg.content == "psst"
        answer = await dm_msg.channel.send("hello in private")
        assert fake.message(answer.id).channel_id == dm.id
        opened = await (await bot.fetch_user(alice.id)).send("opened from the user")
        assert fake.message(opened.id).channel_id == dm.id

        await fake.user_reaction(dm, private, alice, "🛑")
        dm_event = await fake.wait_for(
            lambda: next((e for e in bot.raw_reactions if e.channel_id == dm.id), None)
        )
        assert dm_event.guild_id is None and dm_event.member is None
        assert "guild_id" not in fake.gateway_events[-1].data


async def test_slash_command_defer_followups_and_edit(fake: FakeDiscord) -> None:
    guild, chan, alice = world(fake)
    bot = MiniBot(guild_id=guild.id)
    data = png_bytes((4, 4))
    async with running(fake, bot):
        cmd, _ = fake.commands(guild)
        assert cmd["name"] == "ask"
        assert [o["name"] for o in cmd["options"]] == ["prompt", "image"]
        assert [c["name"] for c in fake.commands()] == ["ping"]
        assert [s[1:] for s in fake.command_syncs] == [
            (guild.id, ["ask", "config"]),
            (None, ["ping"]),
        ]

        inter = await fake.slash_command(
            chan,
            alice,
            "ask",
            {"prompt": "hi", "image": fake.attachment("a.png", data, "image/png")},
        )
        await fake.wait_for(lambda: len(bot.command_log) >= 3, timeout=5)
        assert bot.command_log[0][:2] == ("invoked", "hi")
        assert inter.callback_type == 5 and inter.deferred and not inter.ephemeral
        assert inter.response_latency is not None  # in time, or the fake refuses it (below)
        original = inter.original
        assert original is not None
        # the first follow-up after a deferral fills the "thinking…" message
        assert bot.command_log[1] == ("first", original.id)
        assert original.content == "hi: done" and not original.loading
        assert [r.content for r in original.revisions] == [
            "",
            f"hi: {len(data)} bytes @everyone",
            "hi: done",
        ]
        assert original.allowed_mentions == [NONE, NONE]
        assert not original.pinged_everyone
        (followup,) = inter.followups
        assert followup.content == "more, edited" and followup.allowed_mentions == [NONE, NONE]
        assert inter.errors == []
        assert {c.route for c in fake.calls if c.channel_id == chan.id} >= {
            "interaction_callback",
            "webhook_create",
            "webhook_edit",
        }

        # a global command answered at once, ephemerally, in the guild and in a DM
        dm = fake.add_dm_channel(alice)
        for where in (chan, dm):
            ping = await fake.slash_command(where, alice, "ping")
            await ping.wait_for_callback()
            done = ping.original_id
            log = await fake.wait_for(
                lambda done=done: next((e for e in bot.command_log[3:] if e[2] == done), None)
            )
            assert log[1] == discord.InteractionResponseType.channel_message
            assert log[3] == (guild.id if where is chan else None)
            assert ping.callback_type == 4 and ping.ephemeral
            assert ping.original is not None and ping.original.content == "pong @everyone"
            assert ping.original.allowed_mentions == [NONE]
            assert not ping.original.pinged_everyone

        # a subcommand behind default_member_permissions: hidden from alice, usable by a mod
        with pytest.raises(PermissionError):
            await fake.slash_command(chan, alice, "config set", {"key": "k", "value": 1})
        mod = fake.add_role(guild, "mod", permissions=Perm.MANAGE_GUILD)
        fake.add_member(guild, alice, roles=[mod])
        conf = await fake.slash_command(chan, alice, "config set", {"key": "k", "value": "7"})
        await conf.wait_for_callback()
        assert ("config", "k", 7) in bot.command_log
        assert conf.payload["data"]["options"][0]["options"][1] == {
            "name": "value",
            "type": 4,
            "value": 7,
        }


async def test_late_interaction_response_is_unknown() -> None:
    async with FakeDiscord(interaction_deadline=0.3) as fake:
        guild, chan, alice = world(fake)
        bot = MiniBot(guild_id=guild.id)
        bot.command_delay = 0.5
        async with running(fake, bot):
            inter = await fake.slash_command(chan, alice, "ask", {"prompt": "slow"})
            await fake.wait_for(lambda: len(bot.command_log) >= 2, timeout=5)
            assert bot.command_log[1] == ("defer_failed", 404, 10062)
            assert not inter.acknowledged
            assert inter.errors and inter.errors[0][:2] == (404, 10062)
            with pytest.raises(ValueError):
                await fake.slash_command(chan, alice, "ask", {})  # required option missing
            with pytest.raises(LookupError):
                await fake.slash_command(chan, alice, "nope")


async def test_429_without_headers_is_retried_and_counted() -> None:
    async with FakeDiscord(rate_limit=(2, 0.5), send_ratelimit_headers=False) as fake:
        _, chan, _ = world(fake)
        bot = MiniBot()
        async with running(fake, bot):
            channel = bot.get_channel(chan.id)
            assert isinstance(channel, discord.TextChannel)
            sent = await channel.send("v0")
            for i in range(1, 6):
                sent = await sent.edit(content=f"v{i}")
            stored = fake.message(sent.id)
            assert stored.content == "v5" and len(stored.edits) == 5
            hits = fake.rate_limit_hits
            assert len(hits) >= 1
            assert {h.route for h in hits} == {"message_edit"}
            assert all(0 < h.retry_after <= 0.5 for h in hits)
            statuses = [c.status for c in fake.calls_for("message_edit")]
            assert statuses.count(429) == len(hits) and statuses.count(200) == 5
            limited = [c for c in fake.calls_for("message_edit") if c.status == 429]
            assert all(c.headers["Via"] == "1.1 google" for c in limited)
            assert not any("X-RateLimit-Remaining" in c.headers for c in fake.calls)


async def test_resume_after_disconnect(fake: FakeDiscord) -> None:
    _, chan, alice = world(fake)
    bot = MiniBot()
    async with running(fake, bot):
        session = fake.gateway.by_shard[0]
        await fake.disconnect(code=4000)
        await fake.wait_for(lambda: fake.gateway.resumes and session.connected, timeout=10)
        assert fake.gateway.resumes[-1]["session_id"] == session.session_id
        question = await fake.user_message(chan, alice, f"{fake.bot_user.mention} still there?")
        await received(bot, fake, question.id)
        assert len(fake.identifies) == 1


# ---------------------------------------------------------------------------------------------
# the fake's own rules, over plain HTTP


async def test_http_shape_auth_and_429_format() -> None:
    async with FakeDiscord(rate_limit=(2, 5.0)) as fake:
        guild, chan, _ = world(fake)
        auth = {"Authorization": f"Bot {fake.token}"}
        url = f"{fake.api_base}/channels/{chan.id}/messages"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fake.api_base}/users/@me") as resp:
                assert resp.status == 401
                assert resp.headers["Content-Type"] == "application/json"
            async with http.get(f"{fake.api_base}/users/@me", headers=auth) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/json"
                assert (await resp.json())["id"] == str(fake.bot_user.id)
            for i in range(2):
                async with http.post(url, json={"content": f"m{i}"}, headers=auth) as resp:
                    assert resp.status == 200
                    assert resp.headers["X-RateLimit-Limit"] == "2"
                    assert resp.headers["X-RateLimit-Remaining"] == str(1 - i)
                    assert 0 < float(resp.headers["X-RateLimit-Reset-After"]) <= 5.0
                    bucket = resp.headers["X-RateLimit-Bucket"]
            async with http.post(url, json={"content": "m2"}, headers=auth) as resp:
                assert resp.status == 429
                body = await resp.json()
                assert body["message"] == "You are being rate limited."
                assert body["global"] is False and 0 < body["retry_after"] <= 5.0
                assert resp.headers["Via"] == "1.1 google"
                assert resp.headers["X-RateLimit-Scope"] == "user"
                assert int(resp.headers["Retry-After"]) >= 1
                assert resp.headers["X-RateLimit-Bucket"] == bucket
            # a different channel has its own bucket; edits have theirs
            other = fake.add_text_channel(guild, "other")
            async with http.post(
                f"{fake.api_base}/channels/{other.id}/messages", json={"content": "x"}, headers=auth
            ) as resp:
                assert resp.status == 200
            async with http.post(
                f"{fake.api_base}/channels/999/messages", json={"content": "x"}, headers=auth
            ) as resp:
                assert resp.status == 404 and (await resp.json())["code"] == 10003
        assert len(fake.rate_limit_hits) == 1
        assert [m.content for m in fake.messages(chan)] == ["m0", "m1"]


@pytest.mark.parametrize(
    ("bucket_model", "one_hash", "edit_remaining", "creates_allowed", "late_edit"),
    [
        # Discord: creates and edits counted apart, both answered with one bucket hash
        ("discord", True, 4, 5, 200),
        ("separate", False, 4, 5, 200),
        ("shared", True, 3, 4, 429),
    ],
)
async def test_bucket_models_headers(
    bucket_model: str, one_hash: bool, edit_remaining: int, creates_allowed: int, late_edit: int
) -> None:
    async with FakeDiscord(rate_limit=(5, 5.0), bucket_model=bucket_model) as fake:  # type: ignore[arg-type]
        _, chan, _ = world(fake)
        auth = {"Authorization": f"Bot {fake.token}"}
        url = f"{fake.api_base}/channels/{chan.id}/messages"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"content": "m0"}, headers=auth) as resp:
                assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "4"
                create_bucket = resp.headers["X-RateLimit-Bucket"]
                mid = (await resp.json())["id"]
            await asyncio.sleep(0.2)
            async with http.patch(f"{url}/{mid}", json={"content": "e0"}, headers=auth) as resp:
                assert resp.status == 200
                edit_headers = dict(resp.headers)
            assert edit_headers["X-RateLimit-Limit"] == "5"
            assert edit_headers["X-RateLimit-Remaining"] == str(edit_remaining)
            assert (edit_headers["X-RateLimit-Bucket"] == create_bucket) is one_hash
            # Reset-After is that of the window the request was counted in: the edit's own
            # window opened at the edit (all of it left), the create's 0.2 s or more before
            reset_after = float(edit_headers["X-RateLimit-Reset-After"])
            assert reset_after == 5.0 if bucket_model != "shared" else reset_after <= 4.8
            statuses = []
            for i in range(1, 7):
                async with http.post(url, json={"content": f"m{i}"}, headers=auth) as resp:
                    statuses.append(resp.status)
                    assert resp.headers["X-RateLimit-Bucket"] == create_bucket
            assert statuses == [200] * (creates_allowed - 1) + [429] * (7 - creates_allowed)
            async with http.patch(f"{url}/{mid}", json={"content": "e1"}, headers=auth) as resp:
                assert resp.status == late_edit
                if late_edit == 200:  # the 6th create got a 429, an edit still goes through
                    assert resp.headers["X-RateLimit-Remaining"] == "3"
                    assert (resp.headers["X-RateLimit-Bucket"] == create_bucket) is one_hash
        assert {h.route for h in fake.rate_limit_hits} == (
            {"message_create"} if late_edit == 200 else {"message_create", "message_edit"}
        )
        assert {h.bucket for h in fake.rate_limit_hits} == {create_bucket}


def test_bucket_model_is_checked() -> None:
    with pytest.raises(ValueError, match="bucket_model"):
        FakeDiscord(bucket_model="per-route")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one limit"):
        FakeDiscord(bucket_model="shared", rate_limits={"message_edit": (5, 1.0)})
    assert FakeDiscord().bucket_model == "discord"


@pytest.mark.parametrize(("bucket_model", "held"), [("discord", True), ("separate", False)])
async def test_discord_py_holds_an_edit_behind_an_exhausted_create_window(
    bucket_model: str, held: bool
) -> None:
    """discord.py keys its limiter by bucket hash + channel: with Discord's one hash for creates
    and edits, a create that empties its window makes discord.py hold the next edit until that
    window resets, though Discord would have accepted the edit."""
    async with FakeDiscord(rate_limit=(5, 2.0), bucket_model=bucket_model) as fake:  # type: ignore[arg-type]
        _, chan, _ = world(fake)
        bot = MiniBot()
        async with running(fake, bot):
            channel = bot.get_channel(chan.id)
            assert isinstance(channel, discord.TextChannel)
            first = await channel.send("m0")
            first = await first.edit(content="m0, edited")  # discord.py learns the edit's hash
            for i in range(1, 4):
                await channel.send(f"m{i}")
            fifth = asyncio.create_task(channel.send("m4"))  # the create window's last request
            await fake.wait_for(lambda: len(fake.calls_for("message_create", status=200)) == 5)
            edit = asyncio.create_task(first.edit(content="m0, again"))
            sixth = asyncio.create_task(channel.send("m5"))  # held until the window resets
            await asyncio.gather(fifth, edit, sixth)
        assert fake.rate_limit_hits == []
        creates = fake.calls_for("message_create", channel=chan)
        late_edit = fake.calls_for("message_edit", channel=chan)[-1]
        create_window_end = creates[0].t_start + 2.0
        assert len(creates) == 6 and creates[-1].t_start >= create_window_end - 0.05
        if held:
            assert late_edit.t_start >= create_window_end - 0.05
        else:  # sent inside the exhausted window: before the create that had to wait for it
            assert late_edit.t_start < creates[-1].t_start


async def test_permissions_and_global_limit() -> None:
    async with FakeDiscord(global_rate_limit=(3, 5.0), rate_limits={"typing": (10, 1.0)}) as fake:
        guild, chan, _ = world(fake)
        hidden = fake.add_text_channel(
            guild, "hidden", overwrites=[fake.overwrite(guild, deny=Perm.VIEW_CHANNEL)]
        )
        muted = fake.add_text_channel(
            guild,
            "muted",
            overwrites=[fake.overwrite(fake.bot_role(guild), deny=Perm.SEND_MESSAGES)],
        )
        auth = {"Authorization": f"Bot {fake.token}"}
        async with aiohttp.ClientSession() as http:
            for target, code in ((hidden, 50001), (muted, 50013)):
                async with http.post(
                    f"{fake.api_base}/channels/{target.id}/messages",
                    json={"content": "x"},
                    headers=auth,
                ) as resp:
                    assert resp.status == 403 and (await resp.json())["code"] == code
            async with http.post(
                f"{fake.api_base}/channels/{chan.id}/typing", headers=auth
            ) as resp:
                assert resp.status == 204
            async with http.post(
                f"{fake.api_base}/channels/{chan.id}/typing", headers=auth
            ) as resp:
                assert resp.status == 429
                body = await resp.json()
                assert body["global"] is True and resp.headers["X-RateLimit-Global"] == "true"
        assert fake.rate_limit_hits[-1].is_global


def test_compute_pings_follows_allowed_mentions() -> None:
    fake = FakeDiscord()
    guild = fake.add_guild()
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    role = fake.add_role(guild, "mods", mentionable=True)
    text = f"@everyone {alice.mention} <@!{bob.id}> {role.mention}"
    kwargs: dict[str, Any] = {
        "guild": guild,
        "known_users": fake.users,
        "author_id": fake.bot_user.id,
        "author_can_mention_everyone": True,
    }
    default = compute_pings(text, None, replied_author_id=bob.id, **kwargs)
    assert default.everyone and default.users == {alice.id, bob.id} and default.roles == {role.id}
    none = compute_pings(text, {"parse": []}, replied_author_id=bob.id, **kwargs)
    assert not none.everyone and not none.users and not none.roles
    only_alice = compute_pings(text, {"parse": [], "users": [str(alice.id)]}, **kwargs)
    assert only_alice.users == {alice.id} and not only_alice.everyone
    no_perm = compute_pings(text, None, **{**kwargs, "author_can_mention_everyone": False})
    assert not no_perm.everyone and no_perm.roles == {role.id}  # mentionable role still pings


async def test_user_message_requires_a_connected_bot(fake: FakeDiscord) -> None:
    _, chan, alice = world(fake)
    with pytest.raises(RuntimeError, match="wait_until_ready"):
        await fake.user_message(chan, alice, "anyone?")
    with pytest.raises(TimeoutError):
        await fake.wait_until_ready(timeout=0.1)


# ---------------------------------------------------------------------------------------------
# threads, forums, duplicate deliveries, bulk deletes


async def test_threads_reach_discord_py_as_threads(fake: FakeDiscord) -> None:
    guild, chan, alice = world(fake)
    early = fake.add_thread(chan, "before ready", owner=alice)
    bot = MiniBot(guild_id=guild.id)
    async with running(fake, bot):
        cached = bot.get_guild(guild.id)
        assert cached is not None
        # a thread that existed before READY came in the GUILD_CREATE's threads
        before = cached.get_thread(early.id)
        assert isinstance(before, discord.Thread) and before.parent_id == chan.id
        assert before.owner_id == alice.id and before.type is discord.ChannelType.public_thread
        assert early.id not in [c.id for c in cached.channels]

        live = fake.add_thread(chan, "live", owner=alice)
        thread = await fake.wait_for(lambda: cached.get_thread(live.id))
        assert thread.name == "live" and thread.parent == cached.get_channel(chan.id)
        created = [e for e in fake.gateway_events if e.name == "THREAD_CREATE"]
        assert created[-1].data["newly_created"] is True
        assert created[-1].data["thread_metadata"]["archived"] is False

        question = await fake.user_message(live, alice, f"{fake.bot_user.mention} in a thread?")
        msg = await received(bot, fake, question.id)
        assert isinstance(msg.channel, discord.Thread)
        assert msg.channel.id == live.id and msg.channel.parent_id == chan.id
        assert msg.guild is not None and msg.guild.id == guild.id
        assert alice.id in live.member_ids

        # the bot writes, edits and types on the thread's own routes
        reply = await msg.reply("yes, here")
        reply = await reply.edit(content="yes, here (edited)")
        async with msg.channel.typing():
            pass
        stored = fake.message(reply.id)
        assert stored.channel_id == live.id and stored.reply_to == question.id
        assert stored.content == "yes, here (edited)" and stored.mentions_disabled
        assert reply.id in live.message_ids and reply.id not in chan.message_ids
        paths = {c.path for c in fake.calls if c.channel_id == live.id}
        assert f"/channels/{live.id}/messages" in paths
        assert f"/channels/{live.id}/typing" in paths

        # a slash command run in the thread answers in the thread
        inter = await fake.slash_command(live, alice, "ping")
        await inter.wait_for_callback()
        assert inter.original is not None and inter.original.channel_id == live.id
        assert inter.payload["channel"]["type"] == 11
        assert inter.payload["channel"]["parent_id"] == str(chan.id)


async def test_thread_permissions_come_from_the_parent(fake: FakeDiscord) -> None:
    guild, _, alice = world(fake)
    role = fake.bot_role(guild)
    # Send Messages denied in the parent: the bot still talks in its threads
    quiet = fake.add_text_channel(
        guild, "announcements", overwrites=[fake.overwrite(role, deny=Perm.SEND_MESSAGES)]
    )
    # Send Messages in Threads denied: the bot talks in the parent but not in its threads
    no_threads = fake.add_text_channel(
        guild, "no-threads", overwrites=[fake.overwrite(role, deny=Perm.SEND_MESSAGES_IN_THREADS)]
    )
    in_quiet = fake.add_thread(quiet, "discussion", owner=alice)
    in_no_threads = fake.add_thread(no_threads, "discussion", owner=alice)
    bot = MiniBot()
    async with running(fake, bot):
        cached = bot.get_guild(guild.id)
        assert cached is not None and cached.me is not None
        quiet_chan = cached.get_channel(quiet.id)
        assert isinstance(quiet_chan, discord.TextChannel)
        with pytest.raises(discord.Forbidden) as refused:
            await quiet_chan.send("in the parent")
        assert refused.value.code == 50013
        thread = cached.get_thread(in_quiet.id)
        assert thread is not None
        assert thread.permissions_for(cached.me).send_messages_in_threads
        assert fake.message((await thread.send("in the thread")).id).channel_id == in_quiet.id

        other = cached.get_thread(in_no_threads.id)
        assert other is not None
        assert not other.permissions_for(cached.me).send_messages_in_threads
        with pytest.raises(discord.Forbidden) as denied:
            await other.send("not allowed")
        assert denied.value.code == 50013
        no_threads_chan = cached.get_channel(no_threads.id)
        assert isinstance(no_threads_chan, discord.TextChannel)
        await no_threads_chan.send("the parent is fine")


async def test_private_threads_are_seen_by_members_only(fake: FakeDiscord) -> None:
    guild, chan, alice = world(fake)
    bob = fake.add_user("bob")
    bot = MiniBot()
    async with running(fake, bot):
        cached = bot.get_guild(guild.id)
        assert cached is not None
        secret = fake.add_thread(chan, "secret", type=12, owner=alice, members=[bob])
        quiet = await fake.user_message(secret, bob, "just us")
        with pytest.raises(discord.Forbidden) as hidden:
            await bot.fetch_channel(secret.id)
        assert hidden.value.code == 50001
        assert cached.get_thread(secret.id) is None
        assert not [e for e in fake.gateway_events if e.data.get("id") == str(quiet.id)]

        # mentioning the bot adds it to the thread: THREAD_CREATE with its thread member first
        asked = await fake.user_message(secret, alice, f"{fake.bot_user.mention} join us")
        msg = await received(bot, fake, asked.id)
        assert isinstance(msg.channel, discord.Thread)
        assert msg.channel.type is discord.ChannelType.private_thread
        assert msg.channel.me is not None and msg.channel.me.id == fake.bot_user.id
        names = [e.name for e in fake.gateway_events[-2:]]
        assert names == ["THREAD_CREATE", "MESSAGE_CREATE"]
        assert "newly_created" not in fake.gateway_events[-2].data
        assert (await msg.reply("hello")).channel.id == secret.id

        # Manage Threads shows every private thread
        fake.bot_role(guild).permissions |= Perm.MANAGE_THREADS
        hidden_too = fake.add_thread(chan, "mods", type=12, owner=alice)
        await fake.wait_for(lambda: cached.get_thread(hidden_too.id))


async def test_archived_locked_and_deleted_threads(fake: FakeDiscord) -> None:
    guild, chan, alice = world(fake)
    thread = fake.add_thread(chan, "old", owner=alice)
    bot = MiniBot()
    async with running(fake, bot):
        cached = bot.get_guild(guild.id)
        assert cached is not None
        live = cached.get_thread(thread.id)
        assert live is not None
        mine = await live.send("first")

        await fake.archive_thread(thread)
        await fake.wait_for(lambda: cached.get_thread(thread.id) is None)  # discord.py drops it
        with pytest.raises(discord.HTTPException) as archived:
            await mine.edit(content="edited late")
        assert archived.value.code == 50083
        # a new message reopens an archived (not locked) thread
        await live.send("reopening")
        assert not thread.archived
        await fake.wait_for(lambda: cached.get_thread(thread.id))
        assert [e.name for e in fake.gateway_events].count("THREAD_UPDATE") == 2

        await fake.archive_thread(thread, locked=True)
        with pytest.raises(discord.HTTPException) as locked:
            await live.send("locked out")
        assert locked.value.code == 50083 and thread.archived
        with pytest.raises(ValueError):
            await fake.user_message(thread, alice, "me too")

        await fake.archive_thread(thread, archived=False)
        await fake.delete_thread(thread)
        await fake.wait_for(lambda: any(e.name == "THREAD_DELETE" for e in fake.gateway_events))
        with pytest.raises(discord.NotFound) as gone:
            await live.send("anyone?")
        assert gone.value.code == 10003


async def test_forum_posts(fake: FakeDiscord) -> None:
    guild, _, alice = world(fake)
    forum = fake.add_forum_channel(guild, "help")
    bot = MiniBot()
    async with running(fake, bot):
        cached = bot.get_guild(guild.id)
        assert cached is not None
        assert isinstance(cached.get_channel(forum.id), discord.ForumChannel)
        post, starter = await fake.add_forum_post(
            forum, alice, "How do I?", f"{fake.bot_user.mention} how do I do this?"
        )
        assert starter.id == post.id  # a post's starter message has the thread's id
        msg = await received(bot, fake, starter.id)
        assert isinstance(msg.channel, discord.Thread) and msg.channel.parent_id == forum.id
        assert isinstance(msg.channel.parent, discord.ForumChannel)
        reply = await msg.reply("like this")
        assert fake.message(reply.id).channel_id == post.id
        with pytest.raises(discord.HTTPException) as refused:
            await bot.http.send_message(
                forum.id,
                params=discord.http.MultipartParameters(
                    payload={"content": "not here"}, multipart=None, files=None
                ),
            )
        assert refused.value.code == 50008
        with pytest.raises(ValueError):
            await fake.user_message(forum, alice, "a message in a forum")


async def test_redeliver_bulk_delete_and_declared_sizes(fake: FakeDiscord) -> None:
    _, chan, alice = world(fake)
    bot = MiniBot()
    bulk: list[discord.RawBulkMessageDeleteEvent] = []

    async def on_raw_bulk_message_delete(event: discord.RawBulkMessageDeleteEvent) -> None:
        bulk.append(event)

    bot.add_listener(on_raw_bulk_message_delete)
    async with running(fake, bot):
        question = await fake.user_message(chan, alice, f"{fake.bot_user.mention} once?")
        await received(bot, fake, question.id)
        assert await fake.redeliver(question)
        await fake.wait_for(lambda: [m.id for m in bot.received].count(question.id) == 2)
        first, again = [
            e
            for e in fake.gateway_events
            if e.name == "MESSAGE_CREATE" and e.data["id"] == str(question.id)
        ]
        assert first.data == again.data and again.seq is not None and first.seq is not None
        assert again.seq > first.seq

        others = [await fake.user_message(chan, alice, f"spam {i}") for i in range(3)]
        await fake.bulk_delete(chan, others)
        await fake.wait_for(lambda: bulk)
        assert bulk[0].message_ids == {m.id for m in others} and bulk[0].channel_id == chan.id
        assert all(fake.message(m).deleted for m in others)

        huge = fake.attachment("huge.png", png_bytes(), "image/png", size=50 * 1024 * 1024)
        big = await fake.user_message(chan, alice, "a big one", attachments=[huge])
        msg = await received(bot, fake, big.id)
        assert msg.attachments[0].size == 50 * 1024 * 1024
        assert await msg.attachments[0].read() == png_bytes()


@pytest.mark.parametrize("shard", [[2, 2], [0, 1], [-1, 2]])
async def test_an_identify_for_a_shard_discord_does_not_expect_is_refused(shard: list[int]) -> None:
    async with FakeDiscord(shard_count=2) as fake, aiohttp.ClientSession() as http:
        async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            hello = await ws.receive_json()
            assert hello["op"] == 10
            await ws.send_json(
                {
                    "op": 2,
                    "d": {
                        "token": fake.token,
                        "intents": 1,
                        "properties": {},
                        "shard": shard,
                    },
                }
            )
            closing = await ws.receive()
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4010
        assert fake.gateway.by_shard == {}
