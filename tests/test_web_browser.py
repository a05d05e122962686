"""The web chat in a real headless Chromium (Debian's `chromium`, driven by Playwright): a reply
grows on the page, Stop keeps the text so far, a reload shows the stored history, attached
files go with the question, a voice message recorded in the page is a question, the model's
status shows while it thinks, and its code's images show under the answer (after a reload too).

Set GEMCORD_SKIP_BROWSER=1 to skip it (scripts/test installs the browser otherwise)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.web_server import chat_page, web_server

if os.environ.get("GEMCORD_SKIP_BROWSER") == "1":
    pytest.skip(
        "BROWSER TEST SKIPPED: GEMCORD_SKIP_BROWSER=1 (the web chat is untested in a browser)",
        allow_module_level=True,
    )

QUESTION = "Show me a long answer please"


async def test_the_chat_page_streams_stops_and_remembers(tmp_path: Path) -> None:
    async with web_server(tmp_path / "w.db") as url, chat_page(url) as page:
        await page.fill("#text", QUESTION)
        await page.press("#text", "Enter")
        body = page.locator(".msg.model.live .body")
        seen: list[str] = []
        while len(seen) < 3:  # the text grows on the page in at least three steps
            await page.wait_for_function(
                "(n) => { const b = document.querySelector('.msg.model.live .body');"
                " return b && b.innerText.length > n; }",
                arg=len(seen[-1]) if seen else 0,
            )
            seen.append(await body.inner_text())
        assert seen[0] != seen[1] != seen[2]
        await page.click(".msg.model .stop")
        await page.wait_for_selector(".msg.model.stopped")
        stopped = page.locator(".msg.model.stopped")
        assert "stopped" in await stopped.locator(".state").inner_text()
        kept = await stopped.locator(".body").inner_text()
        # the text so far stays (Markdown stopped before its closing `*` shows the marks)
        assert kept.replace("*", "").startswith("This is the demo model")
        assert "paragraph 60 of 60" not in kept
        await page.screenshot(path=str(tmp_path / "web-chat.png"))

        await page.reload()
        await page.wait_for_selector(".msg.user")
        assert await page.locator(".msg.user .body").inner_text() == QUESTION
        remembered = page.locator(".msg.model").last
        assert "stopped" in await remembered.locator(".state").inner_text()
        assert "demo model" in await remembered.locator(".body").inner_text()
        assert (tmp_path / "web-chat.png").stat().st_size > 0


def _png() -> bytes:
    """A small real PNG."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (40, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def test_the_chat_page_sends_an_attached_image(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with web_server(tmp_path / "w.db") as url, chat_page(url) as page:
        png = _png()
        await page.set_input_files(
            "#files",
            files=[
                {"name": "blue.png", "mimeType": "image/png", "buffer": png},
                {"name": "extra.png", "mimeType": "image/png", "buffer": png},
            ],
        )
        await expect(page.locator(".preview")).to_have_count(2)
        await page.click(".preview:has-text('extra.png') .remove")
        await expect(page.locator(".preview span")).to_have_text(["blue.png"])
        await page.fill("#text", "What colour is this?")
        await page.press("#text", "Enter")
        await expect(page.locator(".preview")).to_have_count(0)  # cleared once sent
        await expect(page.locator(".msg.user .files")).to_have_text("📎 blue.png")
        await page.wait_for_selector(".msg.model.complete")
        reply = await page.locator(".msg.model.complete .body").inner_text()
        assert "What colour is this?” (+1 image)" in reply

        await page.reload()
        await expect(page.locator(".msg.user .files")).to_have_text("📎 blue.png")


async def test_the_chat_page_sends_any_file_shows_the_status_and_code_images(
    tmp_path: Path,
) -> None:
    """With Gemini (the fake): a PDF and a code file go with the question; while the model
    thinks the page shows its status line apart from the answer; the code's image is shown."""
    from playwright.async_api import expect

    from tests.fakes.gemini import FakeGemini, Reply, code_part, image_part
    from tests.test_e2e_files import PY, pdf

    key = "web-browser-key-0123456789"
    figure = _png()
    held = asyncio.Event()
    paper = pdf()
    async with FakeGemini(api_key=key) as gemini:
        gemini.script(
            Reply(
                thoughts=["**Reading the paper**\nIt is short."], chunks=["Both read."], hold=held
            ),
            Reply(chunks=[code_part("draw()"), image_part(figure), "Drawn."]),
        )
        env = {"GEMINI_API_KEY": key, "GEMINI_BASE_URL": gemini.base_url}
        async with (
            web_server(tmp_path / "w.db", demo=False, **env) as url,
            chat_page(url) as page,
        ):
            await page.set_input_files(
                "#files",
                files=[
                    {"name": "paper.pdf", "mimeType": "application/pdf", "buffer": paper},
                    {"name": "greet.py", "mimeType": "text/x-python", "buffer": PY},
                ],
            )
            await expect(page.locator(".preview .icon")).to_have_text(["📕", "📄"])
            await page.fill("#text", "Compare these")
            await page.press("#text", "Enter")
            await expect(page.locator(".msg.user .files")).to_have_text("📎 paper.pdf, greet.py")
            status = page.locator(".msg.model.live .state.live-status")
            await expect(status).to_have_text("💭 Reading the paper…")
            assert await page.locator(".msg.model.live .body").inner_text() == ""
            held.set()
            await page.wait_for_selector(".msg.model.complete")
            done = page.locator(".msg.model.complete")
            assert await done.locator(".body").inner_text() == "Both read."
            assert await done.locator(".state").inner_text() == ""
            request = gemini.requests[0]
            inline = request.image_parts("user", last_turn_only=True)
            assert [(p.mime_type, p.data) for p in inline] == [("application/pdf", paper)]
            assert "[file greet.py]\n" + PY.decode() in request.texts("user")

            await page.fill("#text", "Draw it")
            await page.press("#text", "Enter")
            await expect(page.locator(".msg.model.complete")).to_have_count(2)
            drawn = page.locator(".msg.model.complete").last
            await expect(drawn.locator(".figures img")).to_have_count(1)
            src = await drawn.locator(".figures img").get_attribute("src")
            assert src == "data:image/png;base64," + base64.b64encode(figure).decode()
            assert (await drawn.locator(".body").inner_text()).endswith("Drawn.")

            await page.reload()  # the stored reply shows its image again
            await expect(page.locator(".msg.model")).to_have_count(2)
            again = page.locator(".msg.model").last
            await expect(again.locator(".figures img")).to_have_count(1)
            assert await again.locator(".figures img").get_attribute("src") == src


