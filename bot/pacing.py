"""Pacing writes to a chat platform: per-channel budgets for message creates and edits.

Discord limits message creates and message edits in a channel, about 5 of each per 5 s, each in
fixed windows that open at the first request after the last one ended, and answers both routes
with one bucket hash (so discord.py, which keys its limiter by hash and channel, merges them).
Every reply streaming in a channel shares that channel's :class:`ChannelPacer`; the renderer
asks it for a slot before each write (:meth:`WriteBudget.slot`) and says when the write ended.
The aim is the floor of issue 10: a channel's last reply final as early as its creates and last
edits allow, with no 429 and no request held back by discord.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]

WriteKind = Literal["send", "edit"]
"""A message create (``send``) or a message edit (``edit``): two routes, two rate-limit buckets."""


MIN_WAIT = 0.001
"""The shortest pause a waiter takes (a float remainder of nothing must not spin the loop)."""

MIN_TRANSIT = 0.05
"""The least time a write is taken to need to reach Discord (see :attr:`WriteBudget.transit`)."""


def _no() -> bool:
    return False


class WriteBudget:
    """One route's write budget in one channel (message creates, or message edits).

    Discord counts a route's requests in fixed windows: a window opens at the first request
    after the previous one ended and allows ``max_writes`` in ``window`` seconds. The budget
    keeps the same windows: one opens when a write *starts*, and surely ends ``window`` after
    the response of the write that opened it (Discord opened it before it answered), or, for
    a write that says nothing of its response, ``margin`` (a fraction of the window) or the
    slowest recent write later. A write that could land in either of two windows (it starts
    within :attr:`transit` of a window's end) waits until the first has surely ended. Waiters
    are served first come, first served, except that final writes go first (see
    :meth:`acquire`).

    ``burst`` 1 spreads progress writes evenly (``interval`` apart, the window divided by the
    writes progress may use in it): steady progress, right for edits. A larger ``burst`` lets
    writes go as soon as the window has room (message creates). ``reserve()``, when given, is
    how many slots of each window progress writes leave free for final writes (see
    :meth:`ChannelPacer._finals_to_come`). A final write may use every slot left in the window
    at once.

    After a 429 (:meth:`penalize`) the budget pauses for the ``retry_after``, then spreads every
    write at a doubled interval (up to ``max_slowdown`` times) until it has been quiet a while.
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
        reserve: Callable[[], int] | None = None,
        sliding: bool = False,
    ) -> None:
        if max_writes < 1 or not window > 0:
            raise ValueError("a budget needs max_writes >= 1 and window > 0")
        if not 1 <= burst <= max_writes:
            raise ValueError("a budget's burst must be between 1 and max_writes")
        self.max_writes = max_writes
        self.window = window
        self.burst = burst
        self.margin = margin
        self.slack = margin * window
        """Seconds of doubt at the end of a window whose opener never told when it ended."""
        self.transit = self.slack
        """How long a write may take to reach Discord: the longest recent write (from start to
        response; one that long a window ago counts half), at least ``MIN_TRANSIT``; a write
        starting that close to the end of a window may land in the next one."""
        self._transit_at = clock()
        self.max_slowdown = max_slowdown
        self.reserve = reserve
        self._clock = clock
        self._waiting: list[_Waiter] = []  # in arrival order
        self._taking = False  # a waiter was granted and is taking its slot
        self._held: list[_Waiter] = []  # writes of narrower budgets held until this one
        # has a slot free (only the first of them, a due one first, looks again)
        self._due = 0  # writes of narrower budgets due soon, for which the others keep a slot
        # [start, count, doubt, end] of the windows a write may still land in: the earliest
        # moment the window may have opened, the writes that may count in it, whether its
        # opener is in doubt (it may have landed in the window before, or never reached
        # Discord), and the moment it surely ends (see _record and Slot.done)
        self._windows: deque[list[float]] = deque()
        self._last_start = -math.inf
        self._blocked_until = -math.inf
        self._slowdown = 1.0
        self._calm_at = -math.inf
        self.client: ClientLimiter | None = None
        """discord.py's view of the channel's bucket, shared with the channel's other route."""
        self.then = then
        """A wider budget every write of this one also takes a slot of (the bot's global
        budget), taken inside this one's turn so that the recorded start is the real one; a
        write is granted here only while it has a slot free, and one that would empty its
        window has one kept free for it from a window of ``then`` before it may go."""
        self.yields = False
        """Whether its progress writes (neither final nor closing) give way to every other
        write in :attr:`then`: they go only when it has a slot free."""
        self._starts: deque[float] | None = deque(maxlen=max_writes) if sliding else None
        """With ``sliding``, the latest starts: no more than ``max_writes`` in any window
        (plus the margin), wherever Discord's own windows begin."""
        self.writes = 0
        """Slots handed out so far."""
        self.rate_limited = 0
        """429s reported so far."""

    def _took(self, seconds: float) -> None:
        """A write took ``seconds`` from its start to its response."""
        now = self._clock()
        fading = 0.5 ** ((now - self._transit_at) / self.window)
        self.transit = max(MIN_TRANSIT, seconds, self.transit * fading)
        self._transit_at = now

    @property
    def base_interval(self) -> float:
        """Average spacing between writes when nothing went wrong."""
        return self.window / self.max_writes * (1 + self.margin)

    def _progress_cap(self) -> int:
        """Slots of a window that progress writes may use."""
        reserved = self.reserve() if self.reserve is not None else 0
        return max(0, self.max_writes - max(0, reserved))

    def interval(self) -> float:
        """Spacing between progress writes now (longer for a while after a 429)."""
        if self._slowdown > 1 and self._clock() >= self._calm_at:
            self._slowdown = 1.0
        cap = self._progress_cap()
        if cap == 0:
            return math.inf
        return self.window / cap * (1 + self.margin) * self._slowdown

    def base_gap(self) -> float:
        """Spacing between writes that use the whole window (longer for a while after a 429)."""
        self.interval()  # ends a slow-down that has run its course
        return self.base_interval * self._slowdown

    def current_burst(self) -> int:
        """How many writes may start at once now (1 for a while after a 429)."""
        self.interval()  # ends a slow-down that has run its course
        return self.burst if self._slowdown == 1 else 1

    def _alive(self, now: float) -> deque[list[float]]:
        """The windows a write starting now may still be counted in."""
        windows = self._windows
        while windows and now >= windows[0][3]:
            windows.popleft()
        return windows

    def landing(self) -> tuple[int, float]:
        """For a write starting now, at worst: what Discord's ``X-RateLimit-Remaining`` will
        read after it, and when the window that says so ends (plus the margin of doubt)."""
        now = self._clock()
        windows = self._alive(now)
        span = self.window + self.slack
        if not windows or now >= windows[-1][0] + self.window - self.transit:
            fresh = (self.max_writes - 1, now + span)  # it may open a new window
        else:
            fresh = (self.max_writes, math.inf)
        if not windows:
            return fresh
        fullest = max(windows, key=lambda w: w[1])
        return min((self.max_writes - 1 - int(fullest[1]), fullest[3]), fresh)

    def delay(self, final: bool = False, closing: bool = False, keep: int = 0) -> float:
        """Seconds until the next slot is free (0 if one is free now), ignoring waiters.

        A ``final`` write (a reply's last text) may use every slot left in the window, without
        the spacing and the reserve of progress writes; a ``closing`` one (a message's last
        text while the reply goes on) may use the reserve but keeps the spacing. With
        ``sliding``, ``keep`` slots must stay free after it.
        """
        now = self._clock()
        at = self._blocked_until
        cap = self.max_writes
        if self.current_burst() == 1 and (not final or self._slowdown > 1):
            # progress is spread over the slots it may use; a message's last text as evenly
            # as the whole window allows
            at = max(at, self._last_start + (self.interval() if not closing else self.base_gap()))
        if not (final or closing):
            cap = self._progress_cap()
            if cap == 0:  # every slot is kept for the live replies' last edits
                return math.inf
        windows = self._alive(now)
        for w in windows:
            if w[1] >= cap:
                at = max(at, w[3])
        starts = self._starts
        if starts is not None and len(starts) >= (most := self.max_writes - keep):
            at = max(at, starts[-most] + self.window + self.slack if most > 0 else math.inf)
        if windows and now >= windows[-1][0] + self.window - self.transit:
            at = max(at, windows[-1][3])  # it could land in either window: wait until sure
        return max(0.0, at - now)

    @property
    def busy(self) -> bool:
        """Whether a reply is waiting for (or taking) a slot right now."""
        return bool(self._waiting) or self._taking or bool(self._held)

    def _hold(self, waiter: _Waiter, was: bool, now: bool, rank: tuple[bool, float]) -> None:
        """``waiter`` (of a narrower budget) is held until this one has a slot free, or no
        longer; the first one held then looks again. ``rank``: it goes before those with a
        higher one (not due, and when its budget last wrote)."""
        waiter.rank = rank
        if now and not was:
            self._held.append(waiter)
        elif was and not now:
            self._held.remove(waiter)
        if (first := self._first_held()) is not None and first is not waiter:
            first.wake()

    def _first_held(self) -> _Waiter | None:
        """The write held that goes first when a slot frees: a due one, else the one of the
        channel that wrote least recently (a quiet channel's first), the first come if even."""
        return min(self._held, key=lambda w: w.rank, default=None)

    def urgent_waiting(self) -> int:
        """How many final or closing writes are waiting for a slot."""
        return sum(1 for w in self._waiting if w.is_final() or w.is_closing())

    def head_delay(self) -> float:
        """Seconds until the write first in line could go (inf if none waits)."""
        head = self._head()
        if head is None:
            return math.inf
        final = head.is_final()
        return self.delay(final, final or head.is_closing())

    async def acquire(
        self, final: bool | Callable[[], bool] = False, closing: Callable[[], bool] = _no
    ) -> None:
        """Wait for the next slot and take it; the write must start right after.

        Waiters are served first come, first served, except that a ``final`` write (see
        :meth:`delay`) goes before every progress write: when several replies end together,
        their last texts show first, then ``closing`` ones (see :meth:`delay`). A callable
        ``final`` is asked again while it waits (a reply can end meanwhile), as is ``closing``.
        """
        await self._take(final, closing, track=False)

    @contextlib.asynccontextmanager
    async def write(self, final: bool | Callable[[], bool] = False) -> AsyncIterator[None]:
        """A slot (see :meth:`slot`) for the one write made inside: the budget learns when its
        response came, so a slow one holds the next write (one that fails may have been
        counted as late as it failed)."""
        slot = await self.slot(final)
        reached = False
        try:
            yield
            reached = True
        finally:
            slot.done(reached)

    async def slot(
        self, final: bool | Callable[[], bool] = False, closing: Callable[[], bool] = _no
    ) -> Slot:
        """Like :meth:`acquire`, for a write that says when it has ended (``Slot.done()``), so
        that the channel knows how many of its writes are in flight."""
        slot = await self._take(final, closing, track=True)
        assert slot is not None
        return slot

    async def _take(
        self, final: bool | Callable[[], bool], closing: Callable[[], bool], *, track: bool
    ) -> Slot | None:
        me = _Waiter(final if callable(final) else lambda: final, closing)
        self._waiting.append(me)
        granted = False
        held = due = False  # by the global budget; due soon (see below)
        slot: Slot | None = None
        try:
            while True:
                wait = self.base_interval  # not first in line: look again now and then
                now_held = now_due = False
                if not self._taking and self._head() is me:
                    is_final = me.is_final()
                    is_closing = is_final or me.is_closing()
                    wait = self.delay(is_final, is_closing)
                    if wait <= 0 and self.client is not None:
                        wait = self.client.delay(self)
                    then = self.then
                    if then is not None and (is_closing or not self.yields):
                        # a write that empties its window goes near the window's end or
                        # misses it: for a global window before, the others leave it a slot
                        now_due = self.landing()[0] < 1 and wait <= then.window + then.slack
                        if wait <= 0:  # a write granted here counts in flight (and in
                            # discord.py's view) while it waits for its global slot: none is
                            wait = then.delay(True, True, 0 if now_due else then._due - due)
                            first = then._first_held()  # nor before a write held to go first
                            rank = (not now_due, self._last_start)
                            if first is not None and first is not me and first.rank <= rank:
                                wait = max(wait, MIN_WAIT)
                            now_held = wait > 0
                    elif wait <= 0 and then is not None:
                        # progress goes only when the global budget has a slot free now
                        wait = then.delay(keep=then._due) if not then.busy else then.window
                if (now_held, now_due) != (held, due) and self.then is not None:
                    self.then._hold(me, held, now_held, (not now_due, self._last_start))
                    self.then._due += now_due - due
                    held, due = now_held, now_due
                if held and self.then is not None and self.then._first_held() is not me:
                    wait = self.window  # the first one held looks, then wakes the next
                if wait <= 0:
                    break
                await me.pause(min(max(wait, MIN_WAIT), self.window))
            self._taking = granted = True
            slot = self._grant(track)
        finally:
            if self.then is not None:
                if held:  # only a write held leaves the line (and wakes the next)
                    self.then._hold(me, held, False, me.rank)
                self.then._due -= due
            self._waiting.remove(me)
            if not granted:
                self._wake_head()
        try:
            # (progress only went when the global budget had a slot free); a write that
            # discord.py holds after its response until the reset cannot tell when Discord
            # answered it
            told = slot is not None and slot.remaining >= 1
            outer = None if self.then is None else await self.then._take(True, _no, track=told)
            self._start(slot)
            if slot is not None:
                slot.then = outer
        except BaseException:
            if slot is not None:
                slot.done()
            raise
        finally:
            self._taking = False
            self._wake_head()
        return slot

    def _grant(self, track: bool) -> Slot | None:
        """A write starts now as far as discord.py's view of the channel goes; its slot if
        ``track``."""
        if self.client is not None:
            return self.client.grant(self, track)
        # (a budget of one write a window: what discord.py holds, see `told` in _take)
        return Slot(None, self.max_writes - 1, math.inf) if track else None

    def _start(self, slot: Slot | None) -> None:
        """Count a write starting now (see :meth:`_record`); a tracked one's slot learns the
        window its response will tell the end of."""
        opened = self._record(slot is not None)
        if slot is not None:
            slot.opened, slot.budget, slot.started = opened, self, self._clock()

    def _record(self, track: bool) -> list[float] | None:
        """Count a write starting now in every window it may land in; for a ``track`` ed write,
        the window its response will tell the end of (see :meth:`Slot.done`)."""
        now = self._clock()
        windows = self._alive(now)
        for w in windows:
            w[1] += 1
        # a write that never tells when Discord answered it may have reached Discord as late
        # as the slowest recent write took
        span = self.window + max(self.slack, self.transit)
        # a write surely in a window it opens ends when its response tells (inf until then)
        sure_end = math.inf if track else now + span
        latest = windows[-1] if windows else None
        if latest is None or now >= latest[0] + self.window - self.transit:
            # it opens a new window, surely unless the one before may still be open
            doubt = latest is not None
            latest = [now, 1, int(doubt), now + span if doubt else sure_end]
            windows.append(latest)
        elif latest[2] and len(windows) == 1:
            # the window before has surely ended: this write is surely in the latest one
            latest[2], latest[3] = 0, max(now + span, sure_end)
        elif latest[2]:  # still in doubt: this write may be the one that opens it
            latest[3] = max(latest[3], now + span)
        self._last_start = now
        self.writes += 1
        if self._starts is not None:
            self._starts.append(now)
        return latest if track else None

    def _head(self) -> _Waiter | None:
        """The waiter that goes next: the first final one, else the first closing one, else
        the first one."""
        closing = None
        for w in self._waiting:
            if w.is_final():
                return w
            if closing is None and w.is_closing():
                closing = w
        return closing or (self._waiting[0] if self._waiting else None)

    def _wake_head(self) -> None:
        """Let the waiter now first in line look at its slot at once."""
        if (head := self._head()) is not None:
            head.wake()

    def try_slot(self) -> Slot | None:
        """A slot (see :meth:`slot`) only if one is free now and nobody waits, for an optional
        request; None: skip it."""
        if self.busy or self.delay(keep=self._due) > 0:
            return None
        if self.client is not None and self.client.delay(self) > 0:
            return None
        slot = self._grant(True)
        self._start(slot)
        return slot

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
        if self._last_start == -math.inf:
            return math.inf
        return max(0.0, self._clock() - max(self._last_start, self._blocked_until))


