"""The store's turnstile (one write at a time, reads together, questions first) and its use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from storage import AlreadyAnswered, ReplyStart, SQLiteStore, open_store
from storage.turnstile import Turnstile


async def test_one_at_a_time_urgent_first_then_in_arrival_order() -> None:
    gate = Turnstile()
    order: list[str] = []
    inside = 0

    async def op(name: str, urgent: bool = False) -> None:
        nonlocal inside
        async with gate.hold(urgent):
            inside += 1
            assert inside == 1
            order.append(name)
            await asyncio.sleep(0)
            inside -= 1

    async with gate.hold():  # an operation in progress; the others queue
        tasks = [
            asyncio.create_task(op("a")),
            asyncio.create_task(op("b")),
            asyncio.create_task(op("question 1", urgent=True)),
            asyncio.create_task(op("c")),
            asyncio.create_task(op("question 2", urgent=True)),
        ]
        await asyncio.sleep(0)
        assert gate.waiting == 5
    await asyncio.gather(*tasks)
    assert order == ["question 1", "question 2", "a", "b", "c"]
    assert gate.waiting == 0


async def test_a_waiter_cancelled_before_or_at_its_turn_never_blocks_the_others() -> None:
    gate = Turnstile()
    order: list[str] = []

    async def op(name: str) -> None:
        async with gate.hold():
            order.append(name)

    async with gate.hold():
        gone = asyncio.create_task(op("gone"))
        handed = asyncio.create_task(op("handed"))
        last = asyncio.create_task(op("last"))
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while it waits
        await asyncio.sleep(0)
    # leaving handed the turn to "handed", which is cancelled before it runs: it passes on
    handed.cancel()
    await asyncio.gather(gone, handed, last, return_exceptions=True)
    assert gone.cancelled() and handed.cancelled()
    assert order == ["last"]
    assert gate.waiting == 0
    async with gate.hold():  # and the turnstile is free
        pass


async def test_shared_ones_go_in_together_and_a_waiting_one_keeps_later_ones_out() -> None:
    gate = Turnstile()
    inside: set[str] = set()
    together: list[set[str]] = []

    async def op(name: str, shared: bool = True, urgent: bool = False) -> None:
        async with gate.hold(urgent, shared=shared):
            inside.add(name)
            await asyncio.sleep(0)
            together.append(set(inside))
            await asyncio.sleep(0)
            inside.discard(name)

    async with gate.hold():  # a write in progress: reads and a write queue behind it
        first = [
            asyncio.create_task(op("read 1")),
            asyncio.create_task(op("write", shared=False)),
            asyncio.create_task(op("read 2")),
            asyncio.create_task(op("urgent read", urgent=True)),
        ]
        await asyncio.sleep(0)
        assert gate.waiting == 4
    # the urgent read gets the turn and every read waiting comes in with it; the write waits
    await asyncio.sleep(0)
    late = asyncio.create_task(op("late read"))  # someone waits: it does not join them
    await asyncio.gather(*first, late)
    assert together[:3] == [{"urgent read", "read 1", "read 2"}] * 3
    assert together[3:] == [{"write"}, {"late read"}]
    assert gate.waiting == 0

    async with gate.hold(shared=True):  # nobody waiting: a read joins the reads inside
        await asyncio.wait_for(op("joins"), 1)


async def order_behind_checkpoints(
    tmp_path: Path, checkpoints: int, then: dict[str, Callable[[SQLiteStore], Awaitable[object]]]
) -> list[str]:
    """The order in which ``checkpoints`` store writes and then the operations ``then``, all
    queued behind a write in progress, are done."""
    store = await open_store(tmp_path / "gemcord.db")
    assert isinstance(store, SQLiteStore)
    try:
        asker = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
        streaming = await store.start_model_turn(channel_id=1, reply_to=asker, model="m")
        done: list[str] = []

        async def run(name: str, op: Callable[[], Awaitable[object]]) -> None:
            await op()
            done.append(name)

        async def queued(names: list[str], ops: list[Callable[[], Awaitable[object]]]) -> None:
            before = store._lock.waiting
            tasks.extend(asyncio.create_task(run(n, op)) for n, op in zip(names, ops, strict=True))
            for _ in range(1000):  # a few loop turns: each takes its place in the line
                if store._lock.waiting == before + len(ops):
                    break
                await asyncio.sleep(0)
            assert store._lock.waiting == before + len(ops)

        tasks: list[asyncio.Task[None]] = []
        async with store._lock.hold():  # a write in progress; others queue behind it
            names = [f"checkpoint {k}" for k in range(checkpoints)]
            await queued(names, [partial(store.checkpoint, streaming, n) for n in names])
            await queued(list(then), [partial(op, store) for op in then.values()])
            assert done == []
        await asyncio.gather(*tasks)
        return done
    finally:
        await store.close()


async def test_a_question_is_stored_before_the_writes_queued_ahead_of_it(tmp_path: Path) -> None:
    def ask(store: SQLiteStore) -> Awaitable[object]:
        return store.ask(channel_id=2, author_id=2, author_name="b", text="now?", model="m")

    done = await order_behind_checkpoints(tmp_path, 3, {"ask": ask})
    assert done == ["ask", "checkpoint 0", "checkpoint 1", "checkpoint 2"]


async def test_settings_and_budget_reads_go_before_the_writes_queued_ahead(tmp_path: Path) -> None:
    """What a question needs before it can be admitted and stored (its channel's settings,
    its server's budget) is read before the stores queued under load."""
    done = await order_behind_checkpoints(
        tmp_path,
        2,
        {
            "settings": lambda store: store.get_channel_settings(7),
            "budget": lambda store: store.get_guild_budget(8),
        },
    )
    assert done == ["settings", "budget", "checkpoint 0", "checkpoint 1"]


async def test_questions_waiting_together_are_stored_in_one_transaction(tmp_path: Path) -> None:
    """Under a burst the questions queued together share one transaction; a channel's later
    questions are stored after its earlier ones, and see them. Each is told once its place
    is fixed, before anything is stored."""
    store = await open_store(tmp_path / "gemcord.db")
    assert isinstance(store, SQLiteStore)
    statements: list[str] = []
    told: list[str] = []
    try:
        await store._conn.set_trace_callback(statements.append)

        def ask(channel: int, text: str) -> Awaitable[ReplyStart]:
            return store.ask(
                channel_id=channel,
                author_id=1,
                author_name="a",
                text=text,
                model="m",
                queued=lambda: told.append(text),
            )

        texts = [(1, "first in 1"), (2, "first in 2"), (1, "second in 1"), (1, "third in 1")]
        async with store._lock.hold():  # a write in progress; the questions queue behind it
            tasks = [asyncio.create_task(ask(c, t)) for c, t in texts]
            for _ in range(1000):
                if len(told) == len(texts):
                    break
                await asyncio.sleep(0)
            assert told == [t for _, t in texts]  # in order, and before any is stored
            assert store._lock.waiting == 1 and not [s for s in statements if "INSERT" in s]
        first_1, first_2, second_1, third_1 = await asyncio.gather(*tasks)
    finally:
        await store.close()
    assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert first_1.history == first_2.history == []
    assert [t.text for t in second_1.history] == ["first in 1"]
    assert [t.text for t in third_1.history if t.role == "user"] == ["first in 1", "second in 1"]
    assert first_1.model_turn < second_1.user_turn < second_1.model_turn < third_1.user_turn


async def test_a_question_that_fails_in_a_batch_leaves_the_others_stored(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "gemcord.db")
    assert isinstance(store, SQLiteStore)
    try:
        await store.add_user_turn(
            channel_id=9, author_id=1, author_name="a", text="q", message_ids=[77]
        )

        def ask(channel: int, message: int) -> Awaitable[ReplyStart]:
            return store.ask(
                channel_id=channel,
                author_id=1,
                author_name="a",
                text="q",
                message_ids=[message],
                model="m",
            )

        async with store._lock.hold():
            asks = [(1, 1), (2, 77), (1, 3), (3, 4)]
            tasks = [asyncio.create_task(ask(c, m)) for c, m in asks]
            for _ in range(1000):
                if store._lock.waiting == 1:
                    break
                await asyncio.sleep(0)
        first, again, second, other = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(again, AlreadyAnswered)
        assert isinstance(first, ReplyStart) and isinstance(other, ReplyStart)
        assert isinstance(second, ReplyStart) and len(second.history) == 1  # sees the first
        assert (await store.stats(1)).turns == 4 and (await store.stats(3)).turns == 2
        assert (await store.stats(2)).turns == 0  # the refused question left nothing behind
    finally:
        await store.close()
