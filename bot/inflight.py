"""Replies that are streaming right now, findable by any of their messages, for 🛑 and /stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.cancel import CancelToken

log = logging.getLogger(__name__)


@dataclass(eq=False)
class InFlight:
    """One reply being streamed: who asked, where, and the token that stops it."""

    channel_id: int
    requester_id: int
    question_id: int | None
    question_turn: int | None = None
    """The question's stored turn id."""
    token: CancelToken = field(default_factory=CancelToken)
    message_ids: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the reply has ended: its last write to Discord and to the store are done."""


def stop_summary(count: int, *, everyone: bool = False) -> str:
    """What /stop (or "@bot stop") answers: how many replies it stopped, or that none ran."""
    if count:
        return f"Stopped {count} repl{'y' if count == 1 else 'ies'}."
    return "Nothing is running here." if everyone else "Nothing of yours is running here."


class InFlightRegistry:
    """Every running reply, by channel and by message id (the question's and the reply's)."""

    def __init__(self) -> None:
        self._replies: set[InFlight] = set()
        self._by_message: dict[int, InFlight] = {}
        self._waiters: dict[int, list[asyncio.Future[InFlight]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._replies)

    def start(
        self,
        channel_id: int,
        requester_id: int,
        question_id: int | None,
        question_turn: int | None = None,
    ) -> InFlight:
        """Register a new reply and return it (with a fresh cancellation token)."""
        reply = InFlight(channel_id, requester_id, question_id, question_turn)
        self._replies.add(reply)
        if question_id is not None:
            self._register(question_id, reply)
        self._idle.clear()
        return reply

    def add_message(self, reply: InFlight, message_id: int) -> None:
        """Record one more bot message belonging to the reply."""
        reply.message_ids.add(message_id)
        if reply in self._replies:
            self._register(message_id, reply)

    def _register(self, message_id: int, reply: InFlight) -> None:
        self._by_message[message_id] = reply
        for waiter in self._waiters.pop(message_id, ()):
            if not waiter.done():
                waiter.set_result(reply)

    def finish(self, reply: InFlight) -> None:
        """Forget a reply that ended (in any state)."""
        self._replies.discard(reply)
        for mid in [*reply.message_ids, reply.question_id]:
            if mid is not None and self._by_message.get(mid) is reply:
                del self._by_message[mid]
        if not self._replies:
            self._idle.set()
        reply.ended.set()

    def by_message(self, message_id: int) -> InFlight | None:
        """The running reply that this message (question or answer) belongs to."""
        return self._by_message.get(message_id)

    async def wait_for_message(self, message_id: int, timeout: float) -> InFlight | None:
        """Like :meth:`by_message`, but wait up to ``timeout`` seconds for the message to be
        registered: a 🛑 can arrive before the bot has the id of a reply message it just sent
        (the gateway event may beat the REST response) or before a new question is stored."""
        reply = self._by_message.get(message_id)
        if reply is not None or timeout <= 0:
            return reply
        waiter: asyncio.Future[InFlight] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(message_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(message_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[message_id]

    def in_channel(self, channel_id: int, requester_id: int | None = None) -> list[InFlight]:
        """Running replies in a channel, optionally only those one user asked for."""
        return [
            r
            for r in self._replies
            if r.channel_id == channel_id
            and (requester_id is None or r.requester_id == requester_id)
        ]

    def asked_by(self, requester_id: int) -> list[InFlight]:
        """Running replies that one person asked for, in every channel."""
        return [r for r in self._replies if r.requester_id == requester_id]

    def stop(self, channel_id: int, requester_id: int | None, by: int) -> int:
        """Stop running replies in a channel (one user's, or all with None); returns how many."""
        return sum(r.token.cancel("stopped", by) for r in self.in_channel(channel_id, requester_id))

    async def end(
        self, keep: Callable[[InFlight], bool], reason: str, by: int | None, timeout: float
    ) -> int:
        """Stop the running replies `keep` chooses and wait, up to `timeout` seconds, until
        each has ended (nothing more of it will be written); returns how many there were."""
        replies = [r for r in self._replies if keep(r)]
        for reply in replies:
            reply.token.cancel(reason, by)
        if replies:
            waits = [asyncio.ensure_future(r.ended.wait()) for r in replies]
            _, late = await asyncio.wait(waits, timeout=timeout)
            for waiter in late:
                waiter.cancel()
            if late:
                log.warning("%d stopped repl(ies) had not ended after %.0f s", len(late), timeout)
        return len(replies)

    def cancel_all(self, reason: str) -> int:
        """Stop every running reply; returns how many were asked to stop."""
        return sum(r.token.cancel(reason) for r in list(self._replies))

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no reply is running (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
