"""The registry of running replies: lookup by any message, per-user stop, idle wait."""

from __future__ import annotations

import asyncio
import time

from bot.inflight import InFlightRegistry, stop_summary


async def test_lookup_stop_and_finish() -> None:
    reg = InFlightRegistry()
    a = reg.start(channel_id=1, requester_id=10, question_id=100)
    b = reg.start(channel_id=1, requester_id=11, question_id=101)
    c = reg.start(channel_id=2, requester_id=10, question_id=102)
    reg.add_message(a, 200)
    reg.add_message(a, 201)
    assert reg.by_message(100) is a and reg.by_message(201) is a and reg.by_message(101) is b
    assert reg.stop(1, 10, by=10) == 1
    assert a.token.cancelled and not b.token.cancelled and not c.token.cancelled
    assert reg.stop(1, 10, by=10) == 0  # already stopped
    assert reg.stop(1, None, by=99) == 1 and b.token.by == 99
    for r in (a, b):
        reg.finish(r)
    assert reg.by_message(200) is None and reg.by_message(100) is None
    assert not await reg.wait_idle(0.01)
    reg.finish(c)
    assert await reg.wait_idle(0.01) and len(reg) == 0
    reg.add_message(c, 300)  # a message id arriving after the reply ended is not registered
    assert reg.by_message(300) is None


async def test_what_a_reply_records() -> None:
    reg = InFlightRegistry()
    before = time.monotonic()
    reply = reg.start(channel_id=5, requester_id=50, question_id=500)
    reg.add_message(reply, 600)
    reg.add_message(reply, 601)
    assert (reply.channel_id, reply.requester_id, reply.question_id) == (5, 50, 500)
    assert reply.message_ids == {600, 601}
    assert before <= reply.started <= time.monotonic()
    assert not reply.token.cancelled
    assert reply.token.cancel("stopped", 50) and (reply.token.reason, reply.token.by) == (
        "stopped",
        50,
    )
    assert not reply.token.cancel("stopped", 51) and reply.token.by == 50  # the first stop wins


async def test_slash_replies_have_no_question_and_stop_by_channel() -> None:
    reg = InFlightRegistry()
    ask = reg.start(channel_id=7, requester_id=70, question_id=None)  # /ask: no question message
    reg.add_message(ask, 700)
    assert reg.by_message(700) is ask
    assert reg.in_channel(7) == [ask] and reg.in_channel(7, 71) == [] and reg.in_channel(8) == []
    assert reg.stop(8, None, by=1) == 0  # another channel
    assert reg.stop(7, 71, by=71) == 0  # someone else's
    assert reg.stop(7, 70, by=70) == 1
    reg.finish(ask)
    reg.finish(ask)  # finishing twice is harmless
    assert len(reg) == 0 and reg.by_message(700) is None


async def test_finishing_one_reply_keeps_another_on_the_same_question() -> None:
    reg = InFlightRegistry()
    first = reg.start(channel_id=1, requester_id=10, question_id=100)
    second = reg.start(channel_id=1, requester_id=10, question_id=100)  # asked again
    reg.finish(first)
    assert reg.by_message(100) is second


async def test_cancel_all_on_shutdown() -> None:
    reg = InFlightRegistry()
    replies = [reg.start(channel_id=i % 2, requester_id=i, question_id=i) for i in range(4)]
    replies[0].token.cancel("stopped", 0)
    assert reg.cancel_all("shutting down") == 3
    assert [r.token.reason for r in replies] == ["stopped"] + ["shutting down"] * 3
    assert reg.cancel_all("shutting down") == 0


def test_stop_summary() -> None:
    assert stop_summary(1) == "Stopped 1 reply."
    assert stop_summary(3, everyone=True) == "Stopped 3 replies."
    assert stop_summary(0) == "Nothing of yours is running here."
    assert stop_summary(0, everyone=True) == "Nothing is running here."


async def test_wait_for_a_message_registered_later() -> None:
    reg = InFlightRegistry()
    reply = reg.start(channel_id=1, requester_id=10, question_id=100)
    assert await reg.wait_for_message(100, timeout=0) is reply  # known: no wait
    waiting = [asyncio.create_task(reg.wait_for_message(200, timeout=5)) for _ in range(3)]
    await asyncio.sleep(0)  # each task runs up to its wait
    assert not any(t.done() for t in waiting)
    waiting.pop().cancel()  # one 🛑 handler gives up (the bot shutting down)
    await asyncio.sleep(0)
    reg.add_message(reply, 200)  # the send returned: the other two 🛑s find their reply
    assert [await t for t in waiting] == [reply, reply]
    # the message stays known while the reply runs: a later 🛑 finds it at once
    assert await reg.wait_for_message(200, timeout=0) is reply
    reg.finish(reply)
    assert await reg.wait_for_message(200, timeout=0) is None


async def test_wait_for_a_message_that_never_comes() -> None:
    reg = InFlightRegistry()
    reply = reg.start(channel_id=1, requester_id=10, question_id=None)
    waiting = asyncio.create_task(reg.wait_for_message(300, timeout=0.05))
    await asyncio.sleep(0)
    assert not waiting.done()  # it waits for the message to be registered ...
    assert await waiting is None  # ... and gives up at its timeout
    # the message can still be waited for after a wait gave up on it, and found once registered
    other = reg.start(channel_id=1, requester_id=11, question_id=None)
    later = asyncio.create_task(reg.wait_for_message(300, timeout=5))
    await asyncio.sleep(0)
    reg.add_message(other, 300)
    assert await later is other
    reg.finish(other)
    reg.finish(reply)
    reg.add_message(reply, 300)  # too late: the reply ended
    assert await reg.wait_for_message(300, timeout=0.01) is None


async def test_end_stops_the_chosen_replies_and_waits_until_they_ended() -> None:
    reg = InFlightRegistry()
    mine = reg.start(channel_id=1, requester_id=10, question_id=100, question_turn=7)
    other = reg.start(channel_id=1, requester_id=10, question_id=101, question_turn=8)
    assert set(reg.asked_by(10)) == {mine, other}
    assert reg.asked_by(11) == []
    order: list[str] = []

    async def reply_ends() -> None:  # the reply sees its token, writes its last text, ends
        await mine.token.wait()
        order.append("last write")
        reg.finish(mine)

    task = asyncio.create_task(reply_ends())
    assert await reg.end(lambda r: r.question_turn == 7, "deleted", 10, timeout=60) == 1
    order.append("ended")
    await task
    assert order == ["last write", "ended"]
    assert (mine.token.reason, mine.token.by) == ("deleted", 10) and mine.ended.is_set()
    assert not other.token.cancelled and not other.ended.is_set()
    assert await reg.end(lambda r: r.question_turn == 7, "deleted", 10, timeout=60) == 0


async def test_end_gives_up_on_a_reply_that_never_ends() -> None:
    reg = InFlightRegistry()
    stuck = reg.start(channel_id=1, requester_id=10, question_id=100)
    assert await reg.end(lambda r: True, "deleted", 10, timeout=0) == 1
    assert stuck.token.cancelled and not stuck.ended.is_set()
