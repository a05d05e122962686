"""Pacing writes to a chat platform: per-channel budgets for message creates and edits.

Discord limits message creates and message edits in a channel, about 5 of each per 5 s. Every
reply streaming in a channel shares that channel's :class:`ChannelPacer`; the renderer asks it
for a slot before each write.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

WriteKind = Literal["send", "edit"]
"""A message create (``send``) or a message edit (``edit``): two routes, two rate-limit buckets."""


class WriteBudget:
    """One route's write budget in one channel (message creates, or message edits).

    A write's slot is reserved when the write *starts* (a discord.py request that uses up the
    bucket returns only after the bucket resets, so timing from the end would lose a window).
    Waiters are served first come, first served. No more than ``max_writes`` writes start in any
    ``window`` (plus ``margin``), counted over a sliding window of our own start times, so a
    fixed window that opens at any of them (as Discord's does) never sees more.

    Within that limit, ``burst`` sets how writes are spread. With ``burst`` 1 they follow one
    another at least ``interval = window / max_writes`` (plus margin) apart: steady progress,
    right for edits. With a larger ``burst``, up to ``burst`` writes may start at once, and in
    general ``j + 1`` consecutive writes for ``j >= burst`` span at least ``j`` intervals: rare
    events (message creates) go out without delay, yet the write that would use up a window
    still comes late in it (for ``burst < max_writes``), so a client that waits for the reset
    after that write (discord.py does) is held for at most about one interval.

    After a 429 (:meth:`penalize`) the budget pauses for the ``retry_after``, then runs with a
    burst of 1 at a doubled interval (up to ``max_slowdown`` times) until it has been quiet for
    a while.
    """

    def __init__(
        self,
        max_writes: int = 5,
        window: float = 5.0,
        *,
        burst: int = 1,
        clock: Clock = time.monotonic,
        margin: float = 0.05,
        max_slowdown: float = 8.0,
        then: WriteBudget | None = None,
    ) -> None:
        if max_writes < 1 or not window > 0:
            raise ValueError("a budget needs max_writes >= 1 and window > 0")
        if not 1 <= burst <= max_writes:
            raise ValueError("a budget's burst must be between 1 and max_writes")
        self.max_writes = max_writes
        self.window = window
        self.burst = burst
        self.margin = margin
        self.max_slowdown = max_slowdown
        self._clock = clock
        self._waiting: list[_Waiter] = []  # in arrival order
        self._taking = False  # a waiter was granted and is taking its slot
        self._starts: deque[float] = deque(maxlen=max_writes)
        self._next_at = -math.inf
        self._blocked_until = -math.inf
        self._slowdown = 1.0
        self._calm_at = -math.inf
        self.then = then
        """A wider budget every write of this one also takes a slot of (the bot's global
        budget), taken inside this one's turn so that the recorded start is the real one."""
        self.writes = 0
        """Slots handed out so far."""
        self.rate_limited = 0
        """429s reported so far."""

    @property
    def base_interval(self) -> float:
        """Average spacing between writes when nothing went wrong."""
        return self.window / self.max_writes * (1 + self.margin)

    def interval(self) -> float:
        """Spacing between writes now (longer for a while after a 429)."""
        if self._slowdown > 1 and self._clock() >= self._calm_at:
            self._slowdown = 1.0
        return self.base_interval * self._slowdown

    def current_burst(self) -> int:
        """How many writes may start at once now (1 for a while after a 429)."""
        self.interval()  # ends a slow-down that has run its course
        return self.burst if self._slowdown == 1 else 1

    def delay(self, final: bool = False) -> float:
        """Seconds until the next slot is free (0 if one is free now), ignoring waiters.

        A ``final`` write (a reply's last text) may use the window's remaining slots in a burst
        like sends, instead of waiting for the steady spacing of progress edits.
        """
        now = self._clock()
        burst = self.current_burst()
        if final and burst == self.burst:
            burst = max(burst, default_send_burst(self.max_writes))
        at = self._blocked_until
        if burst == 1:
            at = max(at, self._next_at)
        # j + 1 consecutive starts span at least j intervals (j >= burst); for j = max_writes
        # that is the window itself: never more than max_writes in any window (plus margin)
        starts, base = self._starts, self.base_interval
        for j in range(max(burst, 2), len(starts) + 1):
            at = max(at, starts[-j] + j * base)
        return max(0.0, at - now)

    @property
    def busy(self) -> bool:
        """Whether a reply is waiting for (or taking) a slot right now."""
        return bool(self._waiting) or self._taking

    async def acquire(self, final: bool | Callable[[], bool] = False) -> None:
        """Wait for the next slot and take it; the write must start right after.

        Waiters are served first come, first served, except that a ``final`` write (see
        :meth:`delay`) goes before every progress write: when several replies end together,
        their last texts show first. A callable ``final`` is asked again while it waits (a
        reply can end meanwhile).
        """
        me = _Waiter(final if callable(final) else lambda: final)
        self._waiting.append(me)
        granted = False
        try:
            while True:
                wait = self.base_interval  # not first in line: look again now and then
                if not self._taking and self._head() is me:
                    wait = self.delay(me.is_final())
                    if wait <= 0:
                        break
                await me.pause(wait)
            self._taking = granted = True
        finally:
            self._waiting.remove(me)
            if not granted:
                self._wake_head()
        try:
            if self.then is not None:
                await self.then.acquire(final=True)
            now = self._clock()
            self._starts.append(now)
            self._next_at = now + self.interval()
            self.writes += 1
        finally:
            self._taking = False
            self._wake_head()

    def _head(self) -> _Waiter | None:
        """The waiter that goes next: the first final one, else the first one."""
        waiting = self._waiting
        return next((w for w in waiting if w.is_final()), waiting[0] if waiting else None)

    def _wake_head(self) -> None:
        """Let the waiter now first in line look at its slot at once."""
        if (head := self._head()) is not None:
            head.wake()

    def try_acquire(self) -> bool:
        """Take a slot only if one is free now and nobody waits (for optional requests)."""
        if self.busy or self.delay() > 0:
            return False
        now = self._clock()
        self._starts.append(now)
        self._next_at = now + self.interval()
        self.writes += 1
        return True

    def penalize(self, retry_after: float) -> None:
        """The platform answered 429 anyway: pause for ``retry_after``, then go slower."""
        now = self._clock()
        retry_after = max(0.0, retry_after)
        self.rate_limited += 1
        self._blocked_until = max(self._blocked_until, now + retry_after + 0.05)
        self._slowdown = min(self._slowdown * 2, self.max_slowdown)
        self._calm_at = now + retry_after + 4 * self.window

    def idle_for(self) -> float:
        """Seconds since the last write started (inf if none), or 0 while someone is waiting."""
        if self.busy:
            return 0.0
        if not self._starts:
            return math.inf
        return max(0.0, self._clock() - max(self._starts[-1], self._blocked_until))


REACTION_INTERVAL = 0.25
"""Seconds between two reaction requests in a channel."""


class _Waiter:
    """A write waiting for a slot: whether it is final now, and how to wake it early."""

    __slots__ = ("_waker", "is_final")

    def __init__(self, is_final: Callable[[], bool]) -> None:
        self.is_final = is_final
        self._waker: asyncio.Future[None] | None = None

    async def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, or until :meth:`wake`."""
        loop = asyncio.get_running_loop()
        self._waker = waker = loop.create_future()
        timer = loop.call_later(seconds, self.wake)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None

    def wake(self) -> None:
        """End the current pause now."""
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)


def default_send_burst(max_sends: int) -> int:
    """How many message creates may go out at once in a channel allowing ``max_sends``.

    One less than the bucket: the write that fills a window then comes late in it. discord.py
    holds the request that empties a bucket until the bucket resets, so a burst that filled it
    would keep one reply's new message from being edited for most of a window.
    """
    return max(1, max_sends - 1)


class ChannelPacer:
    """The write budgets of one channel, shared by every reply streaming in it.

    Discord limits message creates and message edits in a channel with separate buckets, so a
    channel has two :class:`WriteBudget` s: :attr:`sends` and :attr:`edits`. ``max_writes`` per
    ``window`` sets both; ``max_sends`` / ``send_window`` override the one for sends.

    Edits are spread evenly (a live reply progresses steadily). Sends are rare events: up to
    ``send_burst`` of them go out at once (by default :func:`default_send_burst`), so replies
    asked together all show their first text at once.

    ``requests``, when given, is the bot's global budget (Discord allows about 50 requests a
    second across all channels): every write also takes one of its slots.
    """

    def __init__(
        self,
        max_writes: int = 5,
        window: float = 5.0,
        *,
        max_sends: int | None = None,
        send_window: float | None = None,
        send_burst: int | None = None,
        clock: Clock = time.monotonic,
        margin: float = 0.05,
        max_slowdown: float = 8.0,
        requests: WriteBudget | None = None,
    ) -> None:
        def budget(limit: int, per: float, burst: int) -> WriteBudget:
            return WriteBudget(
                limit,
                per,
                burst=burst,
                clock=clock,
                margin=margin,
                max_slowdown=max_slowdown,
                then=requests,
            )

        self.requests = requests
        self.reactions = WriteBudget(
            1,
            REACTION_INTERVAL,
            clock=clock,
            margin=margin,
            max_slowdown=max_slowdown,
            then=requests,
        )
        """Reactions the bot adds or removes (Discord allows about one per 0.25 s a channel)."""
        self.edits = budget(max_writes, window, 1)
        """Message edits (PATCH /channels/{id}/messages/{mid})."""
        sends = max_writes if max_sends is None else max_sends
        self.sends = budget(
            sends,
            window if send_window is None else send_window,
            default_send_burst(sends) if send_burst is None else send_burst,
        )
        """Message creates (POST /channels/{id}/messages)."""

    def budget(self, kind: WriteKind) -> WriteBudget:
        """The budget a write of ``kind`` uses."""
        return self.sends if kind == "send" else self.edits

    def spare_request(self) -> bool:
        """Take a global slot for an optional request (the typing indicator) if one is free
        now; False means skip it."""
        return self.requests is None or self.requests.try_acquire()

    @property
    def writes(self) -> int:
        """Slots handed out so far, sends and edits."""
        return self.sends.writes + self.edits.writes

    @property
    def rate_limited(self) -> int:
        """429s reported so far, sends and edits."""
        return self.sends.rate_limited + self.edits.rate_limited

    @property
    def busy(self) -> bool:
        """Whether a reply is waiting for (or taking) a slot of either budget right now."""
        return self.sends.busy or self.edits.busy

    def idle_for(self) -> float:
        """Seconds since the last write of either kind started (inf if none; 0 while busy)."""
        return min(self.sends.idle_for(), self.edits.idle_for())


class PacerRegistry:
    """One :class:`ChannelPacer` per channel, created on first use, forgotten when long idle.

    ``max_writes`` per ``window`` is each channel's budget for edits and, unless ``max_sends`` /
    ``send_window`` say otherwise, for sends (``send_burst``: see :class:`ChannelPacer`);
    ``requests_per_second`` is the bot's global budget, shared by every channel. A pacer
    still held by a reply in progress is never replaced: forgetting only drops the registry's own
    reference, and :meth:`get` finds a pacer that is still in use.
    """

    def __init__(
        self,
        max_writes: int = 5,
        window: float = 5.0,
        *,
        max_sends: int | None = None,
        send_window: float | None = None,
        send_burst: int | None = None,
        clock: Clock = time.monotonic,
        margin: float = 0.05,
        idle_ttl: float = 600.0,
        requests_per_second: int | None = None,
    ) -> None:
        self.requests = None
        """The bot's global budget, shared by every channel (None: no global limit)."""
        if requests_per_second is not None:
            self.requests = WriteBudget(requests_per_second, 1.0, clock=clock, margin=margin)
        self._new = functools.partial(
            ChannelPacer,
            max_writes,
            window,
            max_sends=max_sends,
            send_window=send_window,
            send_burst=send_burst,
            clock=clock,
            margin=margin,
            requests=self.requests,
        )
        self._new()  # validates the settings once, here
        self.idle_ttl = max(idle_ttl, 2 * window, 2 * (send_window or window))
        self._pacers: dict[int, ChannelPacer] = {}
        self._in_use: weakref.WeakValueDictionary[int, ChannelPacer] = weakref.WeakValueDictionary()
        self._gets = 0

    def get(self, channel_id: int) -> ChannelPacer:
        """The pacer of ``channel_id``."""
        self._gets += 1
        if self._gets % 256 == 0:
            self.prune()
        pacer = self._pacers.get(channel_id) or self._in_use.get(channel_id)
        if pacer is None:
            pacer = self._new()
            self._in_use[channel_id] = pacer
        self._pacers[channel_id] = pacer
        return pacer

    def __len__(self) -> int:
        return len(self._pacers)

    def prune(self) -> None:
        """Forget the pacers of channels idle for longer than ``idle_ttl``."""
        for channel_id, pacer in list(self._pacers.items()):
            if pacer.idle_for() > self.idle_ttl:
                del self._pacers[channel_id]
