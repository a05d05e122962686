"""The Store on SQLite through aiosqlite: one connection, its own thread, WAL, forward migrations.

The methods themselves are shared with PostgreSQL (storage/base.py); this module holds how they
run on SQLite, and the SQL in which SQLite differs. How it keeps data safe:
- One aiosqlite connection: every statement runs on its worker thread, never on the event
  loop. A turnstile (storage/turnstile.py) makes each operation exclusive on that connection,
  so the statements of two operations never interleave; a write with several statements runs
  in one `BEGIN IMMEDIATE … COMMIT` transaction (a single-statement write is atomic on its own).
- A write, once called, finishes (commits or rolls back) even when the caller is cancelled:
  it runs in its own task, shielded. `close()` waits for writes in flight.
- `journal_mode=WAL`, `synchronous=NORMAL`: a committed write survives the process being
  killed (it is in the WAL); only a power loss or OS crash can lose the last few commits,
  never corrupt the file. `foreign_keys=ON`; `busy_timeout` for other processes (a backup,
  `gemcord check`).
- Every value is a bound parameter; SQL text is only ever assembled from constants (and the
  migration runner's integer version).
- Text that cannot be encoded as UTF-8 (lone surrogates) is stored with U+FFFD in their
  place rather than refused; NUL characters and very long texts are stored as they are.

One bot process owns a file: opening it marks "streaming" turns interrupted, which is only right
when no other process is streaming into it, so the owner holds an exclusive lock on
`<file>.lock` while the store is open (the OS drops it when the process dies, even by SIGKILL)
and a second owner gets StoreLocked (`health()` says so when the lock file is deleted or
replaced, which would let one in). A second process that only reads (a health check) opens
the file with `recover_streaming=False`, which takes no lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage.base import MAX_ID, BaseStore, Db, Op
from storage.models import StorageError, StoreClosed, StoreLocked
from storage.schema import migrate
from storage.turnstile import Turnstile

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000
CACHE_KIB = 32 * 1024  # page cache per connection
EXPORT_CHUNK = 500  # turns an export reads per hold of the connection

# One turn with its message ids and file references (as JSON, sorted by position in Python).
_TURN_SELECT = """
SELECT t.id, t.channel_id, t.guild_id, t.thread_id, t.role, t.author_id, t.author_name,
       t.text, t.status, t.created_at, t.reply_to, t.prompt_tokens, t.output_tokens, t.model,
       (SELECT json_group_array(json_array(m.position, m.message_id))
          FROM turn_messages AS m WHERE m.turn_id = t.id) AS messages,
       (SELECT json_group_array(json_array(ti.position, ti.sha256, i.mime_type, i.size, ti.name))
          FROM turn_images AS ti JOIN images AS i ON i.sha256 = ti.sha256
         WHERE ti.turn_id = t.id) AS images,
       t.archived, t.archived_at, t.withdrawn, t.hidden, t.parts, t.thoughts_tokens, t.searches
  FROM turns AS t
"""

_HISTORY_SQL = (
    _TURN_SELECT
    + """
 WHERE t.channel_id = :channel AND t.archived = 0 AND t.pair_key < :before
   AND t.status <> 'streaming' AND t.withdrawn IS NULL AND t.hidden IS NULL
   AND (:author IS NULL OR (SELECT q.author_id FROM turns AS q WHERE q.id = t.pair_key) = :author)
 ORDER BY t.pair_key DESC, t.id DESC
 LIMIT :limit
"""
)

_EXPORT_SQL = (
    _TURN_SELECT
    + """
 WHERE t.channel_id = ? AND t.archived = ? AND (t.pair_key, t.id) > (?, ?)
   AND t.hidden IS NOT 'private'
 ORDER BY t.pair_key, t.id
 LIMIT ?
"""
)

_INSERT_MESSAGE_SQL = """
INSERT INTO turn_messages (turn_id, position, message_id)
SELECT ?1, coalesce((SELECT max(position) + 1 FROM turn_messages WHERE turn_id = ?1), 0), ?2
 WHERE EXISTS (SELECT 1 FROM turns WHERE id = ?1)
   AND NOT EXISTS (SELECT 1 FROM turn_messages WHERE turn_id = ?1 AND message_id = ?2)
