"""Admission control for replies: caps on streaming replies per user, channel and process."""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

State = Literal["waiting", "admitted", "released"]


class QueueFull(Exception):
    """Raised by :meth:`Admission.try_enter` when the channel already has its maximum waiting."""


@dataclass(eq=False)
class Slot:
    """One question's claim on a streaming slot: waiting, admitted, then released."""

    channel_id: int
    user_id: int
    _admission: Admission = field(repr=False)
    state: State = "waiting"
    _future: asyncio.Future[None] | None = field(default=None, repr=False)
    unshown: bool = field(default=False, repr=False)
    """Admitted, and its reply has not shown a first message yet."""
    granted: int = field(default=-1, repr=False)
    """Its place among the slots granted (-1 until admitted)."""

    @property
    def waiting(self) -> bool:
        """Whether the question is queued (the caller may show a waiting sign)."""
        return self.state == "waiting"

    async def admitted(self) -> None:
        """Wait until admitted; raises CancelledError if released first (cancelling releases)."""
        if self.state == "waiting":
            if self._future is None:
                self._future = asyncio.get_running_loop().create_future()
            try:
                await self._future
            except asyncio.CancelledError:
                self.release()  # also frees a slot granted at the moment of cancellation
                raise
        if self.state != "admitted":
            raise asyncio.CancelledError("slot released before it was admitted")

    def release(self) -> None:
        """Free the slot or leave the queue; releasing twice does nothing."""
        self._admission._release(self)

    def shown(self) -> None:
        """The reply's first message is out (see :meth:`Admission.replies_shown`)."""
        self._admission._shown(self)

    def begun(self) -> None:
        """The reply's Gemini request has been answered or has failed (see
        :meth:`Admission.after_admitted`)."""
        self._admission._begun(self)

    async def __aenter__(self) -> Slot:
        await self.admitted()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class Admission:
    """Grants slots in arrival order, skipping waiters blocked only by their own caps."""

    def __init__(
        self,
        per_user: int = 2,
        per_channel: int = 5,
        per_process: int = 64,
        queue_per_channel: int = 10,
        intake_wait: float = 1.0,
    ) -> None:
        if min(per_user, per_channel, per_process) < 1 or queue_per_channel < 0:
            raise ValueError("caps must be positive and the queue length non-negative")
        self.per_user = per_user
        self.per_channel = per_channel
        self.per_process = per_process
        self.queue_per_channel = queue_per_channel
        self.intake_wait = intake_wait
        """Seconds at most :meth:`after_admitted` waits."""
        self.quiet_reserve = per_process // 8
        """Process-wide slots only a channel with nothing streaming may take, so a question
        in a quiet channel starts at once however busy the other channels are."""
        self._by_user: Counter[int] = Counter()
        self._by_channel: Counter[int] = Counter()
        self._queued_by_channel: Counter[int] = Counter()
        self._waiters: dict[Slot, None] = {}  # insertion-ordered: arrival order
        self._streaming = 0
        self._unshown: Counter[int] = Counter()
        self._shown_waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._granted = 0
        self._unbegun: dict[Slot, None] = {}  # in the order granted
        self._intake: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def streaming(self) -> int:
        """Replies admitted and not yet released, process-wide."""
        return self._streaming

    @property
    def queued(self) -> int:
        """Questions waiting for a slot, process-wide."""
        return len(self._waiters)

    def streaming_in(self, channel_id: int) -> int:
        """Replies admitted and not yet released in one channel."""
        return self._by_channel[channel_id]

    def queued_in(self, channel_id: int) -> int:
        """Questions waiting for a slot in one channel."""
        return self._queued_by_channel[channel_id]

    async def replies_shown(self, channel_id: int) -> None:
        """Return once every reply admitted in the channel so far has shown its first message
        or ended: a refusal's notice waits for it, so that the questions admitted before it get
        the channel's first message slots."""
        if not self._unshown[channel_id]:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._shown_waiters.setdefault(channel_id, []).append(waiter)
        try:
            await waiter
        finally:
            waiters = self._shown_waiters.get(channel_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._shown_waiters[channel_id]

    async def after_admitted(self) -> None:
        """Return once every reply admitted so far has had its Gemini request answered (or
        failed, or ended), or after :attr:`intake_wait` seconds: a question that must wait for
        a slot, or is refused, is taken in after them, so that under a burst the event loop
        works first for the questions it can answer now."""
        if not self._unbegun:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._intake.append((self._granted, waiter))
        try:
            await asyncio.wait([waiter], timeout=self.intake_wait)
        finally:
            waiter.cancel()  # after the timeout: left for `_begun` to drop

    def try_enter(self, channel_id: int, user_id: int) -> Slot:
        """Claim a slot at arrival, admitted or queued; raises QueueFull if the queue is full."""
        slot = Slot(channel_id, user_id, self)
        if self._fits(slot):
            self._grant(slot)
        elif self._queued_by_channel[channel_id] >= self.queue_per_channel:
            raise QueueFull(channel_id)
        else:
            self._waiters[slot] = None
            self._queued_by_channel[channel_id] += 1
        return slot

    def _fits(self, slot: Slot) -> bool:
        busy = self._by_channel[slot.channel_id] > 0
        return (
            self._streaming < self.per_process - (self.quiet_reserve if busy else 0)
            and self._by_channel[slot.channel_id] < self.per_channel
            and self._by_user[slot.user_id] < self.per_user
        )

    def _grant(self, slot: Slot) -> None:
        slot.state = "admitted"
        slot.unshown = True
        self._unshown[slot.channel_id] += 1
        slot.granted = self._granted
        self._granted += 1
        self._unbegun[slot] = None
        self._streaming += 1
        self._by_channel[slot.channel_id] += 1
        self._by_user[slot.user_id] += 1
        if slot._future is not None and not slot._future.done():
            slot._future.set_result(None)

    def _release(self, slot: Slot) -> None:
        previous, slot.state = slot.state, "released"
        if previous == "waiting":
            self._unqueue(slot)
            if slot._future is not None:
                slot._future.cancel()
        elif previous == "admitted":
            self._shown(slot)
            self._begun(slot)
            self._streaming -= 1
            _decrement(self._by_channel, slot.channel_id)
            _decrement(self._by_user, slot.user_id)
            self._admit_waiters()

    def _shown(self, slot: Slot) -> None:
        if not slot.unshown:
            return
        slot.unshown = False
        _decrement(self._unshown, slot.channel_id)
        if not self._unshown[slot.channel_id]:
            for waiter in self._shown_waiters.pop(slot.channel_id, []):
                if not waiter.done():
                    waiter.set_result(None)

    def _begun(self, slot: Slot) -> None:
        if slot in self._unbegun:
            del self._unbegun[slot]
            first = next(iter(self._unbegun), None)
            oldest = math.inf if first is None else first.granted
            while self._intake and self._intake[0][0] <= oldest:
                _, waiter = self._intake.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def _unqueue(self, slot: Slot) -> None:
        del self._waiters[slot]
        _decrement(self._queued_by_channel, slot.channel_id)

    def _admit_waiters(self) -> None:
        """Admit every waiter that fits, one at a time: the first in arrival order among those
        of the channel with the fewest replies streaming, so a quiet channel is not kept
        waiting behind a busy one when the bot's cap is reached (within a channel: arrival
        order)."""
        while self._streaming < self.per_process:
            fitting = (slot for slot in self._waiters if self._fits(slot))
            slot = min(fitting, key=lambda s: self._by_channel[s.channel_id], default=None)
            if slot is None:
                return
            self._unqueue(slot)
            self._grant(slot)


def _decrement(counter: Counter[int], key: int) -> None:
    """Count one less, dropping keys that reach zero so idle channels and users leave no trace."""
    counter[key] -= 1
    if not counter[key]:
        del counter[key]