class Slot:
    """A write in flight in a channel; :meth:`done` when it has ended (however it ended)."""

    __slots__ = ("_client", "budget", "hold_until", "opened", "remaining", "started", "then")

    def __init__(self, client: ClientLimiter | None, remaining: int, hold_until: float) -> None:
        self._client = client
        self.remaining = remaining
        """What the write's response will say is left in its window (at worst)."""
        self.hold_until = hold_until
        """When the write's window ends (discord.py holds a write that empties it until then)."""
        self.opened: list[float] | None = None
        """The window whose end the write's response tells (see :meth:`done`)."""
        self.budget: WriteBudget | None = None
        """The budget of that window."""
        self.started = 0.0
        """When the write started (by the budget's clock)."""
        self.then: Slot | None = None
        """The same write's slot in the bot's global budget."""

    def done(self, reached: bool = True) -> None:
        """The write has ended: its response is in. ``reached`` False: it failed in a way that
        leaves in doubt whether Discord counted it (a window it opened may open later)."""
        w, budget = self.opened, self.budget
        if budget is not None:
            now = budget._clock()
            if reached and self.remaining >= 1:  # (discord.py holds one that empties its
                budget._took(now - self.started)  # window after its response: not its transit)
        if w is not None and budget is not None:
            if not reached:  # if it reached Discord at all, it did before now: the window
                # may open with the next write, or have opened as late as now
                w[0], w[2], w[3] = now, 1, now + budget.window + budget.slack
            elif w[2]:  # it may have opened the window: it did before its response
                w[3] = max(w[3], now + budget.window)
            else:  # surely in the window: Discord opened it before this response
                w[3] = min(w[3], now + budget.window)
        client, self._client = self._client, None
        if client is not None:
            client.release(self)
        then, self.then = self.then, None
        if then is not None:
            then.done(reached)


