"""`gemcord web`: the WebSocket protocol of the chat page, against the real command (demo model)
in a subprocess on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import itertools
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.web.chat import MAX_MESSAGE_BYTES
from tests.web_server import ROOT, web_env, web_server

END = ("done", "stopped", "error")
MB = 1024 * 1024
SMALL_CAPS = {
    "GEMCORD_MAX_IMAGE_MB": "0.01",
    "GEMCORD_MAX_REQUEST_MB": "0.02",
    "GEMCORD_MAX_TEXT_MB": "0.01",
    "GEMCORD_MAX_PDF_MB": "0.01",
    "GEMCORD_MAX_AUDIO_MB": "0.01",
    "GEMCORD_MAX_VIDEO_MB": "0.05",
}
"""Upload caps small enough to test: 10 KiB per image, 20 KiB of images per question, 50 KiB
per video (the largest file, under the 64 KiB of a question's text message)."""


def _png(size: int = 8) -> bytes:
    """A small real PNG."""
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def _file(name: str, data: bytes, kind: str = "image/png") -> tuple[dict[str, Any], bytes]:
    """One ``files`` entry as the page lists it, and the bytes it sends after the ask."""
    return {"name": name, "type": kind, "size": len(data)}, data


async def _ask_with_files(
    ws: aiohttp.ClientWebSocketResponse,
    text: str,
    files: list[tuple[dict[str, Any], bytes]],
    channel: int = -1,
) -> tuple[str | None, list[dict]]:
    """Ask with files as the page does (the ask, then each file's bytes as a binary message);
    the reply id (None: not asked) and the error events about the question."""
    entries = [entry for entry, _ in files]
    ask = {"type": "ask", "channel": channel, "text": text, "id": "f1", "files": entries}
    await ws.send_json(ask)
    for _, data in files:
        await ws.send_bytes(data)
    errors = []
    while True:
        event = await ws.receive_json()
        if event["type"] == "error" and event.get("id") == "f1":
            errors.append(event)
            if "file" not in event:  # about the question itself: it was not asked
                return None, errors
        elif event["type"] == "status" and event.get("id") == "f1":
            return event["reply"], errors


async def _events_until_end(ws: aiohttp.ClientWebSocketResponse, reply: str) -> list[dict]:
    """Every event of one reply, up to its last one."""
    events: list[dict[str, Any]] = []
    while True:
        event = await ws.receive_json()
        if event.get("reply") == reply:
            events.append(event)
            if event["type"] in END:
                return events


async def _ask(ws: aiohttp.ClientWebSocketResponse, channel: int, text: str) -> str:
    """Send a question; the reply id the server gave it."""
    await ws.send_json({"type": "ask", "channel": channel, "text": text, "id": "q1"})
    while True:
        event = await ws.receive_json()
        if event["type"] == "status" and event.get("id") == "q1":
            assert event["state"] == "queued" and event["channel"] == channel
            return event["reply"]


async def _history(ws: aiohttp.ClientWebSocketResponse, channel: int) -> list[dict]:
    await ws.send_json({"type": "history", "channel": channel})
    while True:
        event = await ws.receive_json()
        if event["type"] == "history" and event["channel"] == channel:
            return event["turns"]


async def _connect(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url + "/ws")
    hello = await ws.receive_json()
    assert hello["type"] == "hello"
    return ws


async def test_a_reply_streams_in_steps_then_done_with_metrics(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        ws = await _connect(http, url)
        reply = await _ask(ws, -1, "What does **streaming** look like?")
        events = await _events_until_end(ws, reply)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "status" and events[0]["state"] == "thinking"
        (live,) = [e for e in events if e.get("state") == "live"]  # the demo's one thought
        assert live["line"] == "💭 Reading your question…"
        assert events.index(live) < kinds.index("chunk")
        chunks = [e["text"] for e in events if e["type"] == "chunk"]
        assert len(chunks) >= 3
        assert all(a != b for a, b in itertools.pairwise(chunks))
        assert chunks[-1].startswith(chunks[0])
        done = events[-1]
        assert done["type"] == "done" and "demo model" in done["text"]
        assert not any("Reading your question" in text for text in [*chunks, done["text"]])
        assert "What does **streaming** look like?" in done["text"]
        assert done["metrics"]["chunks"] >= 3 and done["metrics"]["total"] > 0
        assert done["metrics"]["first_chunk"] is not None
        turns = await _history(ws, -1)
        assert [(t["role"], t["status"]) for t in turns] == [
            ("user", "complete"),
            ("model", "complete"),
        ]
        assert turns[1]["text"] == done["text"]
        assert await _history(ws, -2) == []  # each channel its own history
        async with http.get(url + "/healthz") as health:
            assert health.status == 200
        async with http.get(url + "/metrics") as metrics:
            assert 'gemcord_replies_total{outcome="complete"} 1.0' in await metrics.text()
        await ws.close()


async def test_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        ws = await _connect(http, url)
        reply = await _ask(ws, -1, "show me an error")
        last = (await _events_until_end(ws, reply))[-1]
        assert last["type"] == "error" and "failed on purpose" in last["message"]
        assert (await _history(ws, -1))[-1]["status"] == "failed"
        await ws.send_json({"type": "ask", "channel": 12345, "text": "hi"})
        assert await ws.receive_json() == {
            "type": "error",
            "message": "There is no such channel.",
            "id": None,
        }
        await ws.send_json({"type": "ask", "channel": -1, "text": "x" * 8001, "id": "big"})
        event = await ws.receive_json()
        assert event["type"] == "error" and "too long" in event["message"]
        await ws.send_str("not json")
        assert (await ws.receive_json())["message"] == "That message was not JSON."
        await ws.send_str("x" * (70 * 1024))  # a question's text message is smaller
        assert (await ws.receive_json())["message"].startswith("That message is too large")
        await ws.send_bytes(b"stray")  # bytes outside a question are ignored
        await ws.send_json({"type": "history", "channel": -2})
        assert (await ws.receive_json())["type"] == "history"


async def test_two_clients_each_get_their_own_reply(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        one, two = await _connect(http, url), await _connect(http, url)
        r1 = await _ask(one, -1, "first client here")
        r2 = await _ask(two, -2, "second client here")
        e1, e2 = await asyncio.gather(_events_until_end(one, r1), _events_until_end(two, r2))
        assert e1[-1]["type"] == e2[-1]["type"] == "done"
        assert "first client here" in e1[-1]["text"] and "second client" not in e1[-1]["text"]
        assert "second client here" in e2[-1]["text"]
        assert all(e["channel"] == -1 for e in e1) and all(e["channel"] == -2 for e in e2)


async def test_stop_keeps_the_text_so_far(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        ws = await _connect(http, url)
        reply = await _ask(ws, -1, "a long answer please")
        while (await ws.receive_json())["type"] != "chunk":
            pass
        await ws.send_json({"type": "stop", "reply": reply})
        last = (await _events_until_end(ws, reply))[-1]
        assert last["type"] == "stopped" and last["text"].startswith("*This is")
        model = (await _history(ws, -1))[-1]
        assert model["status"] == "stopped" and model["text"] == last["text"]
        assert "paragraph 60 of 60" not in model["text"]


async def test_a_closed_socket_stops_its_reply(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        leaving = await _connect(http, url)
        await _ask(leaving, -3, "a long answer please")
        while (await leaving.receive_json())["type"] != "chunk":
            pass
        await leaving.close()
        watcher = await _connect(http, url)
        while True:  # until the reply is stored in its final state
            turns = await _history(watcher, -3)
            if len(turns) == 2 and turns[1]["status"] != "streaming":
                break
            await asyncio.sleep(0.05)
        assert turns[1]["status"] == "stopped"
        assert "paragraph 60 of 60" not in turns[1]["text"]


async def test_a_token_is_checked_on_the_page_and_the_socket(tmp_path: Path) -> None:
    token = "web-token-0123456789"
    db = tmp_path / "w.db"
    async with web_server(db, GEMCORD_WEB_TOKEN=token) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/") as page:
            assert page.status == 401 and "token" in await page.text()
        async with http.get(url + "/?token=wrong") as page:
            assert page.status == 401
        async with http.get(url + f"/?token={token}") as page:
            assert page.status == 200 and "chat.js" in await page.text()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "/ws?token=wrong")
        assert refused.value.status == 401
        ws = await http.ws_connect(url + f"/ws?token={token}")
        assert (await ws.receive_json())["type"] == "hello"
        await ws.close()


async def test_the_socket_checks_the_origin(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "/ws", headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403
        ws = await http.ws_connect(url + "/ws", headers={"Origin": url})
        assert (await ws.receive_json())["type"] == "hello"
        await ws.close()


async def test_serving_beyond_localhost_needs_a_token(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "web",
        "--demo",
        "--host",
        "0.0.0.0",
        "--env-file",
        "/dev/null",
        cwd=ROOT,
        env=web_env(tmp_path / "w.db"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "GEMCORD_WEB_TOKEN" in err.decode() and "127.0.0.1" in err.decode()


async def test_an_attached_image_reaches_the_model(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, aiohttp.ClientSession() as http:
        ws = await _connect(http, url)
        reply, errors = await _ask_with_files(
            ws, "What is in this picture?", [_file("red.png", _png())]
        )
        assert errors == []
        done = (await _events_until_end(ws, reply))[-1]
        assert done["type"] == "done"
        assert "What is in this picture?” (+1 image)" in done["text"]
        user = (await _history(ws, -1))[0]
        assert user["role"] == "user" and user["files"] == ["red.png"]
        await ws.close()


async def test_refused_files_get_a_sentence_and_the_question_still_goes(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    async with web_server(db, **SMALL_CAPS) as url, aiohttp.ClientSession() as http:
        ws = await _connect(http, url)
        big = _png() + bytes(int(0.02 * MB) - len(_png()))  # the whole question's allowance
        files = [
            _file("notes.txt", b"just some text", "text/plain"),
            _file("good.png", _png()),
            _file("big.png", big),
            _file("data.bin", bytes(range(256)) * 4, ""),
            ({"name": "huge.mp4", "type": "video/mp4", "size": 200 * MB}, b""),  # not sent
        ]
        reply, errors = await _ask_with_files(ws, "Look at these", files)
        assert reply is not None
        sentences = {e["file"]: e["message"] for e in errors}
        assert list(sentences) == ["big.png", "data.bin", "huge.mp4"]
        assert all(e["channel"] == -1 and "reply" not in e for e in errors)
        # the sentences Discord's intake gives
        assert sentences["big.png"] == "`big.png` is 20 KB; the limit is 10 KB per image."
        assert sentences["data.bin"].startswith("`data.bin` is not a kind of file I can read (")
        assert sentences["huge.mp4"] == "`huge.mp4` is 200 MB; the limit is 51 KB per video."
        done = (await _events_until_end(ws, reply))[-1]
        assert done["type"] == "done" and "Look at these” (+1 image, +1 file)" in done["text"]
        user = (await _history(ws, -1))[0]
        assert user["files"] == ["notes.txt", "good.png"]

        # every file refused: the question is not asked, as on Discord
        reply, errors = await _ask_with_files(ws, "Only this", [_file("a.bin", b"\x00\x01")])
        assert reply is None
        assert [e.get("file") for e in errors] == ["a.bin", None]
        assert errors[-1]["message"] == (
            "So I didn't ask Gemini: try again with a file I can read, or without the file."
        )
        assert len(await _history(ws, -1)) == 2

        # a file alone is a question (as a voice message is on Discord)
        reply, errors = await _ask_with_files(ws, "", [_file("todo.md", b"- buy milk\n")])
        assert reply is not None and errors == []
        done = (await _events_until_end(ws, reply))[-1]
        assert done["type"] == "done" and "(sent: todo.md)” (+1 file)" in done["text"]

        # a question whose files never come is refused in one sentence
        await ws.send_json({"type": "ask", "channel": -1, "text": "hm", "id": "f1", "files": [{}]})
        await ws.send_json({"type": "history", "channel": -1})
        event = await ws.receive_json()
        assert event["message"] == "The files of that question did not arrive: try again."
        await ws.send_json({"type": "history", "channel": -1})  # the socket goes on
        assert (await ws.receive_json())["type"] == "history"

        await ws.send_bytes(bytes(MAX_MESSAGE_BYTES + 1))  # beyond the bound: the socket closes
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
