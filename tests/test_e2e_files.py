"""End to end: issue 13, every kind of file, through the fake Discord and the fake Gemini (real
discord.py, real google-genai, Files API included).

Each test checks what Gemini received (parts, inline bytes, file URIs), what the fake Files
API was asked (uploads, looks, deletes), what the store holds, and what people saw.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.retention import tidy
from storage import Turn
from tests.fakes.gemini import RecordedRequest
from tests.fakes.gemini_files import file_parts
from tests.harness import World, react, reply_turn
from tests.test_e2e_chat import ask, fast, model_text

pytestmark = pytest.mark.timeout(90)

PY = b'def greet(name):\n    return f"hello {name}"\n\nprint(greet("world"))\n'
CSV = b"city,population\nLyon,522000\nNantes,320000\n"


def pdf(body: bytes = b"a short paper", pad: int = 0) -> bytes:
    """A small well-formed PDF (header, a body, the end-of-file marker)."""
    return b"%PDF-1.7\n%" + body + b"\n" + b"0" * pad + b"\n%%EOF\n"


def mp3(n: int = 4000) -> bytes:
    """MP3 bytes: an ID3 tag, then frames."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * (n // 4)


def ogg(n: int = 3000) -> bytes:
    """OGG/Opus bytes, as a voice message is recorded."""
    return b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead" + b"\x01" * n


def mp4(size: int) -> bytes:
    """An MP4 of `size` bytes (an ftyp box, then filler)."""
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    return head + bytes(size - len(head))


def inline(request: RecordedRequest, mime: str) -> list[bytes]:
    """The inline parts of one MIME type in the request's newest user turn, decoded."""
    return [
        p.data for p in request.image_parts(role="user", last_turn_only=True) if p.mime_type == mime
    ]


async def stored(w: World, message_id: int) -> Turn:
    """The stored question of a Discord message, with its files' bytes."""
    assert w.bot is not None
    turn = await w.bot.store.find_turn_by_message(message_id)
    assert turn is not None and turn.role == "user"
    return turn


def upload_rows(w: World) -> list[tuple[str, str]]:
    """(sha256, upload name) of every upload the store records."""
    with sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True) as db:
        return db.execute("SELECT sha256, name FROM gemini_files ORDER BY uploaded_at").fetchall()


# --- text and code -------------------------------------------------------------------------


async def test_code_and_csv_files_reach_gemini_as_text_headed_by_their_names(
    tmp_path: Path,
) -> None:
    async with fast(tmp_path) as w:
        files = [
            w.discord.attachment("greet.py", PY, "text/x-python; charset=utf-8"),
            w.discord.attachment("cities.csv", CSV, "text/csv; charset=utf-8"),
        ]
        question, contents = await ask(
            w, w.general, w.alice, "what do these do?", attachments=files
        )
        request = w.gemini.requests[0]
        assert "".join(contents) == model_text(request)
        last = request.contents()[-1]["parts"]
        texts = [p["text"] for p in last if "text" in p]
        assert texts[0] == "[alice] what do these do?"
        assert texts[1] == "[file greet.py]\n" + PY.decode()
        assert texts[2] == "[file cities.csv]\n" + CSV.decode()
        assert not request.image_parts()  # text goes as text, not as inline data
        turn = await stored(w, question.id)
        assert [(f.name, f.mime_type, f.data) for f in turn.images] == [
            ("greet.py", "text/plain", PY),
            ("cities.csv", "text/plain", CSV),
        ]

        # the next question still carries them, from the store
        await ask(w, w.general, w.bob, "and in one line?")
        assert "[file greet.py]\n" + PY.decode() in w.gemini.requests[1].texts("user")


async def test_a_long_log_is_cut_with_a_note_the_user_sees(tmp_path: Path) -> None:
    env = {"GEMCORD_MAX_TEXT_CHARS": "1000"}
    async with fast(tmp_path, env) as w:
        log = "".join(f"2026-11-27 12:00:{i % 60:02d} INFO step {i}\n" for i in range(400))
        att = w.discord.attachment("app.log", log.encode(), None)
        _, contents = await ask(w, w.general, w.alice, "any errors?", attachments=[att])
        request = w.gemini.requests[0]
        sent = next(t for t in request.texts("user") if t.startswith("[file app.log]"))
        assert sent.startswith("[file app.log]\n" + log[:1000])
        assert f"the first 1,000 of {len(log):,} characters" in sent
        assert log[1000:1100] not in sent
        note = f"-# ✂ `app.log` is long: I read its first 1,000 characters of {len(log):,}."
        assert contents[-1].endswith(note)
        assert contents[-1].startswith(model_text(request))