"""


class _SQLiteDb:
    """The connection as the shared code uses it (`storage.base.Db`): $1 becomes ?1, and a
    list value is bound as JSON text."""

    __slots__ = ("conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> Iterable[Any]:
        return await self.conn.execute_fetchall(_numbered(sql), _bound(args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return next(iter(await self.fetch(sql, *args)), None)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self.conn.execute(_numbered(sql), _bound(args))
        return cursor.rowcount

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(_numbered(sql), [_bound(a) for a in args])

    async def pipeline(self, *steps: Awaitable[Any]) -> list[Any]:
        # Tasks start in the order made, and each puts its statement on the connection's queue
        # at its first step: the statements run back to back, and one trip answers them all.
        results = await asyncio.gather(*map(asyncio.ensure_future, steps), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """PostgreSQL's $1, $2, … as SQLite's ?1, ?2, … (SQL text is only ever our constants)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def _bound(args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(json.dumps(a) if isinstance(a, list) else a for a in args)


@dataclass(slots=True)
class _Queued:
    """A write waiting in a batch."""

    key: Hashable
    op: Op[Any]
    done: asyncio.Future[Any]


class SQLiteStore(BaseStore):
    """Conversation history, images, settings and metrics in one SQLite file."""

    # A list is bound as JSON text (see `_SQLiteDb`), read with json_each.
    _TURN_SELECT = _TURN_SELECT
    _TURNS_SQL = _TURN_SELECT + " WHERE t.id IN (SELECT value FROM json_each(?)) ORDER BY t.id"
    _EXPORT_SQL = _EXPORT_SQL
    _FILE_DATA_SQL = (
        "SELECT sha256, data FROM images WHERE sha256 IN (SELECT value FROM json_each(?))"
        " AND sha256 NOT IN (SELECT sha256 FROM unusable_images)"
    )
    _UPLOADS_SQL = (
        "SELECT sha256, name, uri, mime_type, expires_at FROM gemini_files"
        " WHERE sha256 IN (SELECT value FROM json_each(?))"
    )
    _ORPHANS_SQL = (
        "DELETE FROM images WHERE sha256 IN (SELECT value FROM json_each(?))"
        " AND NOT EXISTS (SELECT 1 FROM turn_images AS ti WHERE ti.sha256 = images.sha256)"
    )
    _FILE_KEPT_SQL = "SELECT 1 FROM images WHERE sha256 = ?"  # deletes run alone

    def __init__(self, conn: aiosqlite.Connection, path: str, lock_fd: int | None = None) -> None:
        super().__init__()
        self._conn = conn
        self._db = _SQLiteDb(conn)
        self.path = path
        self._lock_fd = lock_fd
        self._lock_lost = False  # said in the log once
        self._lock = Turnstile()
        self._batch: list[_Queued] | None = None  # the writes waiting to run together
        self._closed = False

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, recover_streaming: bool = True
    ) -> SQLiteStore:
        """Open (or create) the file and its folder, migrate it, fail leftover streaming turns.

        `recover_streaming=False` leaves "streaming" turns alone: for a second process (a
        health check) opening the file of a bot that is running.
        """
        name = os.fspath(path)
        lock_fd = None
        if name != ":memory:":
            name = await asyncio.to_thread(_make_folder, name)
            if recover_streaming:
                lock_fd = _lock_exclusively(name)
        try:
            conn = await aiosqlite.connect(
                name, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            _unlock(lock_fd)
            raise StorageError(f"cannot open the database {name!r}: {exc}") from exc
        try:
            await cls._configure(conn, name)
            await migrate(conn)
            recovered: list[int] = []
            if recover_streaming:
                rows = await conn.execute_fetchall(
                    "UPDATE turns SET status = 'interrupted', finished_at = ?"
                    " WHERE status = 'streaming' RETURNING id",
                    (time.time(),),
                )
                recovered = sorted(int(r[0]) for r in rows)
        except sqlite3.DatabaseError as exc:
            await conn.close()
            _unlock(lock_fd)
            raise StorageError(f"cannot use the database {name!r}: {exc}") from exc
        except BaseException:
            await conn.close()
            _unlock(lock_fd)
            raise
        if recovered:
            log.warning("%d reply(ies) were cut off by the last shutdown", len(recovered))
        store = cls(conn, name, lock_fd)
        store._interrupted = recovered
        return store

    @staticmethod
    async def _configure(conn: aiosqlite.Connection, name: str) -> None:
        # PRAGMAs take no bound parameters; every value here is a constant of this module.
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Freed pages can be given back (retention): set before the first table exists; an
        # older file is converted once by a VACUUM.
        (auto_vacuum,) = await _one(conn, "PRAGMA auto_vacuum")
        if auto_vacuum != 2:
            await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            (tables,) = await _one(conn, "SELECT count(*) FROM sqlite_master")
            if tables:
                await conn.execute("VACUUM")
        mode = await _enable_wal(conn)
        if str(mode).lower() != "wal" and name != ":memory:":
            log.warning("SQLite refused WAL for %s (journal_mode=%s)", name, mode)
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA temp_store = MEMORY")
        await conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        await conn.execute("PRAGMA journal_size_limit = 67108864")
        (fk,) = await _one(conn, "PRAGMA foreign_keys")
        if fk != 1:
            raise StorageError("this SQLite build cannot enforce foreign keys")

    async def _close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        async with self._lock.hold():
            try:
                await self._conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:
                log.debug("PRAGMA optimize: %s", exc)
            await self._conn.close()
            self._closed = True
            _unlock(self._lock_fd)
            self._lock_fd = None

    async def health(self) -> str | None:
        """Also: whether `<file>.lock`, which this process holds, is still the lock file there
        (deleted or replaced, it would let a second bot process use the database too)."""
        fd = self._lock_fd
        if fd is not None and not await asyncio.to_thread(_still_named, fd, f"{self.path}.lock"):
            problem = (
                f"the lock file {self.path}.lock was deleted or replaced while this process held"
                " it, so another process could use the database too; restart this one"
            )
            if not self._lock_lost:
                self._lock_lost = True
                log.error("%s", problem)
            return problem
        return await super().health()

    # ----------------------------------------------------------------- plumbing

    async def _read(self, op: Op[T], urgent: bool = False) -> T:
        self._check_open()
        async with self._lock.hold(urgent, shared=True):
            if self._closed:
                raise StoreClosed("the store is closed")
            return await op(self._db)

    async def _run_write(
        self,
        op: Op[T],
        transaction: bool,
        consistent: bool,
        urgent: bool,
        batch: Hashable,
        queued: Callable[[], object] | None,
    ) -> T:
        """Alone on the connection, so consistent anyway; in a transaction when told. Writes
        with a `batch` key waiting together run in one transaction, those of one key in the
        order they came."""
        if batch is not None:
            return await self._batched(op, batch, urgent, queued)
        async with self._lock.hold(urgent):
            return await self._alone(op, transaction)

    async def _alone(self, op: Op[T], transaction: bool) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        if not transaction:
            return await op(self._db)
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = await op(self._db)
            await self._conn.execute("COMMIT")
        except BaseException:
            await _rollback(self._conn)
            raise
        return result

    async def _batched(
        self, op: Op[T], key: Hashable, urgent: bool, queued: Callable[[], object] | None
    ) -> T:
        """Join the batch waiting for its turn (or start one): under a burst of questions
        the writes of many go in one transaction, a few trips through the event loop for
        all, where each would take its own trips while the others wait. Once it has joined,
        its key's later writes run after it (`queued` is told)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = []
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        batch.append(_Queued(key, op, done))
        if queued is not None:
            queued()
        if len(batch) == 1:  # the first one waits for the turn for them all
            async with self._lock.hold(urgent):
                if self._batch is batch:
                    self._batch = None
                await self._run_batch(batch)
        return await done

    async def _run_batch(self, batch: list[_Queued]) -> None:
        """One transaction for all: the writes of different keys pipelined, those of one key
        one after another (each sees the ones before it). If it fails, each again in its own
        transaction, in the order they came."""
        if len(batch) > 1:
            chains: dict[Hashable, list[Op[Any]]] = {}
            for each in batch:
                chains.setdefault(each.key, []).append(each.op)

            async def in_order(db: Db, ops: list[Op[Any]]) -> list[Any]:
                return [await op(db) for op in ops]

            try:
                results = await self._alone(
                    lambda db: db.pipeline(*(in_order(db, ops) for ops in chains.values())),
                    transaction=True,
                )
            except Exception as exc:
                log.debug("a batch of %d writes failed, each is tried alone: %r", len(batch), exc)
            else:
                of_key = {key: iter(r) for key, r in zip(chains, results, strict=True)}
                for each in batch:
                    each.done.set_result(next(of_key[each.key]))
                return
        for each in batch:
            try:
                each.done.set_result(await self._alone(each.op, transaction=True))
            except Exception as exc:
                each.done.set_exception(exc)

    async def _history_rows(
        self, db: Db, channel_id: int, before: int, author_id: int | None, limit: int
    ) -> Iterable[Any]:
        return await self._conn.execute_fetchall(
            _HISTORY_SQL,
            {"channel": channel_id, "before": before, "author": author_id, "limit": limit},
        )

    async def _insert_message_ids(self, db: Db, turn_id: int, message_ids: Sequence[int]) -> None:
        if message_ids:
            await db.executemany(_INSERT_MESSAGE_SQL, [(turn_id, int(m)) for m in message_ids])

    @property
    def _export_chunk(self) -> int:
        return EXPORT_CHUNK

    async def _delete(self, op: Op[int]) -> int:
        """Deleted content is overwritten in the file (secure_delete) and the WAL is
        checkpointed, so it does not linger on disk."""

        async def erasing(db: Db) -> int:
            await db.execute("PRAGMA secure_delete = ON")
            try:
                return await op(db)
            finally:
                await db.execute("PRAGMA secure_delete = OFF")

        deleted = await self._write(erasing)
        if deleted:
            await self._write(_checkpoint, transaction=False)
        return deleted

    async def _reclaim(self) -> None:
        await self._write(_incremental_vacuum, transaction=False)

    # ----------------------------------------------------------------- SQLite's own

    async def size_bytes(self) -> int:
        """The database file's size in use (pages × page size)."""

        async def op(db: Db) -> int:
            pages = await db.fetchval("PRAGMA page_count")
            return int(pages) * int(await db.fetchval("PRAGMA page_size"))

        return await self._read(op)

    async def history_plan(self) -> list[str]:
        """How SQLite runs the history query (EXPLAIN QUERY PLAN), to check it uses its index."""

        async def op(db: Db) -> list[str]:
            rows = await self._conn.execute_fetchall(
                "EXPLAIN QUERY PLAN " + _HISTORY_SQL,
                {"channel": 0, "before": MAX_ID, "author": None, "limit": 40},
            )
            return [str(r[3]) for r in rows]

        return await self._read(op)

    async def usage_plan(self) -> list[str]:
        """How SQLite runs the per-user budget query (EXPLAIN QUERY PLAN), to check its index."""

        async def op(db: Db) -> list[str]:
            rows = await db.fetch(
                "EXPLAIN QUERY PLAN SELECT sum(total_tokens) FROM usage_daily"
                " WHERE user_id = ? AND day = ?",
                0,
                0,
            )
            return [str(r[3]) for r in rows]

        return await self._read(op)


# --------------------------------------------------------------------- helpers


async def _enable_wal(conn: aiosqlite.Connection) -> str:
    """Switch to WAL (kept in the file once set); returns the journal mode in force.

    Switching needs a moment alone with the file and SQLite does not wait for it (no busy
    handler), so when two processes create the file at once, retry for up to the busy timeout.
    """
    (mode,) = await _one(conn, "PRAGMA journal_mode")
    if str(mode).lower() == "wal":
        return "wal"
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            (mode,) = await _one(conn, "PRAGMA journal_mode = WAL")
            return str(mode).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


def _lock_exclusively(name: str) -> int:
    """Hold `<name>.lock` for this process; StoreLocked if another process holds it."""
    fd = os.open(f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreLocked(
            f"another gemcord process is already running on the database {name}"
        ) from None
    return fd


def _still_named(fd: int, name: str) -> bool:
    """Whether `name` is still the file open as `fd`."""
    try:
        named, held = os.stat(name), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _make_folder(name: str) -> str:
    path = Path(name).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


async def _one(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The single row a query returns."""
    return tuple(next(iter(await conn.execute_fetchall(sql, params))))


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error as exc:  # e.g. SQLite already rolled back after a disk error
        log.debug("rollback: %s", exc)


async def _incremental_vacuum(db: Db) -> None:
    await db.execute("PRAGMA incremental_vacuum")


async def _checkpoint(db: Db) -> None:
    try:
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.debug("wal_checkpoint: %s", exc)
