"""End to end: issue 5 through the fake Discord and the fake Gemini (real discord.py, real SDK).

Each test starts the real bot against both fakes (see ``tests/harness.py``) and checks what a
Discord user would see (messages, their revisions and the REST payloads) and what Gemini was
sent (the recorded requests).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.answer import CUT_SHORT
from bot.conversation import today_note
from bot.splitting import split_message
from storage import StorageError, Turn
from tests.fakes.discord import Perm
from tests.fakes.gemini import RecordedRequest, Reply
from tests.harness import API_KEY, World, reply_turn, world

pytestmark = pytest.mark.timeout(60)


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    """A small valid PNG."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def stream(*words: str, delay: float = 0.03) -> Reply:
    """A short streamed reply: one chunk per word."""
    return Reply(chunks=[w + " " for w in words[:-1]] + [words[-1]], delay=delay)


def model_text(request: RecordedRequest) -> str:
    """The text the fake Gemini streamed for a request."""
    assert request.reply is not None
    return "".join(request.reply.chunks)


FAST = {"GEMCORD_EDIT_WINDOW_SECONDS": "1"}
"""Five writes per second per channel, with the fake Discord's buckets to match (`fast`)."""


def fast(tmp_path: Path, env: dict[str, str] | None = None, **kw: object):
    """A world whose Discord allows 5 writes a second per channel, and the bot paced to match.

    For tests about what is said rather than how it is paced: they run in a fraction of the
    time at Discord's real 5-per-5-seconds.
    """
    return world(tmp_path, {**FAST, **(env or {})}, rate_limit=(5, 1.0), **kw)


async def ask(w: World, channel, user, text: str, **kw: object) -> tuple[object, list[str]]:
    """Mention the bot with `text` and wait for the finished reply; (question, contents)."""
    question = await w.mention(channel, user, text, **kw)
    return question, await w.reply_done(question.id)


# --- mentions, history, restart --------------------------------------------------------------


