"""`gemcord web` with a Gemini key: the page's questions reach Gemini (the fake, through
GEMINI_BASE_URL) as the Discord bot's do, and its answers stream back over the WebSocket."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.fakes.gemini import FakeGemini, Reply
from tests.web_server import web_server

KEY = "web-test-key-0123456789"


async def test_the_web_chat_talks_to_gemini_with_a_key(tmp_path: Path) -> None:
    async with FakeGemini(api_key=KEY) as gemini:
        gemini.script(Reply(chunks=["Hello ", "from ", "Gemini."], delay=0.05))
        env = {"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": gemini.base_url}
        async with (
            web_server(tmp_path / "w.db", demo=False, **env) as url,
            aiohttp.ClientSession() as http,
            http.ws_connect(url + "/ws") as ws,
        ):
            hello = await ws.receive_json()
            assert hello["type"] == "hello" and "demo" not in str(hello).lower()
            await ws.send_json({"type": "ask", "channel": -1, "text": "hi there", "id": "a"})
            events = []
            while not events or events[-1]["type"] not in ("done", "stopped", "error"):
                event = await ws.receive_json()
                if event.get("reply") is not None and event["type"] != "status":
                    events.append(event)
            assert events[-1]["type"] == "done", events
            assert events[-1]["text"] == "Hello from Gemini."
            await ws.send_json({"type": "ask", "channel": -1, "text": "and again?", "id": "b"})
            while (event := await ws.receive_json())["type"] not in ("done", "error"):
                pass
        first, second = gemini.requests
        assert first.has_api_key(KEY) and first.model == "gemini-2.5-flash"
        assert (first.question_text() or "").endswith("hi there")
        assert second.roles() == ["user", "model", "user"]  # the channel's own history
        assert second.texts("model") == ["Hello from Gemini."]
