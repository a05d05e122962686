"""The renderer's MessageSink over a browser's WebSocket: each write sends the text so far."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.streaming import DEFAULT_STYLE, Buttons

Emit = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends one event to the browser (a no-op once its socket is closed)."""


class WebSocketSink:
    """One reply's messages, shown in the browser as one growing text (``chunk`` events)."""

    def __init__(self, emit: Emit, reply: str, channel: int) -> None:
        self._emit = emit
        self.reply = reply
        self.channel = channel
        self._messages: dict[int, str] = {}
        self._typing_shown = False

    def text(self) -> str:
        """Everything the reply shows now, without the live marker."""
        return "\n".join(self._messages.values())

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        """Start a new message (the reply continues past a message's length limit)."""
        message_id = len(self._messages) + 1
        self._messages[message_id] = ""
        await self.edit(message_id, text)
        return message_id

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        """Replace one message's text and send the whole reply so far."""
        live = text.endswith(DEFAULT_STYLE.live_marker)
        self._messages[message_id] = text.removesuffix(DEFAULT_STYLE.live_marker)
        await self._emit(
            {
                "type": "chunk",
                "reply": self.reply,
                "channel": self.channel,
                "text": self.text(),
                "live": live,
            }
        )

    async def typing(self) -> None:
        """Tell the browser the model is thinking (once: the page keeps showing it)."""
        if self._typing_shown:
            return
        self._typing_shown = True
        await self._emit(
            {"type": "status", "reply": self.reply, "channel": self.channel, "state": "thinking"}
        )
