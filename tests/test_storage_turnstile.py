"""The store's turnstile: one operation at a time, questions first; and the store using it."""

from __future__ import annotations

import asyncio
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


async def test_a_question_is_stored_before_the_writes_queued_ahead_of_it(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "gemcord.db")
    assert isinstance(store, SQLiteStore)
    try:
        asker = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
        streaming = await store.start_model_turn(channel_id=1, reply_to=asker, model="m")
        done: list[str] = []

        async def checkpoint(k: int) -> None:
            await store.checkpoint(streaming, f"text {k}")
            done.append(f"checkpoint {k}")

        async def ask() -> None:
            await store.ask(channel_id=2, author_id=2, author_name="b", text="now?", model="m")
            done.append("ask")

        async with store._lock.hold():  # a write in progress; others queue behind it
            tasks = [asyncio.create_task(checkpoint(k)) for k in range(3)]
            await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(ask()))
            await asyncio.sleep(0.01)
            assert done == []
        await asyncio.gather(*tasks)
        assert done == ["ask", "checkpoint 0", "checkpoint 1", "checkpoint 2"]
    finally:
        await store.close()


async def test_settings_and_budget_reads_go_before_the_writes_queued_ahead(tmp_path: Path) -> None:
    """What a question needs before it can be admitted and stored (its channel's settings,
    its server's budget) is read before the stores queued under load."""
    store = await open_store(tmp_path / "gemcord.db")
    assert isinstance(store, SQLiteStore)
    try:
        asker = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
        streaming = await store.start_model_turn(channel_id=1, reply_to=asker, model="m")
        done: list[str] = []

        async def checkpoint(k: int) -> None:
            await store.checkpoint(streaming, f"text {k}")
            done.append(f"checkpoint {k}")

        async def settings() -> None:
            await store.get_channel_settings(7)
            done.append("settings")

        async def budget() -> None:
            await store.get_guild_budget(8)
            done.append("budget")

        async with store._lock.hold():  # a write in progress; others queue behind it
            tasks = [asyncio.create_task(checkpoint(k)) for k in range(2)]
            await asyncio.sleep(0.01)
            tasks += [asyncio.create_task(settings()), asyncio.create_task(budget())]
            await asyncio.sleep(0.01)
            assert done == []
        await asyncio.gather(*tasks)
        assert done == ["settings", "budget", "checkpoint 0", "checkpoint 1"]
    finally:
        await store.close()
