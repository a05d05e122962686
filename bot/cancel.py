"""The cancellation token that travels along one reply: Discord event → Gemini stream → renderer."""

from __future__ import annotations

import asyncio


class CancelToken:
    """Set once (by 🛑 or /stop); everyone along the reply's path can check or await it."""

    __slots__ = ("_event", "by", "reason")

    def __init__(self) -> None:
        self._event = asyncio.Event()
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
        return True

    async def wait(self) -> None:
        """Return once the token is cancelled."""
        await self._event.wait()
