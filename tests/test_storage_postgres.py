"""What only PostgreSQL has: its migrations, the per-shard owner lock, shard-scoped recovery,
and text PostgreSQL cannot hold as it is (NUL)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from storage import Media, SchemaError, ShardSet, Store, StoreLocked, Upload, open_store
from storage.pg_schema import load_pg_migrations, migrate_pg, pg_version
from storage.schema import load_migrations
from tests.backends import Backend
from tests.pg_relay import Relay


@pytest.fixture
def pg(pg_backend: Backend) -> Backend:
    return pg_backend


def test_postgres_migrations_mirror_the_sqlite_ones() -> None:
    pg = [(m.version, m.name) for m in load_pg_migrations()]
    assert pg == [(m.version, m.name) for m in load_migrations()]


async def test_both_engines_end_with_the_same_tables_and_columns(
    pg: Backend, tmp_path: Path
) -> None:
    lite = await open_store(tmp_path / "x.db")
    await lite.close()
    store = await pg.open()
    assert isinstance(store, Store)
    await store.close()
    with sqlite3.connect(tmp_path / "x.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        sqlite_side = {
            t: {r[1] for r in db.execute(f'PRAGMA table_xinfo("{t}")')}
            for t in tables
            if not t.startswith("sqlite_")
        }
    pg_side: dict[str, set[str]] = {}
    for table, column in await pg.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name <> 'gemcord_schema'"
    ):
        pg_side.setdefault(table, set()).add(column)
    assert pg_side == sqlite_side


async def test_many_processes_migrating_at_once_apply_each_file_once(pg: Backend) -> None:
    conns = [await asyncpg.connect(pg.location) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate_pg(c) for c in conns))
        newest = len(load_pg_migrations())
        assert sorted(after for _, after in results) == [newest] * 6
        assert await pg_version(conns[0]) == newest
        rows = await pg.fetch("SELECT version FROM gemcord_schema ORDER BY version")
        assert rows == [(n,) for n in range(1, newest + 1)]
    finally:
        for c in conns:
            await c.close()


async def test_a_newer_database_is_refused_untouched(pg: Backend) -> None:
    store = await pg.open()
    await store.close()
    newest = len(load_pg_migrations())
    await pg.fetch("INSERT INTO gemcord_schema (version) VALUES (?)", newest + 1)
    with pytest.raises(SchemaError, match="newer than this code"):
        await pg.open()
    assert await pg.fetch("SELECT max(version) FROM gemcord_schema") == [(newest + 1,)]


async def test_one_owner_per_shard(pg: Backend) -> None:
    first = await pg.open(shards=ShardSet(4, (0, 1)))
    try:
        with pytest.raises(StoreLocked, match="shard 1"):
            await pg.open(shards=ShardSet(4, (1, 2)))
        other = await pg.open(shards=ShardSet(4, (2, 3)))  # the other half may run
        reader = await pg.open(recover_streaming=False)  # a health check may read
        await reader.close()
        await other.close()
    finally:
        await first.close()
    again = await pg.open(shards=ShardSet(4, (1, 2)))  # released on close
    await again.close()


def guild_on(shard: int, count: int) -> int:
    """A server id Discord puts on `shard` of `count`."""
    return ((1000 * count + shard) << 22) | 12345


async def test_a_process_recovers_only_its_own_shards_replies(pg: Backend) -> None:
    whole = await pg.open()
    started = {}
    for shard, guild in ((0, None), (0, guild_on(0, 2)), (1, guild_on(1, 2))):
        channel = 1 + len(started)
        u = await whole.add_user_turn(
            channel_id=channel, guild_id=guild, author_id=1, author_name="a", text="q"
        )
        started[channel] = (
            shard,
            await whole.start_model_turn(channel_id=channel, guild_id=guild, reply_to=u, model="g"),
        )
    await whole.close()  # as after a crash: three replies left streaming

    one = await pg.open(shards=ShardSet(2, (1,)))
    zero = await pg.open(shards=ShardSet(2, (0,)))
    try:
        assert [t.id for t in await one.take_interrupted()] == [started[3][1]]
        assert [t.id for t in await zero.take_interrupted()] == [started[1][1], started[2][1]]
    finally:
        await one.close()
        await zero.close()


@pytest.mark.parametrize("text", ["\x00", "\uffff", "\uffff0", "a\x00\uffff1\x00\uffff\uffff"])
async def test_nul_and_its_escape_round_trip(pg: Backend, text: str) -> None:
    store = await pg.open()
    try:
        await store.set_persona(1, text)
        await store.set_setting(1, "scope", text)
        file = Media(b"bytes", "text/plain", name=text)
        u = await store.add_user_turn(
            channel_id=1, author_id=1, author_name=text, text=text, images=[file]
        )
        await store.save_upload(Upload(file.sha256, text, text, "text/plain", 1e10))
        store._settings.clear()  # type: ignore[attr-defined]
        settings = await store.get_channel_settings(1)
        assert (settings.persona, settings.scope) == (text, text)
        [turn] = await store.load_history(1)
        assert (turn.id, turn.text, turn.author_name, turn.images[0].name) == (u, text, text, text)
        [upload] = (await store.get_uploads([file.sha256])).values()
        assert (upload.name, upload.uri) == (text, text)
        await store.forget_user(1)
        assert await store.take_gone_uploads() == [text]
    finally:
        await store.close()


async def test_history_query_uses_the_index(pg: Backend) -> None:
    """Whole channel or one author's exchanges: an index range scan, newest first."""
    from storage.postgres import _HISTORY_SQL, MAX_ID, _plan

    store = await pg.open()
    try:
        for author in (None, 7):
            plan = "\n".join(
                await store._read(  # type: ignore[attr-defined]
                    functools.partial(_plan, _HISTORY_SQL, (1, MAX_ID, author, 40))
                )
            )
            assert "Index Scan Backward using turns_history on turns t" in plan
            assert "Seq Scan" not in plan and "Sort" not in plan
    finally:
        await store.close()