class ClientLimiter:
    """What discord.py's own rate limiter will do with a channel's message writes.

    Discord answers message creates and message edits with one ``X-RateLimit-Bucket`` hash,
    and discord.py keys its limiter by hash and channel, so it treats the two routes as one
    bucket: its ``remaining`` is whatever the last response said (creates and edits are counted
    in different windows), less the requests in flight. A request that finds it at 0 waits, and
    a response that leaves fewer tokens than requests still in flight (one reading ``Remaining:
    0``, or two or more in flight when it reads 1) makes discord.py hold that request, and every
    later one of the channel, until the reset. A held request would reach Discord later than
    the pacer counted it, so the pacer grants a write only when discord.py will let it through
    at once: at most two in flight, two only while both leave at least two; a write that
    empties its window only alone and, as it closes the channel's other route until the reset,
    only when the reset is near or that route has nothing waiting that could go sooner and no
    live reply that may need its last edit meanwhile (when both routes' windows end together,
    the route with more writes to come takes the one last slot that can go).
    """

    def __init__(
        self,
        sends: WriteBudget,
        edits: WriteBudget,
        live: Callable[[], int],
        clock: Clock,
        near: float,
    ) -> None:
        self.max_writes = max(sends.max_writes, edits.max_writes)
        self.budgets = (sends, edits)
        self.edits = edits
        self.live = live
        """How many replies of the channel will need a last edit."""
        self._clock = clock
        self.near = near
        """A hold this short is taken even when the other route has writes waiting."""
        self._in_flight: list[Slot] = []
        self._remaining = 1  # discord.py's view; a new bucket lets one request through
        self._expires = math.inf  # until the first response says when it resets
        self._closed_until = -math.inf
        for budget in self.budgets:
            budget.client = self

    def _tokens(self, now: float) -> int:
        if now > self._expires:  # discord.py resets an expired bucket to its limit
            return self.max_writes - len(self._in_flight)
        return self._remaining

    def delay(self, budget: WriteBudget) -> float:
        """Seconds until discord.py would let ``budget``'s next write through at once (a short
        look-again interval when that depends on a write in flight)."""
        now = self._clock()
        if now < self._closed_until:
            return self._closed_until - now
        recheck = budget.base_interval
        if self._tokens(now) < 1:
            return recheck
        left, end = budget.landing()
        flying = self._in_flight
        if len(flying) >= 2 or (flying and (left < 2 or flying[0].remaining < 2)):
            return recheck
        if left >= 1:
            return 0.0
        # a write that empties its window closes the other route until the window's end: it
        # goes only near that end (both routes' last slots then go, the earlier window's first)
        # or when the other route has nothing to lose. When both windows end together only
        # one last slot can go: the route with more writes to come takes it.
        hold = end - now - self.near
        for other in self.budgets:
            if other is budget or not other.busy or other.head_delay() > 0:
                continue
            their_left, their_end = other.landing()
            if their_left >= 1:
                continue  # it does not need its last slot
            if abs(their_end - end) < self.near:
                if (self._backlog(other), end) > (self._backlog(budget), their_end):
                    return recheck
            elif their_end < end and their_end - now - self.near <= 0:
                return recheck  # its window ends first: its last slot goes first
        if hold <= 0:
            return 0.0
        if self.live() and budget is not self.edits:
            return min(recheck, hold)  # a live reply's last edit may come any time
        for other in self.budgets:
            if other is budget or not other.busy or other.head_delay() >= hold:
                continue
            if other is not self.edits or other.urgent_waiting():  # not mere progress
                return min(recheck, hold)  # closing it would cost it
        return 0.0

    def _backlog(self, budget: WriteBudget) -> int:
        """Writes ``budget`` will surely need: a last edit per live reply (edits), or the
        writes waiting (sends)."""
        return self.live() if budget is self.edits else len(budget._waiting)

    def grant(self, budget: WriteBudget, track: bool) -> Slot | None:
        """A write of ``budget`` starts now."""
        now = self._clock()
        left, end = budget.landing()
        if left < 1:
            self._closed_until = max(self._closed_until, end)
        if not track:  # a write that never says when it ends: not counted in flight
            return None
        self._remaining = self._tokens(now) - 1
        slot = Slot(self, left, end)
        self._in_flight.append(slot)
        return slot

    def release(self, slot: Slot) -> None:
        """``slot``'s response is in."""
        if slot in self._in_flight:
            self._in_flight.remove(slot)
        n = len(self._in_flight)
        if slot.remaining < 1:  # discord.py held it until the reset, then reset the bucket
            self._remaining = self.max_writes - n
            self._expires = -math.inf
        else:
            self._remaining = min(slot.remaining, self.max_writes - n - 1)
            self._expires = slot.hold_until
        for budget in self.budgets:
            budget._wake_head()


