"""End to end: the web chat (`gemcord web` with a key, in a subprocess) through the fake Gemini
(real google-genai, Files API included): every kind of file the Discord bot reads, the live
status line, and the images the model's code draws.

Each test checks what Gemini received (parts, inline bytes, file URIs, tools), what the page was
sent over its WebSocket, and what the store holds.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from storage import Turn, open_store
from tests.fakes.gemini import FakeGemini, Reply, code_part, image_part, output_part
from tests.fakes.gemini_files import file_parts
from tests.test_e2e_files import CSV, PY, mp3, mp4, ogg, pdf
from tests.web_server import web_server

pytestmark = pytest.mark.timeout(120)

KEY = "web-files-key-0123456789"
END = ("done", "stopped", "error")
GENERAL = -1


def png(colour: tuple[int, int, int] = (30, 160, 90)) -> bytes:
    """A small real PNG."""
    out = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(out, format="PNG")
    return out.getvalue()


@asynccontextmanager
async def web_chat(
    tmp_path: Path, **env: str
) -> AsyncIterator[tuple[FakeGemini, aiohttp.ClientWebSocketResponse]]:
    """The fake Gemini, and a page's WebSocket to `gemcord web` talking to it."""
    async with FakeGemini(api_key=KEY) as gemini:
        settings = {"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": gemini.base_url, **env}
        async with (
            web_server(tmp_path / "w.db", demo=False, **settings) as url,
            aiohttp.ClientSession() as http,
            http.ws_connect(url + "/ws") as ws,
        ):
            assert (await ws.receive_json())["type"] == "hello"
            yield gemini, ws


