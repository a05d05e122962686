"""End to end: stopping a reply with 🛑 or /stop (real discord.py + real google-genai, fakes).

What a stop must do, checked through both fakes: the bot closes the Gemini connection on the
stop itself, not on a next chunk (the fake's stream is stalled between two chunks when the stop
comes, so nothing but the bot can end it, and it sends nothing after); the reply gets one final
write with the text so far and the stopped marker, and nothing after it, to the end of the test;
the model turn is stored as ``stopped`` with exactly the visible text; only the asker or
someone with Manage Messages may stop it. No test waits "long enough": each waits for what the
fakes recorded, what the bot stored, or the bot's own answer to an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from pathlib import Path

import pytest

from bot.inflight import InFlight
from bot.streaming import DEFAULT_STYLE
from tests.fakes.discord import FakeChannel, FakeMessage, FakeUser, Perm
from tests.fakes.gemini import RecordedRequest, Reply
from tests.harness import World, react, reply_turn, world

pytestmark = pytest.mark.timeout(60)

STOPPED = DEFAULT_STYLE.separator + DEFAULT_STYLE.stopped
SLOW_CHUNKS = 200
SLOW_SENT = 24
"""Chunks a slow reply streams before Gemini pauses between two chunks until the stop."""
SLOW_DELAY = 0.01


def slow_reply(chunk_len: int = 0) -> Reply:
    """A 200-chunk answer that streams 24 chunks, then stalls (no next chunk is due) until the
    client closes the connection: it can only end by being stopped."""
    if chunk_len:
        chunks = [(f"part{i:03d} " + "x" * chunk_len)[: chunk_len - 1] + " " for i in range(200)]
    else:
        chunks = [f"word{i} " for i in range(SLOW_CHUNKS)]
    return Reply(chunks=chunks, delay=SLOW_DELAY, stall_after=SLOW_SENT)


async def stalled(w: World, request: RecordedRequest) -> None:
    """Wait until the fake Gemini has sent all it will before the stop, and waits."""
    await w.gemini.wait_for(lambda: request.outcome != "pending", timeout=15)
    assert request.outcome == "stalled", request.outcome


def still_running(w: World, message_id: int) -> bool:
    """Whether the reply that message belongs to is still running, not asked to stop."""
    assert w.bot is not None
    reply = w.bot.inflight.by_message(message_id)
    return reply is not None and not reply.token.cancelled


async def start_slow(
    w: World,
    channel: FakeChannel,
    user: FakeUser,
    *,
    reply: Reply | None = None,
    min_messages: int = 1,
) -> tuple[FakeMessage, RecordedRequest]:
    """Ask a question answered by a slow stream; return once it is stalled and shows text."""
    w.gemini.script(reply or slow_reply())
    seen = len(w.gemini.requests)
    question = await w.mention(channel, user, "Tell me a long story")
    request = (await w.gemini.wait_for_requests(seen + 1, timeout=10))[seen]
    await stalled(w, request)

    def shown() -> bool:
        mine = [m for m in w.discord.bot_messages(channel) if m.id > question.id]
        return len(mine) >= min_messages

    await w.discord.wait_for(shown, timeout=15, message="the reply never streamed")
    return question, request


def visible_text(contents: list[str]) -> str:
    """The model text a stopped reply shows: its messages joined, the stopped marker removed."""
    if contents and contents[-1] == DEFAULT_STYLE.stopped:
        contents = contents[:-1]
    else:
        assert contents and contents[-1].endswith(STOPPED), contents[-1:]
        contents = [*contents[:-1], contents[-1].removesuffix(STOPPED)]
    return "".join(contents)


def metrics_outcome(w: World, turn_id: int) -> str | None:
    """The outcome recorded in the reply's metrics row."""
    with contextlib.closing(sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT outcome FROM reply_metrics WHERE turn_id = ?", (turn_id,)
        ).fetchone()
    return row[0] if row else None


def assert_closed_by_the_stop(request: RecordedRequest) -> None:
    """The fake Gemini was stalled, no chunk due, when the stop came: the bot closed the
    connection because of the stop (nothing else would have), and no chunk went out after."""
    assert request.outcome == "disconnected" and request.client_closed
    assert request.reply is not None and request.reply.stall_after is not None
    assert request.chunks_sent == len(request.chunk_times) == request.reply.stall_after


