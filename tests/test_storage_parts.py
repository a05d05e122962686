"""The store keeps a model turn's parts (thought signatures byte for byte) and its thinking
tokens, counted in the stats; forget-me takes them along. On both engines (tests/backends.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from storage import Media, Store, StoredPart
from tests.backends import Backend

SIGNATURE = bytes(range(256))
PARTS = [
    StoredPart("thought", "**Plan**\n\nthink"),
    StoredPart("text", "Answer ", None),
    StoredPart("code", "print(1)", None, "PYTHON"),
    StoredPart("output", "1\n", None, "OUTCOME_OK"),
    StoredPart("thought", "NUL \x00, U+FFFF \uffff, é"),  # text PostgreSQL cannot hold as is
    StoredPart("text", "done.", SIGNATURE),
]


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = await backend.open()
    yield s
    await s.close()


async def test_parts_and_thinking_tokens_round_trip(store: Store, backend: Backend) -> None:
    question = await store.add_user_turn(channel_id=1, author_id=7, author_name="a", text="q")
    reply = await store.start_model_turn(channel_id=1, reply_to=question, model="gemini-x")
    await store.finish_model_turn(
        reply,
        text="Answer done.",
        status="complete",
        parts=PARTS,
        thoughts_tokens=42,
        searches=["q1", "q2 é"],
    )
    [_, turn] = await store.load_history(1)
    assert turn.parts == PARTS and turn.parts[-1].signature == SIGNATURE
    assert turn.thoughts_tokens == 42
    again = await store.get_turn(reply)
    assert again is not None and again.parts == PARTS and again.searches == ["q1", "q2 é"]
    asked = await store.get_turn(question)
    assert asked is not None and asked.parts == [] and asked.searches == []
    assert (await store.stats(1)).thoughts_tokens == 42
    assert (await store.stats()).thoughts_tokens == 42

    # a reply finished without parts (an older one, or the demo model) has none
    q2 = await store.add_user_turn(channel_id=1, author_id=8, author_name="b", text="q2")
    r2 = await store.start_model_turn(channel_id=1, reply_to=q2, model="gemini-x")
    await store.finish_model_turn(r2, text="plain", status="complete")
    plain = await store.get_turn(r2)
    assert plain is not None and plain.parts == [] and plain.searches == []

    # kept across a restart; gone with the asker's turns
    await store.close()
    reopened = await backend.open()
    try:
        kept = await reopened.get_turn(reply)
        assert kept is not None and kept.parts == PARTS
        await reopened.forget_user(7)
        assert await reopened.get_turn(reply) is None
        assert (await reopened.stats()).thoughts_tokens == 0
    finally:
        await reopened.close()


FIGURE = b"\x89PNG\r\n\x1a\n figure bytes"
FIGURE_SIGNATURE = b"\x01sig\xfe"


async def test_images_the_code_drew_are_kept_with_the_reply(store: Store, backend: Backend) -> None:
    """A reply's images are its files (stored once by hash, like a question's), named by its
    "image" parts; history gives their bytes within the file budget; exports list them; a
    forget-me deletes them with the reply."""
    figure = Media(FIGURE, "image/png", name="figure-1.png")
    parts = [
        StoredPart("code", "plot()", None, "PYTHON"),
        StoredPart("image", "", FIGURE_SIGNATURE, figure.sha256),
        StoredPart("text", "Here it is."),
    ]
    question = await store.add_user_turn(
        channel_id=1, author_id=7, author_name="a", text="draw", images=[figure]
    )
    reply = await store.start_model_turn(channel_id=1, reply_to=question, model="gemini-x")
    await store.finish_model_turn(
        reply, text="Here it is.", status="complete", parts=parts, images=[figure]
    )

    [asked, answered] = await store.load_history(1)
    assert asked.images[0].data == FIGURE and answered.parts == parts
    assert [(f.sha256, f.mime_type, f.data, f.name, f.size) for f in answered.images] == [
        (figure.sha256, "image/png", FIGURE, "figure-1.png", len(FIGURE))
    ]
    [_, outside] = await store.load_history(1, image_turns=1)  # only the newest turn's bytes
    assert outside.images[0].data == FIGURE
    [asked_outside, _] = await store.load_history(1, image_turns=1)
    assert asked_outside.images[0].data is None
    [_, no_bytes] = await store.load_history(1, image_turns=0)
    assert no_bytes.images[0].data is None and no_bytes.images[0].size == len(FIGURE)
    again = await store.get_turn(reply)
    assert again is not None and again.images[0].data == FIGURE
    assert await backend.fetch("SELECT count(*) FROM images") == [(1,)]  # the same bytes once

    exported = json.loads(await store.export_channel(1, "json"))
    assert [t["images"] for t in exported["turns"]] == [
        [{"sha256": figure.sha256, "mime_type": "image/png", "size": len(FIGURE)}]
    ] * 2
    assert f"- image `{figure.sha256[:16]}` (image/png" in await store.export_channel(1)

    # the question's own copy goes with a forget-me, and the reply's with it
    await store.forget_user(7)
    assert await backend.fetch("SELECT count(*) FROM images") == [(0,)]


async def test_a_reply_only_carries_the_images_it_drew(store: Store, backend: Backend) -> None:
    """Forget-me deletes an image that only a reply carried."""
    figure = Media(FIGURE, "image/png", name="figure-1.png")
    question = await store.add_user_turn(channel_id=2, author_id=9, author_name="b", text="q")
    reply = await store.start_model_turn(channel_id=2, reply_to=question, model="gemini-x")
    await store.finish_model_turn(
        reply,
        text="",
        status="stopped",
        parts=[StoredPart("image", "", None, figure.sha256)],
        images=[figure],
    )
    [_, kept] = await store.load_history(2)
    assert kept.status == "stopped" and kept.images[0].data == FIGURE
    assert (await store.stats(2)).images == 1
    assert await store.forget_user(9) == 2
    assert await backend.fetch("SELECT count(*) FROM images") == [(0,)]
