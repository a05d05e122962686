"""The web chat's settings panel (`GET`/`POST /settings`), against the real `gemcord web` in a
subprocess: a change is checked and stored as Discord's `/settings set` does it (the same
function), and the channel's next request to Gemini (the fake) carries it; a bad value is refused
with one sentence and changes nothing; the page's token and origin rule hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage import open_store
from tests.fakes.gemini import FakeGemini, RecordedRequest
from tests.web_server import web_server

pytestmark = pytest.mark.timeout(120)

KEY = "web-settings-key-0123456789"
GENERAL, CODE = -1, -2
OFFERED = ["persona", "model", "thinking", "search", "links", "code"]


@asynccontextmanager
async def web_chat(tmp_path: Path) -> AsyncIterator[tuple[FakeGemini, str, aiohttp.ClientSession]]:
    """The fake Gemini, `gemcord web` talking to it (its URL), and an HTTP session."""
    async with FakeGemini(api_key=KEY) as gemini:
        env = {"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": gemini.base_url}
        async with (
            web_server(tmp_path / "w.db", demo=False, **env) as url,
            aiohttp.ClientSession() as http,
        ):
            yield gemini, url, http


async def change(
    http: aiohttp.ClientSession, url: str, body: Any, **headers: str
) -> tuple[int, dict[str, Any]]:
    """POST /settings as the page does; the status and the JSON answer."""
    async with http.post(url + "/settings", json=body, headers=headers) as response:
        return response.status, await response.json()


async def shown(http: aiohttp.ClientSession, url: str, channel: int) -> dict[str, dict[str, Any]]:
    """The channel's settings as the panel lists them, by name."""
    async with http.get(url + f"/settings?channel={channel}") as response:
        assert response.status == 200
        body = await response.json()
    assert [s["name"] for s in body["settings"]] == OFFERED
    return {s["name"]: s for s in body["settings"]}


async def ask(
    gemini: FakeGemini, url: str, http: aiohttp.ClientSession, channel: int
) -> RecordedRequest:
    """Ask a question in the channel over the page's WebSocket; the request Gemini received."""
    before = len(gemini.requests)
    async with http.ws_connect(url + "/ws") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await ws.send_json({"type": "ask", "channel": channel, "text": "hello there", "id": "q"})
        while (event := await ws.receive_json())["type"] not in ("done", "stopped", "error"):
            pass
        assert event["type"] == "done", event
    streamed = [r for r in gemini.requests[before:] if r.streaming]
    assert len(streamed) == 1
    return streamed[0]


async def test_a_change_in_the_panel_is_stored_and_used_by_the_next_answer(
    tmp_path: Path,
) -> None:
    async with web_chat(tmp_path) as (gemini, url, http):
        before = await shown(http, url, CODE)
        assert {n: (s["value"], s["own"]) for n, s in before.items()} == {
            "persona": ("", None),
            "model": ("gemini-2.5-flash", None),
            "thinking": ("auto", None),
            "search": ("off", None),
            "links": ("on", None),
            "code": ("off", None),
        }
        assert before["search"]["choices"] == ["off", "on"]

        status, body = await change(http, url, {"channel": CODE, "name": "search", "value": "on"})
        assert (status, body["ok"]) == (200, True)
        assert body["message"] == "`search` is now `on` in this channel."
        listed = {s["name"]: s for s in body["settings"]}
        assert (listed["search"]["value"], listed["search"]["own"]) == ("on", "on")
        for name, value in [
            ("code", "ON"),
            ("model", "models/gemini-3-pro-preview"),
            ("thinking", "high"),
            ("persona", "You are a pirate called {name}."),
        ]:
            status, body = await change(http, url, {"channel": CODE, "name": name, "value": value})
            assert (status, body["ok"]) == (200, True), body
        assert body["message"] == "Persona updated for this channel."
        now = await shown(http, url, CODE)
        assert now["model"]["value"] == "gemini-3-pro-preview"  # as Discord stores it
        assert now["code"]["value"] == "on"

        coded = await ask(gemini, url, http, CODE)
        assert coded.model == "gemini-3-pro-preview"
        assert "googleSearch" in coded.tools() and "codeExecution" in coded.tools()
        assert (coded.thinking_config() or {})["thinkingLevel"].upper() == "HIGH"
        assert (coded.system_instruction() or "").startswith("You are a pirate called gemcord.")

        general = await ask(gemini, url, http, GENERAL)  # another channel keeps its defaults
        assert general.model == "gemini-2.5-flash"
        assert general.tools() == []
        assert "pirate" not in (general.system_instruction() or "")

        status, body = await change(
            http, url, {"channel": CODE, "name": "search", "value": "default"}
        )
        assert (status, body["message"]) == (200, "`search` is now `off` in this channel.")
        again = await ask(gemini, url, http, CODE)
        assert "googleSearch" not in again.tools() and "codeExecution" in again.tools()

    store = await open_store(tmp_path / "w.db")
    try:
        kept = await store.get_channel_settings(CODE)
    finally:
        await store.close()
    assert (kept.search, kept.code, kept.model) == (None, "on", "gemini-3-pro-preview")


