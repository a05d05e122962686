"""Beginning a reply in one store operation: `ask` (question, reply and history in one
transaction) and `start_reply` (the reply of a question stored earlier), checked against what
the separate operations store and return. On both engines (tests/backends.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from storage import (
    AlreadyAnswered,
    HistoryBudget,
    Media,
    Store,
    TurnNotFound,
)
from tests.backends import Backend
from tests.test_storage import pair

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = await backend.open()
    yield s
    await s.close()


async def some_history(store: Store, channel: int) -> None:
    await pair(store, channel, "first question", "first answer")
    picture = Media(PNG, "image/png", "pic.png")
    await pair(store, channel, "with a picture", "seen", images=(picture,))
    await pair(store, channel + 1, "another channel", "not here")


async def test_ask_stores_the_question_starts_the_reply_and_returns_the_history_before_it(
    store: Store,
) -> None:
    await some_history(store, 1)
    budget = HistoryBudget(max_turns=10, max_tokens=10_000, image_turns=2)
    expected = await store.load_history(1, max_turns=10, max_tokens=10_000, image_turns=2)
    start = await store.ask(
        channel_id=1,
        guild_id=7,
        thread_id=None,
        author_id=42,
        author_name="asker",
        text="what now?",
        message_ids=[555, 556],
        images=[Media(PNG, "image/png", "pic.png")],
        model="gemini-x",
        history=budget,
    )
    assert start.history == expected
    assert [t.text for t in start.history] == [
        "first question",
        "first answer",
        "with a picture",
        "seen",
    ]
    assert start.history[2].images[0].data == PNG  # within the image window: with its bytes
    # what was stored is what the separate operations store
    question = await store.get_turn(start.user_turn)
    assert question is not None
    assert (question.role, question.text, question.author_id, question.guild_id) == (
        "user",
        "what now?",
        42,
        7,
    )
    assert question.message_ids == [555, 556]
    assert [i.sha256 for i in question.images] == [i.sha256 for i in start.history[2].images]
    reply = await store.get_turn(start.model_turn)
    assert reply is not None
    assert (reply.role, reply.status, reply.reply_to, reply.model) == (
        "model",
        "streaming",
        start.user_turn,
        "gemini-x",
    )
    # the new question is history for the next one once its reply is finished
    await store.finish_model_turn(start.model_turn, text="this", status="complete")
    after = await store.load_history(1)
    assert [t.text for t in after][-2:] == ["what now?", "this"]
    # the message is answered once: a second ask stores nothing, not even a reply
    with pytest.raises(AlreadyAnswered):
        await store.ask(
            channel_id=1, author_id=43, author_name="b", text="again", message_ids=[555], model="m"
        )
    assert [t.text for t in await store.load_history(1)] == [t.text for t in after]
    stats = await store.stats(1)
    assert stats.turns == len(after)


async def test_start_reply_starts_the_reply_of_a_stored_question(store: Store) -> None:
    await some_history(store, 1)
    question = await store.add_user_turn(channel_id=1, author_id=5, author_name="a", text="q")
    later = await store.add_user_turn(channel_id=1, author_id=6, author_name="b", text="later")
    start = await store.start_reply(channel_id=1, reply_to=question, model="gemini-y")
    assert start.user_turn == question
    # the history before the question: not the question asked after it
    assert start.history == await store.load_history(1, before_turn=question)
    assert all(t.id != later for t in start.history)
    reply = await store.get_turn(start.model_turn)
    assert reply is not None and (reply.status, reply.reply_to) == ("streaming", question)
    assert (await store.start_reply(channel_id=1, reply_to=question, model="m")).history == (
        start.history
    )


async def test_start_reply_to_a_forgotten_question_stores_nothing(store: Store) -> None:
    question = await store.add_user_turn(channel_id=1, author_id=5, author_name="a", text="q")
    assert await store.forget_user(5) == 1
    with pytest.raises(TurnNotFound):
        await store.start_reply(channel_id=1, reply_to=question, model="m")
    assert (await store.stats(1)).turns == 0


async def test_an_empty_history_budget_returns_no_history(store: Store) -> None:
    await some_history(store, 1)
    start = await store.ask(
        channel_id=1,
        author_id=1,
        author_name="a",
        text="q",
        model="m",
        history=HistoryBudget(max_turns=0),
    )
    assert start.history == []
    assert (await store.get_turn(start.model_turn)) is not None


async def test_the_same_message_asked_at_once_twice_is_stored_and_started_once(
    store: Store,
) -> None:
    async def ask(author: int) -> object:
        return await store.ask(
            channel_id=1, author_id=author, author_name="a", text="q", message_ids=[77], model="m"
        )

    results = await asyncio.gather(*(ask(n) for n in range(4)), return_exceptions=True)
    started = [r for r in results if not isinstance(r, BaseException)]
    assert len(started) == 1
    assert all(isinstance(r, AlreadyAnswered) for r in results if r not in started)
    stats = await store.stats(1)
    assert stats.turns == 2  # one question, one reply: the refused asks left nothing behind


async def test_a_private_question_and_a_per_person_history(store: Store) -> None:
    await pair(store, 1, "mine", "to me", author=5)
    await pair(store, 1, "theirs", "to them", author=6)
    private = await store.ask(
        channel_id=1,
        author_id=5,
        author_name="a",
        text="summarize",
        model="m",
        hidden="private",
        history=HistoryBudget(max_turns=0),
    )
    assert private.history == []
    reply = await store.get_turn(private.model_turn)
    assert reply is not None and reply.hidden == "private"  # its reply is private too
    await store.finish_model_turn(private.model_turn, text="summary", status="complete")
    own = await store.ask(
        channel_id=1, author_id=5, author_name="a", text="and me?", model="m", history_author=5
    )
    assert [t.text for t in own.history] == ["mine", "to me"]  # the private one left history
    question = await store.add_user_turn(channel_id=1, author_id=6, author_name="b", text="q")
    start = await store.start_reply(channel_id=1, reply_to=question, model="m", history_author=6)
    assert [t.text for t in start.history] == ["theirs", "to them"]
