"""Schema migrations: from an empty file, from the previous version with data, and failures."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from storage import ReplyMetrics, SchemaError, open_store
from storage.schema import Migration, latest_version, load_migrations, migrate


async def connect(path: Path) -> aiosqlite.Connection:
    return await aiosqlite.connect(path, isolation_level=None)


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_shipped_migrations_are_numbered_and_parse() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert latest_version() == len(migrations) >= 2
    assert migrations[0].name == "initial"
    for m in migrations:
        statements = m.statements()
        assert statements and all(sqlite3.complete_statement(s) for s in statements)


def test_statement_splitting_keeps_triggers_whole() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x INTEGER);
    CREATE TRIGGER a_t AFTER INSERT ON a BEGIN
        UPDATE a SET x = x + 1 WHERE rowid = NEW.rowid;
        SELECT 1;
    END;
    INSERT INTO a VALUES ('semi;colon');
    -- trailing comment
    """
    statements = Migration(1, "t", sql).statements()
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(SchemaError):
        Migration(1, "t", "CREATE TABLE b (x").statements()


async def test_from_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    store = await open_store(path)
    await store.close()
    assert version(path) == latest_version()
    assert {
        "turns",
        "turn_messages",
        "images",
        "turn_images",
        "channel_settings",
        "reply_metrics",
    } <= tables(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_from_the_previous_version_with_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = await connect(path)
    assert await migrate(conn, target=1) == (0, 1)
    await conn.close()
    assert version(path) == 1 and "reply_metrics" not in tables(path)

    # Data written by a version-1 bot, including a reply that was streaming when it stopped.
    img = b"old image bytes"
    sha = hashlib.sha256(img).hexdigest()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        rows = [
            (1, 100, "user", 7, "ann", "first question", "complete", None, 1.0),
            (2, 100, "model", 0, "", "first answer", "complete", 1, 2.0),
            (3, 100, "user", 8, "bob", "second question", "complete", None, 3.0),
            (4, 100, "model", 0, "", "", "streaming", 3, 4.0),
            (5, 200, "user", 7, "ann", "elsewhere", "complete", None, 5.0),
        ]
        db.executemany(
            "INSERT INTO turns (id, channel_id, role, author_id, author_name, text, status,"
            " reply_to, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO turn_messages (turn_id, position, message_id) VALUES (?, ?, ?)",
            [(1, 0, 9001), (2, 0, 9002), (2, 1, 9003)],
        )
        db.execute(
            "INSERT INTO images (sha256, mime_type, size, created_at, data) VALUES (?, ?, ?, ?, ?)",
            (sha, "image/png", len(img), 1.0, img),
        )
        db.execute("INSERT INTO turn_images (turn_id, position, sha256) VALUES (1, 0, ?)", (sha,))
        db.execute(
            "INSERT INTO channel_settings (channel_id, persona, model, updated_at)"
            " VALUES (100, 'old persona', 'old-model', 1.0)"
        )

    store = await open_store(path)
    try:
        assert version(path) == latest_version()
        history = await store.load_history(100)
        assert [(t.id, t.text, t.status) for t in history] == [
            (1, "first question", "complete"),
            (2, "first answer", "complete"),
            (3, "second question", "complete"),
            (4, "", "interrupted"),  # it was cut off: marked at start-up
        ]
        assert history[0].images[0].data == img and history[1].message_ids == [9002, 9003]
        stats = await store.stats()  # the running totals were filled from the old rows
        assert (stats.turns, stats.user_turns, stats.channels) == (5, 3, 2)
        assert stats.by_status == {"complete": 4, "interrupted": 1}
        assert (await store.stats(200)).turns == 1
        settings = await store.get_channel_settings(100)
        assert (settings.persona, settings.model) == ("old persona", "old-model")

        # What version 2 added works on the old data.
        u = await store.add_user_turn(channel_id=100, author_id=7, author_name="ann", text="new")
        assert u > 5
        m = await store.start_model_turn(channel_id=100, reply_to=u, model="g")
        await store.finish_model_turn(
            m,
            text="new answer",
            status="complete",
            metrics=ReplyMetrics(0.1, 0.2, 1.0, 3, 1, 1, 0, "complete"),
        )
        assert (await store.stats()).replies_measured == 1
        assert await store.forget_user(7) == 5  # turns 1, 2 (its reply), 5, u and m
    finally:
        await store.close()


async def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    store = await open_store(path)
    await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(SchemaError, match="newer"):
        await open_store(path)
    assert path.read_bytes() == before and version(path) == 99


async def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    good = Migration(1, "one", "CREATE TABLE kept (x INTEGER);\nINSERT INTO kept VALUES (1);\n")
    bad = Migration(2, "two", "CREATE TABLE half (x INTEGER);\nINSERT INTO missing VALUES (1);\n")
    conn = await connect(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await migrate(conn, [good, bad])
        assert await migrate(conn, [good]) == (1, 1)  # version 1 stayed, its data too
    finally:
        await conn.close()
    assert version(path) == 1 and tables(path) == {"kept"}

    fixed = Migration(2, "two", "CREATE TABLE half (x INTEGER);\n")
    conn = await connect(path)
    try:
        assert await migrate(conn, [good, fixed]) == (1, 2)
        assert await migrate(conn, [good, fixed]) == (2, 2)  # nothing applied twice
    finally:
        await conn.close()
    assert tables(path) == {"kept", "half"}


async def test_a_migration_breaking_foreign_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    one = Migration(1, "one", "CREATE TABLE p (id INTEGER PRIMARY KEY);\n")
    two = Migration(
        2,
        "two",
        "CREATE TABLE c (p INTEGER REFERENCES p (id));\nINSERT INTO c VALUES (42);\n",
    )
    conn = await connect(path)
    try:
        with pytest.raises(SchemaError, match="foreign keys"):
            await migrate(conn, [one, two])
    finally:
        await conn.close()
    assert version(path) == 1 and "c" not in tables(path)


async def test_numbering_gaps_and_bad_targets_are_refused(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "x.db")
    try:
        with pytest.raises(SchemaError):
            await migrate(conn, [Migration(1, "a", "SELECT 1;"), Migration(3, "c", "SELECT 1;")])
        with pytest.raises(SchemaError):
            await migrate(conn, target=99)
        assert await migrate(conn, target=0) == (0, 0)
    finally:
        await conn.close()


async def test_several_connections_creating_a_new_file_at_once(tmp_path: Path) -> None:
    """Like a bot and its health checks starting together: one migrates, the others wait and
    see it done (only one of them may own the file, see test_storage's lock test)."""
    for attempt in range(25):  # switching to WAL races too; a single try would rarely show it
        path = tmp_path / f"race{attempt}.db"
        stores = await asyncio.gather(
            *(open_store(path, recover_streaming=False) for _ in range(6))
        )
        try:
            ids = await asyncio.gather(
                *(
                    s.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
                    for s in stores
                )
            )
            assert len(set(ids)) == 6
        finally:
            for s in stores:
                await s.close()
        assert version(path) == latest_version()
