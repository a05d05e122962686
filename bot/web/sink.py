"""The renderer's MessageSink over a browser's WebSocket: each write sends the text so far; the
live status line (thinking, searching) and the images the model's code drew are events of their
own, never text of the answer."""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any

from bot.streaming import DEFAULT_STYLE, Buttons, plain_status

Emit = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends one event to the browser (a no-op once its socket is closed)."""


class WebSocketSink:
    """One reply's messages, shown in the browser as one growing text (``chunk`` events), its
    live status (``status`` events, state ``live``) and its code's images (a ``files`` event)."""

    def __init__(self, emit: Emit, reply: str, channel: int) -> None:
        self._emit = emit
        self.reply = reply
        self.channel = channel
        self._messages: dict[int, str] = {}
        self._typing_shown = False
        self._status: str | None = None
        self._status_sent: asyncio.Task[None] | None = None

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
        if self._status_sent is not None:  # a status line said before goes out first
            await self._status_sent
        live = text.endswith(DEFAULT_STYLE.live_marker)
        self._messages[message_id] = text.removesuffix(DEFAULT_STYLE.live_marker)
        await self._emit(self._event("chunk", text=self.text(), live=live))

    async def typing(self) -> None:
        """Tell the browser the model is thinking (once: the page keeps showing it)."""
        if self._typing_shown:
            return
        self._typing_shown = True
        await self._emit(self._event("status", state="thinking"))

    def show_status(self, line: str) -> None:
        """Show what the model is doing (``💭 Planning…``) as the reply's live status."""
        line = plain_status(line)
        if line == self._status:
            return
        self._status = line
        self._status_sent = asyncio.create_task(
            self._after(self._status_sent, self._event("status", state="live", line=line))
        )

    async def _after(self, previous: asyncio.Task[None] | None, event: dict[str, Any]) -> None:
        if previous is not None:
            await previous
        await self._emit(event)

    async def attach(self, message_id: int, files: list[tuple[str, bytes]]) -> None:
        """Show the images the model's code drew under the reply."""
        shown = [
            {
                "name": name,
                "type": mimetypes.guess_type(name)[0] or "application/octet-stream",
                "data": base64.b64encode(data).decode(),
            }
            for name, data in files
        ]
        await self._emit(self._event("files", files=shown))

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "reply": self.reply, "channel": self.channel, **fields}