async def test_a_bad_url_is_one_clear_error() -> None:
    from storage import StorageError

    with pytest.raises(StorageError, match="cannot open the database") as caught:
        await open_store("postgresql://nobody:secret@/nowhere?host=/nonexistent-socket-dir")
    assert "secret" not in str(caught.value)


async def test_every_owner_must_split_the_servers_the_same_way(pg: Backend) -> None:
    first = await pg.open(shards=ShardSet(2, (1,)))
    try:
        with pytest.raises(StoreLocked, match="GEMCORD_SHARD_COUNT=2"):
            await pg.open(shards=ShardSet(1, (0,)))  # would own shard 1's servers too
    finally:
        await first.close()


async def test_a_lost_lock_connection_takes_the_shards_again(pg: Backend) -> None:
    owner = await pg.open(shards=ShardSet(2, (1,)))
    try:
        first = owner._lock_conn  # type: ignore[attr-defined]
        await pg.fetch("SELECT pg_terminate_backend(?)", first.get_server_pid())
        for _ in range(1000):  # polls for up to 20 s on a busy machine
            again = owner._lock_conn  # type: ignore[attr-defined]
            if again is not None and again is not first:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the shard lock was not taken again")
        with pytest.raises(StoreLocked, match="shard 1"):
            await pg.open(shards=ShardSet(2, (1,)))
        assert await owner.health() is None
        await owner.add_user_turn(channel_id=1, author_id=1, author_name="a", text="still here")
    finally:
        await owner.close()


# --- a lock connection cut without a word --------------------------------------------------------


@contextlib.contextmanager
def logged(logger: str, text: str) -> Iterator[asyncio.Event]:
    """An event set when `logger` logs a line containing `text`."""
    seen = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Watch()
    logging.getLogger(logger).addHandler(handler)
    try:
        yield seen
    finally:
        logging.getLogger(logger).removeHandler(handler)


async def test_a_silently_cut_lock_connection_is_noticed_and_its_shard_taken_again(
    pg: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut leaves the lock's server session running: the bot notices the connection does
    not answer (its periodic check), ends its own old session and holds its shard again."""
    monkeypatch.setattr("storage.postgres.LOCK_CHECK_SECONDS", 0.01)
    monkeypatch.setattr("storage.postgres.LOCK_CHECK_TIMEOUT", 1.0)
    async with Relay(pg.location) as relay:
        owner = await open_store(relay.url, shards=ShardSet(2, (1,)))
        try:
            assert await owner.health() is None
            [lock] = [link for link in relay.links if link.holds_locks]
            pid = owner._lock_conn.get_server_pid()  # type: ignore[attr-defined]
            with logged("storage.postgres", "does not answer") as noticed:
                lock.cut = True
                await noticed.wait()  # a check found it mute
            problem = await owner.health()
            assert problem == (
                "this process lost its PostgreSQL lock on shard 1 (the database connection that"
                " held it dropped) and is taking it again"
            )
            await owner._relocking  # type: ignore[attr-defined]
            assert await owner.health() is None
            with pytest.raises(StoreLocked, match="shard 1"):
                await pg.open(shards=ShardSet(2, (1,)))
            assert not await pg.fetch("SELECT 1 FROM pg_stat_activity WHERE pid = ?", pid)
        finally:
            await owner.close()


async def test_a_shard_lost_to_another_process_makes_the_store_unhealthy(
    pg: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ended the lock's session (so dropped its locks) but the cut connection never
    told the bot; another process for the same shard starts meanwhile, and may: the bot's next
    check notices, and its health says so until it is restarted."""
    monkeypatch.setattr("storage.postgres.LOCK_CHECK_SECONDS", 3600.0)  # checked by hand here
    monkeypatch.setattr("storage.postgres.LOCK_CHECK_TIMEOUT", 0.2)
    async with Relay(pg.location) as relay:
        owner = await open_store(relay.url, shards=ShardSet(2, (1,)))
        second = None
        try:
            [lock] = [link for link in relay.links if link.holds_locks]
            pid = owner._lock_conn.get_server_pid()  # type: ignore[attr-defined]
            lock.cut = True
            await pg.fetch("SELECT pg_terminate_backend(?, 60000)", pid)  # waits for its end
            second = await pg.open(shards=ShardSet(2, (1,)))  # nothing stops it now
            await owner._check_lock()  # type: ignore[attr-defined]  # what runs every 15 s
            assert "lost its PostgreSQL lock on shard 1" in (await owner.health() or "")
            await owner._relocking  # type: ignore[attr-defined]
            assert await owner.health() == (
                "this process lost its PostgreSQL lock on shard 1 and another process has"
                " taken it: two processes run the same shards; restart this one"
            )
            logged = [(r.levelname, r.getMessage()) for r in caplog.records]
            assert (
                "ERROR",
                "the database connection that holds this process's shard lock(s) does not"
                " answer (TimeoutError)",
            ) in logged
            assert any(
                level == "CRITICAL" and "another gemcord process is already running shard 1" in m
                for level, m in logged
            )
        finally:
            if second is not None:
                await second.close()
            await owner.close()
