"""bot.cancel.CancelToken: checked, awaited, or calling back."""

from __future__ import annotations

import asyncio

from bot.cancel import CancelToken


async def test_callbacks_run_soon_after_the_cancel_once_and_can_be_forgotten() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("kept"))
    forget = token.on_cancel(lambda: calls.append("forgotten"))
    forget()
    assert token.cancel("stopped", by=7)
    assert calls == []  # soon, not inside cancel()
    await asyncio.sleep(0)
    assert calls == ["kept"]
    assert not token.cancel()  # only once
    await asyncio.sleep(0)
    assert calls == ["kept"]
    assert token.cancelled and token.by == 7


async def test_a_callback_added_after_the_cancel_still_runs() -> None:
    token = CancelToken()
    token.cancel()
    calls: list[int] = []
    token.on_cancel(lambda: calls.append(1))
    await asyncio.sleep(0)
    assert calls == [1]
