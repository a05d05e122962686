"""The store: every operation, history semantics, settings, stats, forget-me, concurrency.

Each test taking `store` or `backend` runs against SQLite and against a real PostgreSQL server
(tests/backends.py); the few about SQLite's file itself take `sqlite_store` or a path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeAlias

import pytest

from storage import (
    IMAGE_TOKENS,
    AlreadyAnswered,
    Media,
    ReplyMetrics,
    SQLiteStore,
    Store,
    StoreClosed,
    StoreLocked,
    TurnNotFound,
    Upload,
    approx_tokens,
    open_store,
)
from storage.postgres import PostgresStore
from storage.schema import latest_version
from tests.backends import Backend

AnyStore: TypeAlias = SQLiteStore | PostgresStore

BIG = 1_234_567_890_123_456_789  # a snowflake-sized id, beyond JavaScript's 2**53


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[AnyStore]:
    s = await backend.open()
    assert isinstance(s, SQLiteStore | PostgresStore)
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await open_store(tmp_path / "data" / "gemcord.db")
    assert isinstance(s, SQLiteStore)
    yield s
    await s.close()


async def pair(
    store: Store,
    channel: int,
    question: str,
    answer: str,
    *,
    author: int = 10,
    status: str = "complete",
    images: tuple[Media, ...] = (),
) -> tuple[int, int]:
    """A question and its finished answer; returns both turn ids."""
    u = await store.add_user_turn(
        channel_id=channel,
        author_id=author,
        author_name=f"user{author}",
        text=question,
        images=images,
    )
    m = await store.start_model_turn(channel_id=channel, reply_to=u, model="gemini-test")
    await store.finish_model_turn(m, text=answer, status=status)  # type: ignore[arg-type]
    return u, m


def metrics(**kw: object) -> ReplyMetrics:
    values: dict[str, object] = dict(
        first_chunk_latency=0.25,
        first_visible_latency=0.4,
        total_time=2.0,
        chunk_count=12,
        edit_count=3,
        send_count=1,
        rate_limited=0,
        outcome="complete",
    )
    values.update(kw)
    return ReplyMetrics(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- opening


async def test_open_creates_folder_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.db"
    store = await open_store(path)
    try:
        assert path.is_file()
        assert isinstance(store, Store)
        conn = store._conn  # type: ignore[attr-defined]
        pragmas = {}
        for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version"):
            rows = await conn.execute_fetchall(f"PRAGMA {name}")
            pragmas[name] = next(iter(rows))[0]
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 1,  # NORMAL
            "foreign_keys": 1,
            "busy_timeout": 5000,
            "user_version": latest_version(),
        }
    finally:
        await store.close()


async def test_data_survives_reopen(backend: Backend) -> None:
    store = await backend.open()
    u, m = await pair(store, 1, "question", "answer")
    await store.set_persona(1, "a pirate")
    await store.close()
    store = await backend.open()
    try:
        history = await store.load_history(1)
        assert [(t.id, t.text) for t in history] == [(u, "question"), (m, "answer")]
        assert (await store.get_channel_settings(1)).persona == "a pirate"
    finally:
        await store.close()


async def test_streaming_turns_left_by_a_crash_become_interrupted(backend: Backend) -> None:
    store = await backend.open()
    u = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=1, reply_to=u, model="g")
    await store.add_message_ids(m, [77])
    await store.checkpoint(m, "the text so far")
    assert [t.id for t in await store.load_history(1)] == [u]  # streaming: not in history
    assert await store.take_interrupted() == []
    await store.close()  # finish never called: as after a crash

    store = await backend.open()
    try:
        [turn] = await store.take_interrupted()
        assert (turn.id, turn.status, turn.text, turn.message_ids) == (
            m,
            "interrupted",
            "the text so far",
            [77],
        )
        assert await store.take_interrupted() == []  # handed over once
        history = await store.load_history(1)
        assert [(t.id, t.status) for t in history] == [(u, "complete"), (m, "interrupted")]
        await store.checkpoint(m, "too late")  # only a streaming reply takes checkpoints
        assert (await store.get_turn(m)).text == "the text so far"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_second_process_can_open_without_failing_live_replies(backend: Backend) -> None:
    bot = await backend.open()
    try:
        u = await bot.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
        m = await bot.start_model_turn(channel_id=1, reply_to=u, model="g")
        check = await backend.open(recover_streaming=False)
        try:
            assert (await check.stats()).by_status == {"complete": 1, "streaming": 1}
        finally:
            await check.close()
        turn = await bot.get_turn(m)
        assert turn is not None and turn.status == "streaming"
        await bot.finish_model_turn(m, text="done", status="complete")
    finally:
        await bot.close()


async def test_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    from storage import StorageError

    path = tmp_path / "x.db"
    junk = b"this is not a database, it is a shopping list " * 200
    path.write_bytes(junk)
    with pytest.raises(StorageError):
        await open_store(path)
    assert path.read_bytes() == junk


async def test_memory_database(tmp_path: Path) -> None:
    store = await open_store(":memory:")
    try:
        await pair(store, 1, "q", "a")
        assert len(await store.load_history(1)) == 2
    finally:
        await store.close()


async def test_closed_store_refuses_calls(backend: Backend) -> None:
    store = await backend.open()
    await store.get_channel_settings(0)  # kept in memory from now on
    assert await store.health() is None
    await store.close()
    with pytest.raises(StoreClosed):  # a health check asks the database, not a cache
        await store.health()
    await store.close()  # twice is fine
    with pytest.raises(StoreClosed):
        await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    with pytest.raises(StoreClosed):
        await store.load_history(1)


async def test_close_waits_for_writes_in_flight(backend: Backend) -> None:
    store = await backend.open()
    tasks = [
        asyncio.create_task(
            store.add_user_turn(channel_id=1, author_id=1, author_name="a", text=f"q{i}")
        )
        for i in range(30)
    ]
    await asyncio.sleep(0)  # the writes have been called, none finished
    await store.close()
    ids = await asyncio.gather(*tasks)
    stored = [r[0] for r in await backend.fetch("SELECT id FROM turns ORDER BY id")]
    assert stored == sorted(ids) and len(stored) == 30


# ----------------------------------------------------------------------------- turns


async def test_user_turn_round_trip(store: AnyStore) -> None:
    png = Media(b"\x89PNG fake bytes", "image/png")
    jpg = Media(b"\xff\xd8 fake jpeg", "image/jpeg")
    u = await store.add_user_turn(
        channel_id=BIG,
        guild_id=BIG + 1,
        thread_id=BIG + 2,
        author_id=BIG + 3,
        author_name="Ålice 🌸",
        text="look at these",
        message_ids=[BIG + 4, BIG + 5],
        images=[png, jpg],
    )
    (turn,) = await store.load_history(BIG)
    assert turn.id == u
    assert (turn.channel_id, turn.guild_id, turn.thread_id) == (BIG, BIG + 1, BIG + 2)
    assert (turn.role, turn.author_id, turn.author_name) == ("user", BIG + 3, "Ålice 🌸")
    assert (turn.text, turn.status, turn.reply_to, turn.model) == (
        "look at these",
        "complete",
        None,
        None,
    )
    assert turn.message_ids == [BIG + 4, BIG + 5]
    assert [(i.sha256, i.mime_type, i.data) for i in turn.images] == [
        (hashlib.sha256(png.data).hexdigest(), "image/png", png.data),
        (hashlib.sha256(jpg.data).hexdigest(), "image/jpeg", jpg.data),
    ]
    assert turn.created_at > 1_600_000_000


async def test_model_turn_start_and_finish(store: AnyStore, backend: Backend) -> None:
    u = await store.add_user_turn(channel_id=5, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(
        channel_id=5, reply_to=u, model="gemini-2.5-flash", author_id=99, author_name="gemcord"
    )
    assert m > u
    streaming = await store.get_turn(m)
    assert streaming is not None and streaming.status == "streaming" and streaming.text == ""
    await store.finish_model_turn(
        m,
        text="the answer",
        status="stopped",
        message_ids=[501, 502],
        prompt_tokens=120,
        output_tokens=45,
        metrics=metrics(outcome="stopped"),
    )
    turn = await store.get_turn(m)
    assert turn is not None
    assert (turn.role, turn.reply_to, turn.status, turn.text) == (
        "model",
        u,
        "stopped",
        "the answer",
    )
    assert (turn.author_id, turn.author_name, turn.model) == (99, "gemcord", "gemini-2.5-flash")
    assert (turn.prompt_tokens, turn.output_tokens, turn.message_ids) == (120, 45, [501, 502])
    rows = await backend.fetch(
        "SELECT channel_id, first_chunk_latency, first_visible_latency, total_time,"
        " chunk_count, edit_count, send_count, rate_limited, outcome"
        " FROM reply_metrics WHERE turn_id = ?",
        m,
    )
    assert rows == [(5, 0.25, 0.4, 2.0, 12, 3, 1, 0, "stopped")]


async def test_finish_validates(store: AnyStore) -> None:
    u = await store.add_user_turn(channel_id=5, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=5, reply_to=u, model="g")
    with pytest.raises(ValueError):
        await store.finish_model_turn(m, text="x", status="streaming")
    with pytest.raises(ValueError):
        await store.finish_model_turn(m, text="x", status="done")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.finish_model_turn(u, text="x", status="complete")  # a user turn
    with pytest.raises(TurnNotFound):
        await store.start_model_turn(channel_id=5, reply_to=12345, model="g")
    with pytest.raises(TurnNotFound):
        await store.start_model_turn(channel_id=5, reply_to=m, model="g")  # not a user turn
    # The failed calls left nothing behind: the transaction was rolled back.
    turn = await store.get_turn(m)
    assert turn is not None and turn.status == "streaming"
    await store.finish_model_turn(m, text="fine", status="complete")
    assert [t.text for t in await store.load_history(5)] == ["q", "fine"]


async def test_finishing_a_turn_deleted_meanwhile_is_harmless(store: AnyStore) -> None:
    u = await store.add_user_turn(channel_id=5, author_id=7, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=5, reply_to=u, model="g")
    assert await store.forget_user(7) == 2
    await store.add_message_ids(m, [1, 2])
    await store.finish_model_turn(
        m, text="late", status="complete", message_ids=[3], metrics=metrics()
    )
    assert await store.get_turn(m) is None
    assert await store.find_turn_by_message(3) is None


async def test_token_counts_kept_when_not_given_at_finish(store: AnyStore) -> None:
    u = await store.add_user_turn(channel_id=5, author_id=7, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=5, reply_to=u, model="g")
    await store.finish_model_turn(m, text="a", status="failed")
    turn = await store.get_turn(m)
    assert turn is not None and (turn.prompt_tokens, turn.output_tokens) == (None, None)


async def test_message_ids_attach_in_order_and_find_works_mid_stream(store: AnyStore) -> None:
    u = await store.add_user_turn(
        channel_id=3, author_id=1, author_name="a", text="q", message_ids=[1000]
    )
    m = await store.start_model_turn(channel_id=3, reply_to=u, model="g")
    await store.add_message_ids(m, [2001])
    found = await store.find_turn_by_message(2001)
    assert found is not None and found.id == m and found.status == "streaming"
    await store.add_message_ids(m, [2002, 2001, 2003])  # 2001 again: skipped
    await store.finish_model_turn(m, text="long", status="complete", message_ids=[2003, 2004])
    turn = await store.get_turn(m)
    assert turn is not None and turn.message_ids == [2001, 2002, 2003, 2004]
    user = await store.find_turn_by_message(1000)
    assert user is not None and user.id == u and user.role == "user"
    assert await store.find_turn_by_message(999_999) is None
    await store.add_message_ids(m, [])  # nothing to do


async def test_find_turn_by_message_returns_image_bytes(store: AnyStore) -> None:
    img = Media(b"a cat", "image/webp")
    await store.add_user_turn(
        channel_id=3, author_id=1, author_name="a", text="cat", message_ids=[42], images=[img]
    )
    turn = await store.find_turn_by_message(42)
    assert turn is not None and turn.images[0].data == b"a cat"


async def test_same_image_is_stored_once(store: AnyStore, backend: Backend) -> None:
    img = Media(b"same bytes" * 1000, "image/png")
    for channel in (1, 2, 3):
        await store.add_user_turn(
            channel_id=channel, author_id=1, author_name="a", text="again", images=[img, img]
        )
    assert await backend.fetch("SELECT count(*) FROM images") == [(1,)]
    (turn,) = await store.load_history(2)
    assert [i.data for i in turn.images] == [img.data, img.data]


async def test_large_images_are_hashed_and_stored(store: AnyStore) -> None:
    big = Media(bytes(range(256)) * 8192, "image/png")  # 2 MiB: hashed off the loop
    u = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="", images=[big])
    turn = await store.get_turn(u)
    assert turn is not None
    assert turn.images[0].sha256 == hashlib.sha256(big.data).hexdigest()
    assert turn.images[0].data == big.data


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        "emoji 🎉👩‍👩‍👧 and RTL שלום and CJK 漢字",
        "NUL \x00 in the \x00 middle",
        "quotes ' \" ; DROP TABLE turns; --",
        "x" * 1_000_000,
    ],
)
async def test_any_text_round_trips(store: AnyStore, text: str) -> None:
    u, m = await pair(store, 9, text, text[::-1])
    history = await store.load_history(9, max_tokens=10**9)
    assert [(t.id, t.text) for t in history] == [(u, text), (m, text[::-1])]
    doc = json.loads(await store.export_channel(9, "json"))
    assert [t["text"] for t in doc["turns"]] == [text, text[::-1]]


async def test_lone_surrogates_are_replaced_not_refused(store: AnyStore) -> None:
    u = await store.add_user_turn(channel_id=1, author_id=1, author_name="a\ud800", text="x\udfffy")
    turn = await store.get_turn(u)
    assert turn is not None and (turn.author_name, turn.text) == ("a\ufffd", "x\ufffdy")


# ----------------------------------------------------------------------------- history


async def test_history_is_per_channel_and_paired(store: AnyStore) -> None:
    a1 = await pair(store, 1, "a1", "A1")
    await pair(store, 2, "b1", "B1")
    a2 = await pair(store, 1, "a2", "A2")
    history = await store.load_history(1)
    assert [t.id for t in history] == [*a1, *a2]
    assert [t.role for t in history] == ["user", "model", "user", "model"]
    assert await store.load_history(3) == []


async def test_concurrent_replies_stay_next_to_their_questions(store: AnyStore) -> None:
    q1 = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q1")
    q2 = await store.add_user_turn(channel_id=1, author_id=2, author_name="b", text="q2")
    m2 = await store.start_model_turn(channel_id=1, reply_to=q2, model="g")
    m1 = await store.start_model_turn(channel_id=1, reply_to=q1, model="g")
    await store.finish_model_turn(m2, text="r2", status="complete")  # q2's reply ends first
    assert [t.id for t in await store.load_history(1)] == [q1, q2, m2]  # m1 still streaming
    await store.finish_model_turn(m1, text="r1", status="complete")
    assert [t.text for t in await store.load_history(1)] == ["q1", "r1", "q2", "r2"]
    # The bot's own view while answering q2: the pairs asked before q2.
    assert [t.id for t in await store.load_history(1, before_turn=q2)] == [q1, m1]
    assert await store.load_history(1, before_turn=q1) == []


async def test_several_replies_to_one_question_keep_their_order(store: AnyStore) -> None:
    q = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    first = await store.start_model_turn(channel_id=1, reply_to=q, model="g")
    await store.finish_model_turn(first, text="", status="failed")
    second = await store.start_model_turn(channel_id=1, reply_to=q, model="g")
    await store.finish_model_turn(second, text="retry", status="complete")
    history = await store.load_history(1)
    assert [(t.id, t.status) for t in history] == [
        (q, "complete"),
        (first, "failed"),
        (second, "complete"),
    ]


async def test_max_turns_keeps_the_newest_and_never_starts_with_a_reply(store: AnyStore) -> None:
    ids = [i for n in range(5) for i in await pair(store, 1, f"q{n}", f"a{n}")]
    assert [t.id for t in await store.load_history(1, max_turns=4)] == ids[-4:]
    # An odd limit would cut a pair in half: the orphaned reply is dropped.
    assert [t.id for t in await store.load_history(1, max_turns=5)] == ids[-4:]
    assert [t.id for t in await store.load_history(1, max_turns=1)] == []
    assert await store.load_history(1, max_turns=0) == []


async def test_token_budget_drops_oldest_whole_pairs(store: AnyStore) -> None:
    old = await pair(store, 1, "o" * 4000, "p" * 4000)  # 2,000 tokens
    mid = await pair(store, 1, "m" * 400, "n" * 400)  # 200 tokens
    new = await pair(store, 1, "x" * 40, "y" * 40)  # 20 tokens
    ids = lambda turns: [t.id for t in turns]  # noqa: E731
    assert ids(await store.load_history(1, max_tokens=10_000)) == [*old, *mid, *new]
    assert ids(await store.load_history(1, max_tokens=2_219)) == [*mid, *new]
    assert ids(await store.load_history(1, max_tokens=2_220)) == [*old, *mid, *new]
    # 210 tokens fit the newest pair and the mid question, not its answer: whole pairs only.
    assert ids(await store.load_history(1, max_tokens=210)) == [*new]
    assert ids(await store.load_history(1, max_tokens=19)) == []


async def test_images_cost_tokens_and_carry_bytes_only_in_the_last_turns(
    store: AnyStore,
) -> None:
    img = [Media(f"image {n}".encode(), "image/png") for n in range(4)]
    turns = [await pair(store, 1, f"q{n}", f"a{n}", images=(img[n],)) for n in range(4)]
    history = await store.load_history(1, image_turns=3)
    assert len(history) == 8
    with_data = [t.id for t in history if t.images and t.images[0].data is not None]
    without = [t.id for t in history if t.images and t.images[0].data is None]
    assert with_data == [turns[3][0]]  # the last 3 turns are a3, q3 … only q3 has an image
    assert without == [turns[0][0], turns[1][0], turns[2][0]]
    assert history[0].images[0].sha256 == hashlib.sha256(b"image 0").hexdigest()

    history = await store.load_history(1, image_turns=4)
    assert [t.id for t in history if t.images and t.images[0].data] == [turns[2][0], turns[3][0]]
    history = await store.load_history(1, image_turns=100)  # a window wider than the history
    assert all(t.images[0].data for t in history if t.images)
    history = await store.load_history(1, image_turns=0)
    assert len(history) == 8 and all(i.data is None for t in history for i in t.images)

    # Only images sent with their bytes cost tokens.
    cost_all_text = sum(approx_tokens(t.text) for t in history)
    budget = cost_all_text + 2 * IMAGE_TOKENS
    assert len(await store.load_history(1, image_turns=4, max_tokens=budget)) == 8
    assert len(await store.load_history(1, image_turns=4, max_tokens=budget - 1)) == 6
    assert len(await store.load_history(1, image_turns=0, max_tokens=cost_all_text)) == 8


async def test_failed_and_stopped_replies_are_in_history_blocked_exchanges_are_not(
    store: AnyStore,
) -> None:
    ids = {}
    for n, status in enumerate(("failed", "blocked", "stopped")):
        ids[status] = await pair(store, 1, f"q{n}", f"partial {n}", status=status)
    history = await store.load_history(1)
    assert [(t.role, t.status) for t in history] == [
        ("user", "complete"),
        ("model", "failed"),
        ("user", "complete"),
        ("model", "stopped"),
    ]
    question, reply = ids["blocked"]
    for turn_id in (question, reply):  # still stored, still exported
        turn = await store.get_turn(turn_id)
        assert turn is not None and turn.withdrawn == "blocked"
    assert "q1" in await store.export_channel(1)


async def test_a_message_is_asked_at_most_once(store: AnyStore) -> None:
    first = await store.add_user_turn(
        channel_id=1, author_id=1, author_name="a", text="q", message_ids=[BIG]
    )
    with pytest.raises(AlreadyAnswered):
        await store.add_user_turn(
            channel_id=1, author_id=1, author_name="a", text="q again", message_ids=[BIG]
        )
    assert [t.id for t in await store.load_history(1)] == [first]  # nothing half-stored
    # a question without a message (the console) and another message are not affected
    await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="x")
    await store.add_user_turn(
        channel_id=1, author_id=1, author_name="a", text="y", message_ids=[BIG + 1]
    )


async def test_many_deliveries_of_one_message_at_once_store_one_question(
    store: AnyStore,
) -> None:
    results = await asyncio.gather(
        *(
            store.add_user_turn(
                channel_id=1, author_id=1, author_name="a", text="q", message_ids=[42]
            )
            for _ in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, AlreadyAnswered) for r in results) == 9


async def test_one_owner_per_file(tmp_path: Path) -> None:
    path = tmp_path / "owned.db"
    owner = await open_store(path)
    try:
        with pytest.raises(StoreLocked, match="another gemcord process"):
            await open_store(path)
        reader = await open_store(path, recover_streaming=False)  # a health check may read
        await reader.close()
    finally:
        await owner.close()
    again = await open_store(path)  # released on close
    await again.close()


async def test_a_deleted_lock_file_makes_the_owner_unhealthy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "owned.db"
    owner = await open_store(path)
    second = None
    try:
        assert await owner.health() is None
        (tmp_path / "owned.db.lock").unlink()  # someone tidies up the folder
        second = await open_store(path)  # which lets a second process in
        problem = (
            f"the lock file {path}.lock was deleted or replaced while this process held it, so"
            " another process could use the database too; restart this one"
        )
        with caplog.at_level(logging.ERROR, logger="storage.sqlite"):
            assert await owner.health() == problem
            assert await owner.health() == problem  # every poll says so; the log says it once
        assert [r.getMessage() for r in caplog.records if r.name == "storage.sqlite"] == [problem]
    finally:
        if second is not None:
            await second.close()
        await owner.close()


async def test_deleted_messages_leave_history(store: AnyStore) -> None:
    async def exchange(n: int) -> tuple[int, int]:
        u = await store.add_user_turn(
            channel_id=1, author_id=1, author_name="a", text=f"q{n}", message_ids=[100 + n]
        )
        m = await store.start_model_turn(channel_id=1, reply_to=u, model="g")
        await store.finish_model_turn(m, text=f"a{n}", status="complete", message_ids=[200 + n])
        return u, m

    (u1, _), (u2, m2), (u3, m3) = [await exchange(n) for n in range(3)]
    gone = await store.withdraw_message(100)  # the first question was deleted
    assert gone is not None and gone.id == u1
    reply = await store.withdraw_message(201)  # the second reply was deleted
    assert reply is not None and reply.id == m2
    assert await store.withdraw_message(999) is None
    assert [t.id for t in await store.load_history(1)] == [u2, u3, m3]
    erased = await store.get_turn(u1)
    assert erased is not None and erased.text == "" and erased.withdrawn == "deleted"
    export = await store.export_channel(1)
    assert "q0" not in export and "deleted on Discord" in export and "a1" in export


async def test_unusable_images_are_never_sent_again(store: AnyStore) -> None:
    good, bad = Media(b"good bytes", "image/png"), Media(b"bad bytes", "image/png")
    u = await store.add_user_turn(
        channel_id=1, author_id=1, author_name="a", text="q", images=[good, bad]
    )
    await store.mark_images_unusable([hashlib.sha256(b"bad bytes").hexdigest(), "0" * 64], "400")
    [turn] = await store.load_history(1)
    assert turn.id == u and [i.data for i in turn.images] == [b"good bytes", None]


async def test_retention_deletes_exactly_the_expired_rows_and_files(
    store: AnyStore, backend: Backend
) -> None:
    old_image, kept_image = Media(b"old" * 5000, "image/png"), Media(b"new", "image/png")
    old = await pair(store, 1, "old question", "old answer", images=(old_image,))
    archived = await pair(store, 2, "archived question", "archived answer")
    await store.reset_channel(2)
    recent = await pair(store, 1, "recent question", "recent answer", images=(kept_image,))
    await backend.fetch(  # make the first exchange 40 days old
        "UPDATE turns SET created_at = created_at - 40 * 86400 WHERE id IN (?, ?)", *old
    )
    now = time.time()
    size_before = await store.size_bytes()
    deleted = await store.prune(older_than=now - 30 * 86400, archived_before=now + 1)
    assert deleted == 4  # the old exchange and the archived one
    assert [t.id for t in await store.load_history(1)] == list(recent)
    assert await store.get_turn(archived[0]) is None and await store.get_turn(old[1]) is None
    assert await backend.fetch("SELECT count(*) FROM images") == [(1,)]
    if backend.name == "sqlite":
        assert await backend.fetch("PRAGMA auto_vacuum") == [(2,)]  # incremental
        assert await store.size_bytes() <= size_before
    else:
        assert size_before > 0  # PostgreSQL gives space back by (auto)vacuum
    # nothing expired: nothing deleted; retention off keeps old exchanges
    assert await store.prune(older_than=None, archived_before=now - 86400) == 0


async def test_settings_are_read_once_and_follow_every_write(
    store: AnyStore, backend: Backend
) -> None:
    await store.set_persona(1, "first")
    first = await store.get_channel_settings(1)
    first.persona = "changed by a caller"  # a copy: the cache is not touched
    assert (await store.get_channel_settings(1)).persona == "first"
    await backend.fetch(  # read from memory now: the database is not asked
        "UPDATE channel_settings SET persona = 'behind its back' WHERE channel_id = 1"
    )
    assert (await store.get_channel_settings(1)).persona == "first"
    await store.set_model(1, "gemini-x")  # every write through the store is seen
    assert (await store.get_channel_settings(1)).model == "gemini-x"
    await store.purge_channel(1)
    assert (await store.get_channel_settings(1)).persona is None


async def test_a_deleted_channel_loses_its_rows(store: AnyStore) -> None:
    await pair(store, 1, "q", "a")
    kept = await pair(store, 2, "q2", "a2")
    await store.set_persona(1, "gone with the channel")
    assert await store.purge_channel(1) == 2
    assert await store.load_history(1) == []
    assert (await store.get_channel_settings(1)).persona is None
    assert [t.id for t in await store.load_history(2)] == list(kept)


async def test_reply_in_another_channel_is_not_an_orphan_in_history(store: AnyStore) -> None:
    q = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=2, reply_to=q, model="g")  # e.g. a new thread
    await store.finish_model_turn(m, text="in the thread", status="complete")
    later = await pair(store, 2, "follow-up", "answer")
    assert [t.id for t in await store.load_history(2)] == list(later)
    assert [t.id for t in await store.load_history(1)] == [q]


async def test_history_query_uses_the_index(sqlite_store: SQLiteStore) -> None:
    from storage.sqlite import _HISTORY_SQL

    conn = sqlite_store._conn
    plan = " | ".join(
        str(r[3])
        for r in await conn.execute_fetchall(
            "EXPLAIN QUERY PLAN " + _HISTORY_SQL,
            {"channel": 1, "before": 2, "author": 3, "limit": 3},
        )
    )
    assert "SEARCH t USING INDEX turns_history (channel_id=? AND archived=? AND pair_key<?)" in plan
    assert "SCAN t" not in plan and "TEMP B-TREE" not in plan
    plan = " | ".join(
        str(r[3])
        for r in await conn.execute_fetchall(
            "EXPLAIN QUERY PLAN SELECT turn_id FROM turn_messages WHERE message_id = ?"
            " ORDER BY turn_id DESC LIMIT 1",
            (1,),
        )
    )
    assert "turn_messages_message" in plan


# ----------------------------------------------------------------------------- reset, export


async def test_reset_is_soft(store: AnyStore) -> None:
    old = await pair(store, 1, "before", "reset")
    other = await pair(store, 2, "other", "channel")
    await store.set_persona(1, "terse")
    assert await store.reset_channel(1) == 2
    assert await store.load_history(1) == []
    assert [t.id for t in await store.load_history(2)] == list(other)
    assert (await store.get_channel_settings(1)).persona == "terse"  # settings survive
    assert await store.reset_channel(1) == 0

    new = await pair(store, 1, "after", "reset")
    assert [t.id for t in await store.load_history(1)] == list(new)
    everything = json.loads(await store.export_channel(1, "json"))
    assert [(t["id"], t["archived"]) for t in everything["turns"]] == [
        (old[0], True),
        (old[1], True),
        (new[0], False),
        (new[1], False),
    ]
    assert everything["turns"][0]["archived_at"] is not None
    live = json.loads(await store.export_channel(1, "json", include_archived=False))
    assert [t["id"] for t in live["turns"]] == list(new)
    found = await store.find_turn_by_message(0)
    assert found is None
    stats = await store.stats(1)
    assert stats.turns == 4  # stats count archived turns too


async def test_reply_streaming_during_reset_is_archived_with_its_question(
    store: AnyStore,
) -> None:
    q = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=1, reply_to=q, model="g")
    q2 = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q2")
    assert await store.reset_channel(1) == 3
    await store.finish_model_turn(m, text="late answer", status="complete")
    m2 = await store.start_model_turn(channel_id=1, reply_to=q2, model="g")  # after the reset
    await store.finish_model_turn(m2, text="late too", status="complete")
    assert await store.load_history(1) == []
    archived = json.loads(await store.export_channel(1, "json"))["turns"]
    assert [(t["id"], t["archived"]) for t in archived] == [
        (q, True),
        (m, True),
        (q2, True),
        (m2, True),
    ]


async def test_export_markdown(store: AnyStore) -> None:
    await store.set_persona(1, "You are a pirate.\nSay arr.")
    await store.set_model(1, "gemini-2.5-pro")
    img = Media(b"pic", "image/png")
    await pair(store, 1, "old question", "old answer", images=(img,))
    await store.reset_channel(1)
    await pair(store, 1, "new **question**", "partial", status="stopped")
    md = await store.export_channel(1)
    assert md.startswith("# Conversation history — channel 1\n")
    assert "4 turn(s), 2 archived by a reset" in md
    assert "Model: `gemini-2.5-pro`" in md
    assert "> You are a pirate.\n> Say arr." in md
    assert md.index("## Archived") < md.index("old question") < md.index("## Current")
    assert md.index("## Current") < md.index("new **question**")
    assert "· stopped" in md
    assert f"image `{hashlib.sha256(b'pic').hexdigest()[:16]}` (image/png, 3 bytes)" in md
    live = await store.export_channel(1, "markdown", include_archived=False)
    assert "old question" not in live and "new **question**" in live
    empty = await store.export_channel(12345)
    assert "0 turn(s)" in empty
    with pytest.raises(ValueError):
        await store.export_channel(1, "csv")  # type: ignore[arg-type]


async def test_export_json_keeps_snowflakes_exact(store: AnyStore) -> None:
    u = await store.add_user_turn(
        channel_id=BIG,
        guild_id=BIG + 1,
        author_id=BIG + 2,
        author_name="a",
        text="q",
        message_ids=[BIG + 3],
    )
    m = await store.start_model_turn(channel_id=BIG, reply_to=u, model="g")
    await store.finish_model_turn(
        m, text="a", status="complete", message_ids=[BIG + 4], prompt_tokens=5, output_tokens=6
    )
    doc = json.loads(await store.export_channel(BIG, "json"))
    assert doc["channel_id"] == str(BIG)
    t0, t1 = doc["turns"]
    assert (t0["guild_id"], t0["author_id"], t0["message_ids"]) == (
        str(BIG + 1),
        str(BIG + 2),
        [str(BIG + 3)],
    )
    assert (t1["reply_to"], t1["message_ids"], t1["prompt_tokens"], t1["output_tokens"]) == (
        u,
        [str(BIG + 4)],
        5,
        6,
    )


# ----------------------------------------------------------------------------- settings, stats


async def test_channel_settings(store: AnyStore) -> None:
    s = await store.get_channel_settings(1)
    assert (s.channel_id, s.persona, s.model) == (1, None, None)
    await store.set_persona(1, "be brief")
    await store.set_model(1, "gemini-2.5-pro")
    await store.set_model(2, "other")
    s = await store.get_channel_settings(1)
    assert (s.persona, s.model) == ("be brief", "gemini-2.5-pro")
    await store.set_persona(1, None)
    s = await store.get_channel_settings(1)
    assert (s.persona, s.model) == (None, "gemini-2.5-pro")
    assert (await store.get_channel_settings(2)).model == "other"


async def test_stats(store: AnyStore) -> None:
    empty = await store.stats()
    assert (empty.turns, empty.channels, empty.images, empty.by_status) == (0, 0, 0, {})
    assert empty.avg_first_chunk_latency is None and empty.avg_total_time is None

    img = Media(b"i", "image/png")
    u = await store.add_user_turn(
        channel_id=1, author_id=1, author_name="a", text="q", images=[img]
    )
    m = await store.start_model_turn(channel_id=1, reply_to=u, model="g")
    await store.finish_model_turn(
        m,
        text="a",
        status="complete",
        prompt_tokens=100,
        output_tokens=10,
        metrics=metrics(first_chunk_latency=0.2, total_time=1.0),
    )
    u2 = await store.add_user_turn(channel_id=2, author_id=1, author_name="a", text="q")
    m2 = await store.start_model_turn(channel_id=2, reply_to=u2, model="g")
    await store.finish_model_turn(
        m2,
        text="",
        status="blocked",
        prompt_tokens=50,
        metrics=metrics(first_chunk_latency=None, total_time=3.0),
    )
    u3 = await store.add_user_turn(channel_id=2, author_id=1, author_name="a", text="q")
    await store.start_model_turn(channel_id=2, reply_to=u3, model="g")

    everywhere = await store.stats()
    assert (everywhere.turns, everywhere.user_turns, everywhere.model_turns) == (6, 3, 3)
    assert (everywhere.channels, everywhere.images) == (2, 1)
    assert everywhere.by_status == {"complete": 4, "blocked": 1, "streaming": 1}
    assert (everywhere.prompt_tokens, everywhere.output_tokens) == (150, 10)
    assert everywhere.replies_measured == 2
    assert everywhere.avg_first_chunk_latency == pytest.approx(0.2)
    assert everywhere.avg_total_time == pytest.approx(2.0)

    one = await store.stats(1)
    assert (one.turns, one.user_turns, one.model_turns, one.channels, one.images) == (2, 1, 1, 1, 1)
    assert (one.prompt_tokens, one.output_tokens, one.replies_measured) == (100, 10, 1)
    assert one.avg_total_time == pytest.approx(1.0)
    two = await store.stats(2)
    assert (two.turns, two.images, two.by_status) == (
        4,
        0,
        {"complete": 2, "blocked": 1, "streaming": 1},
    )
    assert (await store.stats(3)).channels == 0


# ----------------------------------------------------------------------------- forget, purge


async def test_forget_user(store: AnyStore, backend: Backend, tmp_path: Path) -> None:
    secret_image = Media(b"SECRET-IMAGE-BYTES" * 10, "image/png")
    shared_image = Media(b"shared picture", "image/png")
    mine1 = await pair(
        store, 1, "SECRET-TEXT-ONE", "reply one", author=7, images=(secret_image, shared_image)
    )
    theirs = await pair(store, 1, "someone else", "reply", author=8, images=(shared_image,))
    mine2 = await pair(store, 2, "SECRET-TEXT-TWO", "reply two", author=7)
    await store.reset_channel(2)  # archived turns are forgotten too
    await store.add_message_ids(mine1[0], [4242])

    assert await store.forget_user(7) == 4
    assert [t.id for t in await store.load_history(1)] == list(theirs)
    assert json.loads(await store.export_channel(2, "json"))["turns"] == []
    assert await store.find_turn_by_message(4242) is None
    assert [await store.get_turn(i) for i in (*mine1, *mine2)] == [None] * 4
    hashes = {r[0] for r in await backend.fetch("SELECT sha256 FROM images")}
    assert hashes == {hashlib.sha256(shared_image.data).hexdigest()}
    for table in ("turn_messages", "turn_images", "reply_metrics"):
        orphans = await backend.fetch(
            f"SELECT count(*) FROM {table} WHERE turn_id NOT IN (SELECT id FROM turns)"
        )
        assert orphans == [(0,)]
    assert await store.forget_user(7) == 0

    # The deleted text is gone from the file itself, not only from queries (SQLite's
    # secure_delete; PostgreSQL leaves dead rows to vacuum).
    await store.close()
    if backend.name != "sqlite":
        return
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    assert b"SECRET-TEXT" not in raw and b"SECRET-IMAGE-BYTES" not in raw
    assert b"someone else" in raw


async def test_purge_channel_is_a_hard_delete(store: AnyStore) -> None:
    await pair(store, 1, "q", "a")
    await store.reset_channel(1)
    await pair(store, 1, "q2", "a2")
    keep = await pair(store, 2, "q", "a")
    await store.set_persona(1, "x")
    assert await store.purge_channel(1) == 4
    assert json.loads(await store.export_channel(1, "json"))["turns"] == []
    assert (await store.get_channel_settings(1)).persona is None
    assert [t.id for t in await store.load_history(2)] == list(keep)


# ----------------------------------------------------------------------------- concurrency


async def test_fifty_channels_writing_at_once(store: AnyStore) -> None:
    """50 channels × 100 turns (50 question/answer pairs each), all written concurrently."""
    sql_threads: set[int] = set()
    if isinstance(store, SQLiteStore):
        await store._conn.set_trace_callback(lambda _sql: sql_threads.add(threading.get_ident()))

    async def channel(c: int) -> list[int]:
        ids: list[int] = []
        for n in range(50):
            u = await store.add_user_turn(
                channel_id=c,
                author_id=c,
                author_name=f"u{c}",
                text=f"{c}:{n}?",
                message_ids=[c * 1000 + n],
            )
            m = await store.start_model_turn(channel_id=c, reply_to=u, model="g")
            await store.finish_model_turn(m, text=f"{c}:{n}!", status="complete")
            ids += [u, m]
        return ids

    written = await asyncio.gather(*(channel(c) for c in range(1, 51)))
    if isinstance(store, SQLiteStore):
        assert threading.get_ident() not in sql_threads  # no SQL ran on the event loop's thread
        assert len(sql_threads) == 1
    for c, ids in enumerate(written, start=1):
        history = await store.load_history(c, max_turns=1000, max_tokens=10**9)
        assert [t.id for t in history] == ids
        assert [t.text for t in history] == [f"{c}:{n}{mark}" for n in range(50) for mark in "?!"]
    stats = await store.stats()
    assert (stats.turns, stats.channels, stats.by_status) == (5000, 50, {"complete": 5000})


async def test_many_tasks_in_one_channel(store: AnyStore) -> None:
    ids = await asyncio.gather(
        *(
            store.add_user_turn(
                channel_id=1, author_id=n, author_name="a", text=str(n), message_ids=[n]
            )
            for n in range(200)
        )
    )
    assert len(set(ids)) == 200
    history = await store.load_history(1, max_turns=500, max_tokens=10**9)
    assert [t.id for t in history] == sorted(ids)
    for n, turn_id in enumerate(ids):
        found = await store.find_turn_by_message(n)
        assert found is not None and found.id == turn_id


async def test_a_cancelled_caller_does_not_lose_or_tear_a_write(store: AnyStore) -> None:
    u = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=1, reply_to=u, model="g")
    blocker = asyncio.create_task(store.export_channel(1))  # holds the connection briefly
    finish = asyncio.create_task(
        store.finish_model_turn(
            m, text="final", status="stopped", message_ids=[1, 2, 3], metrics=metrics()
        )
    )
    await asyncio.sleep(0)
    finish.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finish
    await blocker
    turn = None
    for _ in range(100):  # the write completes in the background
        turn = await store.get_turn(m)
        if turn is not None and turn.status != "streaming":
            break
        await asyncio.sleep(0.01)
    assert turn is not None
    assert (turn.status, turn.text, turn.message_ids) == ("stopped", "final", [1, 2, 3])
    await pair(store, 1, "still", "works")


async def test_failed_write_rolls_back_completely(store: AnyStore, backend: Backend) -> None:
    u = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    m = await store.start_model_turn(channel_id=1, reply_to=u, model="g")
    bad = metrics(total_time=None)  # NOT NULL column: the metrics insert fails
    with pytest.raises(backend.integrity_error):
        await store.finish_model_turn(m, text="t", status="complete", message_ids=[5], metrics=bad)
    turn = await store.get_turn(m)
    assert turn is not None and (turn.status, turn.text, turn.message_ids) == ("streaming", "", [])
    await store.finish_model_turn(
        m, text="t", status="complete", message_ids=[5], metrics=metrics()
    )
    turn = await store.get_turn(m)
    assert turn is not None and (turn.status, turn.message_ids) == ("complete", [5])


async def recount(backend: Backend, channel: int | None) -> tuple[object, ...]:
    """Stats computed the slow way, straight from the turns and metrics tables."""
    where, params = ("", ()) if channel is None else (" WHERE channel_id = ?", (channel,))
    groups = await backend.fetch(
        "SELECT role, status, count(*), coalesce(sum(prompt_tokens), 0),"
        f" coalesce(sum(output_tokens), 0) FROM turns{where} GROUP BY role, status",
        *params,
    )
    by_status: dict[str, int] = {}
    for _, status, n, _, _ in groups:
        by_status[status] = by_status.get(status, 0) + n
    [(channels,)] = await backend.fetch(
        f"SELECT count(DISTINCT channel_id) FROM turns{where}", *params
    )
    [measured] = await backend.fetch(
        "SELECT count(*), avg(m.first_chunk_latency), avg(m.total_time)"
        " FROM reply_metrics AS m JOIN turns AS t ON t.id = m.turn_id"
        + ("" if channel is None else " WHERE t.channel_id = ?"),
        *params,
    )
    return (
        sum(g[2] for g in groups),
        sum(g[2] for g in groups if g[0] == "user"),
        channels,
        by_status,
        sum(g[3] for g in groups),
        sum(g[4] for g in groups),
        measured[0],
        None if measured[1] is None else round(measured[1], 6),
        None if measured[2] is None else round(measured[2], 6),
    )


def summarise(s: object) -> tuple[object, ...]:
    from storage import Stats

    assert isinstance(s, Stats)
    return (
        s.turns,
        s.user_turns,
        s.channels,
        s.by_status,
        s.prompt_tokens,
        s.output_tokens,
        s.replies_measured,
        None if s.avg_first_chunk_latency is None else round(s.avg_first_chunk_latency, 6),
        None if s.avg_total_time is None else round(s.avg_total_time, 6),
    )


async def test_running_totals_match_a_recount(backend: Backend) -> None:
    """Stats read trigger-kept totals; after any mix of operations they equal a recount."""
    import random

    store = await backend.open()
    rng = random.Random(1234)
    open_replies: list[int] = []
    users: list[int] = []
    try:
        for step in range(600):
            action = rng.random()
            channel = rng.randrange(1, 6)
            if action < 0.35 or not users:
                users.append(
                    await store.add_user_turn(
                        channel_id=channel,
                        author_id=rng.randrange(1, 8),
                        author_name="a",
                        text="q" * rng.randrange(50),
                    )
                )
            elif action < 0.6:
                reply_to = rng.choice(users)
                if await store.get_turn(reply_to) is not None:
                    open_replies.append(
                        await store.start_model_turn(
                            channel_id=channel, reply_to=reply_to, model="g"
                        )
                    )
            elif action < 0.85 and open_replies:
                m = rng.choice(open_replies)
                await store.finish_model_turn(
                    m,
                    text="a",
                    status=rng.choice(["complete", "stopped", "failed", "blocked"]),
                    prompt_tokens=rng.choice([None, rng.randrange(1000)]),
                    output_tokens=rng.choice([None, rng.randrange(1000)]),
                    metrics=rng.choice(
                        [
                            None,
                            metrics(
                                first_chunk_latency=rng.choice([None, rng.random()]),
                                total_time=rng.random() * 10,
                            ),
                        ]
                    ),
                )
                if rng.random() < 0.7:
                    open_replies.remove(m)  # else it may be finished again later
            elif action < 0.9:
                await store.reset_channel(channel)
            elif action < 0.96:
                await store.forget_user(rng.randrange(1, 8))
            elif action < 0.98:
                await store.purge_channel(channel)
            else:
                await store.close()  # replies still streaming become failed on reopen
                store = await backend.open()
                open_replies.clear()
            if step % 50 == 0 or step == 599:
                for scope in (None, 1, 2, 3, 4, 5):
                    assert summarise(await store.stats(scope)) == await recount(backend, scope), (
                        step,
                        scope,
                    )
    finally:
        await store.close()


async def test_export_reads_long_channels_in_chunks(
    store: AnyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.postgres
    import storage.sqlite

    monkeypatch.setattr(storage.sqlite, "EXPORT_CHUNK", 3)
    monkeypatch.setattr(storage.postgres, "EXPORT_CHUNK", 3)
    expected: list[int] = []
    for n in range(7):
        expected += await pair(store, 1, f"old {n}", f"old answer {n}")
    # A question archived while its reply streams, answered after the reset.
    q = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="late")
    m = await store.start_model_turn(channel_id=1, reply_to=q, model="g")
    await store.reset_channel(1)
    await store.finish_model_turn(m, text="late answer", status="complete")
    expected += [q, m]
    for n in range(5):
        expected += await pair(store, 1, f"new {n}", f"new answer {n}")
    await pair(store, 2, "other", "channel")

    doc = json.loads(await store.export_channel(1, "json"))
    assert [t["id"] for t in doc["turns"]] == expected
    assert [t["archived"] for t in doc["turns"]] == [True] * 16 + [False] * 10
    live = json.loads(await store.export_channel(1, "json", include_archived=False))
    assert [t["id"] for t in live["turns"]] == expected[16:]

    if not isinstance(store, SQLiteStore):
        return
    from storage.sqlite import _EXPORT_SQL

    plan = " | ".join(
        str(r[3])
        for r in await store._conn.execute_fetchall(
            "EXPLAIN QUERY PLAN " + _EXPORT_SQL, (1, 0, 0, 0, 3)
        )
    )
    assert "SEARCH t USING INDEX turns_history (channel_id=? AND archived=? AND pair_key>?)" in plan
    assert "TEMP B-TREE" not in plan


async def test_set_setting_sets_clears_and_refuses_unknown_names(store: AnyStore) -> None:
    await store.set_setting(7, "scope", "user")
    await store.set_setting(7, "search", "on")
    got = await store.get_channel_settings(7)
    assert (got.scope, got.search, got.persona) == ("user", "on", None)
    await store.set_setting(7, "scope", "  ")  # blank: back to the default
    assert (await store.get_channel_settings(7)).scope is None
    with pytest.raises(ValueError):
        await store.set_setting(7, "persona; DROP TABLE turns", "x")


async def test_history_of_one_author_and_forgetting_the_last_question(store: AnyStore) -> None:
    await pair(store, 1, "alice one", "a1", author=10)
    await pair(store, 1, "bob one", "b1", author=20)
    await pair(store, 1, "alice two", "a2", author=10)
    await pair(store, 2, "alice elsewhere", "e1", author=10)
    mine = await store.load_history(1, author_id=10)
    assert [t.text for t in mine] == ["alice one", "a1", "alice two", "a2"]
    assert [t.text for t in await store.load_history(1, author_id=20)] == ["bob one", "b1"]
    assert len(await store.load_history(1)) == 6
    last = await store.last_question(10, 1)
    assert last == mine[2].id
    assert await store.forget_question(last) == 2
    assert [t.text for t in await store.load_history(1)] == ["alice one", "a1", "bob one", "b1"]
    assert len(await store.load_history(2)) == 2  # another channel keeps its exchange
    assert await store.forget_question(last) == 0  # gone already
    assert await store.forget_question(mine[1].id) == 0  # a reply is no question
    assert await store.last_question(30, 1) is None
    await store.reset_channel(2)
    assert await store.last_question(10, 2) is None  # archived: out of history


async def test_regenerated_replies_and_private_exchanges_leave_history(store: AnyStore) -> None:
    q, first = await pair(store, 1, "question", "first answer")
    second = await store.start_model_turn(channel_id=1, reply_to=q, model="g")
    await store.finish_model_turn(second, text="second answer", status="complete")
    assert await store.replace_replies(q, second) == 1
    assert await store.replace_replies(q, second) == 0  # marked once
    assert [t.id for t in await store.load_history(1)] == [q, second]
    replaced = await store.get_turn(first)
    assert replaced is not None and replaced.hidden == "replaced"

    secret = await store.add_user_turn(
        channel_id=1, author_id=10, author_name="a", text="just for me", hidden="private"
    )
    reply = await store.start_model_turn(channel_id=1, reply_to=secret, model="g")
    await store.finish_model_turn(reply, text="private summary", status="complete")
    assert [t.id for t in await store.load_history(1)] == [q, second]
    assert [t.hidden for t in await asyncio.gather(*map(store.get_turn, (secret, reply)))] == [
        "private",
        "private",
    ]

    doc = json.loads(await store.export_channel(1, "json"))
    assert [(t["id"], t["replaced"]) for t in doc["turns"]] == [
        (q, False),
        (first, True),
        (second, False),
    ]
    markdown = await store.export_channel(1, "markdown")
    assert "replaced by a regenerated answer" in markdown and "just for me" not in markdown


async def test_an_upload_saved_while_its_file_is_forgotten_is_queued_to_go(
    store: AnyStore,
) -> None:
    """Whichever wins the race, an upload never outlives its file unnoticed."""
    names = []
    for n in range(20):
        media = Media(f"clip {n}".encode(), "video/mp4", name="clip.mp4")
        await store.add_user_turn(
            channel_id=1, author_id=100 + n, author_name="a", text="", images=[media]
        )
        upload = Upload(media.sha256, f"files/{n:02}", f"u{n}", "video/mp4", time.time() + 99)
        names.append(upload.name)
        await asyncio.gather(store.save_upload(upload), store.forget_user(100 + n))
        assert await store.get_uploads([media.sha256]) == {}
    assert await store.take_gone_uploads() == names
    assert await store.take_gone_uploads() == []
