"""The store keeps a model turn's parts (thought signatures byte for byte) and its thinking
tokens, counted in the stats; forget-me takes them along. On both engines (tests/backends.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage import Store, StoredPart
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