async def ask(
    ws: aiohttp.ClientWebSocketResponse, text: str, files: list[tuple[str, str, bytes]] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Ask in #general as the page does: the ask listing (name, type, bytes) files, then each
    file's bytes as a binary message. The errors about the question, and its reply's events."""
    listed = [{"name": n, "type": t, "size": len(d)} for n, t, d in files]
    await ws.send_json(
        {"type": "ask", "channel": GENERAL, "text": text, "id": "q", "files": listed}
    )
    for _, _, data in files:
        await ws.send_bytes(data)
    errors: list[dict[str, Any]] = []
    reply = None
    events: list[dict[str, Any]] = []
    while True:
        event = await ws.receive_json()
        if reply is None and event.get("id") == "q":
            if event["type"] == "error":
                errors.append(event)
            elif event["type"] == "status":
                reply = event["reply"]
        elif reply is not None and event.get("reply") == reply:
            events.append(event)
            if event["type"] in END:
                return errors, events


async def stored(tmp_path: Path) -> list[Turn]:
    """#general's turns as the store holds them (files with their bytes)."""
    store = await open_store(tmp_path / "w.db")
    try:
        return await store.load_history(GENERAL, max_tokens=1_000_000)
    finally:
        await store.close()


def user_parts(request: Any) -> list[dict[str, Any]]:
    """The parts of the request's newest user turn, as sent."""
    return request.contents()[-1]["parts"]


async def test_every_kind_of_file_reaches_gemini_and_the_store(tmp_path: Path) -> None:
    paper, voice, song, clip = pdf(), ogg(), mp3(), mp4(200_000)
    files = [
        ("greet.py", "text/x-python", PY),
        ("cities.csv", "text/csv", CSV),
        ("paper.pdf", "application/pdf", paper),
        ("voice.ogg", "audio/ogg", voice),
        ("song.mp3", "audio/mpeg", song),
        ("clip.mp4", "video/mp4", clip),
        ("blob.bin", "", bytes(range(256)) * 8),
    ]
    async with web_chat(tmp_path) as (gemini, ws):
        gemini.script(Reply(chunks=["I read ", "all of them."]))
        errors, events = await ask(ws, "what are these?", files)

        # the one file nobody can read gets Discord's sentence; the others go
        assert [(e["file"], e["message"]) for e in errors] == [
            (
                "blob.bin",
                "`blob.bin` is not a kind of file I can read (images, text and code, PDF, "
                "audio (MP3, WAV, OGG, M4A/AAC, FLAC) and video (MP4, WebM, MOV)).",
            )
        ]
        assert events[-1]["type"] == "done" and events[-1]["text"] == "I read all of them."

        request = gemini.requests[0]
        parts = user_parts(request)
        texts = [p["text"] for p in parts if "text" in p]
        assert texts[:3] == [
            "[you] what are these?",
            "[file greet.py]\n" + PY.decode(),
            "[file cities.csv]\n" + CSV.decode(),
        ]
        inline = [(i.mime_type, i.data) for i in request.image_parts("user", last_turn_only=True)]
        assert inline == [("application/pdf", paper), ("audio/ogg", voice), ("audio/mp3", song)]
        (upload,) = gemini.files.uploads()  # the video through the Files API, processed
        assert upload.data == clip and upload.mime_type == "video/mp4"
        assert [(p.uri, p.mime_type) for p in file_parts(request)] == [(upload.uri, "video/mp4")]

        await ws.send_json({"type": "history", "channel": GENERAL})
        history = await ws.receive_json()
        assert history["turns"][0]["files"] == [n for n, _, _ in files[:-1]]

    question, answer = await stored(tmp_path)
    assert [(f.name, f.mime_type, f.data) for f in question.images] == [
        ("greet.py", "text/plain", PY),
        ("cities.csv", "text/plain", CSV),
        ("paper.pdf", "application/pdf", paper),
        ("voice.ogg", "audio/ogg", voice),
        ("song.mp3", "audio/mp3", song),
        ("clip.mp4", "video/mp4", clip),
    ]
    assert (answer.status, answer.text) == ("complete", "I read all of them.")


async def test_limits_and_notes_are_the_discord_ones(tmp_path: Path) -> None:
    env = {"GEMCORD_MAX_TEXT_CHARS": "1000", "GEMCORD_MAX_PDF_MB": "0.01"}
    log = "".join(f"2026-11-27 12:00:{i % 60:02d} INFO step {i}\n" for i in range(400))
    async with web_chat(tmp_path, **env) as (gemini, ws):
        gemini.script(Reply(chunks=["No errors."]), Reply(chunks=["You asked about a song."]))
        big = pdf(pad=20_000)
        errors, events = await ask(
            ws, "any errors?", [("app.log", "", log.encode()), ("big.pdf", "", big)]
        )
        assert [e["message"] for e in errors] == ["`big.pdf` is 20 KB; the limit is 10 KB per PDF."]
        note = f"-# ✂ `app.log` is long: I read its first 1,000 characters of {len(log):,}."
        assert events[-1]["text"] == "No errors.\n\n" + note  # under the answer, as on Discord
        sent = user_parts(gemini.requests[0])[1]["text"]
        assert sent.startswith("[file app.log]\n" + log[:1000])
        assert f"the first 1,000 of {len(log):,} characters" in sent
        assert not gemini.requests[0].image_parts()

        # an audio file alone is a question (as a voice message is on Discord)
        song = mp3()
        errors, events = await ask(ws, "", [("question.mp3", "audio/mpeg", song)])
        assert errors == [] and events[-1]["text"] == "You asked about a song."
        request = gemini.requests[1]
        assert user_parts(request)[0]["text"] == "[you] (sent: question.mp3)"
        assert request.image_parts("user", last_turn_only=True)[0].data == song

        # no usable file: not asked, and nothing stored
        errors, _ = await ask_refused(ws, [("huge.pdf", "application/pdf", big)])
        assert errors[-1]["message"].startswith("So I didn't ask Gemini")
        assert len(gemini.requests) == 2

    turns = await stored(tmp_path)
    assert [t.role for t in turns] == ["user", "model", "user", "model"]
    assert turns[1].text == "No errors."  # the model's text: the note is shown, not stored
    assert [f.name for f in turns[2].images] == ["question.mp3"]


async def ask_refused(
    ws: aiohttp.ClientWebSocketResponse, files: list[tuple[str, str, bytes]]
) -> tuple[list[dict[str, Any]], None]:
    """Ask with files none of which can be used: the error events, up to the question's own."""
    listed = [{"name": n, "type": t, "size": len(d)} for n, t, d in files]
    await ws.send_json({"type": "ask", "channel": GENERAL, "text": "", "id": "r", "files": listed})
    for _, _, data in files:
        await ws.send_bytes(data)
    errors = []
    while True:
        event = await ws.receive_json()
        assert event["type"] == "error" and event["id"] == "r", event
        errors.append(event)
        if "file" not in event:
            return errors, None


async def test_the_status_line_is_live_and_code_images_are_shown(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "w.db")
    await store.set_setting(GENERAL, "code", "on")
    await store.close()
    figure = png()
    async with web_chat(tmp_path) as (gemini, ws):
        gemini.script(
            Reply(
                thoughts=["**Planning the *plot***\nI will draw it.", "**Drawing it**\nNow."],
                chunks=[
                    code_part("plot()"),
                    output_part("done"),
                    image_part(figure),
                    "Here is the plot.",
                ],
            )
        )
        errors, events = await ask(ws, "draw me a plot")
        assert errors == []
        request = gemini.requests[0]
        assert "codeExecution" in request.tools()

        kinds = [(e["type"], e.get("state")) for e in events]
        first_chunk = kinds.index(("chunk", None))
        lines = [e["line"] for e in events if e.get("state") == "live"]
        assert lines == ["💭 Planning the plot…", "💭 Drawing it…"]  # without "-# " for the page
        assert all(i < first_chunk for i, k in enumerate(kinds) if k == ("status", "live"))
        shown = [e["text"] for e in events if e["type"] in ("chunk", "done")]
        assert shown and not any("💭" in text for text in shown)  # never text of the answer
        done = events[-1]
        assert done["type"] == "done"
        assert done["text"].startswith("```python\nplot()\n```\n")
        assert done["text"].endswith("Here is the plot.")

        (images,) = [e for e in events if e["type"] == "files"]
        assert kinds.index(("files", None)) < len(kinds) - 1  # before the final event
        assert [(f["name"], f["type"]) for f in images["files"]] == [("figure-1.png", "image/png")]
        assert base64.b64decode(images["files"][0]["data"]) == figure

        # a reload shows the image again, under the reply as when it was drawn
        await ws.send_json({"type": "history", "channel": GENERAL})
        history = await ws.receive_json()
        asked, answered = history["turns"]
        assert (asked["files"], asked["figures"]) == ([], [])
        assert (answered["files"], answered["figures"]) == ([], images["files"])

    _, answer = await stored(tmp_path)
    assert (answer.status, answer.text) == ("complete", done["text"])
    assert [p.kind for p in answer.parts] == ["thought", "code", "output", "image", "text"]
    assert [(f.name, f.data) for f in answer.images] == [("figure-1.png", figure)]


async def test_a_file_whose_upload_fails_is_named_under_the_answer(tmp_path: Path) -> None:
    async with web_chat(tmp_path) as (gemini, ws):
        gemini.files.fail.add("bad.mp4")
        gemini.script(Reply(chunks=["Without the clip."]))
        errors, events = await ask(ws, "what happens?", [("bad.mp4", "video/mp4", mp4(70_000))])
        assert errors == []
        assert events[-1]["text"] == (
            "Without the clip.\n\n-# ⚠ Gemini could not read `bad.mp4`, so I answered without it."
        )
        assert "(not shown: bad.mp4, 68 KB)" in gemini.requests[0].texts("user")