# --- PDF -----------------------------------------------------------------------------------


async def test_a_pdf_goes_inline_and_a_large_one_through_the_files_api(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_INLINE_FILE_MB": "0.05"}) as w:
        small = pdf()
        question, _ = await ask(
            w,
            w.general,
            w.alice,
            "summarise",
            attachments=[w.discord.attachment("paper.pdf", small, "application/pdf")],
        )
        request = w.gemini.requests[0]
        assert inline(request, "application/pdf") == [small]
        assert not file_parts(request) and not w.gemini.files.uploads()
        assert [(f.name, f.mime_type) for f in (await stored(w, question.id)).images] == [
            ("paper.pdf", "application/pdf")
        ]

        large = pdf(b"a long report", pad=80_000)  # over the 0.05 MB inline limit
        att = w.discord.attachment("report.pdf", large, "application/pdf")
        await ask(w, w.general, w.alice, "and this one?", attachments=[att])
        request = w.gemini.requests[1]
        assert not inline(request, "application/pdf")[1:]  # only the small one, from history
        (upload,) = w.gemini.files.uploads()
        assert upload.data == large and upload.display_name == "report.pdf"
        assert upload.mime_type == "application/pdf"
        assert [(p.uri, p.mime_type) for p in file_parts(request)] == [
            (upload.uri, "application/pdf")
        ]
        assert [c[0] for c in w.gemini.files.calls] == ["start", "finalize"]
        assert [name for _, name in upload_rows(w)] == [upload.name]

        # asked again from history: the upload is reused (one look), not sent again
        await ask(w, w.general, w.bob, "which is longer?")
        assert [p.uri for p in file_parts(w.gemini.requests[2])] == [upload.uri]
        assert len(w.gemini.files.uploads()) == 1
        assert w.gemini.files.calls[-1] == ("get", upload.id)


async def test_a_question_replying_to_a_message_with_a_pdf_sends_that_pdf(
    tmp_path: Path,
) -> None:
    async with fast(tmp_path) as w:
        paper = pdf(b"the minutes of the meeting")
        shared = await w.discord.user_message(
            w.general,
            w.bob,
            "minutes attached",
            attachments=[w.discord.attachment("minutes.pdf", paper, "application/pdf")],
        )
        question, _ = await ask(w, w.general, w.alice, "what was decided?", reply_to=shared)
        request = w.gemini.requests[0]
        assert inline(request, "application/pdf") == [paper]
        assert "minutes attached" in request.texts("user")[0]
        turn = await stored(w, question.id)
        assert [(f.name, f.data) for f in turn.images] == [("minutes.pdf", paper)]


# --- audio and voice messages ----------------------------------------------------------------


async def test_an_mp3_alone_is_answered(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        song = mp3()
        question, contents = await ask(
            w, w.general, w.alice, "", attachments=[w.discord.attachment("song.mp3", song, None)]
        )
        request = w.gemini.requests[0]
        assert "".join(contents) == model_text(request)
        assert request.question_text() == "[alice] (sent: song.mp3)"
        assert inline(request, "audio/mp3") == [song]
        assert (await stored(w, question.id)).images[0].mime_type == "audio/mp3"


async def test_a_voice_message_is_a_question_in_a_dm_a_reply_and_the_bots_thread(
    tmp_path: Path,
) -> None:
    async with fast(tmp_path) as w:
        # in a DM: no text, no mention
        dm = w.discord.add_dm_channel(w.alice)
        voice = ogg()
        message = await w.discord.voice_message(dm, w.alice, voice, 7.4)
        contents = await w.reply_done(message.id)
        request = w.gemini.requests[0]
        assert "".join(contents) == model_text(request)
        assert request.question_text() == "[alice] (sent: voice message (7 s))"
        assert inline(request, "audio/ogg") == [voice]
        turn = await stored(w, message.id)
        assert turn.text == "" and [f.name for f in turn.images] == ["voice message (7 s)"]

        # as a reply to the bot's answer, in a channel
        await ask(w, w.general, w.bob, "hello")
        answer_id = w.discord.bot_messages(w.general)[-1].id
        again = await w.discord.voice_message(w.general, w.bob, ogg(500), 2.0, reply_to=answer_id)
        await w.reply_done(again.id)
        assert inline(w.gemini.requests[2], "audio/ogg") == [ogg(500)]

        # in a thread where the bot answers, without a mention
        thread = w.discord.add_thread(w.general, "talk")
        await ask(w, thread, w.alice, "let's talk here")
        third = await w.discord.voice_message(thread, w.alice, ogg(700), 3.0)
        await w.reply_done(third.id)
        assert inline(w.gemini.requests[4], "audio/ogg") == [ogg(700)]

        # a voice message elsewhere is not for the bot
        before = len(w.gemini.requests)
        await w.discord.voice_message(w.random, w.bob, ogg(), 1.0)
        await ask(w, w.random, w.bob, "ping")
        assert len(w.gemini.requests) == before + 1
        assert not inline(w.gemini.requests[-1], "audio/ogg")


async def test_a_voice_message_over_the_length_limit_is_refused(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_MAX_VOICE_SECONDS": "60"}) as w:
        dm = w.discord.add_dm_channel(w.alice)
        message = await w.discord.voice_message(dm, w.alice, ogg(), 90.0)
        notice = await w.discord.wait_for_message(dm, lambda m: m.reply_to == message.id)
        assert "90 s" in notice.content and "60 s" in notice.content
        assert not w.gemini.requests
        assert not [c for c in w.discord.calls_for("cdn")]  # refused before download


# --- video and the Files API -----------------------------------------------------------------


async def test_a_30_mb_video_is_uploaded_processed_then_asked_about(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        clip = mp4(30 * 1024 * 1024)
        att = w.discord.attachment("clip.mp4", clip, "video/mp4")
        question, contents = await ask(w, w.general, w.alice, "what happens?", attachments=[att])
        (upload,) = w.gemini.files.uploads()
        assert upload.data == clip and upload.mime_type == "video/mp4"
        assert upload.state == "ACTIVE"
        calls = [c[0] for c in w.gemini.files.calls]
        # resumable: start, 8 MiB chunks, finalize; then PROCESSING twice before ACTIVE
        assert calls == ["start", "chunk", "chunk", "chunk", "finalize", "get", "get", "get"]
        request = w.gemini.requests[0]
        assert [(p.uri, p.mime_type) for p in file_parts(request)] == [(upload.uri, "video/mp4")]
        assert not request.image_parts()
        assert "".join(contents) == model_text(request)
        assert (await stored(w, question.id)).images[0].data == clip


async def test_an_expired_upload_is_uploaded_again_when_history_needs_it(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.files.processing_gets = 0
        clip = mp4(200_000)
        att = w.discord.attachment("clip.webm.mp4", clip, "video/mp4")
        await ask(w, w.general, w.alice, "look", attachments=[att])
        (first,) = w.gemini.files.uploads()
        w.gemini.files.expire(first.name)

        await ask(w, w.general, w.bob, "what was in that clip?")
        second = w.gemini.files.uploads()[-1]
        assert second.id != first.id and second.data == clip
        assert [p.uri for p in file_parts(w.gemini.requests[1])] == [second.uri]
        assert [name for _, name in upload_rows(w)] == [second.name]


async def test_forget_deletes_the_uploads_of_the_forgotten_files(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        w.gemini.files.processing_gets = 0
        mine = w.discord.attachment("mine.mp4", mp4(100_000), "video/mp4")
        theirs = w.discord.attachment("theirs.mp4", mp4(120_000), "video/mp4")
        await ask(w, w.general, w.alice, "mine", attachments=[mine])
        await ask(w, w.general, w.bob, "theirs", attachments=[theirs])
        alice_file, bob_file = w.gemini.files.uploads()

        done = await w.discord.slash_command(w.general, w.alice, "forget all", {"confirm": True})
        await done.wait_for_callback()
        await until(lambda: ("delete", alice_file.id) in w.gemini.files.calls)
        assert [f.id for f in w.gemini.files.uploads(live=True)] == [bob_file.id]
        assert [name for _, name in upload_rows(w)] == [bob_file.name]


async def test_retention_deletes_the_uploads_of_old_files(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_RETENTION_DAYS": "30"}) as w:
        w.gemini.files.processing_gets = 0
        old = w.discord.attachment("old.mp4", mp4(90_000), "video/mp4")
        question, _ = await ask(w, w.general, w.alice, "old", attachments=[old])
        (upload,) = w.gemini.files.uploads()
        with sqlite3.connect(w.db_path) as db:
            db.execute(
                "UPDATE turns SET created_at = created_at - 31 * 86400"
                " WHERE id = (SELECT turn_id FROM answered WHERE message_id = ?)",
                (question.id,),
            )
        assert w.bot is not None
        assert await tidy(w.bot) == 2
        assert w.gemini.files.calls[-1] == ("delete", upload.id)
        assert not w.gemini.files.uploads(live=True) and not upload_rows(w)


# --- refusals ----------------------------------------------------------------------------


async def test_a_refused_file_next_to_a_usable_one(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        files = [
            w.discord.attachment("greet.py", PY, "text/x-python"),
            w.discord.attachment("dump.zip", b"PK\x03\x04", "application/zip", size=30 * 2**20),
            w.discord.attachment("blob.bin", bytes(range(256)) * 4, "application/octet-stream"),
        ]
        question = await w.mention(w.general, w.alice, "review this", attachments=files)
        contents = await w.reply_done(question.id)
        request = w.gemini.requests[0]
        assert "[file greet.py]\n" + PY.decode() in request.texts("user")
        assert "".join(contents) == model_text(request)
        notice = next(
            m
            for m in w.discord.bot_messages(w.general)
            if m.reply_to == question.id and "dump.zip" in m.content
        )
        lines = notice.content.split("\n")
        assert "`dump.zip` is 30 MB" in lines[0] and "5 MB" in lines[0]
        assert "`blob.bin` is not a kind of file I can read" in lines[1]
        assert notice.mentions_disabled
        assert not [c for c in w.discord.calls_for("cdn") if "dump.zip" in c.path]


async def test_a_pdf_gemini_cannot_read_is_left_out_and_never_sent_again(tmp_path: Path) -> None:
    async with fast(tmp_path) as w:
        broken = b"%PDF-1.4\n" + b"x" * 300  # a header, and no end: Gemini cannot decode it
        att = w.discord.attachment("broken.pdf", broken, "application/pdf")
        _, contents = await ask(w, w.general, w.alice, "read it", attachments=[att])
        refused, retried = w.gemini.requests[:2]
        assert refused.outcome == "error" and inline(refused, "application/pdf") == [broken]
        assert not inline(retried, "application/pdf")
        assert contents[-1].endswith(
            "-# ⚠ Gemini could not read `broken.pdf`, so I answered without it."
        )
        await ask(w, w.general, w.alice, "and now?")
        later = w.gemini.requests[2]
        assert not later.image_parts()
        assert "(earlier: broken.pdf, 1 KB)" in later.texts("user")


async def until(condition, timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (checked every few milliseconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def test_uploads_run_a_few_at_a_time_and_a_stop_cancels_them(tmp_path: Path) -> None:
    async with fast(tmp_path, {"GEMCORD_UPLOADS_AT_ONCE": "2"}) as w:
        files = w.gemini.files
        files.processing_gets = 0
        files.gate.clear()  # hold every upload at its first chunk
        clips = [
            w.discord.attachment(f"clip{i}.mp4", mp4(50_000 + i), "video/mp4") for i in range(3)
        ]
        question = await w.mention(w.general, w.alice, "compare them", attachments=clips)
        await until(lambda: files.held == 2)
        files.gate.set()
        await w.reply_done(question.id)
        assert files.most_open == 2  # concurrent, and never more than the setting
        assert len(files.uploads()) == 3
        assert len(file_parts(w.gemini.requests[0])) == 3

        # a stop while a file uploads: the upload is dropped and Gemini is never asked
        files.gate.clear()
        clip = w.discord.attachment("long.mp4", mp4(60_000), "video/mp4")
        question = await w.mention(w.general, w.alice, "and this?", attachments=[clip])
        await until(lambda: files.held == 1)  # its bytes are on their way
        await react(w, w.general, question.id, w.alice, "🛑")
        await w.reply_done(question.id)
        await until(lambda: files.calls[-1][0] == "abandoned")
        assert len(w.gemini.requests) == 1 and len(files.uploads()) == 3
        turn = await reply_turn(w, question.id)
        assert turn is not None and turn.status == "stopped"
        files.gate.set()


async def test_a_video_gemini_fails_to_process_is_left_out_and_never_sent_again(
    tmp_path: Path,
) -> None:
    async with fast(tmp_path) as w:
        w.gemini.files.processing_gets = 1
        w.gemini.files.fail.add("bad.mp4")
        att = w.discord.attachment("bad.mp4", mp4(70_000), "video/mp4")
        _, contents = await ask(w, w.general, w.alice, "what is it?", attachments=[att])
        (request,) = w.gemini.requests
        assert not file_parts(request) and "(not shown: bad.mp4, 68 KB)" in request.texts("user")
        assert contents[-1].endswith(
            "-# ⚠ Gemini could not read `bad.mp4`, so I answered without it."
        )
        await ask(w, w.general, w.alice, "and now?")
        assert len(w.gemini.files.uploads()) == 1  # not uploaded again
        assert "(earlier: bad.mp4, 68 KB)" in w.gemini.requests[1].texts("user")