async def test_mention_streams_and_history_follows_the_channel_across_restart(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        words = [f"w{i}" for i in range(45)]
        w.gemini.script(stream(*words, delay=0.05))  # ~2.3 s at one write per second
        q1, contents = await ask(w, w.general, w.alice, "what is a <#1> cat?")
        first = w.gemini.requests[0]
        assert "".join(contents) == model_text(first)
        reply = w.discord.message(w.discord.bot_messages(w.general)[0].id)
        assert reply.reply_to == q1.id
        assert len(reply.edits) >= 2, "the reply was not streamed"
        assert reply.mentions_disabled
        system = first.system_instruction() or ""
        assert "Discord server channel" in system and "square brackets" in system
        user_text = first.question_text() or ""
        assert "what is a" in user_text and "cat?" in user_text
        assert w.discord.bot_user.mention not in user_text and "<@" not in user_text
        assert first.roles() == ["user"]

        # the second question in #general carries the first pair as history
        _, second_contents = await ask(w, w.general, w.bob, "and a dog?")
        second = w.gemini.requests[1]
        assert "".join(second_contents) == model_text(second)
        assert second.roles() == ["user", "model", "user"]
        assert "what is a" in second.texts("user")[0]
        assert second.texts("model") == [model_text(first)]
        assert (second.question_text() or "").startswith("[bob]")

        # #random does not see #general's conversation
        await ask(w, w.random, w.alice, "hello there")
        third = w.gemini.requests[2]
        assert third.roles() == ["user"]
        assert not any("cat" in t or "dog" in t for t in third.texts())

        # after a restart on the same database the history is still used
        await w.stop_bot()
        await w.start_bot()
        await ask(w, w.general, w.alice, "and a bird?")
        fourth = w.gemini.requests[3]
        assert fourth.roles() == ["user", "model", "user", "model", "user"]
        texts = fourth.texts()
        assert "cat?" in texts[0] and texts[1] == model_text(first)
        assert "dog?" in texts[2] and texts[3] == model_text(second)
        assert "bird?" in texts[4]
        assert not w.discord.rate_limit_hits


async def test_reply_dm_bots_bare_mention_and_allowed_channels(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        _, contents = await ask(w, w.general, w.alice, "remember the number 42")
        answer = w.discord.bot_messages(w.general)[-1]

        # a bot's message is ignored, even with a mention (checked after the next answer)
        other_bot = w.discord.add_user("otherbot", bot=True)
        w.discord.add_member(w.guild, other_bot)
        from_bot = await w.mention(w.general, other_bot, "answer me, fellow bot")

        # a reply to the bot's message, without a mention, is answered in context
        follow = await w.discord.user_message(
            w.general, w.bob, "what number was it?", reply_to=answer, ping_reply=False
        )
        follow_contents = await w.reply_done(follow.id)
        request = w.gemini.requests[1]
        assert len(w.gemini.requests) == 2
        assert "".join(follow_contents) == model_text(request)
        assert "42" in request.texts("user")[0]
        assert request.texts("model") == ["".join(contents)]
        assert "what number was it?" in (request.question_text() or "")
        assert w.discord.bot_messages(w.general)[-1].reply_to == follow.id
        assert not [m for m in w.discord.bot_messages(w.general) if m.reply_to == from_bot.id]

        # a DM is answered, without a mention; its history is its own
        dm = w.discord.add_dm_channel(w.alice)
        private = await w.discord.user_message(dm, w.alice, "a private question")
        dm_contents = await w.reply_done(private.id)
        dm_request = w.gemini.requests[2]
        assert "".join(dm_contents) == model_text(dm_request)
        assert dm_request.roles() == ["user"]
        assert "direct message" in (dm_request.system_instruction() or "")
        assert w.discord.bot_messages(dm)[0].mentions_disabled

        # a bare mention gets a short friendly prompt and no model call
        bare = await w.discord.user_message(
            w.general, w.alice, w.discord.bot_user.mention, mentions=[w.discord.bot_user]
        )
        hint = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == bare.id)
        assert "ask" in hint.content.lower() and len(hint.content) < 300
        assert hint.mentions_disabled
        assert len(w.gemini.requests) == 3

        # mentioning the bot's own role (Discord offers it next to the bot) works the same
        role = w.discord.bot_role(w.guild)
        by_role = await w.discord.user_message(w.general, w.bob, f"{role.mention} are you there?")
        by_role_contents = await w.reply_done(by_role.id)
        role_request = w.gemini.requests[3]
        assert "".join(by_role_contents) == model_text(role_request)
        assert role_request.question_text() == "[bob] are you there?"

        # with GEMCORD_ALLOWED_CHANNELS, other channels are ignored
        await w.stop_bot()
        w.env["GEMCORD_ALLOWED_CHANNELS"] = str(w.general.id)
        await w.start_bot()
        outside = await w.mention(w.random, w.alice, "are you here?")
        inside, inside_contents = await ask(w, w.general, w.alice, "and here?")
        assert len(w.gemini.requests) == 5
        assert "and here?" in (w.gemini.requests[4].question_text() or "")
        assert not w.discord.calls_for("typing", channel=w.random)
        refused = await w.discord.slash_command(w.random, w.alice, "ask", {"prompt": "here?"})
        await refused.wait_for_callback()
        assert refused.ephemeral and "not enabled" in (refused.original or object()).content
        assert len(w.gemini.requests) == 5
        assert not [m for m in w.discord.bot_messages(w.random) if not m.ephemeral]
        assert await reply_turn(w, outside.id) is None  # not even stored as a question
        answered = await reply_turn(w, inside.id)
        assert answered is not None and answered.status == "complete"
        assert answered.text == "".join(inside_contents) == model_text(w.gemini.requests[4])


# --- attachments ----------------------------------------------------------------------------


async def test_images_are_sent_remembered_and_bad_files_refused_clearly(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        image = png()
        att = w.discord.attachment("cat.png", image, "image/png")
        _, contents = await ask(w, w.general, w.alice, "what colour is this?", attachments=[att])
        first = w.gemini.requests[0]
        assert "".join(contents) == model_text(first)
        parts = first.image_parts(role="user", last_turn_only=True)
        assert [(p.mime_type, p.data) for p in parts] == [("image/png", image)]

        # the next question, without an image, still carries it (within the budget)
        await ask(w, w.general, w.bob, "and is it bright?")
        second = w.gemini.requests[1]
        assert second.roles() == ["user", "model", "user"]
        history_images = second.image_parts(role="user")
        assert [(p.mime_type, p.data) for p in history_images] == [("image/png", image)]
        assert not second.image_parts(role="user", last_turn_only=True)

        # refused files: each gets a clear reply, no model call, and the bot carries on
        huge = w.discord.attachment(
            "huge.png", b"\x89PNG\r\n\x1a\n" + bytes(30 * 2**20), "image/png"
        )
        text = w.discord.attachment("data.bin", bytes(range(256)) * 8, "application/octet-stream")
        broken = w.discord.attachment(
            "broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "image/png"
        )
        cases = [
            (huge, ["huge.png", "30 MB", "10 MB"]),
            (text, ["data.bin", "not a kind of file I can read"]),
            (broken, ["broken.png", "damaged"]),
        ]
        for spec, words in cases:
            question = await w.mention(w.general, w.alice, "look at this", attachments=[spec])
            notice = await w.discord.wait_for_message(
                w.general, lambda m, q=question: m.reply_to == q.id
            )
            for word in words:
                assert word in notice.content
            assert notice.mentions_disabled and len(notice.content) < 400
        assert not [c for c in w.discord.calls_for("cdn") if "huge.png" in c.path]
        _, contents = await ask(w, w.general, w.alice, "still there?")
        assert len(w.gemini.requests) == 3
        assert "".join(contents) == model_text(w.gemini.requests[2])

        # a usable image next to a refused file: the skipped one is named, the rest answered
        question = await w.mention(w.random, w.bob, "compare", attachments=[att, text])
        contents = await w.reply_done(question.id)
        request = w.gemini.requests[3]
        assert "".join(contents) == model_text(request)
        assert len(request.image_parts(role="user", last_turn_only=True)) == 1
        notes = [m for m in w.discord.bot_messages(w.random) if m.reply_to == question.id]
        assert len(notes) == 2 and "data.bin" in notes[0].content


async def model_turn(w: World, question_id: int) -> Turn:
    """The stored reply to a question."""
    turn = await reply_turn(w, question_id)
    assert turn is not None
    return turn


# --- no pings -------------------------------------------------------------------------------


async def test_model_output_never_pings(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        role = w.discord.add_role(w.guild, "mods", mentionable=True)
        chunks = ["Hey @everyone and @here, ", f"ask {role.mention} ", f"or {w.bob.mention}"]
        chunks += [f" word{i}" for i in range(30)]
        w.gemini.script(Reply(chunks=chunks, delay=0.03))
        question, contents = await ask(w, w.general, w.alice, "ping everybody please")
        assert "".join(contents) == "".join(chunks)
        [reply] = w.discord.bot_messages(w.general)
        assert len(reply.revisions) >= 3
        assert reply.mentions_disabled  # allowed_mentions none on the create and every edit
        assert all(am is not None and am.get("parse") == [] for am in reply.allowed_mentions)
        assert not reply.pinged_everyone
        assert not reply.pinged_roles
        assert not reply.pinged_users  # not even the author of the question it replies to
        assert reply.reply_to == question.id


# --- Gemini failures ------------------------------------------------------------------------


def assert_clear(content: str, *words: str) -> None:
    """A short, friendly failure notice: no traceback, no raw exception."""
    assert content.strip()
    assert len(content) < 400
    assert "Traceback" not in content and "Error:" not in content and "{" not in content
    for word in words:
        assert word.lower() in content.lower(), (word, content)


async def test_rate_limits_retry_briefly_or_say_so_quickly(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        # a short RetryInfo delay is honoured before any text: the user just gets the answer
        w.gemini.script(Reply.error(429, retry_delay="0.3s"), stream("Fine", "now."))
        question, contents = await ask(w, w.general, w.alice, "first")
        assert contents == ["Fine now."]
        assert [r.outcome for r in w.gemini.requests] == ["error", "completed"]
        gap = w.gemini.requests[1].received_at - w.gemini.requests[0].received_at
        assert gap >= 0.3  # it waited as asked (a busy machine only makes it longer)
        assert (await model_turn(w, question.id)).status == "complete"

        # asked to wait a minute: a clear rate-limit message, no retry (reply_done gives up
        # long before the minute)
        w.gemini.script(Reply.error(429, retry_delay="60s"))
        question, contents = await ask(w, w.random, w.alice, "second")
        assert len(w.gemini.requests) == 3
        [content] = contents
        assert_clear(content, "rate-limited", "60 seconds")
        assert (await model_turn(w, question.id)).status == "failed"

        # and the next mention is answered normally
        _, contents = await ask(w, w.random, w.alice, "third")
        assert "".join(contents) == model_text(w.gemini.requests[3])


async def test_server_error_is_retried_then_explained(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.script(*[Reply.error(500)] * 4)  # the first try and every retry fail
        question, contents = await ask(w, w.general, w.alice, "hello?")
        assert len(w.gemini.requests) == 4
        [content] = contents
        assert_clear(content, "trouble", "try again")
        assert (await model_turn(w, question.id)).status == "failed"
        _, contents = await ask(w, w.general, w.alice, "hello again?")
        assert "".join(contents) == model_text(w.gemini.requests[4])


async def test_blocked_answer_and_dropped_stream(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        # a SAFETY finish without any text
        w.gemini.script(Reply(chunks=(), finish_reason="SAFETY"))
        question, contents = await ask(w, w.general, w.alice, "something edgy")
        [content] = contents
        assert_clear(content, "safety")
        assert (await model_turn(w, question.id)).status == "blocked"
        _, contents = await ask(w, w.general, w.alice, "something nice")
        assert "".join(contents) == model_text(w.gemini.requests[1])

        # the connection drops mid-stream: the partial text stays, marked as interrupted
        chunks = [f"part{i} " for i in range(20)]
        w.gemini.script(Reply(chunks=chunks, delay=0.03, drop_after=12))
        question, contents = await ask(w, w.random, w.bob, "a long story")
        assert w.gemini.requests[2].outcome == "dropped"
        partial = "".join(chunks[:12])
        [content] = contents
        assert content.startswith(partial.rstrip())
        assert_clear(content[len(partial) :], "dropped", "incomplete")
        stored = await model_turn(w, question.id)
        assert stored.status == "failed" and stored.text == partial
        _, contents = await ask(w, w.random, w.bob, "go on")
        follow = w.gemini.requests[3]
        assert "".join(contents) == model_text(follow)
        assert partial in follow.texts("model")[0]  # the history knows it was cut off

        # an error event in the middle of a 200 stream: same, with Gemini's trouble named
        w.gemini.script(Reply.mid_stream_error(chunks[:10], after=6, code=503, delay=0.03))
        question, contents = await ask(w, w.random, w.bob, "another story")
        partial = "".join(chunks[:6])
        [content] = contents
        assert content.startswith(partial.rstrip())
        assert_clear(content[len(partial) :], "trouble")
        stored = await model_turn(w, question.id)
        assert stored.status == "failed" and stored.text == partial
        _, contents = await ask(w, w.random, w.bob, "thanks")
        assert "".join(contents) == model_text(w.gemini.requests[5])


# --- cooldown and slash commands --------------------------------------------------------------


async def test_cooldown_gives_a_short_notice_without_a_model_call(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_COOLDOWN_SECONDS": "2"}) as w:
        await ask(w, w.general, w.alice, "one")
        quick = await w.mention(w.general, w.alice, "two")
        notice = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == quick.id)
        assert "again in 2 s" in notice.content and len(notice.content) < 100
        assert notice.mentions_disabled
        # someone else is not slowed down by alice's cooldown
        await ask(w, w.general, w.bob, "three")
        assert [r.question_text() for r in w.gemini.requests] == ["[alice] one", "[bob] three"]


async def test_ask_streams_into_the_interaction_response(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        chunks = [f"piece{i} " for i in range(30)]
        w.gemini.script(Reply(chunks=chunks, delay=0.03))
        inter = await w.discord.slash_command(w.general, w.alice, "ask", {"prompt": "tell me"})
        contents = await w.interaction_done(inter)
        # deferred in time: the fake refuses a callback after Discord's 3 s (10062, an error)
        assert inter.deferred and inter.response_latency is not None
        assert not inter.ephemeral and not inter.errors
        assert "".join(contents) == "".join(chunks)
        original = inter.original
        assert original is not None
        shown = [r for r in original.revisions if not r.placeholder]
        assert len(shown) >= 3, "the answer was not streamed into the response"
        assert original.mentions_disabled
        request = w.gemini.requests[0]
        assert request.question_text() == "[alice] tell me"

        # with an image option, the image goes to Gemini
        image = png((10, 200, 10))
        att = w.discord.attachment("leaf.png", image, "image/png")
        inter = await w.discord.slash_command(
            w.general, w.bob, "ask", {"prompt": "what is it?", "file": att}
        )
        contents = await w.interaction_done(inter)
        request = w.gemini.requests[1]
        assert "".join(contents) == model_text(request)
        parts = request.image_parts(role="user", last_turn_only=True)
        assert [(p.mime_type, p.data) for p in parts] == [("image/png", image)]
        # /ask questions are part of the channel's history like mentions
        assert "tell me" in request.texts("user")[0]

        # an unusable file is refused at once, only to the asker, without a model call
        big = w.discord.attachment("dump.zip", b"PK\x03\x04", "application/zip", size=30 * 2**20)
        inter = await w.discord.slash_command(
            w.general, w.bob, "ask", {"prompt": "read this", "file": big}
        )
        await inter.wait_for_callback()
        assert inter.ephemeral and inter.callback_type == 4
        assert inter.original is not None and "dump.zip" in inter.original.content
        assert len(w.gemini.requests) == 2


async def test_reset_needs_manage_messages_and_forgets(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        await ask(w, w.general, w.alice, "my name is Alice")
        refused = await w.discord.slash_command(w.general, w.bob, "reset")
        await refused.wait_for_callback()
        assert refused.ephemeral and "Manage Messages" in (refused.original or object()).content

        await ask(w, w.general, w.alice, "what's my name?")
        assert w.gemini.requests[1].roles() == ["user", "model", "user"]

        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        done = await w.discord.slash_command(w.general, w.bob, "reset")
        await done.wait_for_callback()
        assert done.original is not None and "Forgot" in done.original.content
        assert not done.ephemeral and done.original.mentions_disabled

        await ask(w, w.general, w.alice, "who am I?")
        fresh = w.gemini.requests[2]
        assert fresh.roles() == ["user"]
        assert fresh.texts() == ["[alice] who am I?", today_note()]


async def test_history_export_is_an_ephemeral_file(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        _, contents = await ask(w, w.general, w.alice, "what is 2+2?")
        inter = await w.discord.slash_command(w.general, w.bob, "history")
        await inter.wait_for_callback()
        assert inter.ephemeral
        [call] = await w.discord.wait_for(lambda: w.discord.calls_for("webhook_create"))
        [upload] = call.uploads
        assert upload.filename == "history.md"
        exported = upload.data.decode()
        assert "what is 2+2?" in exported and "".join(contents) in exported
        assert "alice" in exported
        # a second export right away waits for its cooldown
        again = await w.discord.slash_command(w.general, w.bob, "history")
        await again.wait_for_callback()
        assert again.ephemeral and "export again in" in (again.original or object()).content


def test_a_long_history_is_split_at_line_ends() -> None:
    from bot.cogs.chat import split_bytes

    data = b"".join(f"line {i}\n".encode() for i in range(1000))
    parts = split_bytes(data, 100)
    assert b"".join(parts) == data and all(len(p) <= 100 for p in parts)
    assert all(p.endswith(b"\n") for p in parts)
    assert split_bytes(b"x" * 250, 100) == [b"x" * 100, b"x" * 100, b"x" * 50]


async def test_model_and_persona_per_channel(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        shown = await w.discord.slash_command(w.general, w.alice, "model")
        await shown.wait_for_callback()
        assert shown.ephemeral and "gemini-2.5-flash" in (shown.original or object()).content

        refused = await w.discord.slash_command(w.general, w.alice, "model", {"name": "gemini-x"})
        await refused.wait_for_callback()
        assert refused.ephemeral and "Manage Messages" in (refused.original or object()).content

        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        chosen = await w.discord.slash_command(
            w.general, w.bob, "model", {"name": "gemini-2.5-pro"}
        )
        await chosen.wait_for_callback()
        assert "gemini-2.5-pro" in (chosen.original or object()).content
        await ask(w, w.general, w.alice, "which model?")
        await ask(w, w.random, w.alice, "and here?")
        assert [r.model for r in w.gemini.requests] == ["gemini-2.5-pro", "gemini-2.5-flash"]
        assert w.gemini.requests[0].path.endswith("/models/gemini-2.5-pro:streamGenerateContent")

        back = await w.discord.slash_command(w.general, w.bob, "model", {"name": "default"})
        await back.wait_for_callback()
        await ask(w, w.general, w.alice, "and now?")
        assert w.gemini.requests[2].model == "gemini-2.5-flash"

        # /persona: the channel's system instruction starts with it; clear goes back
        persona = "You are Captain Hook, a pirate who answers in pirate speak."
        refused = await w.discord.slash_command(
            w.general, w.alice, "persona", {"instruction": persona}
        )
        await refused.wait_for_callback()
        assert refused.ephemeral
        done = await w.discord.slash_command(w.general, w.bob, "persona", {"instruction": persona})
        await done.wait_for_callback()
        await ask(w, w.general, w.alice, "hello")
        assert (w.gemini.requests[3].system_instruction() or "").startswith(persona)
        await ask(w, w.random, w.alice, "hello")
        assert "Captain Hook" not in (w.gemini.requests[4].system_instruction() or "")
        shown = await w.discord.slash_command(w.general, w.alice, "persona")
        await shown.wait_for_callback()
        assert shown.ephemeral and persona in (shown.original or object()).content

        cleared = await w.discord.slash_command(w.general, w.bob, "persona", {"clear": True})
        await cleared.wait_for_callback()
        await ask(w, w.general, w.alice, "hello again")
        system = w.gemini.requests[5].system_instruction() or ""
        assert "Captain Hook" not in system and system.startswith("You are gemcord")


# --- concurrency ----------------------------------------------------------------------------


async def test_model_names_are_checked_against_gemini_list(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])

        async def set_model(name: str) -> tuple[bool, str]:
            inter = await w.discord.slash_command(w.general, w.bob, "model", {"name": name})
            await inter.wait_for_callback()
            return inter.ephemeral, (inter.original or object()).content  # type: ignore[attr-defined]

        # a name Gemini does not list: refused, only to the caller, with names that work
        ephemeral, text = await set_model("gemini-2.5-flahs")
        assert ephemeral and "`gemini-2.5-flahs`" in text
        assert "`gemini-2.5-flash`" in text and "`gemini-2.5-pro`" in text
        assert "embedding" not in text
        await ask(w, w.general, w.alice, "which model?")
        assert w.gemini.requests[-1].model == "gemini-2.5-flash"  # unchanged
        ephemeral, text = await set_model("gemini-embedding-001")  # listed, cannot chat
        assert ephemeral and "can't chat" in text

        # a listed one: set for everyone to see; the list came from Gemini (and is cached)
        ephemeral, text = await set_model("models/gemini-3-pro-preview")
        assert not ephemeral and text == "This channel now uses `gemini-3-pro-preview`."
        await ask(w, w.general, w.alice, "and now?")
        assert w.gemini.requests[-1].model == "gemini-3-pro-preview"
        lists = [r for r in w.gemini.model_requests if r.path.endswith("/models")]
        assert lists and all(r.has_api_key(API_KEY) for r in lists)
        fetched = len(w.gemini.model_requests)

        ephemeral, text = await set_model("default")
        assert not ephemeral and "default model, `gemini-2.5-flash`" in text
        assert len(w.gemini.model_requests) == fetched  # `default` and cached names: no request

        # the list cannot be fetched: a well-formed name is accepted, saying it wasn't checked
        assert w.bot is not None
        w.bot.llm.forget_models()
        w.gemini.script_models(Reply.error(503))
        ephemeral, text = await set_model("gemini-9-ultra")
        assert not ephemeral and text.startswith("This channel now uses `gemini-9-ultra`.")
        assert "couldn't check" in text
        ephemeral, text = await set_model("not a model!")
        assert ephemeral and "not a model name" in text


async def test_concurrent_questions(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        chunks = [f"c{i} " for i in range(25)]
        release = asyncio.Event()  # the first answer's end waits for it
        w.gemini.script(
            Reply(chunks=chunks, delay=0.01, hold=release), Reply(chunks=chunks, delay=0.01)
        )
        in_general = await w.mention(w.general, w.alice, "long one here")
        in_random = await w.mention(w.random, w.bob, "long one there")
        first, second = await w.gemini.wait_for_requests(2, timeout=10)
        assert first.outcome == "pending"  # the second was asked while the first streamed
        release.set()
        a, b = await asyncio.gather(w.reply_done(in_general.id), w.reply_done(in_random.id))
        assert "".join(a) == "".join(b) == "".join(chunks)
        assert second.roles() == ["user"]  # and each channel has its own history

        # two questions in one channel, asked at once: each gets its own reply (the first
        # one's image download must not let the second overtake it in the history)
        w.gemini.script(stream("answer", "one", delay=0.05), stream("answer", "two", delay=0.05))
        att = w.discord.attachment("one.png", png(), "image/png")
        q1 = await w.mention(w.general, w.alice, "question one", attachments=[att])
        q2 = await w.mention(w.general, w.bob, "question two")
        r1, r2 = await asyncio.gather(w.reply_done(q1.id), w.reply_done(q2.id))
        assert {r1[0], r2[0]} == {"answer one", "answer two"}
        by_question = {m.reply_to: m for m in w.discord.bot_messages(w.general)}
        assert by_question[q1.id].content == r1[0] and by_question[q2.id].content == r2[0]

        # the history pairs them, in the order they were asked
        await ask(w, w.general, w.alice, "what did we say?")
        texts = w.gemini.requests[-1].texts()
        assert w.gemini.requests[-1].roles() == ["user", "model"] * 3 + ["user"]
        assert "long one here" in texts[0]
        assert "question one" in texts[2] and texts[3] == r1[0]
        assert "question two" in texts[4] and texts[5] == r2[0]


async def test_a_failure_on_our_side_is_reported_not_silent(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        store = w.bot.store
        real = store.get_channel_settings

        async def broken(channel_id: int) -> object:
            raise StorageError("database is locked")

        store.get_channel_settings = broken  # type: ignore[method-assign]
        question = await w.mention(w.general, w.alice, "hello?")
        notice = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == question.id)
        assert_clear(notice.content, "went wrong")
        inter = await w.discord.slash_command(w.general, w.alice, "ask", {"prompt": "hello?"})
        await w.discord.wait_for(
            lambda: inter.original is not None and not inter.original.loading, timeout=5
        )
        assert inter.original is not None
        assert_clear(inter.original.content, "went wrong")
        assert not w.gemini.requests

        store.get_channel_settings = real  # type: ignore[method-assign]
        _, contents = await ask(w, w.general, w.alice, "better now?")
        assert "".join(contents) == model_text(w.gemini.requests[0])


async def test_replies_carry_the_message_they_answer(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        # mentioning the bot in a reply to someone else's message: the bot sees that message
        claim = await w.discord.user_message(w.general, w.bob, "The Eiffel Tower is in Rome.")
        await ask(w, w.general, w.alice, "is this right?", reply_to=claim)
        request = w.gemini.requests[0]
        assert request.question_text() == (
            '[alice] (replying to bob: "The Eiffel Tower is in Rome.")\nis this right?'
        )
        # ... and so does the history afterwards
        await ask(w, w.general, w.alice, "so where is it?")
        assert "Eiffel Tower is in Rome" in w.gemini.requests[1].texts("user")[0]

        # a bare mention in reply to someone's message asks about that message
        fact = await w.discord.user_message(w.random, w.bob, "Octopuses have three hearts.")
        bare = await w.discord.user_message(
            w.random,
            w.alice,
            w.discord.bot_user.mention,
            mentions=[w.discord.bot_user],
            reply_to=fact,
            ping_reply=False,
        )
        await w.reply_done(bare.id)
        assert w.gemini.requests[2].question_text() == (
            '[alice] (replying to bob: "Octopuses have three hearts.")'
        )

        # replying to an answer the history no longer holds (after /reset) brings it back
        old_answer = w.discord.bot_messages(w.random)[-1]
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])
        reset = await w.discord.slash_command(w.random, w.bob, "reset")
        await reset.wait_for_callback()
        follow = await w.discord.user_message(
            w.random, w.alice, "why three?", reply_to=old_answer, ping_reply=False
        )
        await w.reply_done(follow.id)
        request = w.gemini.requests[3]
        assert request.roles() == ["user"]
        assert request.question_text() == (
            f'[alice] (replying to your earlier message: "{old_answer.content}")\nwhy three?'
        )


# --- channel permissions --------------------------------------------------------------------


async def test_channels_where_the_bot_may_not_write_or_reply(tmp_path: Path) -> None:
    async with fast(tmp_path, start=False) as w:
        role = w.discord.bot_role(w.guild)
        read_only = w.discord.add_text_channel(
            w.guild,
            "announcements",
            overwrites=[w.discord.overwrite(role, deny=Perm.SEND_MESSAGES)],
        )
        no_history = w.discord.add_text_channel(
            w.guild,
            "no-history",
            overwrites=[w.discord.overwrite(role, deny=Perm.READ_MESSAGE_HISTORY)],
        )
        await w.start_bot()

        # can't write there: no model call (no quota spent), no refused requests
        unanswerable = await w.mention(read_only, w.alice, "anyone?")
        # can write but not read history (so no Discord reply): answered as a plain message
        question, contents = await ask(w, no_history, w.alice, "hello?")
        assert len(w.gemini.requests) == 1
        assert "hello?" in (w.gemini.requests[0].question_text() or "")
        assert "".join(contents) == model_text(w.gemini.requests[0])
        [reply] = w.discord.bot_messages(no_history)
        assert reply.reply_to is None and reply.mentions_disabled
        assert not w.discord.bot_messages(read_only)
        assert w.discord.invalid_request_count == 0
        stored = await reply_turn(w, question.id)
        assert stored is not None and stored.status == "complete"
        assert stored.message_ids == [reply.id] and stored.text == "".join(contents)
        assert await reply_turn(w, unanswerable.id) is None


async def test_a_long_ask_answer_continues_in_follow_ups(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8
        chunks = [paragraph[i : i + 120] for i in range(0, len(paragraph), 120)]
        chunks = [c for _ in range(10) for c in [*chunks[:-1], chunks[-1] + "\n\n"]]
        w.gemini.script(Reply(chunks=chunks, delay=0.01))
        inter = await w.discord.slash_command(w.general, w.alice, "ask", {"prompt": "essay"})
        contents = await w.interaction_done(inter)
        text = "".join(chunks)
        assert len(text) > 4000 and len(contents) >= 3
        assert all(len(c) <= 2000 for c in contents)
        assert contents == split_message(text)
        assert not inter.errors and not w.discord.rate_limit_hits
        assert all(m.mentions_disabled and not m.ephemeral for m in inter.messages)


async def test_forget_erases_only_the_callers_words_everywhere(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        await ask(w, w.general, w.alice, "my secret is 42")
        await ask(w, w.random, w.alice, "and my cat is Tom")
        await ask(w, w.general, w.bob, "I like tea")

        unsure = await w.discord.slash_command(w.general, w.alice, "forget all", {"confirm": False})
        await unsure.wait_for_callback()
        assert unsure.ephemeral and "Nothing deleted" in (unsure.original or object()).content

        done = await w.discord.slash_command(w.random, w.alice, "forget all", {"confirm": True})
        await done.wait_for_callback()
        await w.discord.wait_for(lambda: done.original and not done.original.loading)
        assert done.ephemeral and "deleted 4 messages" in (done.original or object()).content

        await ask(w, w.general, w.bob, "what do you remember?")
        texts = " ".join(w.gemini.requests[-1].texts())
        assert "I like tea" in texts
        assert "secret" not in texts and "Tom" not in texts
        assert w.bot is not None
        export = await w.bot.store.export_channel(w.general.id, "json")
        assert "secret is 42" not in export and "I like tea" in export


async def test_an_answer_cut_at_the_length_limit_says_so(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMINI_MAX_OUTPUT_TOKENS": "50"}) as w:
        w.gemini.script(Reply(chunks=["The answer ", "goes on and"], finish_reason="MAX_TOKENS"))
        question, contents = await ask(w, w.general, w.alice, "tell me everything")
        assert contents[-1] == "The answer goes on and\n\n" + CUT_SHORT
        assert w.gemini.requests[0].generation_config().get("maxOutputTokens") == 50
        turn = await reply_turn(w, question.id)
        assert turn.status == "complete" and turn.text == "The answer goes on and"
