"""Discord-style rate-limit buckets for the fake: fixed windows that open at the first request.

Which window counts a request and which ``X-RateLimit-Bucket`` hash its response carries are
two different things at Discord: a channel's message creates and message edits are counted in
separate windows (about 5 per 5 s each) but both routes answer with the same hash, each response
carrying the ``Remaining``/``Reset``/``Reset-After`` of the window it was counted in
(discord-api-docs #1442, #8073). :func:`bucket_for` maps a route to its window and its hash
under one of three :data:`BUCKET_MODELS`:

``"discord"``
    Discord's behaviour: separate windows for creates and edits, one shared hash. discord.py
    keys its limiter by hash + channel, so it merges the two on the client side.
``"separate"``
    Separate windows and separate hashes (what the fake did before; discord.py then keeps two
    independent limiters, which hides the client-side merge).
``"shared"``
    One window counting creates and edits together, one hash.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "BUCKET_MODELS",
    "MESSAGE_ROUTES",
    "BucketModel",
    "BucketState",
    "Decision",
    "RateLimiter",
    "bucket_for",
    "bucket_hash",
    "ceil_ms",
]

BucketModel = Literal["discord", "separate", "shared"]
BUCKET_MODELS: tuple[BucketModel, ...] = get_args(BucketModel)

MESSAGE_ROUTES: frozenset[str] = frozenset({"message_create", "message_edit"})
"""A channel's message routes, which Discord answers with one bucket hash."""

_MESSAGES = "channel_messages"


def bucket_hash(route: str) -> str:
    """A stable, opaque bucket id per route kind, like Discord's ``X-RateLimit-Bucket``."""
    return hashlib.sha1(route.encode()).hexdigest()[:32]


def bucket_for(route: str, model: BucketModel) -> tuple[str, str]:
    """``(window, hash)`` for ``route`` under ``model``: the counter that counts the request
    (per channel) and the ``X-RateLimit-Bucket`` its response carries. Only
    :data:`MESSAGE_ROUTES` depend on the model; every other route has its own window and hash."""
    if model not in BUCKET_MODELS:
        raise ValueError(f"unknown bucket model {model!r}; expected one of {BUCKET_MODELS}")
    if route not in MESSAGE_ROUTES or model == "separate":
        return route, bucket_hash(route)
    if model == "discord":
        return route, bucket_hash(_MESSAGES)
    return _MESSAGES, bucket_hash(_MESSAGES)


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
