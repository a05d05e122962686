"""bot.coalesce: concurrent reads of one key share one read."""

from __future__ import annotations

import asyncio

import pytest

from bot.coalesce import coalesced


class Source:
    """A read that waits for `gate` and counts how often it ran."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.reads = 0
        self.fail = False

    async def read(self) -> dict[str, int]:
        self.reads += 1
        n = self.reads
        await self.gate.wait()
        if self.fail:
            self.fail = False
            raise RuntimeError("the store failed")
        return {"read": n}


async def test_callers_during_a_read_share_it_and_later_ones_read_again() -> None:
    src = Source()
    callers = [asyncio.create_task(coalesced("k", src.read)) for _ in range(5)]
    other = asyncio.create_task(coalesced("other", src.read))
    await asyncio.sleep(0)
    src.gate.set()
    results = await asyncio.gather(*callers)
    assert results == [{"read": 1}] * 5
    assert await other == {"read": 2}
    assert src.reads == 2
    assert await coalesced("k", src.read) == {"read": 3}  # nothing in progress: a new read


async def test_a_failed_read_fails_its_caller_and_the_others_read_on_their_own() -> None:
    src = Source()
    src.fail = True
    first = asyncio.create_task(coalesced("k", src.read))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalesced("k", src.read))
    await asyncio.sleep(0)
    src.gate.set()
    with pytest.raises(RuntimeError):
        await first
    assert await second == {"read": 2}


async def test_a_cancelled_reader_leaves_the_others_a_read_of_their_own() -> None:
    src = Source()
    first = asyncio.create_task(coalesced("k", src.read))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalesced("k", src.read))
    third = asyncio.create_task(coalesced("k", src.read))
    await asyncio.sleep(0)
    third.cancel()  # a waiting caller given up does not disturb the read
    first.cancel()
    await asyncio.sleep(0)
    src.gate.set()
    assert await second == {"read": 2}
    assert first.cancelled() and third.cancelled()