def assert_never_written_again(w: World, messages: list[FakeMessage]) -> None:
    """Checked at the end of the test, once the bot has shut down: these messages (a reply's,
    finished) kept their last write, and no message answering the same question came after."""
    final = [(m.id, len(m.revisions)) for m in messages]
    question_id = messages[0].reply_to
    last = max(m.id for m in messages)

    def check() -> None:
        now = [(i, len(w.discord.message(i).revisions)) for i, _ in final]
        assert now == final, "a finished reply was written to after its final write"
        later = [m for m in w.discord.bot_messages() if m.id > last]
        if question_id is not None:  # (an interaction's response answers no message)
            assert not [m for m in later if m.reply_to == question_id], "answered again"

    w.at_end.append(check)


async def assert_stopped(w: World, question: FakeMessage, request: RecordedRequest) -> list[str]:
    """Everything a stop promises; returns the reply's final contents."""
    # finished in the store, and forgotten by the bot, which happens only once its renderer
    # has returned: every write of the reply is done
    contents = await w.reply_done(question.id)
    await request.wait_closed()
    assert_closed_by_the_stop(request)

    turn = await reply_turn(w, question.id)
    assert turn is not None and turn.status == "stopped"
    messages = [w.discord.message(i) for i in turn.message_ids]
    assert [m.content for m in messages] == contents
    # one final write, with the marker, and nothing of the reply written after it
    final = messages[-1].revisions[-1]
    assert final.content == contents[-1]
    assert sum(DEFAULT_STYLE.stopped in r.content for r in messages[-1].revisions) == 1
    assert all(r.t <= final.t for m in messages for r in m.revisions)
    assert_never_written_again(w, messages)

    assert visible_text(contents) == turn.text
    assert turn.text.startswith("word0 ") or turn.text.startswith("part000 ")
    assert "▌" not in "".join(contents)
    assert metrics_outcome(w, turn.id) == "stopped"
    return contents


# --- who stops, and how --------------------------------------------------------------------------


