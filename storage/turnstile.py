"""One operation at a time on the store's connection, with a fast lane for questions."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class Turnstile:
    """Lets one operation at a time through, first come first served, except that urgent ones
    (a question waiting for its reply to begin) go before every other one waiting: under load
    a question is not queued behind the checkpoints and message ids of replies streaming."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._other: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Operations waiting for their turn."""
        return sum(not w.done() for w in (*self._urgent, *self._other))

    @contextlib.asynccontextmanager
    async def hold(self, urgent: bool = False) -> AsyncIterator[None]:
        """Wait for the turn (``urgent``: before the others waiting) and keep it inside."""
        await self._enter(urgent)
        try:
            yield
        finally:
            self._leave()

    async def _enter(self, urgent: bool) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._other
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # handed the turn just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise

    def _leave(self) -> None:
        """Hand the turn to the next waiter (urgent first), or free it."""
        for queue in (self._urgent, self._other):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # still held: it is the waiter's now
                    return
        self._held = False
