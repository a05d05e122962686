"""Reads that coalesce: callers asking for the same thing while it is being read share that
read, so a burst of questions after a restart (every cache cold) costs one store read per
channel or server, where each question would otherwise queue its own behind the others'."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_reads: dict[Hashable, asyncio.Future[Any]] = {}


async def coalesced(key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``'s result, or that of the same ``key``'s read already in progress (if that
    one fails or is cancelled, the caller reads on its own). Callers get the same object:
    ``read`` should return one they will not change, or a copy each."""
    if (shared := _reads.get(key)) is not None:
        await asyncio.wait({shared})
        if not shared.cancelled():
            return shared.result()
        return await read()
    mine: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    _reads[key] = mine
    try:
        result = await read()
    except BaseException:
        mine.cancel()
        raise
    finally:
        del _reads[key]
    mine.set_result(result)
    return result