async def test_requester_reaction_on_reply_stops_it(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(w, w.general, w.alice)
        reply = next(m for m in w.discord.bot_messages(w.general) if m.reply_to == question.id)
        await react(w, w.general, reply.id, w.alice, "🛑")
        contents = await assert_stopped(w, question, request)
        assert len(contents) == 1


async def test_stop_command_stops_the_callers_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(w, w.general, w.alice)
        inter = await w.discord.slash_command(w.general, w.alice, "stop")
        await inter.wait_for_callback()
        assert inter.ephemeral and inter.original is not None
        assert inter.original.content == "Stopped 1 reply."
        contents = await assert_stopped(w, question, request)
        assert len(contents) == 1


async def test_requester_reaction_on_question_stops_it(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(w, w.general, w.alice)
        await react(w, w.general, question.id, w.alice, "🛑")
        await assert_stopped(w, question, request)


async def test_reaction_on_second_message_of_long_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(
            w, w.general, w.alice, reply=slow_reply(chunk_len=100), min_messages=2
        )
        second = [m for m in w.discord.bot_messages(w.general) if m.id > question.id][1]
        await react(w, w.general, second.id, w.alice, "🛑")
        contents = await assert_stopped(w, question, request)
        assert len(contents) >= 2 and len(contents[0]) > 1500
        assert all(len(c) <= 2000 for c in contents)


async def test_reaction_that_beats_the_bots_own_send(tmp_path: Path) -> None:
    """The gateway can deliver a 🛑 on a reply message before the REST response that gives the
    bot its id: the stop must still work once the id is known."""
    async with world(tmp_path) as w:
        assert w.bot is not None
        inflight = w.bot.inflight
        register, look_up = inflight.add_message, inflight.wait_for_message
        late: list[tuple[InFlight, int]] = []
        looking = asyncio.Event()

        def held(reply: InFlight, message_id: int) -> None:  # the REST response is not back
            late.append((reply, message_id))

        async def watched(message_id: int, timeout: float) -> InFlight | None:
            looking.set()  # the bot got the 🛑 and waits for the message to be known
            return await look_up(message_id, timeout)

        inflight.add_message = held  # type: ignore[method-assign]
        inflight.wait_for_message = watched  # type: ignore[method-assign]
        w.gemini.script(slow_reply())
        question = await w.mention(w.general, w.alice, "Tell me a long story")
        request = (await w.gemini.wait_for_requests(1, timeout=10))[0]
        reply = await w.discord.wait_for_message(
            w.general, lambda m: m.reply_to == question.id, timeout=10
        )
        await stalled(w, request)
        assert inflight.by_message(reply.id) is None
        await react(w, w.general, reply.id, w.alice, "🛑")
        await asyncio.wait_for(looking.wait(), 10)
        # not stopped yet: the bot cannot know which reply the message is part of
        assert still_running(w, question.id) and request.outcome == "stalled"
        inflight.add_message = register  # type: ignore[method-assign]
        for entry in late:  # now the REST response returns
            register(*entry)
        await assert_stopped(w, question, request)


async def test_only_the_asker_or_a_moderator_may_stop(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        carol = w.discord.add_user("carol")
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, carol, roles=[mods])
        question, request = await start_slow(w, w.general, w.alice)
        reply = next(m for m in w.discord.bot_messages(w.general) if m.reply_to == question.id)

        await react(w, w.general, reply.id, w.bob, "🛑")  # bob neither asked nor moderates
        removed = await w.discord.wait_for(
            lambda: w.discord.calls_for("reaction", method="DELETE"), timeout=5
        )
        assert removed[0].status == 204 and str(w.bob.id) in removed[0].path
        assert w.discord.message(reply.id).reactions == {}
        # taking it off was the last thing the bot did about bob's 🛑: the reply runs on
        assert still_running(w, question.id) and request.outcome == "stalled"
        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.status == "streaming"  # not finished

        await react(w, w.general, reply.id, carol, "⏹️")  # a moderator, the alias
        await assert_stopped(w, question, request)
        assert w.bot is not None
        assert w.bot.inflight.by_message(question.id) is None
        assert not [c for c in w.discord.calls if c.status in (401, 403, 429)]


def buttons_of(message: FakeMessage) -> list[str]:
    """The custom ids of the buttons a message shows."""
    return [c.get("custom_id", "") for row in message.components for c in row["components"]]


async def click(w: World, message: FakeMessage, user: FakeUser, custom_id: str):  # type: ignore[no-untyped-def]
    """`user` clicks a button; returns the interaction and when the fake dispatched it."""
    inter = await w.discord.click(message, user, custom_id)
    return inter, inter.t_created


async def test_stop_button_for_the_asker_and_a_moderator_refused_to_others(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        carol = w.discord.add_user("carol")
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, carol, roles=[mods])
        for stopper in (w.alice, carol):
            question, request = await start_slow(w, w.general, w.alice)
            reply = next(m for m in w.discord.bot_messages(w.general) if m.reply_to == question.id)
            assert buttons_of(reply) == ["gemcord:stop"]
            assert all(
                r.payload.get("components")
                for r in reply.revisions
                if r.payload and "▌" in r.content
            ), "every live write shows the button"

            refused, _ = await click(w, reply, w.bob, "gemcord:stop")  # neither asked nor mod
            await refused.wait_for_callback()
            assert (
                refused.ephemeral
                and "Only the person who asked" in (refused.original or object()).content
            )  # type: ignore[attr-defined]
            assert still_running(w, question.id) and request.outcome == "stalled"
            turn = await reply_turn(w, question.id)
            assert turn is not None and turn.status == "streaming"

            done, _ = await click(w, reply, stopper, "gemcord:stop")
            await done.wait_for_callback()
            assert done.callback_type == 6  # acknowledged without a message
            contents = await assert_stopped(w, question, request)
            final = w.discord.message(reply.id)
            # the final write swapped Stop for Regenerate (the channel's newest reply)
            assert buttons_of(final) == ["gemcord:regenerate"] and final.content == contents[-1]
            with pytest.raises(LookupError):
                await w.discord.click(final, w.alice, "gemcord:stop")


async def test_unauthorized_reaction_is_left_alone_without_manage_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.cogs.control")
    async with world(tmp_path, start=False) as w:
        bot_role = w.discord.bot_role(w.guild)
        bot_role.permissions &= ~Perm.MANAGE_MESSAGES
        await w.start_bot()
        question, request = await start_slow(w, w.general, w.alice)
        await react(w, w.general, question.id, w.bob, "🛑")
        await w.discord.wait_for(  # the bot's last word on bob's 🛑
            lambda: any(f"ignored 🛑 from {w.bob.id}" in r.getMessage() for r in caplog.records),
            message="bob's 🛑 was never judged",
        )
        assert still_running(w, question.id) and request.outcome == "stalled"
        assert w.discord.message(question.id).reactions == {"🛑": [w.bob.id]}
        assert not w.discord.calls_for("reaction")  # no doomed DELETE (a 403 counts against us)
        await react(w, w.general, question.id, w.alice, "🛑")
        await assert_stopped(w, question, request)
        assert not [c for c in w.discord.calls if c.status in (401, 403, 429)]


async def test_configured_emoji_stops_and_other_emoji_do_not(tmp_path: Path) -> None:
    async with world(tmp_path, env={"GEMCORD_STOP_EMOJI": "❌"}) as w:
        question, request = await start_slow(w, w.general, w.alice)
        await react(w, w.general, question.id, w.alice, "👍")
        # bob's ❌ comes after it, and the bot takes it off (he may not stop alice's reply):
        # the 👍 was handled by then (events are handled in order, and a 👍 needs no wait)
        await react(w, w.general, question.id, w.bob, "❌")
        await w.discord.wait_for(lambda: w.discord.calls_for("reaction", method="DELETE"))
        assert still_running(w, question.id) and request.outcome == "stalled"
        await react(w, w.general, question.id, w.alice, "❌")
        await assert_stopped(w, question, request)


async def test_stop_before_any_text(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.gemini.script(Reply(chunks=["Never shown."], stall_after=0))  # thinks until stopped
        question = await w.mention(w.general, w.alice, "Think hard")
        request = (await w.gemini.wait_for_requests(1, timeout=10))[0]
        await stalled(w, request)
        assert not w.discord.bot_messages(w.general)
        await react(w, w.general, question.id, w.alice, "🛑")
        contents = await w.reply_done(question.id)
        await request.wait_closed()
        assert_closed_by_the_stop(request)
        assert request.chunks_sent == 0
        assert contents == [DEFAULT_STYLE.stopped_before_text]
        message = w.discord.bot_messages(w.general)[0]
        assert message.reply_to == question.id and len(message.revisions) == 1
        assert_never_written_again(w, [message])
        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.status == "stopped" and turn.text == ""
        assert metrics_outcome(w, turn.id) == "stopped"


async def test_stopping_a_finished_reply_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 🛑 on a recent message that is no running reply's waits a little in case the message
    # is about to be registered (see test_reaction_that_beats_the_bots_own_send); a finished
    # reply's never is, and that wait giving up is InFlightRegistry's (tests/test_inflight.py).
    # Here it is not waited out: what the bot does about these 🛑 it does at once.
    monkeypatch.setattr("bot.cogs.control.REGISTRATION_WAIT", 0.0)
    async with world(tmp_path) as w:
        w.gemini.script(Reply(chunks=["All ", "done."], delay=0.02))
        question = await w.mention(w.general, w.alice, "Quick one")
        assert await w.reply_done(question.id) == ["All done."]
        reply = w.discord.bot_messages(w.general)[0]
        revisions = len(reply.revisions)
        await react(w, w.general, reply.id, w.alice, "🛑")
        await react(w, w.general, question.id, w.bob, "🛑")  # not removed: nothing to protect
        # the /stop comes after both 🛑, and they need no wait: when it is answered, the bot
        # has handled them
        inter = await w.discord.slash_command(w.general, w.alice, "stop")
        await inter.wait_for_callback()
        assert inter.original is not None and inter.ephemeral
        assert inter.original.content == "Nothing of yours is running here."
        assert len(reply.revisions) == revisions and reply.content == "All done."
        assert not w.discord.calls_for("reaction")
        assert_never_written_again(w, [reply])
        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.status == "complete" and turn.text == "All done."
        assert len(w.discord.bot_messages(w.general)) == 2  # the reply and the /stop answer


async def test_text_fallback_stops_the_authors_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(w, w.general, w.alice)
        command = await w.mention(w.general, w.alice, "stop")
        await assert_stopped(w, question, request)
        notice = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == command.id)
        assert notice.content == "Stopped 1 reply."
        assert len(w.gemini.requests) == 1  # "stop" was not taken for a question


async def test_stop_command_without_a_running_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        for options in (None, {"all": True}):
            inter = await w.discord.slash_command(
                w.general, w.alice, "stop", options, permissions=Perm.all()
            )
            await inter.wait_for_callback()
            assert inter.ephemeral and inter.original is not None
            assert inter.original.content.startswith("Nothing")
            assert inter.original.content.endswith("running here.")


async def test_stop_all_needs_manage_messages(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        carol = w.discord.add_user("carol")
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, carol, roles=[mods])
        q_alice, r_alice = await start_slow(w, w.general, w.alice)
        q_bob, r_bob = await start_slow(w, w.general, w.bob)
        q_other, r_other = await start_slow(w, w.random, w.alice)

        refused = await w.discord.slash_command(w.general, w.bob, "stop", {"all": True})
        await refused.wait_for_callback()
        assert refused.ephemeral and refused.original is not None
        assert "Manage Messages" in refused.original.content  # the refusal ends its handling
        assert still_running(w, q_alice.id) and still_running(w, q_bob.id)
        assert r_alice.outcome == r_bob.outcome == "stalled"

        inter = await w.discord.slash_command(w.general, carol, "stop", {"all": True})
        await inter.wait_for_callback()
        assert inter.original is not None and inter.original.content == "Stopped 2 replies."
        await assert_stopped(w, q_alice, r_alice)
        await assert_stopped(w, q_bob, r_bob)
        assert still_running(w, q_other.id)  # another channel's reply goes on
        assert r_other.outcome == "stalled"

        await react(w, w.random, q_other.id, w.alice, "🛑")
        await assert_stopped(w, q_other, r_other)


async def test_next_question_sees_the_interrupted_answer(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(w, w.general, w.alice)
        await react(w, w.general, question.id, w.alice, "🛑")
        await assert_stopped(w, question, request)
        stopped = await reply_turn(w, question.id)
        assert stopped is not None

        w.gemini.script(Reply(chunks=["Sorry, ", "in short: ", "the end."], delay=0.02))
        follow_up = await w.mention(w.general, w.bob, "And the short version?")
        assert await w.reply_done(follow_up.id) == ["Sorry, in short: the end."]
        sent = w.gemini.requests[1]
        assert sent.roles() == ["user", "model", "user"]
        model_text = sent.texts("model")[0]
        assert model_text.startswith(stopped.text)
        note = model_text.removeprefix(stopped.text)
        assert re.fullmatch(r"\s+\[[^\]]*stopped[^\]]*\]", note), note
        assert "[bob] And the short version?" in (sent.question_text() or "")
        turn = await reply_turn(w, follow_up.id)
        assert turn is not None and turn.status == "complete"


async def test_stats_and_help_answer_privately(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        question, request = await start_slow(w, w.general, w.alice)
        running = await w.discord.slash_command(w.general, w.bob, "stats")
        await running.wait_for_callback()
        assert running.ephemeral and running.original is not None
        assert "Running now: 1 repl" in running.original.content
        await react(w, w.general, question.id, w.alice, "🛑")
        await assert_stopped(w, question, request)

        stats = await w.discord.slash_command(w.general, w.bob, "stats")
        await stats.wait_for_callback()
        assert stats.ephemeral and stats.original is not None
        text = stats.original.content
        assert "1 question, 1 reply" in text and "1 stopped" in text
        assert "Running now: 0 replies" in text

        help_ = await w.discord.slash_command(w.general, w.bob, "help")
        await help_.wait_for_callback()
        assert help_.ephemeral and help_.original is not None
        assert "/stop" in help_.original.content and "🛑" in help_.original.content


async def test_dm_reply_stopped_by_reaction(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        dm = w.discord.add_dm_channel(w.alice)
        w.gemini.script(slow_reply())
        question = await w.discord.user_message(dm, w.alice, "Tell me a long story")
        request = (await w.gemini.wait_for_requests(1, timeout=10))[0]
        reply = await w.discord.wait_for_message(dm, lambda m: m.reply_to == question.id)
        await stalled(w, request)
        await react(w, dm, reply.id, w.alice, "🛑")
        await assert_stopped(w, question, request)


async def test_ask_reply_stopped_by_reaction_on_the_response(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.gemini.script(slow_reply())
        inter = await w.discord.slash_command(w.general, w.alice, "ask", {"prompt": "A story"})
        request = (await w.gemini.wait_for_requests(1, timeout=10))[0]
        await stalled(w, request)
        await w.discord.wait_for(
            lambda: inter.original is not None and inter.original.content.startswith("word0"),
            timeout=10,
        )
        assert inter.original is not None
        await react(w, w.general, inter.original.id, w.bob, "🛑")  # not bob's
        await w.discord.wait_for(  # the bot takes bob's 🛑 off: its last word on it
            lambda: w.discord.calls_for("reaction", method="DELETE"), timeout=5
        )
        assert still_running(w, inter.original.id) and request.outcome == "stalled"
        await react(w, w.general, inter.original.id, w.alice, "🛑")
        contents = await w.interaction_done(inter)
        await request.wait_closed()
        assert_closed_by_the_stop(request)
        assert w.bot is not None
        turn = await w.bot.store.find_turn_by_message(inter.original.id)
        assert turn is not None and turn.status == "stopped"
        assert visible_text(contents) == turn.text and turn.text.startswith("word0 ")
        assert_never_written_again(w, inter.messages)


def short_answer(n: int) -> list[str]:
    """The chunks of question ``n``'s answer in the concurrency test."""
    return [f"Answer {n}: " if k == 0 else f"part {n}.{k} " for k in range(6)] + ["done."]


async def test_stopping_one_of_ten_concurrent_replies(tmp_path: Path) -> None:
    async with world(tmp_path, start=False) as w:
        third = w.discord.add_text_channel(w.guild, "third")
        people = [w.alice, w.bob]
        for name in ("carol", "dave"):
            person = w.discord.add_user(name)
            w.discord.add_member(w.guild, person)
            people.append(person)
        await w.start_bot()

        def by_question(request: RecordedRequest) -> Reply:
            number = re.search(r"Q(\d+)", (request.question_text() or ""))
            assert number is not None
            if "slow" in (request.question_text() or ""):
                return slow_reply()
            return Reply(chunks=short_answer(int(number[1])), delay=0.08)

        w.gemini.default_reply = by_question
        channels = [w.general] * 4 + [w.random] * 3 + [third] * 3
        victim = 5  # the second question in #random
        questions = await asyncio.gather(
            *(
                w.mention(
                    channel, people[n % 4], f"Q{n} {'slow, please' if n == victim else 'quick'}"
                )
                for n, channel in enumerate(channels)
            )
        )
        started = asyncio.get_running_loop().time()
        requests = await w.gemini.wait_for_requests(10, timeout=10)
        target = next(r for r in requests if f"Q{victim} " in (r.question_text() or ""))
        victim_reply = await w.discord.wait_for_message(
            w.random, lambda m: m.reply_to == questions[victim].id, timeout=10
        )
        await stalled(w, target)
        await react(w, w.random, victim_reply.id, people[victim % 4], "🛑")
        await assert_stopped(w, questions[victim], target)

        for n, question in enumerate(questions):
            if n == victim:
                continue
            contents = await w.reply_done(question.id, timeout=20)
            assert contents == ["".join(short_answer(n))], n
            turn = await reply_turn(w, question.id)
            assert turn is not None and turn.status == "complete", n
            reply = w.discord.message(turn.message_ids[0])
            assert reply.channel_id == channels[n].id and reply.reply_to == question.id
        assert all(r.outcome == "completed" for r in requests if r is not target)
        assert not w.discord.rate_limit_hits
        print(f"ten replies done in {asyncio.get_running_loop().time() - started:.1f} s")


# --- /forget stops what it forgets ---------------------------------------------------------------


async def forget(w: World, channel: FakeChannel, user: FakeUser, name: str, options=None):  # type: ignore[no-untyped-def]
    """Run `/forget last` or `/forget all`; (its private answer, when the answer was shown)."""
    inter = await w.discord.slash_command(channel, user, name, options or {})
    await inter.wait_for_callback()
    answer = await w.discord.wait_for(
        lambda: inter.original is not None and not inter.original.loading and inter.original,
        timeout=30,
        message=f"/{name} never answered",
    )
    assert inter.ephemeral and answer.mentions_disabled
    return answer.content, answer.revisions[-1].t


async def assert_forgotten(
    w: World, question: FakeMessage, request: RecordedRequest, answered_at: float
) -> None:
    """The reply to `question` was stopped before the command answered (its messages show the
    text so far, marked stopped, written before the answer and never again), the Gemini
    stream was closed by the stop, and the store holds nothing of the exchange."""
    assert w.bot is not None
    assert w.bot.inflight.by_message(question.id) is None
    await request.wait_closed()
    assert_closed_by_the_stop(request)
    messages = [m for m in w.discord.bot_messages() if m.reply_to == question.id]
    assert len(messages) == 1
    reply = messages[0]
    assert reply.content.startswith("word0 ") and reply.content.endswith(STOPPED)
    assert "▌" not in reply.content and not buttons_of(reply)  # no longer a live answer
    assert all(r.t < answered_at for r in reply.revisions)
    touching = [c for c in w.discord.calls if str(reply.id) in c.path or str(question.id) in c.path]
    assert all(c.t_end is not None and c.t_end <= answered_at for c in touching)
    assert_never_written_again(w, [reply])
    store = w.bot.store
    assert await reply_turn(w, question.id) is None
    assert await store.find_turn_by_message(question.id) is None
    assert await store.find_turn_by_message(reply.id) is None
    export = await store.export_channel(question.channel_id, "json")
    assert str(question.id) not in export and str(reply.id) not in export


async def test_forget_last_stops_the_reply_it_forgets(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        elsewhere, other_request = await start_slow(w, w.random, w.alice)  # not this conversation
        question, request = await start_slow(w, w.general, w.alice)
        text, answered_at = await forget(w, w.general, w.alice, "forget last")
        assert (
            text == "🧽 Done: I deleted your last question here and my answer to it from my memory."
        )
        await assert_forgotten(w, question, request, answered_at)
        # alice's reply in #random runs on, and is still hers to stop
        assert still_running(w, elsewhere.id) and other_request.outcome == "stalled"
        await react(w, w.random, elsewhere.id, w.alice, "🛑")
        await assert_stopped(w, elsewhere, other_request)


async def test_forget_last_cancels_a_question_waiting_for_its_turn(tmp_path: Path) -> None:
    async with world(tmp_path, env={"GEMCORD_REPLIES_PER_USER": "1"}) as w:
        first, request = await start_slow(w, w.general, w.alice)
        waiting = await w.mention(w.general, w.alice, "and a second secret")
        await w.discord.wait_for(lambda: w.discord.message(waiting.id).reactions)  # ⏳
        text, _ = await forget(w, w.general, w.alice, "forget last")
        assert "deleted your last question" in text
        assert w.bot is not None and w.bot.inflight.by_message(waiting.id) is None
        assert await w.bot.store.find_turn_by_message(waiting.id) is None
        # the ⏳ on the question (the bot's own reaction, no part of the exchange) goes when
        # the channel's reaction budget allows, perhaps after the answer
        await w.discord.wait_for(lambda: not w.discord.message(waiting.id).reactions)
        # the first question is the last one now, and still being answered
        assert still_running(w, first.id) and request.outcome == "stalled"
        await react(w, w.general, first.id, w.alice, "🛑")
        await assert_stopped(w, first, request)
        assert len(w.gemini.requests) == 1  # the forgotten question never reached Gemini
        assert not [m for m in w.discord.bot_messages() if m.reply_to == waiting.id]
        export = await w.bot.store.export_channel(w.general.id, "json")
        assert "second secret" not in export and "long story" in export


async def test_forget_all_stops_every_reply_of_the_caller(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        here, here_request = await start_slow(w, w.general, w.alice)
        there, there_request = await start_slow(w, w.random, w.alice)
        bobs, bobs_request = await start_slow(w, w.general, w.bob)
        text, answered_at = await forget(w, w.random, w.alice, "forget all", {"confirm": True})
        assert text.startswith("🧽 Done: I deleted 4 messages")
        await assert_forgotten(w, here, here_request, answered_at)
        await assert_forgotten(w, there, there_request, answered_at)
        assert still_running(w, bobs.id) and bobs_request.outcome == "stalled"
        await react(w, w.general, bobs.id, w.bob, "🛑")
        await assert_stopped(w, bobs, bobs_request)
