"""Admission control: caps per user, channel and process, the waiting queue and its order."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from bot.admission import Admission, QueueFull, Slot


async def settle() -> None:
    """Let every ready callback and task step run."""
    for _ in range(10):
        await asyncio.sleep(0)


def assert_idle(adm: Admission, *channels: int) -> None:
    """Nothing streams or waits any more, process-wide and in the given channels."""
    assert (adm.streaming, adm.queued) == (0, 0)
    for channel in channels:
        assert (adm.streaming_in(channel), adm.queued_in(channel)) == (0, 0)


def release_all(*slots: Slot) -> None:
    for slot in slots:
        slot.release()


async def test_a_users_third_question_waits_for_one_of_the_first_two() -> None:
    adm = Admission()
    first, second = adm.try_enter(1, 10), adm.try_enter(1, 10)
    third = adm.try_enter(1, 10)
    assert (first.waiting, second.waiting, third.waiting) == (False, False, True)
    assert (adm.streaming, adm.queued, adm.queued_in(1)) == (2, 1, 1)
    other_channel = adm.try_enter(2, 10)  # the cap is per user, whatever the channel
    assert other_channel.waiting
    other_channel.release()
    waiter = asyncio.create_task(third.admitted())
    await settle()
    assert not waiter.done()
    second.release()
    await settle()
    assert waiter.done() and waiter.result() is None and third.state == "admitted"
    release_all(first, third)
    assert_idle(adm, 1, 2)


async def test_channel_cap_leaves_other_channels_alone() -> None:
    adm = Admission(per_channel=2)
    a, b = adm.try_enter(1, 10), adm.try_enter(1, 11)
    c = adm.try_enter(1, 12)
    elsewhere = adm.try_enter(2, 12)
    assert c.waiting and not elsewhere.waiting
    assert (adm.streaming_in(1), adm.queued_in(1), adm.streaming_in(2)) == (2, 1, 1)
    elsewhere.release()
    assert c.waiting  # a slot freed in another channel does not help
    a.release()
    assert c.state == "admitted"
    await c.admitted()  # already admitted: returns at once
    release_all(b, c)
    assert_idle(adm, 1, 2)


async def test_process_cap_admits_waiters_in_arrival_order_across_channels() -> None:
    adm = Admission(per_process=3)
    running = [adm.try_enter(channel, 10 + channel) for channel in (1, 2, 3)]
    early, late = adm.try_enter(4, 14), adm.try_enter(5, 15)
    assert early.waiting and late.waiting and adm.queued == 2
    running[1].release()
    assert early.state == "admitted" and late.waiting
    running[0].release()
    assert late.state == "admitted"
    release_all(running[2], early, late)
    assert_idle(adm, 1, 2, 3, 4, 5)


async def test_at_the_process_cap_a_quiet_channel_goes_before_a_busy_one() -> None:
    adm = Admission(per_process=3, per_channel=5)
    busy = [adm.try_enter(1, 10 + k) for k in range(3)]  # the busy channel holds every slot
    queued_busy = [adm.try_enter(1, 20 + k) for k in range(3)]
    quiet = adm.try_enter(2, 30)  # asked last, in a channel with nothing streaming
    assert quiet.waiting and all(q.waiting for q in queued_busy)
    busy[0].release()
    assert quiet.state == "admitted" and all(q.waiting for q in queued_busy)
    busy[1].release()  # then the busy channel's queue, in its own order
    assert [q.state for q in queued_busy] == ["admitted", "waiting", "waiting"]
    release_all(busy[2], quiet, *queued_busy)
    assert_idle(adm, 1, 2)


async def test_the_last_slots_of_the_bot_are_kept_for_channels_with_nothing_streaming() -> None:
    adm = Admission(per_process=16, per_channel=20, per_user=20)
    assert adm.quiet_reserve == 2
    busy = [adm.try_enter(1, 1) for _ in range(14)]
    assert all(s.state == "admitted" for s in busy)
    fifteenth = adm.try_enter(1, 1)  # the bot has room, but not for a busy channel
    assert fifteenth.waiting
    quiet = [adm.try_enter(channel, 2) for channel in (2, 3)]
    assert [s.state for s in quiet] == ["admitted", "admitted"]  # at once
    third_quiet = adm.try_enter(4, 3)  # the bot is full now: it waits like anyone
    assert third_quiet.waiting
    quiet[0].release()  # a freed slot goes to the quiet channel first
    assert third_quiet.state == "admitted" and fifteenth.waiting
    busy[0].release()
    quiet[1].release()  # 14 streaming: the last two slots are still a quiet channel's
    assert fifteenth.waiting
    busy[1].release()
    assert fifteenth.state == "admitted"
    release_all(*busy[2:], third_quiet, fifteenth)
    assert_idle(adm, 1, 2, 3, 4)


async def test_waiters_in_a_channel_are_admitted_first_come_first_served() -> None:
    adm = Admission(per_channel=1)
    holder = adm.try_enter(1, 10)
    waiters = [adm.try_enter(1, 11 + i % 2) for i in range(4)]  # two users, interleaved
    order: list[int] = []

    async def wait(index: int) -> None:
        await waiters[index].admitted()
        order.append(index)

    tasks = [asyncio.create_task(wait(i)) for i in reversed(range(4))]  # awaited out of order
    await settle()
    for current in [holder, *waiters[:-1]]:
        current.release()
        await settle()
    assert order == [0, 1, 2, 3]
    await asyncio.gather(*tasks)
    waiters[-1].release()
    assert_idle(adm, 1)


async def test_a_users_own_questions_are_answered_in_order_across_channels() -> None:
    adm = Admission(per_user=1)
    holder = adm.try_enter(1, 10)
    first, second = adm.try_enter(2, 10), adm.try_enter(1, 10)
    holder.release()
    assert first.state == "admitted" and second.waiting
    first.release()
    assert second.state == "admitted"
    second.release()
    assert_idle(adm, 1, 2)


async def test_a_waiter_blocked_only_by_its_user_cap_does_not_block_others() -> None:
    adm = Admission(per_user=2, per_channel=3)
    alice = [adm.try_enter(1, 10), adm.try_enter(1, 10)]
    bob = adm.try_enter(1, 11)
    alice_third = adm.try_enter(1, 10)  # over alice's cap and the channel's
    bob_second = adm.try_enter(1, 11)  # over the channel's cap only
    assert alice_third.waiting and bob_second.waiting
    bob.release()  # one channel slot: alice is still at her cap, so bob goes first
    assert bob_second.state == "admitted" and alice_third.waiting
    alice[0].release()
    assert alice_third.state == "admitted"
    release_all(alice[1], alice_third, bob_second)
    assert_idle(adm, 1)


async def test_a_full_queue_refuses_the_eleventh_waiter_and_only_in_its_channel() -> None:
    adm = Admission(per_channel=1)
    holder = adm.try_enter(1, 10)
    queued = [adm.try_enter(1, 11 + i) for i in range(10)]
    assert all(slot.waiting for slot in queued) and adm.queued_in(1) == 10
    with pytest.raises(QueueFull):
        adm.try_enter(1, 99)
    assert adm.queued == 10  # the refused question left nothing behind
    other = [adm.try_enter(2, 20), adm.try_enter(2, 21)]
    assert [slot.waiting for slot in other] == [False, True]
    queued[3].release()  # a waiter that gives up makes room in the queue
    late = adm.try_enter(1, 99)
    assert late.waiting
    release_all(holder, *queued, late, *other)
    assert_idle(adm, 1, 2)


async def test_a_released_waiter_leaves_the_queue_and_blocks_nobody() -> None:
    adm = Admission(per_channel=1)
    holder = adm.try_enter(1, 10)
    dropped, behind = adm.try_enter(1, 11), adm.try_enter(1, 12)
    task = asyncio.create_task(dropped.admitted())
    await settle()
    dropped.release()  # e.g. 🛑 on a question still waiting
    dropped.release()  # twice is harmless
    await settle()
    assert task.cancelled() and dropped.state == "released" and adm.queued == 1
    with pytest.raises(asyncio.CancelledError):
        await dropped.admitted()
    holder.release()
    assert behind.state == "admitted"
    behind.release()
    assert_idle(adm, 1)


async def test_cancelling_a_waiting_task_leaves_the_queue() -> None:
    adm = Admission(per_channel=1)
    holder = adm.try_enter(1, 10)
    waiter, behind = adm.try_enter(1, 11), adm.try_enter(1, 12)
    task = asyncio.create_task(waiter.admitted())
    await settle()
    task.cancel()
    await settle()
    assert task.cancelled() and waiter.state == "released" and adm.queued == 1
    holder.release()
    assert behind.state == "admitted"
    behind.release()
    assert_idle(adm, 1)


@pytest.mark.parametrize("cancel_first", [False, True])
async def test_cancellation_racing_with_admission_leaks_no_slot(cancel_first: bool) -> None:
    adm = Admission(per_channel=1)
    holder = adm.try_enter(1, 10)
    racer, behind = adm.try_enter(1, 11), adm.try_enter(1, 12)
    task = asyncio.create_task(racer.admitted())
    await settle()
    if cancel_first:
        task.cancel()
        holder.release()  # grants the racer before its task sees the cancellation
    else:
        holder.release()  # grants the racer; its task has not run yet
        task.cancel()
    assert racer.state == "admitted" and behind.waiting
    await settle()
    assert task.cancelled() and racer.state == "released"
    assert behind.state == "admitted"  # the slot the racer gave back went on
    behind.release()
    assert_idle(adm, 1)


async def test_async_with_waits_for_admission_and_releases() -> None:
    adm = Admission(per_user=1)
    first = adm.try_enter(1, 10)
    second = adm.try_enter(1, 10)
    entered = asyncio.Event()

    async def answer() -> None:
        async with second as slot:
            assert slot is second and slot.state == "admitted"
            entered.set()

    task = asyncio.create_task(answer())
    async with first:
        await settle()
        assert not entered.is_set() and adm.streaming == 1
    await task
    assert entered.is_set() and second.state == "released"
    assert_idle(adm, 1)


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Admission(per_user=0)
    Admission(queue_per_channel=0).try_enter(1, 1).release()  # no waiting allowed is fine


async def test_random_enter_release_and_cancel_keep_the_invariants() -> None:
    rng = random.Random(20240601)
    adm = Admission(per_user=2, per_channel=3, per_process=8, queue_per_channel=4)
    assert adm.quiet_reserve == 1
    channels, users = (1, 2, 3), (10, 11, 12, 13)
    slots: list[Slot] = []  # live slots, in arrival order
    tasks: dict[Slot, asyncio.Task[None]] = {}
    refused = admitted_from_queue = cancelled = 0

    def counts() -> tuple[Counter[int], Counter[int], int]:
        running = [s for s in slots if s.state == "admitted"]
        return (
            Counter(s.user_id for s in running),
            Counter(s.channel_id for s in running),
            len(running),
        )

    def fits(channel_id: int, user_id: int) -> bool:
        by_user, by_channel, total = counts()
        reserve = adm.quiet_reserve if by_channel[channel_id] else 0
        return (
            by_user[user_id] < adm.per_user
            and by_channel[channel_id] < adm.per_channel
            and total < adm.per_process - reserve
        )

    def cancel_a_task() -> None:
        pending = [t for t in tasks.values() if not t.done()]
        if pending:
            rng.choice(pending).cancel()

    for _ in range(3000):
        before = {s: s.state for s in slots}
        op = rng.random()
        if op < 0.45:
            channel_id, user_id = rng.choice(channels), rng.choice(users)
            would_fit = fits(channel_id, user_id)
            try:
                slot = adm.try_enter(channel_id, user_id)
            except QueueFull:
                refused += 1
                assert not would_fit and adm.queued_in(channel_id) == adm.queue_per_channel
            else:
                assert slot.waiting is not would_fit
                slots.append(slot)
                if slot.waiting and rng.random() < 0.7:
                    tasks[slot] = asyncio.create_task(slot.admitted())
        elif op < 0.8 and slots:
            rng.choice(slots).release()
        elif op < 0.9:
            cancel_a_task()
        else:  # a release and a cancellation at the same moment
            running = [s for s in slots if s.state == "admitted"]
            if running:
                rng.choice(running).release()
            cancel_a_task()
        await settle()

        for slot, task in tasks.items():
            if task.done():
                assert slot.state == ("released" if task.cancelled() else "admitted")
                cancelled += task.cancelled()
            else:
                assert slot.waiting
        tasks = {s: t for s, t in tasks.items() if not t.done()}
        slots = [s for s in slots if s.state != "released"]
        waiting = [s for s in slots if s.waiting]
        by_user, by_channel, total = counts()
        assert max(by_user.values(), default=0) <= adm.per_user
        assert max(by_channel.values(), default=0) <= adm.per_channel
        assert total == adm.streaming <= adm.per_process
        assert adm.queued == len(waiting)
        for channel_id in channels:
            assert adm.streaming_in(channel_id) == by_channel[channel_id]
            queued_here = sum(s.channel_id == channel_id for s in waiting)
            assert adm.queued_in(channel_id) == queued_here <= adm.queue_per_channel
        for slot in waiting:  # nobody waits who could run now
            assert not fits(slot.channel_id, slot.user_id)
        for index, slot in enumerate(slots):
            if before.get(slot) == "waiting" and slot.state == "admitted":
                admitted_from_queue += 1
                assert not any(  # within a channel and a user: strictly arrival order
                    s.waiting and (s.channel_id, s.user_id) == (slot.channel_id, slot.user_id)
                    for s in slots[:index]
                )

    release_all(*slots)
    await settle()
    assert all(task.done() for task in tasks.values())
    assert_idle(adm, *channels)
    assert refused and admitted_from_queue and cancelled  # every path was exercised


async def test_replies_shown_waits_for_the_admitted_replies_first_messages() -> None:
    adm = Admission(per_channel=2, queue_per_channel=1)
    a, b = adm.try_enter(1, 10), adm.try_enter(1, 11)
    queued = adm.try_enter(1, 12)
    elsewhere = adm.try_enter(2, 13)
    shown = asyncio.create_task(adm.replies_shown(1))
    await settle()
    assert not shown.done()
    a.shown()
    a.shown()  # twice: counted once
    await settle()
    assert not shown.done()
    b.release()  # an admitted reply that ends without a message; the queued one is admitted
    await settle()
    assert shown.done() and not queued.waiting
    shown = asyncio.create_task(adm.replies_shown(1))
    await settle()
    assert not shown.done()  # the one admitted since has shown nothing yet
    queued.shown()
    await settle()
    assert shown.done()
    await asyncio.wait_for(adm.replies_shown(1), 1)  # nothing to wait for now
    other = asyncio.create_task(adm.replies_shown(2))
    await settle()
    assert not other.done()  # each channel its own
    release_all(a, queued, elsewhere)
    await settle()
    assert other.done()
    assert_idle(adm, 1, 2)


async def test_after_admitted_waits_for_the_replies_admitted_before_it_to_begin() -> None:
    adm = Admission(per_channel=2, intake_wait=60.0)
    first, second = adm.try_enter(1, 10), adm.try_enter(1, 11)
    waiting = adm.try_enter(1, 12)
    intake = asyncio.create_task(adm.after_admitted())
    await settle()
    first.begun()
    await settle()
    assert not intake.done()  # the second has not begun yet
    first.release()  # the waiting one is admitted: it is not one this intake waits for
    assert not waiting.waiting
    second.begun()
    await settle()
    assert intake.done()
    later = asyncio.create_task(adm.after_admitted())  # it waits for the one admitted since
    await settle()
    assert not later.done()
    waiting.release()  # a reply that ends without beginning counts as begun
    await settle()
    assert later.done()
    second.release()
    await asyncio.wait_for(adm.after_admitted(), 1)  # none admitted: at once
    assert_idle(adm, 1)


async def test_after_admitted_gives_up_waiting_after_the_intake_wait() -> None:
    adm = Admission(intake_wait=0.01)
    slot = adm.try_enter(1, 10)
    await asyncio.wait_for(adm.after_admitted(), 5)  # the reply never begins: it goes anyway
    slot.begun()
    slot.release()
    assert_idle(adm, 1)
