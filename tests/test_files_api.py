"""The Files API side of bot/llm.py against the fake Gemini (real google-genai), and the
store's bookkeeping of uploads (on both engines)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from bot.llm import ChatTurn, FileRejected, GeminiClient
from storage import Media, Store, Upload
from tests.backends import Backend
from tests.fakes.gemini import FakeGemini
from tests.fakes.gemini_files import file_parts

KEY = "test-key-files-0123456789"
CLIP = b"\x00\x00\x00\x18ftypisom" + bytes(5000)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as f:
        yield f


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[GeminiClient]:
    gemini = GeminiClient(KEY, base_url=fake.base_url, file_poll_seconds=0.01)
    yield gemini
    await gemini.aclose()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """The store on each engine (tests/backends.py)."""
    s = await backend.open()
    yield s
    await s.close()


async def test_upload_waits_for_processing_and_the_uri_reaches_the_request(
    fake: FakeGemini, client: GeminiClient
) -> None:
    media = Media(CLIP, "video/mp4", name="clip.mp4")
    upload = await client.upload_file(media, media.sha256)
    (held,) = fake.files.uploads()
    assert held.state == "ACTIVE" and held.data == CLIP and held.display_name == "clip.mp4"
    assert (upload.name, upload.uri, upload.mime_type) == (held.name, held.uri, "video/mp4")
    # the expiry Gemini gave (48 h after the upload), read from its answer, not guessed
    assert held.expires_at - held.created_at == pytest.approx(48 * 3600)
    assert upload.expires_at == pytest.approx(held.expires_at, abs=1e-3)
    assert [c[0] for c in fake.files.calls] == ["start", "finalize", "get", "get", "get"]

    sent = Media(CLIP, "video/mp4", name="clip.mp4", uri=upload.uri)
    stream = client.stream(model="gemini-2.5-flash", contents=[ChatTurn("user", ["what?", sent])])
    assert "".join([c async for c in stream])
    (request,) = fake.requests
    assert [(p.uri, p.mime_type) for p in file_parts(request)] == [(upload.uri, "video/mp4")]
    assert not request.image_parts()


async def test_a_file_gemini_cannot_process_is_rejected(
    fake: FakeGemini, client: GeminiClient
) -> None:
    fake.files.fail.add("bad.mp4")
    media = Media(CLIP, "video/mp4", name="bad.mp4")
    with pytest.raises(FileRejected) as caught:
        await client.upload_file(media, media.sha256)
    assert "FAILED" in (caught.value.detail or "")


async def test_alive_expired_deleted(fake: FakeGemini, client: GeminiClient) -> None:
    fake.files.processing_gets = 0
    media = Media(b"%PDF-1.7\n%%EOF\n", "application/pdf", name="a.pdf")
    upload = await client.upload_file(media, media.sha256)
    assert await client.upload_alive(upload)
    fake.files.expire(upload.name)
    assert not await client.upload_alive(upload)  # Gemini answers 403 for a file gone
    await client.delete_file(upload.name)  # deleting one already gone is fine
    other = await client.upload_file(media, media.sha256)
    await client.delete_file(other.name)
    assert fake.files.files[other.name.removeprefix("files/")].deleted
    assert not await client.upload_alive(other)
    # an upload that would expire within minutes is not reused, without asking Gemini
    calls = len(fake.files.calls)
    soon = Upload(other.sha256, other.name, other.uri, other.mime_type, time.time() + 60)
    assert not await client.upload_alive(soon) and len(fake.files.calls) == calls


async def test_the_store_keeps_uploads_and_queues_those_to_delete(store: Store) -> None:
    clip = Media(CLIP, "video/mp4", name="clip.mp4")
    await store.add_user_turn(
        channel_id=1, author_id=7, author_name="alice", text="look", images=[clip]
    )
    await store.add_user_turn(channel_id=1, author_id=8, author_name="bob", text="hi")
    first = Upload(clip.sha256, "files/one", "u1", "video/mp4", time.time() + 100)
    await store.save_upload(first)
    assert await store.get_uploads([clip.sha256, "0" * 64]) == {clip.sha256: first}
    assert await store.take_gone_uploads() == []

    second = Upload(clip.sha256, "files/two", "u2", "video/mp4", time.time() + 200)
    await store.save_upload(second)  # uploaded again: the old one is queued to go
    assert await store.get_uploads([clip.sha256]) == {clip.sha256: second}
    assert await store.take_gone_uploads() == ["files/one"]
    assert await store.take_gone_uploads() == []  # each name once

    assert await store.forget_user(7) == 1  # the file goes with the question, and its upload
    assert await store.get_uploads([clip.sha256]) == {}
    assert await store.take_gone_uploads() == ["files/two"]

    orphan = Upload("f" * 64, "files/three", "u3", "video/mp4", time.time() + 100)
    await store.save_upload(orphan)  # its file is not stored (deleted meanwhile)
    assert await store.get_uploads([orphan.sha256]) == {}
    assert await store.take_gone_uploads() == ["files/three"]


async def test_files_keep_their_names_in_history(store: Store) -> None:
    pdf = Media(b"%PDF-1.7\n%%EOF\n", "application/pdf", name="report.pdf")
    text = Media(b"hello", "text/plain", name="notes.md")
    await store.add_user_turn(
        channel_id=1, author_id=7, author_name="alice", text="", images=[pdf, text]
    )
    (turn,) = await store.load_history(1)
    assert [(f.name, f.mime_type, f.size, f.data) for f in turn.images] == [
        ("report.pdf", "application/pdf", len(pdf.data), pdf.data),
        ("notes.md", "text/plain", 5, b"hello"),
    ]
