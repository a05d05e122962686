"""End to end: a busy channel — several people at once, caps and queues, duplicates, bad turns.

Each test drives the real bot through the fake Discord and the fake Gemini and checks what
Gemini was sent (each request's turns and parts), what Discord showed, and what was stored.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.conversation import SEPARATE
from tests.fakes.discord import Perm
from tests.fakes.gemini import RecordedRequest, Reply
from tests.harness import World, reply_turn, world

pytestmark = pytest.mark.timeout(60)

FAST = {"GEMCORD_EDIT_WINDOW_SECONDS": "1"}


def fast(tmp_path: Path, env: dict[str, str] | None = None, **kw: object):
    """Discord allowing 5 writes a second per channel, and the bot paced to match."""
    return world(tmp_path, {**FAST, **(env or {})}, rate_limit=(5, 1.0), **kw)


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    """A PNG of noise (which does not compress: its size is about 3 bytes a pixel)."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, format="PNG")
    return out.getvalue()


def held_echo(hold: asyncio.Event):
    """Echo the last user turn, but keep each reply streaming until `hold` is set."""

    def reply(request: RecordedRequest) -> Reply:
        text = f"Echo: {request.question_text()}"
        return Reply(chunks=[text[:10], text[10:]], hold=hold)

    return reply


def user_turns(request: RecordedRequest) -> list[str]:
    """The text of each user turn of a request (the newest without its date line)."""
    return [
        next(p["text"] for p in c.get("parts", []) if "text" in p)
        for c in request.contents()
        if c.get("role") == "user"
    ]


def stored(w: World, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True) as db:
        return db.execute(sql, params).fetchall()


