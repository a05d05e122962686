"""The store's turnstile: one operation at a time, questions first; and the store using it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from storage import SQLiteStore, open_store
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
