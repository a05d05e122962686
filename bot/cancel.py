"""The cancellation token that travels along one reply: Discord event → Gemini stream → renderer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CancelToken:
    """Set once (by 🛑 or /stop); everyone along the reply's path can check it, await it or
    be called back."""

    __slots__ = ("_callbacks", "_event", "by", "reason")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._callbacks: list[Callable[[], object]] = []
        self.reason: str | None = None
        self.by: int | None = None

    @property
    def cancelled(self) -> bool:
        """Whether the reply was asked to stop."""
        return self._event.is_set()

    def cancel(self, reason: str = "stopped", by: int | None = None) -> bool:
        """Ask the reply to stop; returns False when it was already stopped."""
        if self._event.is_set():
            return False
        self.reason, self.by = reason, by
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            asyncio.get_running_loop().call_soon(callback)
        return True

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` soon after the token is cancelled (soon, if it already is), as a
        waiter of :meth:`wait` would be; returns a function that forgets the callback."""
        if self._event.is_set():
            asyncio.get_running_loop().call_soon(callback)
            return lambda: None
        self._callbacks.append(callback)

        def forget() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return forget

    async def wait(self) -> None:
        """Return once the token is cancelled."""
        await self._event.wait()