async def test_three_people_at_once_each_answered_on_their_own(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        hold = asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        carol = w.discord.add_user("carol")
        w.discord.add_member(w.guild, carol)
        q1 = await w.mention(w.general, w.alice, "alice asks one")
        await w.gemini.wait_for_requests(1)
        q2 = await w.mention(w.general, w.bob, "bob asks two")
        await w.gemini.wait_for_requests(2)
        q3 = await w.mention(w.general, carol, "carol asks three")
        first, second, third = await w.gemini.wait_for_requests(3)
        hold.set()
        replies = await asyncio.gather(*(w.reply_done(q.id) for q in (q1, q2, q3)))

        # each request ends with its own question alone; earlier ones still streaming come
        # before it, each followed by a model turn that says it is answered separately
        assert first.roles() == ["user"]
        assert second.roles() == ["user", "model", "user"]
        assert third.roles() == ["user", "model", "user", "model", "user"]
        assert user_turns(third) == [
            "[alice] alice asks one",
            "[bob] bob asks two",
            "[carol] carol asks three",
        ]
        assert second.texts("model") == [SEPARATE] and third.texts("model") == [SEPARATE] * 2
        assert "Answer the last message only" in (third.system_instruction() or "")
        # each answer is its own, in reply to its own question
        assert ["".join(r) for r in replies] == [
            "Echo: [alice] alice asks one",
            "Echo: [bob] bob asks two",
            "Echo: [carol] carol asks three",
        ]
        for q in (q1, q2, q3):
            assert len([m for m in w.discord.bot_messages(w.general) if m.reply_to == q.id]) == 1

        # afterwards the history holds the three exchanges in the order they were asked
        await w.reply_done((await w.mention(w.general, w.alice, "and now?")).id)
        last = w.gemini.requests[-1]
        assert last.roles() == ["user", "model"] * 3 + ["user"]
        assert last.texts("model") == ["".join(r) for r in replies]
        assert not w.discord.rate_limit_hits


async def test_same_person_follow_up_while_the_first_reply_streams(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        hold = asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        q1 = await w.mention(w.general, w.alice, "tell me about owls")
        await w.gemini.wait_for_requests(1)
        q2 = await w.mention(w.general, w.alice, "and about ravens")
        _, second = await w.gemini.wait_for_requests(2)
        hold.set()
        first_reply, second_reply = await asyncio.gather(w.reply_done(q1.id), w.reply_done(q2.id))
        assert user_turns(second) == ["[alice] tell me about owls", "[alice] and about ravens"]
        assert second.texts("model") == [SEPARATE]
        assert "".join(second_reply) == "Echo: [alice] and about ravens"
        assert "".join(first_reply) == "Echo: [alice] tell me about owls"


async def test_a_question_lost_in_a_crash_is_context_not_merged(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        assert w.bot is not None
        # a question stored without any reply (the process died before its reply started)
        await w.bot.store.add_user_turn(
            channel_id=w.general.id, author_id=w.bob.id, author_name="bob", text="lost one"
        )
        await w.reply_done((await w.mention(w.general, w.alice, "hello")).id)
        request = w.gemini.requests[-1]
        assert request.roles() == ["user", "model", "user"]
        assert user_turns(request) == ["[bob] lost one", "[alice] hello"]


async def test_a_duplicate_delivery_is_answered_once_even_after_a_restart(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        question = await w.mention(w.general, w.alice, "only once please")
        await w.reply_done(question.id)
        # the gateway delivers the same MESSAGE_CREATE again, in this process and the next
        assert await w.discord.redeliver(question)
        await w.stop_bot()
        await w.start_bot()
        assert await w.discord.redeliver(question)
        later = await w.mention(w.general, w.bob, "something else")
        await w.reply_done(later.id)
        assert len(w.gemini.requests) == 2
        answers = [m for m in w.discord.bot_messages(w.general) if m.reply_to == question.id]
        assert len(answers) == 1
        claims = stored(w, "SELECT count(*) FROM answered WHERE message_id = ?", question.id)
        assert claims == [(1,)]


async def test_a_second_process_on_the_same_database_refuses_to_start(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        env = {**os.environ, **w.env, "NO_PROXY": "127.0.0.1,localhost"}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", "run", "--env-file", os.devnull],
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
        )
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("gemcord: another gemcord process is already running")
        # the first bot is unaffected
        await w.reply_done((await w.mention(w.general, w.alice, "still here?")).id)


async def test_caps_queue_in_order_with_a_waiting_sign(tmp_path: Path) -> None:
    env = {"GEMCORD_REPLIES_PER_CHANNEL": "1", "GEMCORD_QUEUE_PER_CHANNEL": "2"}
    async with fast(tmp_path, env) as w:
        hold = asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        q1 = await w.mention(w.general, w.alice, "first")
        await w.gemini.wait_for_requests(1)
        q2 = await w.mention(w.general, w.bob, "second")
        q3 = await w.mention(w.general, w.alice, "third")
        # both wait, and show it
        for q in (q2, q3):
            await w.discord.wait_for(lambda q=q: "⏳" in w.discord.message(q).reactions)
        q4 = await w.mention(w.general, w.bob, "fourth")  # the queue is full
        notice = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == q4.id)
        assert "ask again in a minute" in notice.content
        # another channel is not held up by this one's queue
        elsewhere = await w.mention(w.random, w.bob, "meanwhile")
        await w.gemini.wait_for_requests(2)
        assert len(w.gemini.requests) == 2
        hold.set()
        for q in (q1, q2, q3, elsewhere):
            await w.reply_done(q.id)
        asked = [user_turns(r)[-1] for r in w.gemini.requests if "meanwhile" not in str(r.body)]
        assert asked == ["[alice] first", "[bob] second", "[alice] third"]
        for q in (q2, q3):  # the sign goes once each is admitted
            await w.discord.wait_for(lambda q=q: "⏳" not in w.discord.message(q).reactions)
        assert await reply_turn(w, q4.id) is None


async def test_slots_go_in_arrival_order_whatever_the_intake_costs(tmp_path: Path) -> None:
    """A question whose image is slow to download keeps the slot it arrived first for: the
    question asked after it, ready at once, waits for it."""
    async with fast(tmp_path, {"GEMCORD_REPLIES_PER_CHANNEL": "1"}) as w:
        hold, download = asyncio.Event(), asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        w.discord.cdn_hold = download
        image = w.discord.attachment("cat.png", png(), "image/png")
        q1 = await w.mention(w.general, w.alice, "what is this?", attachments=[image])
        await w.discord.wait_for(lambda: any(c.route == "cdn" for c in w.discord.calls))
        q2 = await w.mention(w.general, w.bob, "quick one")
        await w.discord.wait_for(lambda: "⏳" in w.discord.message(q2).reactions)
        assert w.gemini.requests == []  # bob's question waits for alice's download
        download.set()
        first = (await w.gemini.wait_for_requests(1))[0]
        assert user_turns(first)[-1] == "[alice] what is this?"
        assert any("inline_data" in p or "inlineData" in p for p in first.contents()[-1]["parts"])
        hold.set()
        await asyncio.gather(w.reply_done(q1.id), w.reply_done(q2.id))
        second = w.gemini.requests[1]
        assert user_turns(second)[-1] == "[bob] quick one"
        await w.discord.wait_for(lambda: "⏳" not in w.discord.message(q2).reactions)


async def test_per_user_cap_lets_other_people_through(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_REPLIES_PER_USER": "1"}) as w:
        hold = asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        q1 = await w.mention(w.general, w.alice, "one")
        await w.gemini.wait_for_requests(1)
        q2 = await w.mention(w.general, w.alice, "two")
        await w.discord.wait_for(lambda: "⏳" in w.discord.message(q2).reactions)
        q3 = await w.mention(w.general, w.bob, "bob's")
        second, *_ = (await w.gemini.wait_for_requests(2))[1:]
        assert user_turns(second)[-1] == "[bob] bob's"  # bob went ahead of alice's second
        hold.set()
        await asyncio.gather(*(w.reply_done(q.id) for q in (q1, q2, q3)))
        assert user_turns(w.gemini.requests[2])[-1] == "[alice] two"


async def test_a_refused_question_does_not_hold_up_the_next_one(tmp_path: Path) -> None:
    """A refusal's notice may wait long for the channel's send budget; the questions asked
    after it go to Gemini meanwhile (the refused one is never stored, so there is no order to
    keep with it)."""
    env = {
        "GEMCORD_REPLIES_PER_USER": "1",
        "GEMCORD_QUEUE_PER_CHANNEL": "0",
        # one write per window: a create waits while the streaming reply may need its last edit
        "GEMCORD_EDITS_PER_WINDOW": "1",
        "GEMCORD_EDIT_WINDOW_SECONDS": "3",
    }
    async with world(tmp_path, env) as w:
        hold = asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        first = await w.mention(w.general, w.alice, "one")
        await w.gemini.wait_for_requests(1)
        refused = await w.mention(w.general, w.alice, "two")  # her cap: refused, notice waits
        await w.mention(w.general, w.bob, "bob's")
        requests = await w.gemini.wait_for_requests(2, timeout=10)
        assert user_turns(requests[1])[-1] == "[bob] bob's"
        waiting = [m for m in w.discord.bot_messages(w.general) if m.reply_to == refused.id]
        assert waiting == []  # bob's question went while the notice still waited
        hold.set()
        await w.reply_done(first.id)
        notice = await w.discord.wait_for_message(
            w.general, lambda m: m.reply_to == refused.id, timeout=20
        )
        assert "ask again in a minute" in notice.content
        assert await reply_turn(w, refused.id) is None


async def alice_held_then_bob(w: World) -> tuple[Any, Any, asyncio.Event]:
    """Alice asks in #general and Gemini holds its answer (no event until the returned event
    is set); then Bob asks there, and in #random, where he is answered meanwhile. Returns
    Alice's and Bob's messages in #general, and the event."""
    hold = asyncio.Event()
    w.gemini.default_reply = Reply(chunks=["The answer."], hold=hold)
    first = await w.mention(w.general, w.alice, "one")
    await w.gemini.wait_for_requests(1)
    second = await w.mention(w.general, w.bob, "two")
    w.gemini.default_reply = Reply(chunks=["Elsewhere."])
    await w.reply_done((await w.mention(w.random, w.bob, "meanwhile")).id)
    return first, second, hold


async def test_a_refusal_waits_for_the_first_message_of_the_replies_admitted_before_it(
    tmp_path: Path,
) -> None:
    """In a channel full up, the refusals' notices would take the message slots the answers
    admitted before them need: they wait until those answers show their first message."""
    env = {"GEMCORD_REPLIES_PER_CHANNEL": "1", "GEMCORD_QUEUE_PER_CHANNEL": "0"}
    async with fast(tmp_path, env) as w:
        first, refused, hold = await alice_held_then_bob(w)
        assert w.discord.bot_messages(w.general) == []  # the notice waits for the answer
        hold.set()
        await w.reply_done(first.id)
        notice = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == refused.id)
        assert "ask again in a minute" in notice.content
        answer, shown = w.discord.bot_messages(w.general)
        assert (answer.reply_to, answer.content, shown) == (first.id, "The answer.", notice)
        assert await reply_turn(w, refused.id) is None


async def test_a_question_that_must_wait_is_taken_in_once_those_admitted_before_it_began(
    tmp_path: Path,
) -> None:
    """Under a burst the bot works first for the questions it can answer now: one that must
    wait for a slot is stored and gets its ⏳ once Gemini has answered the requests of those
    admitted before it (or after a second)."""
    async with fast(tmp_path, {"GEMCORD_REPLIES_PER_CHANNEL": "1"}) as w:
        w.bot.admission.intake_wait = 60.0  # (a second by default: the test does not race it)
        first, waiting, hold = await alice_held_then_bob(w)  # Bob's in #random went at once
        assert await w.bot.store.find_turn_by_message(waiting.id) is None
        assert "⏳" not in w.discord.message(waiting.id).reactions
        hold.set()
        await w.discord.wait_for(lambda: "⏳" in w.discord.message(waiting.id).reactions)
        await w.reply_done(first.id)
        await w.reply_done(waiting.id)
        turns = await w.bot.store.load_history(w.general.id, max_turns=10)
        assert [t.text for t in turns] == ["one", "The answer.", "two", "Elsewhere."]
        asked = w.gemini.requests[-1]  # Bob's, with Alice's whole exchange before it
        assert asked.roles() == ["user", "model", "user"]
        assert [user_turns(asked)[0], user_turns(asked)[-1]] == ["[alice] one", "[bob] two"]
        assert asked.texts("model") == ["The answer."]


async def test_notices_are_throttled_per_person_and_channel(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_NOTICE_SECONDS": "60"}) as w:
        first = await w.mention(w.general, w.alice, "")
        await w.discord.wait_for_message(w.general, lambda m: m.reply_to == first.id)
        for _ in range(3):
            await w.mention(w.general, w.alice, "")
        other = await w.mention(w.general, w.bob, "")  # someone else still gets theirs
        await w.discord.wait_for_message(w.general, lambda m: m.reply_to == other.id)
        await w.reply_done((await w.mention(w.general, w.alice, "a real question")).id)
        hints = [m for m in w.discord.bot_messages(w.general) if "Ask me anything" in m.content]
        assert len(hints) == 2


async def test_a_refused_image_is_dropped_once_and_never_sent_again(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.script(
            Reply.error(
                400,
                "Unable to process input image. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
            )
        )
        att = w.discord.attachment("broken.png", png(), "image/png")
        question = await w.mention(w.general, w.alice, "what is this?", attachments=[att])
        contents = await w.reply_done(question.id)
        refused, retried = w.gemini.requests
        assert len(refused.image_parts()) == 1 and retried.image_parts() == []
        assert user_turns(retried) == ["[alice] what is this?"]
        assert "could not read `broken.png`" in contents[-1]
        assert (await reply_turn(w, question.id)).status == "complete"  # type: ignore[union-attr]
        # later questions succeed, and the image is never sent again
        for text in ("next one", "and another"):
            await w.reply_done((await w.mention(w.general, w.bob, text)).id)
        for request in w.gemini.requests[2:]:
            assert request.image_parts() == []
            assert request.roles()[-1] == "user"
        assert stored(w, "SELECT count(*) FROM unusable_images") == [(1,)]


async def test_a_blocked_prompt_is_not_sent_again(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.script(Reply.blocked_prompt("SAFETY"))
        bad = await w.mention(w.general, w.alice, "something the filter hates")
        [content] = await w.reply_done(bad.id)
        assert "declined" in content
        good = await w.mention(w.general, w.bob, "a normal question")
        assert "".join(await w.reply_done(good.id)) == "Echo: [bob] a normal question"
        request = w.gemini.requests[-1]
        assert "filter hates" not in str(request.body) and request.roles() == ["user"]
        # still in /history's export
        assert w.bot is not None
        assert "filter hates" in await w.bot.store.export_channel(w.general.id)


async def test_context_too_long_is_retried_with_half_the_history(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        for n in range(4):
            await w.reply_done((await w.mention(w.general, w.alice, f"old question {n}")).id)
        too_long = Reply.error(
            400,
            "The input token count (1200000) exceeds the maximum number of tokens allowed "
            "(1048576).",
        )
        w.gemini.script(too_long)
        question = await w.mention(w.general, w.bob, "one more")
        assert "".join(await w.reply_done(question.id)) == "Echo: [bob] one more"
        refused, retried = w.gemini.requests[-2:]
        assert len(refused.contents()) == 9 and len(retried.contents()) == 5
        assert user_turns(retried) == [
            "[alice] old question 2",
            "[alice] old question 3",
            "[bob] one more",
        ]
        # twice too long: a clear message, stored as failed
        w.gemini.script(too_long, too_long)
        again = await w.mention(w.general, w.bob, "and again")
        [content] = await w.reply_done(again.id)
        assert "too much for the model" in content and "/reset" in content
        assert (await reply_turn(w, again.id)).status == "failed"  # type: ignore[union-attr]


async def test_inline_files_stay_under_the_request_cap(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_MAX_INLINE_MB": "0.04"}) as w:
        old, new = png((90, 90)), png((90, 90))
        assert len(old) < 0.04 * 1024 * 1024 < len(old) + len(new)
        att = w.discord.attachment("a.png", old, "image/png")
        await w.reply_done((await w.mention(w.general, w.alice, "one", attachments=[att])).id)
        att = w.discord.attachment("b.png", new, "image/png")
        await w.reply_done((await w.mention(w.general, w.alice, "two", attachments=[att])).id)
        first, second = w.gemini.requests
        assert [i.data for i in first.image_parts()] == [old]
        assert [i.data for i in second.image_parts()] == [new]  # the older one left out


async def test_names_with_backslashes_and_invisible_text(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        odd = w.discord.add_user("Back\\slash a\\1b \\g<0>")
        w.discord.add_member(w.guild, odd)
        question = await w.discord.user_message(
            w.general,
            w.alice,
            f"{w.discord.bot_user.mention} say hi to {odd.mention}",
            mentions=[w.discord.bot_user, odd],
        )
        await w.reply_done(question.id)
        assert user_turns(w.gemini.requests[-1])[-1].endswith("say hi to @Back\\slash a\\1b \\g<0>")
        # only zero-width characters: no question, a hint
        blank = await w.mention(w.general, w.bob, "\u200b\u200d\u2060\ufeff")
        hint = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == blank.id)
        assert "Ask me anything" in hint.content and len(w.gemini.requests) == 1


async def test_deleting_a_question_stops_its_reply_and_forgets_it(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.script(Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))
        question = await w.mention(w.general, w.alice, "a secret I regret")
        [request] = await w.gemini.wait_for_requests(1)
        await w.discord.wait_for(lambda: w.discord.bot_messages(w.general))
        await w.discord.delete_message(w.general, question)
        await request.wait_closed()
        assert request.outcome != "completed"
        await w.discord.wait_for(lambda: w.bot is not None and not len(w.bot.inflight))
        await w.reply_done((await w.mention(w.general, w.bob, "fresh start")).id)
        assert "regret" not in str(w.gemini.requests[-1].body)
        assert w.gemini.requests[-1].roles() == ["user"]
        assert w.bot is not None
        assert "regret" not in await w.bot.store.export_channel(w.general.id)


async def test_a_thread_archived_mid_reply_ends_it_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with fast(tmp_path) as w:
        thread = w.discord.add_thread(w.general, "side talk")
        w.gemini.script(Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))
        question = await w.mention(thread, w.alice, "a long one")
        [request] = await w.gemini.wait_for_requests(1)
        await w.discord.wait_for(lambda: w.discord.bot_messages(thread))
        await w.discord.archive_thread(thread)  # a moderator archives it: edits get 50083
        await request.wait_closed()
        assert request.outcome != "completed"
        await w.discord.wait_for(lambda: w.bot is not None and not len(w.bot.inflight))
        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.status == "failed" and turn.text.startswith("w0 w1")
        refused = [c for c in w.discord.calls if c.status == 400]
        assert len(refused) == 1, "the reply stopped at the first refused write"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_deleted_reply_is_no_longer_sent_to_the_model(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.script(Reply(chunks=["an answer a moderator removes"]))
        question = await w.mention(w.general, w.alice, "say something rude")
        await w.reply_done(question.id)
        [reply] = w.discord.bot_messages(w.general)
        await w.discord.delete_message(w.general, reply)
        turn = await reply_turn(w, question.id)
        await w.discord.wait_for(
            lambda: (
                stored(w, "SELECT withdrawn FROM turns WHERE id = ?", turn.id)  # type: ignore[union-attr]
                == [("deleted",)]
            )
        )
        await w.reply_done((await w.mention(w.general, w.bob, "next")).id)
        request = w.gemini.requests[-1]
        assert "moderator removes" not in str(request.body)
        assert request.roles() == ["user", "model", "user"]
        assert request.texts("model") == [SEPARATE]


async def test_a_decompression_bomb_is_refused_and_large_images_stored_downscaled(
    tmp_path: Path,
) -> None:
    from tests.test_attachments import bomb_png

    async with fast(tmp_path, {"GEMCORD_MAX_IMAGE_MEGAPIXELS": "20"}) as w:
        bomb = w.discord.attachment("bomb.png", bomb_png(10_000, 10_000), "image/png")
        question = await w.mention(w.general, w.alice, "what is this?", attachments=[bomb])
        notice = await w.discord.wait_for_message(w.general, lambda m: m.reply_to == question.id)
        assert "`bomb.png`" in notice.content and "megapixels" in notice.content
        assert not w.gemini.requests  # nothing to ask about: not sent
        big = w.discord.attachment("big.png", png((3500, 200)), "image/png")
        await w.reply_done((await w.mention(w.general, w.bob, "and this?", attachments=[big])).id)
        [image] = w.gemini.requests[-1].image_parts()
        assert Image.open(io.BytesIO(image.data)).size == (3072, 176)
        assert stored(w, "SELECT max(size) FROM images") == [(len(image.data),)]


async def test_threads_and_forum_posts_use_their_parent_settings(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        mods = w.discord.add_role(w.guild, "mods", permissions=Perm.MANAGE_MESSAGES)
        w.discord.add_member(w.guild, w.bob, roles=[mods])

        async def command(channel, name: str, options: dict[str, str] | None = None) -> str:
            done = await w.discord.slash_command(channel, w.bob, name, options)
            await done.wait_for_callback()
            return (done.original or object()).content  # type: ignore[attr-defined]

        await command(w.general, "persona", {"instruction": "You are a pirate."})
        await command(w.general, "model", {"name": "gemini-2.5-pro"})
        thread = w.discord.add_thread(w.general, "side chat", owner=w.alice)
        await w.reply_done((await w.mention(thread, w.alice, "ahoy?")).id)
        request = w.gemini.requests[-1]
        assert (request.system_instruction() or "").startswith("You are a pirate.")
        assert request.model == "gemini-2.5-pro"
        assert "You are a pirate." in await command(thread, "persona")
        assert "gemini-2.5-pro" in await command(thread, "model")

        # what the thread sets itself wins; the rest is still inherited
        await command(thread, "model", {"name": "gemini-2.5-flash-lite"})
        await w.reply_done((await w.mention(thread, w.alice, "and now?")).id)
        request = w.gemini.requests[-1]
        assert request.model == "gemini-2.5-flash-lite"
        assert (request.system_instruction() or "").startswith("You are a pirate.")
        assert request.roles() == ["user", "model", "user"]  # the thread's own history

        forum = w.discord.add_forum_channel(w.guild, "help")
        await w.bot.store.set_persona(forum.id, "You are a librarian.")  # type: ignore[union-attr]
        _, starter = await w.discord.add_forum_post(
            forum,
            w.alice,
            "Where are the books?",
            f"{w.discord.bot_user.mention} where are the books?",
            mentions=[w.discord.bot_user],
        )
        await w.reply_done(starter.id)
        request = w.gemini.requests[-1]
        assert (request.system_instruction() or "").startswith("You are a librarian.")
        assert request.roles() == ["user"]
