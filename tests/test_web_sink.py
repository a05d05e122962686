"""The web chat's sink: the live status line is an event of its own, plain text for the page,
always sent before the reply's text that follows it; the code's images are a ``files`` event."""

from __future__ import annotations

import base64
from typing import Any

from bot.grounding import searching_status
from bot.streaming import StatusSink
from bot.web.sink import WebSocketSink


async def test_status_lines_are_plain_events_sent_before_the_text() -> None:
    sent: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        sent.append(event)

    sink = WebSocketSink(emit, "7", -1)
    assert isinstance(sink, StatusSink)
    sink.show_status("-# 💭 Planning…")
    sink.show_status("-# 💭 Planning…")  # the same line again: nothing new to show
    sink.show_status(searching_status(["what is *bold*", "a_b"]))
    assert sent == []  # scheduled, not yet written
    await sink.send("The answer ▌")
    await sink.attach(1, [("figure-1.png", b"\x89PNG...")])
    assert [(e["type"], e.get("state"), e.get("line")) for e in sent[:3]] == [
        ("status", "live", "💭 Planning…"),
        ("status", "live", "🔎 searching: what is *bold* · a_b…"),
        ("chunk", None, None),
    ]
    assert sent[2]["text"] == "The answer" and sent[2]["live"] is True
    assert sent[3]["files"] == [
        {
            "name": "figure-1.png",
            "type": "image/png",
            "data": base64.b64encode(b"\x89PNG...").decode(),
        }
    ]
    assert all(e["reply"] == "7" and e["channel"] == -1 for e in sent)