REACTION_INTERVAL = 0.25
"""Seconds between two reaction requests in a channel."""


class _Waiter:
    """A write waiting for a slot: whether it is final now, and how to wake it early."""

    __slots__ = ("_waker", "is_closing", "is_final", "rank")

    def __init__(self, is_final: Callable[[], bool], is_closing: Callable[[], bool]) -> None:
        self.is_final = is_final
        self.is_closing = is_closing
        self.rank = (True, 0.0)
        """Its place among writes held by a wider budget (see :meth:`WriteBudget._hold`)."""
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
    """The sends' ``burst`` in a channel allowing ``max_sends``: more than 1 (when the bucket
    allows), so creates go as soon as the window has room; the one that empties it waits for
    a moment that costs the edits nothing (see :class:`ClientLimiter`)."""
    return max(1, max_sends - 1)


class ChannelPacer:
    """The write budgets of one channel, shared by every reply streaming in it.

    Discord limits message creates and message edits in a channel with separate buckets, so a
    channel has two :class:`WriteBudget` s: :attr:`sends` and :attr:`edits`. ``max_writes`` per
    ``window`` sets both; ``max_sends`` / ``send_window`` override the one for sends.

    Progress edits are spread evenly (a live reply progresses steadily) and never cost a
    window: they leave free the slots the :attr:`live` replies' last edits would need if they
    all ended now. Sends go as soon as the window has room (``send_burst`` 1 spreads them too),
    so replies asked together all show their first text at once. :attr:`client` keeps every
    write where discord.py lets it through at once; a send that would empty its window, and so
    hold the channel's edits in discord.py until its end, waits for the end of the window while
    a live reply may still need its last edit.

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
        self._clock = clock
        self._typing_at = -math.inf  # when a reply here last sent the typing indicator
        self.reactions = WriteBudget(
            1,
            REACTION_INTERVAL,
            clock=clock,
            margin=margin,
            max_slowdown=max_slowdown,
            then=requests,
        )
        """Reactions the bot adds or removes (Discord allows about one per 0.25 s a channel):
        signs (⏳), which give way to every message write in the bot's global budget."""
        self.reactions.yields = True
        self.edits = budget(max_writes, window, 1)
        """Message edits (PATCH /channels/{id}/messages/{mid})."""
        sends = max_writes if max_sends is None else max_sends
        self.sends = budget(
            sends,
            window if send_window is None else send_window,
            default_send_burst(sends) if send_burst is None else send_burst,
        )
        """Message creates (POST /channels/{id}/messages)."""
        self._replies: set[Callable[[], bool]] = set()
        self.edits.reserve = self._finals_to_come
        self.edits.yields = True
        self.client = ClientLimiter(
            self.sends, self.edits, lambda: self.live, clock, 2 * margin * window
        )
        """discord.py's merged view of the channel's two message routes."""

    def follow(self, needs_final: Callable[[], bool]) -> None:
        """Count a reply streaming in the channel among :attr:`live` while ``needs_final()``."""
        self._replies.add(needs_final)

    def forget(self, needs_final: Callable[[], bool]) -> None:
        """The reply has ended: it needs no more writes."""
        self._replies.discard(needs_final)
        self.wake()

    @property
    def live(self) -> int:
        """Replies in the channel that will need a last edit: their first message is out (or
        waits for its slot while the model still streams) and their last text is not."""
        return sum(1 for needs_final in self._replies if needs_final())

    def wake(self) -> None:
        """A waiting write may have become final (its reply ended): let the budgets look again."""
        for b in (self.sends, self.edits):
            b._wake_head()

    def _finals_to_come(self) -> int:
        """Edit slots progress leaves free in each window: one per live reply (all of them in
        a channel with a window's worth of live replies, where more may well come), and one
        more while creates wait (the edit that empties a window holds them, see
        :class:`ClientLimiter`), so that a progress edit never pushes the channel's last final
        into a later window."""
        most, live = self.edits.max_writes, self.live
        if live >= most:  # a channel this busy needs its windows for last edits
            return most
        reserve = live + 1 if self.sends.busy else live  # (the edit that empties a window
        return min(reserve, most)  # would hold the creates waiting)

    def budget(self, kind: WriteKind) -> WriteBudget:
        """The budget a write of ``kind`` uses."""
        return self.sends if kind == "send" else self.edits

    def typing(self, lasts: float) -> tuple[float, Slot | None]:
        """Whether a reply may show the typing indicator now, for the channel: (0, its slot in
        the bot's global budget, done once the request has ended) if so, the caller sending it
        at once; else (the seconds until it asks again, None). Not while the channel shows one
        already (sent under `lasts` seconds ago, with no message of the bot since), nor
        without a global slot free now: it is optional, never at the expense of a write."""
        now = self._clock()
        shown = self._typing_at + lasts - now
        if shown > 0 and self._typing_at > self.sends._last_start:
            return shown, None
        slot = None
        if self.requests is not None and (slot := self.requests.try_slot()) is None:
            return min(0.25, lasts), None
        self._typing_at = now
        return 0.0, slot

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
            self.requests = WriteBudget(
                requests_per_second, 1.0, clock=clock, margin=margin, sliding=True
            )
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
