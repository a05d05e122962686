"""Discord-style rate-limit buckets for the fake: fixed windows that open at the first request."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

__all__ = ["BucketState", "Decision", "RateLimiter", "bucket_hash", "ceil_ms"]


def bucket_hash(route: str) -> str:
    """A stable, opaque bucket id per route kind, like Discord's ``X-RateLimit-Bucket``."""
    return hashlib.sha1(route.encode()).hexdigest()[:32]


def ceil_ms(seconds: float) -> float:
    """Round up to whole milliseconds (a client that waits this long is never early)."""
    return max(0.0, math.ceil(seconds * 1000 - 1e-6) / 1000)


@dataclass
class BucketState:
    """One window of one bucket."""

    limit: int
    per: float
    start: float = 0.0
    count: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome of taking one token from a bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    """Seconds until the window resets (rounded up to ms)."""


class RateLimiter:
    """Fixed-window buckets keyed by any string; the window opens at its first request."""

    def __init__(self) -> None:
        self._buckets: dict[str, BucketState] = {}

    def take(self, key: str, limit: int, per: float, now: float | None = None) -> Decision:
        """Count one request against ``key`` (``limit`` per ``per`` seconds), or refuse it."""
        now = time.monotonic() if now is None else now
        state = self._buckets.get(key)
        if state is None or state.limit != limit or state.per != per or now >= state.start + per:
            state = BucketState(limit=limit, per=per, start=now, count=0)
            self._buckets[key] = state
        reset_after = ceil_ms(state.start + per - now)
        if state.count >= limit:
            return Decision(False, limit, 0, reset_after)
        state.count += 1
        return Decision(True, limit, limit - state.count, reset_after)

    def refund(self, key: str) -> None:
        """Give back the token the last :meth:`take` on ``key`` used."""
        state = self._buckets.get(key)
        if state is not None and state.count > 0:
            state.count -= 1

    def clear(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()