async def test_a_refused_value_is_said_and_changes_nothing(tmp_path: Path) -> None:
    async with web_chat(tmp_path) as (gemini, url, http):
        refused = [
            (
                {"channel": GENERAL, "name": "thinking", "value": "loud"},
                "`thinking` can be `auto`, `off`, `low`, `medium`, `high` or `default`.",
            ),
            (
                {"channel": GENERAL, "name": "model", "value": "gemini-9-ultra"},
                "Gemini has no model called `gemini-9-ultra`. Try ",
            ),
            (
                {"channel": GENERAL, "name": "model", "value": "gemini-embedding-001"},
                "`gemini-embedding-001` can't chat",
            ),
            (
                {"channel": GENERAL, "name": "model", "value": "not a model!"},
                "That is not a model name",
            ),
            (
                {"channel": GENERAL, "name": "persona", "value": "x" * 2001},
                "A persona can be at most 2000 characters.",
            ),
            (
                {"channel": GENERAL, "name": "auto_thread", "value": "on"},
                "The web chat can change `persona`, `model`, `thinking`, `search`, `links`, "
                "`code`.",
            ),
            (
                {"channel": GENERAL, "name": "search", "value": True},
                "A value for `search` is text.",
            ),
            ({"channel": 1234567890, "name": "search", "value": "on"}, "There is no such channel."),
            ({"channel": "-1", "name": "search", "value": "on"}, "There is no such channel."),
            (["search", "on"], "Send the channel, the setting's name and its value."),
        ]
        for body, sentence in refused:
            status, answer = await change(http, url, body)
            assert status == 400 and answer["ok"] is False, (body, answer)
            assert answer["message"].startswith(sentence), answer["message"]
            if "settings" in answer:  # the panel shows what is still in force
                listed = {s["name"]: s["value"] for s in answer["settings"]}
                assert listed["thinking"] == "auto" and listed["model"] == "gemini-2.5-flash"
        async with http.post(url + "/settings", data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["message"] == "That request was not JSON."
        huge = {"channel": GENERAL, "name": "persona", "value": "x" * 2 * 1024 * 1024}
        async with http.post(url + "/settings", json=huge) as response:
            assert response.status == 413
            assert (await response.json())["message"] == "That request is too large for a setting."
        async with http.get(url + "/settings?channel=general") as response:
            assert response.status == 400
            assert (await response.json())["message"] == "There is no such channel."

        assert all(s["own"] is None for s in (await shown(http, url, GENERAL)).values())
        request = await ask(gemini, url, http, GENERAL)  # the chat still answers, as before
        assert request.model == "gemini-2.5-flash" and request.tools() == []
    store = await open_store(tmp_path / "w.db")
    try:
        for channel in (GENERAL, 1234567890):
            own = await store.get_channel_settings(channel)
            assert (own.thinking, own.model, own.persona, own.search, own.auto_thread) == (
                None,
                None,
                None,
                None,
                None,
            )
    finally:
        await store.close()


async def test_the_settings_need_the_token_and_the_page_s_origin(tmp_path: Path) -> None:
    token = "web-token-0123456789"
    body = {"channel": GENERAL, "name": "search", "value": "on"}
    async with (
        web_server(tmp_path / "w.db", GEMCORD_WEB_TOKEN=token) as url,
        aiohttp.ClientSession() as http,
    ):
        for query in ("", "&token=wrong"):
            async with http.get(url + f"/settings?channel={GENERAL}{query}") as response:
                assert response.status == 401
                assert (await response.json())["message"] == "This chat needs its token."
        for query in ("", "?token=wrong"):
            async with http.post(url + "/settings" + query, json=body) as response:
                assert response.status == 401
        async with http.post(  # a page elsewhere, even one that knows the token
            url + f"/settings?token={token}", json=body, headers={"Origin": "http://evil.example"}
        ) as response:
            assert response.status == 403
            assert "own page" in (await response.json())["message"]

        async with http.get(url + f"/settings?channel={GENERAL}&token={token}") as response:
            assert response.status == 200
            shown_ = await response.json()
        # the demo model has no models to choose from, and ignores the rest (the page says so)
        assert [s["name"] for s in shown_["settings"]] == [n for n in OFFERED if n != "model"]
        assert "demo model ignores" in shown_["message"]
        async with http.post(
            url + f"/settings?token={token}", json=body, headers={"Origin": url}
        ) as response:
            assert response.status == 200
            assert (await response.json())["message"] == "`search` is now `on` in this channel."
        model = {"channel": GENERAL, "name": "model", "value": "gemini-2.5-pro"}
        async with http.post(url + f"/settings?token={token}", json=model) as response:
            assert response.status == 400
            assert (await response.json())["message"].startswith("The web chat can change")
    store = await open_store(tmp_path / "w.db")
    try:
        own = await store.get_channel_settings(GENERAL)
    finally:
        await store.close()
    assert (own.search, own.model) == ("on", None)
