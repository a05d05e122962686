"""The registry of running replies: lookup by any message, per-user stop, idle wait."""

from __future__ import annotations

from bot.inflight import InFlightRegistry


async def test_lookup_stop_and_finish() -> None:
    reg = InFlightRegistry()
    a = reg.start(channel_id=1, requester_id=10, question_id=100)
    b = reg.start(channel_id=1, requester_id=11, question_id=101)
    c = reg.start(channel_id=2, requester_id=10, question_id=102)
    reg.add_message(a, 200)
    reg.add_message(a, 201)
    assert reg.by_message(100) is a and reg.by_message(201) is a and reg.by_message(101) is b
    assert reg.stop(1, 10, by=10) == 1
    assert a.token.cancelled and not b.token.cancelled and not c.token.cancelled
    assert reg.stop(1, 10, by=10) == 0  # already stopped
    assert reg.stop(1, None, by=99) == 1 and b.token.by == 99
    for r in (a, b):
        reg.finish(r)
    assert reg.by_message(200) is None and reg.by_message(100) is None
    assert not await reg.wait_idle(0.01)
    reg.finish(c)
    assert await reg.wait_idle(0.01) and len(reg) == 0
    reg.add_message(c, 300)  # a message id arriving after the reply ended is not registered
    assert reg.by_message(300) is None
