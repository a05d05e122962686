"""One write at a time on the store's connection (reads together), with a fast lane for
questions."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class Turnstile:
    """Lets one operation at a time through, first come first served, except that urgent ones
    (a question waiting for its reply to begin) go before every other one waiting: under load
    a question is not queued behind the checkpoints and message ids of replies streaming.
    Shared ones (reads) go through together: every shared one waiting when one gets its turn
    gets it too, and one arriving while shared ones are inside joins them if nobody waits."""

    def __init__(self) -> None:
        self._inside = 0
        self._shared = False  # whether those inside are shared ones
        self._urgent: deque[tuple[asyncio.Future[None], bool]] = deque()
        self._other: deque[tuple[asyncio.Future[None], bool]] = deque()

    @property
    def waiting(self) -> int:
        """Operations waiting for their turn."""
        return sum(not w.done() for w, _ in (*self._urgent, *self._other))

    @contextlib.asynccontextmanager
    async def hold(self, urgent: bool = False, shared: bool = False) -> AsyncIterator[None]:
        """Wait for the turn (``urgent``: before the others waiting; ``shared``: together with
        the other shared ones) and keep it inside."""
        await self._enter(urgent, shared)
        try:
            yield
        finally:
            self._leave()

    async def _enter(self, urgent: bool, shared: bool) -> None:
        if not self.waiting and (not self._inside or (shared and self._shared)):
            self._inside += 1
            self._shared = shared
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._other
        queue.append((waiter, shared))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._leave()  # handed the turn just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove((waiter, shared))
            raise

    def _leave(self) -> None:
        """Once the last one inside leaves, hand the turn to the next waiter (urgent first),
        and if that one is shared to every shared one waiting; or free it."""
        self._inside -= 1
        if self._inside:
            return
        for queue in (self._urgent, self._other):
            while queue:
                waiter, shared = queue.popleft()
                if not waiter.done():
                    self._let_in(waiter, shared)  # still held: it is the waiter's now
                    if shared:
                        self._let_in_shared()
                    return

    def _let_in(self, waiter: asyncio.Future[None], shared: bool) -> None:
        self._inside += 1
        self._shared = shared
        waiter.set_result(None)

    def _let_in_shared(self) -> None:
        for queue in (self._urgent, self._other):
            for entry in [e for e in queue if e[1]]:
                queue.remove(entry)
                if not entry[0].done():
                    self._let_in(*entry)