async def test_a_voice_message_recorded_in_the_page_is_a_question(tmp_path: Path) -> None:
    """Chromium's fake microphone: 🎤 records, ⏹ stops; the recording is attached as a WAV
    file named like Discord's voice messages and sent alone; the store keeps it."""
    from playwright.async_api import expect

    from storage import open_store

    async with web_server(tmp_path / "w.db") as url, chat_page(url, microphone=True) as page:
        await page.click("#record")
        await expect(page.locator("#record")).to_have_text("⏹ 2 s", timeout=15_000)
        await page.click("#record")
        name = page.locator(".preview span")
        await expect(name).to_have_text(re.compile(r"voice message \(\d s\)"))
        recorded = await name.inner_text()
        await page.click("#send")  # no text: the recording is the question
        await page.wait_for_selector(".msg.model.complete")
        reply = await page.locator(".msg.model.complete .body").inner_text()
        assert f"(sent: {recorded})” (+1 file)" in reply
        await expect(page.locator(".msg.user .files")).to_have_text("📎 " + recorded)
    store = await open_store(tmp_path / "w.db")
    try:
        (question, _) = await store.load_history(-1)
    finally:
        await store.close()
    (voice,) = question.images
    assert (voice.name, voice.mime_type) == (recorded, "audio/wav")
    assert voice.data is not None and voice.data[:4] == b"RIFF" and voice.data[8:12] == b"WAVE"
    assert len(voice.data) > 44 + 2 * 16000  # over a second of 16 kHz, 16-bit samples


async def test_the_settings_panel_changes_the_channel_s_next_answer(tmp_path: Path) -> None:
    """With Gemini (the fake): ⚙ Settings shows #code's settings; turning search on there is
    said in the panel and the next question's request carries Google Search and the model chosen
    there (a model Gemini does not have is refused in the panel); #general keeps its own."""
    from playwright.async_api import expect

    from tests.fakes.gemini import FakeGemini

    key, token = "web-browser-key-0123456789", "web-token-0123456789"
    async with FakeGemini(api_key=key) as gemini:
        env = {"GEMINI_API_KEY": key, "GEMINI_BASE_URL": gemini.base_url}
        async with (
            web_server(tmp_path / "w.db", demo=False, GEMCORD_WEB_TOKEN=token, **env) as url,
            chat_page(url, f"/?token={token}#-2") as page,  # the panel sends the token too
        ):
            await expect(page.locator("#channel-title")).to_have_text("# code")
            await expect(page.locator("#settings")).to_be_hidden()
            await page.click("#settings-toggle")
            search = page.locator("#setting-search")
            await expect(search).to_have_value("off")
            await expect(page.locator("#setting-model")).to_have_attribute(
                "placeholder", "gemini-2.5-flash (default)"
            )
            await search.select_option("on")
            note = page.locator("#settings-note")
            await expect(note).to_have_text("search is now on in this channel.")
            await expect(note.locator("code")).to_have_text(["search", "on"])

            await page.fill("#setting-model", "gemini-9-ultra")
            await page.click("form[data-name=model] button")
            await expect(note).to_contain_text("⚠ Gemini has no model called gemini-9-ultra.")
            await expect(note).to_have_class("settings-note error")
            await expect(page.locator("#setting-model")).to_have_value("gemini-9-ultra")
            await expect(page.locator("#model")).to_have_text("Model: gemini-2.5-flash")
            await page.fill("#setting-model", "gemini-2.5-pro")
            await page.press("#setting-model", "Enter")
            await expect(note).to_have_text("This channel now uses gemini-2.5-pro.")
            await expect(page.locator("#model")).to_have_text("Model: gemini-2.5-pro")

            await page.fill("#text", "What is new today?")
            await page.press("#text", "Enter")
            await page.wait_for_selector(".msg.model.complete")
            (request,) = [r for r in gemini.requests if r.streaming]
            assert "googleSearch" in request.tools()
            assert request.model == "gemini-2.5-pro"

            await page.click("#channel-list button:has-text('general')")
            await expect(page.locator("#setting-search")).to_have_value("off")
            await expect(page.locator("#model")).to_have_text("Model: gemini-2.5-flash")
            await expect(note).to_have_text("")
            await page.click("#channel-list button:has-text('code')")
            await expect(page.locator("#setting-search")).to_have_value("on")
