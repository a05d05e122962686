"""The Store on SQLite through aiosqlite: one connection, its own thread, WAL, forward migrations.

How it keeps data safe:
- One aiosqlite connection: every statement runs on its worker thread, never on the event
  loop. An `asyncio.Lock` makes each operation exclusive on that connection, so the
  statements of two operations never interleave; a write with several statements runs in one
  `BEGIN IMMEDIATE … COMMIT` transaction (a single-statement write is atomic on its own).
- A write, once called, finishes (commits or rolls back) even when the caller is cancelled:
  it runs in its own task, shielded. `close()` waits for writes in flight.
- `journal_mode=WAL`, `synchronous=NORMAL`: a committed write survives the process being
  killed (it is in the WAL); only a power loss or OS crash can lose the last few commits,
  never corrupt the file. `foreign_keys=ON`; `busy_timeout` for other processes (a backup,
  `gemcord check`).
- Every value is a bound parameter; SQL text is only ever assembled from this module's
  constants (and the migration runner's integer version).
- Text that cannot be encoded as UTF-8 (lone surrogates) is stored with U+FFFD in their
  place rather than refused; NUL characters and very long texts are stored as they are.

One bot process owns a file: opening it marks "streaming" turns interrupted, which is only right
when no other process is streaming into it, so the owner holds an exclusive lock on
`<file>.lock` while the store is open (the OS drops it when the process dies, even by SIGKILL)
and a second owner gets StoreLocked. A second process that only reads (a health check) opens
the file with `recover_streaming=False`, which takes no lock.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from storage.models import (
    FINAL_STATUSES,
    SETTING_NAMES,
    AlreadyAnswered,
    ChannelSettings,
    GuildBudget,
    Hidden,
    HistoryBudget,
    Media,
    ReplyMetrics,
    ReplyStart,
    Stats,
    Status,
    StorageError,
    StoreClosed,
    StoredImage,
    StoredPart,
    StoreLocked,
    TokenUsage,
    Turn,
    TurnNotFound,
    Upload,
    UsageTotals,
    approx_tokens,
    astuple_usage,
    utc_day,
)
from storage.schema import migrate
from storage.turnstile import Turnstile

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[aiosqlite.Connection], Awaitable[T]]

BUSY_TIMEOUT_MS = 5_000
CACHE_KIB = 32 * 1024  # page cache per connection
MAX_ID = 2**63 - 1
HASH_OFF_LOOP_BYTES = 256 * 1024  # hash bigger images on a worker thread
EXPORT_CHUNK = 500  # turns an export reads per hold of the connection

# One turn with its message ids and image references (as JSON, sorted by position in Python).
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
SELECT :turn, coalesce((SELECT max(position) + 1 FROM turn_messages WHERE turn_id = :turn), 0),
       :message
 WHERE EXISTS (SELECT 1 FROM turns WHERE id = :turn)
   AND NOT EXISTS (SELECT 1 FROM turn_messages WHERE turn_id = :turn AND message_id = :message)
"""


# An upsert, not INSERT OR REPLACE: the totals' delete trigger would not see a replaced row.
_METRICS_SQL = """
INSERT INTO reply_metrics (turn_id, channel_id, first_chunk_latency, first_visible_latency,
                           total_time, chunk_count, edit_count, send_count, rate_limited,
                           outcome, recorded_at)
SELECT id, channel_id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM turns WHERE id = ?
    ON CONFLICT (turn_id) DO UPDATE
   SET channel_id = excluded.channel_id,
       first_chunk_latency = excluded.first_chunk_latency,
       first_visible_latency = excluded.first_visible_latency,
       total_time = excluded.total_time,
       chunk_count = excluded.chunk_count,
       edit_count = excluded.edit_count,
       send_count = excluded.send_count,
       rate_limited = excluded.rate_limited,
       outcome = excluded.outcome,
       recorded_at = excluded.recorded_at
"""


# A turn deleted while its reply streamed (forget-me) is recorded without it: spending stays.
_LEDGER_INSERT_SQL = """
INSERT INTO usage (turn_id, user_id, channel_id, guild_id, model, at, day, prompt_tokens,
                   output_tokens, thoughts_tokens, cached_tokens, tool_use_prompt_tokens,
                   total_tokens)
VALUES ((SELECT id FROM turns WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (turn_id) DO NOTHING
"""

_LEDGER_FILTERS = {
    "user": "user_id = ?",
    "channel": "channel_id = ?",
    "guild": "guild_id = ?",
    "all": "1",
}


def _ledger_filter(
    user_id: int | None, channel_id: int | None, guild_id: int | None
) -> tuple[str, tuple[int, ...]]:
    """The constant WHERE condition (and its value) for a ledger query's scope."""
    given = {
        k: v
        for k, v in (("user", user_id), ("channel", channel_id), ("guild", guild_id))
        if v is not None
    }
    if len(given) > 1:
        raise ValueError("give at most one of user_id, channel_id, guild_id")
    if not given:
        return _LEDGER_FILTERS["all"], ()
    ((kind, value),) = given.items()
    return _LEDGER_FILTERS[kind], (int(value),)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    """The text as SQLite can store it: lone surrogates become U+FFFD, all else is kept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _clean_optional(text: str | None) -> str | None:
    return None if text is None else _clean(text)


class _Row:
    """A fetched turn row, before its image bytes are attached."""

    __slots__ = ("archived", "archived_at", "image_refs", "turn")

    def __init__(self, row: Sequence[Any]) -> None:
        messages = sorted(json.loads(row[14]))
        refs = sorted(json.loads(row[15]))
        self.image_refs: list[tuple[str, str, int]] = [(r[1], r[2], r[3]) for r in refs]
        names = [r[4] if len(r) > 4 else "" for r in refs]
        self.archived = bool(row[16])
        self.archived_at: float | None = row[17]
        self.turn = Turn(
            id=row[0],
            channel_id=row[1],
            guild_id=row[2],
            thread_id=row[3],
            role=row[4],
            author_id=row[5],
            author_name=row[6],
            text=row[7],
            status=row[8],
            created_at=row[9],
            reply_to=row[10],
            prompt_tokens=row[11],
            output_tokens=row[12],
            model=row[13],
            message_ids=[m[1] for m in messages],
            images=[
                StoredImage(sha, mime, None, name, size)
                for (sha, mime, size), name in zip(self.image_refs, names, strict=True)
            ],
            withdrawn=row[18],
            hidden=row[19],
            parts=_parts_from_json(row[20]),
            thoughts_tokens=row[21],
            searches=json.loads(row[22]) if row[22] else [],
        )


def _parts_to_json(parts: Sequence[StoredPart]) -> str | None:
    """A model turn's parts as JSON (signatures in base64), None when there are none."""
    if not parts:
        return None
    return json.dumps(
        [
            {
                "kind": p.kind,
                "text": _clean(p.text),
                "signature": base64.b64encode(p.signature).decode() if p.signature else None,
                "detail": p.detail,
            }
            for p in parts
        ]
    )


def _parts_from_json(raw: str | None) -> list[StoredPart]:
    if not raw:
        return []
    return [
        StoredPart(
            p["kind"],
            p["text"],
            base64.b64decode(p["signature"]) if p.get("signature") else None,
            p.get("detail"),
        )
        for p in json.loads(raw)
    ]


async def _fetch_image_data(conn: aiosqlite.Connection, hashes: Iterable[str]) -> dict[str, bytes]:
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = await conn.execute_fetchall(
        "SELECT sha256, data FROM images WHERE sha256 IN (SELECT value FROM json_each(?))"
        " AND sha256 NOT IN (SELECT sha256 FROM unusable_images)",
        (json.dumps(wanted),),
    )
    return {sha: bytes(data) for sha, data in rows}


def _with_data(turn: Turn, data: dict[str, bytes]) -> None:
    turn.images = [dataclasses.replace(i, data=data.get(i.sha256)) for i in turn.images]


async def _insert_message_ids(
    conn: aiosqlite.Connection, turn_id: int, message_ids: Sequence[int]
) -> None:
    if message_ids:
        await conn.executemany(
            _INSERT_MESSAGE_SQL, [{"turn": turn_id, "message": int(m)} for m in message_ids]
        )


class _Question:
    """A question ready to insert (its images read and hashed off the event loop)."""

    def __init__(
        self,
        values: tuple[Any, ...],
        ids: list[int],
        prepared: list[tuple[str, str, bytes]],
        names: list[str],
    ) -> None:
        self.values = values
        self.ids = ids
        self.prepared = prepared
        self.names = names

    @classmethod
    async def prepare(
        cls,
        channel_id: int,
        guild_id: int | None,
        thread_id: int | None,
        author_id: int,
        author_name: str,
        text: str,
        message_ids: Sequence[int],
        images: Sequence[Media],
        hidden: Hidden | None,
    ) -> _Question:
        prepared = await _prepare_images(images)
        values = (
            channel_id,
            guild_id,
            thread_id,
            author_id,
            _clean(author_name),
            _clean(text),
            time.time(),
            hidden,
        )
        names = [_clean(image.name) for image in images]
        return cls(values, [int(m) for m in message_ids], list(prepared), names)

    @property
    def needs_transaction(self) -> bool:
        """Whether inserting it takes more than one statement."""
        return bool(self.ids or self.prepared)

    async def insert(self, conn: aiosqlite.Connection) -> int:
        """Insert the turn, claim its message, link its images; its turn id."""
        rows = await conn.execute_fetchall(
            "INSERT INTO turns (channel_id, guild_id, thread_id, role, author_id,"
            " author_name, text, status, created_at, hidden)"
            " VALUES (?, ?, ?, 'user', ?, ?, ?, 'complete', ?, ?) RETURNING id",
            self.values,
        )
        turn_id = int(next(iter(rows))[0])
        ids, prepared = self.ids, self.prepared
        if ids:
            claimed = await conn.execute_fetchall(
                "INSERT INTO answered (message_id, turn_id) VALUES (?, ?)"
                " ON CONFLICT (message_id) DO NOTHING RETURNING turn_id",
                (ids[0], turn_id),
            )
            if not list(claimed):
                raise AlreadyAnswered(f"message {ids[0]} was asked before")
        await _insert_message_ids(conn, turn_id, ids)
        if prepared:
            now = time.time()
            await conn.executemany(
                "INSERT INTO images (sha256, mime_type, size, created_at, data)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                [(sha, mime, len(data), now, data) for sha, mime, data in prepared],
            )
            await conn.executemany(
                "INSERT INTO turn_images (turn_id, position, sha256, name) VALUES (?, ?, ?, ?)",
                [
                    (turn_id, pos, sha, name)
                    for pos, ((sha, _, _), name) in enumerate(
                        zip(prepared, self.names, strict=True)
                    )
                ],
            )
        return turn_id


def _model_turn_values(
    channel_id: int,
    guild_id: int | None,
    thread_id: int | None,
    author_id: int,
    author_name: str,
    model: str,
    reply_to: int,
) -> tuple[Any, ...]:
    return (
        channel_id,
        guild_id,
        thread_id,
        author_id,
        _clean(author_name),
        time.time(),
        _clean(model),
        reply_to,
    )


async def _insert_model_turn(conn: aiosqlite.Connection, values: tuple[Any, ...]) -> int:
    """Insert a "streaming" model turn (see `start_model_turn`); its turn id."""
    rows = list(
        await conn.execute_fetchall(
            "INSERT INTO turns (channel_id, guild_id, thread_id, role, author_id,"
            " author_name, text, status, reply_to, created_at, model, archived,"
            " archived_at, hidden)"
            " SELECT ?, ?, ?, 'model', ?, ?, '', 'streaming', id, ?, ?, archived,"
            " archived_at, hidden FROM turns WHERE id = ? AND role = 'user'"
            " RETURNING id",
            values,
        )
    )
    if not rows:
        raise TurnNotFound(f"no user turn {values[-1]} to reply to")
    return int(rows[0][0])


async def _load_history(
    conn: aiosqlite.Connection,
    channel_id: int,
    before_turn: int | None,
    budget: HistoryBudget | None,
    author_id: int | None = None,
) -> list[Turn]:
    """See `load_history` (``budget`` None: the default one)."""
    budget = budget or HistoryBudget()
    if budget.max_turns <= 0 or budget.max_tokens <= 0:
        return []
    image_turns = max(0, budget.image_turns)
    before = MAX_ID if before_turn is None else before_turn
    rows = await conn.execute_fetchall(
        _HISTORY_SQL,
        {"channel": channel_id, "before": before, "author": author_id, "limit": budget.max_turns},
    )
    chosen = _trim([_Row(r).turn for r in rows], budget.max_tokens, image_turns)
    window = chosen[max(0, len(chosen) - image_turns) :] if image_turns else []
    data = await _fetch_image_data(conn, (i.sha256 for t in window for i in t.images))
    for turn in window:
        _with_data(turn, data)
    return chosen


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


async def _rowcount(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> int:
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error as exc:  # e.g. SQLite already rolled back after a disk error
        log.debug("rollback: %s", exc)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class SQLiteStore:
    """Conversation history, images, settings and metrics in one SQLite file."""

    def __init__(self, conn: aiosqlite.Connection, path: str, lock_fd: int | None = None) -> None:
        self._conn = conn
        self.path = path
        self._lock_fd = lock_fd
        self._interrupted: list[int] = []
        # Settings and budgets change only through this store (one owner per file), and every
        # question reads them: kept in memory after the first read, dropped on each write.
        self._settings: dict[int, ChannelSettings] = {}
        self._budgets: dict[int, GuildBudget] = {}
        self._generation = 0  # bumped by each of those writes: a read it overtook is not kept
        self._lock = Turnstile()
        self._closing: asyncio.Future[None] | None = None
        self._closed = False
        self._writes: set[asyncio.Task[Any]] = set()

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

    async def close(self) -> None:
        """Finish the writes in flight, then close the connection; later calls are refused."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

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

    # ----------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closing is not None:
            raise StoreClosed("the store is closed")

    async def _read(self, op: Op[T], *, urgent: bool = False) -> T:
        """Run `op` alone on the connection; an `urgent` one (what a question needs before its
        reply can begin) goes before the other operations waiting."""
        self._check_open()
        async with self._lock.hold(urgent):
            if self._closed:
                raise StoreClosed("the store is closed")
            return await op(self._conn)

    async def _write(self, op: Op[T], *, transaction: bool = True, urgent: bool = False) -> T:
        """Run `op` alone on the connection (in a transaction); it completes even if we are
        cancelled. An `urgent` one (a question waiting for its reply to begin) goes before
        the other operations waiting."""
        self._check_open()
        task = asyncio.create_task(self._locked_write(op, transaction, urgent))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_abandoned_failure)
            raise

    async def _locked_write(self, op: Op[T], transaction: bool, urgent: bool) -> T:
        async with self._lock.hold(urgent):
            if self._closed:
                raise StoreClosed("the store is closed")
            conn = self._conn
            if not transaction:
                return await op(conn)
            await conn.execute("BEGIN IMMEDIATE")
            try:
                result = await op(conn)
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise
            return result

    # ----------------------------------------------------------------- turns

    async def add_user_turn(
        self,
        *,
        channel_id: int,
        author_id: int,
        author_name: str,
        text: str,
        message_ids: Sequence[int] = (),
        guild_id: int | None = None,
        thread_id: int | None = None,
        images: Sequence[Media] = (),
        hidden: Hidden | None = None,
    ) -> int:
        """Store a user's question (with its images); returns the new turn's id.

        The first of `message_ids` is the Discord message the question came from: a second
        question from the same message raises AlreadyAnswered and stores nothing. A "private"
        question (and so its replies) stays out of history and exports.
        """
        question = await _Question.prepare(
            channel_id,
            guild_id,
            thread_id,
            author_id,
            author_name,
            text,
            message_ids,
            images,
            hidden,
        )
        return await self._write(question.insert, transaction=question.needs_transaction)

    async def ask(
        self,
        *,
        channel_id: int,
        author_id: int,
        author_name: str,
        text: str,
        model: str,
        message_ids: Sequence[int] = (),
        guild_id: int | None = None,
        thread_id: int | None = None,
        images: Sequence[Media] = (),
        hidden: Hidden | None = None,
        history: HistoryBudget | None = None,
        history_author: int | None = None,
    ) -> ReplyStart:
        """`add_user_turn`, `start_model_turn` and `load_history(before_turn=` the question`)`
        in one transaction (one trip to the database thread's queue instead of three);
        `history_author` as `load_history`'s `author_id`."""
        question = await _Question.prepare(
            channel_id,
            guild_id,
            thread_id,
            author_id,
            author_name,
            text,
            message_ids,
            images,
            hidden,
        )

        async def op(conn: aiosqlite.Connection) -> ReplyStart:
            user_turn = await question.insert(conn)
            reply = _model_turn_values(channel_id, guild_id, thread_id, 0, "", model, user_turn)
            model_turn = await _insert_model_turn(conn, reply)
            turns = await _load_history(conn, channel_id, user_turn, history, history_author)
            return ReplyStart(user_turn, model_turn, turns)

        return await self._write(op, urgent=True)

    async def start_reply(
        self,
        *,
        channel_id: int,
        reply_to: int,
        model: str,
        guild_id: int | None = None,
        thread_id: int | None = None,
        history: HistoryBudget | None = None,
        history_author: int | None = None,
    ) -> ReplyStart:
        """`start_model_turn` and `load_history(before_turn=reply_to)` in one operation
        (`history_author` as `load_history`'s `author_id`)."""
        reply = _model_turn_values(channel_id, guild_id, thread_id, 0, "", model, reply_to)

        async def op(conn: aiosqlite.Connection) -> ReplyStart:
            model_turn = await _insert_model_turn(conn, reply)
            turns = await _load_history(conn, channel_id, reply_to, history, history_author)
            return ReplyStart(reply_to, model_turn, turns)

        return await self._write(op, transaction=False, urgent=True)

    async def start_model_turn(
        self,
        *,
        channel_id: int,
        reply_to: int,
        model: str,
        guild_id: int | None = None,
        thread_id: int | None = None,
        author_id: int = 0,
        author_name: str = "",
    ) -> int:
        """Open a model turn ("streaming") answering user turn `reply_to`; returns its id.

        The reply joins its question's side of a reset (answering an archived question gives
        an archived reply), and a private question's reply is private too.
        """
        values = _model_turn_values(
            channel_id, guild_id, thread_id, author_id, author_name, model, reply_to
        )
        return await self._write(
            functools.partial(_insert_model_turn, values=values), transaction=False
        )

    async def finish_model_turn(
        self,
        turn_id: int,
        *,
        text: str,
        status: Status,
        message_ids: Sequence[int] = (),
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
        metrics: ReplyMetrics | None = None,
        parts: Sequence[StoredPart] = (),
        thoughts_tokens: int | None = None,
        searches: Sequence[str] = (),
    ) -> None:
        """Record a model turn's final text, status, parts (signatures byte for byte), thinking
        tokens and Google searches (and its metrics), all at once.

        A "blocked" reply withdraws its exchange (question and reply) from history.

        A turn deleted meanwhile (forget_user, purge_channel) is ignored; finishing a user
        turn is a programming error (ValueError).
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"a finished turn's status must be one of {sorted(FINAL_STATUSES)}")
        values = (
            _clean(text),
            status,
            time.time(),
            prompt_tokens,
            output_tokens,
            _parts_to_json(parts),
            thoughts_tokens,
            json.dumps([_clean(q) for q in searches]) if searches else None,
            turn_id,
        )
        ids = [int(m) for m in message_ids]

        async def op(conn: aiosqlite.Connection) -> None:
            changed = await _rowcount(
                conn,
                "UPDATE turns SET text = ?, status = ?, finished_at = ?,"
                " prompt_tokens = coalesce(?, prompt_tokens),"
                " output_tokens = coalesce(?, output_tokens),"
                " parts = coalesce(?, parts), thoughts_tokens = coalesce(?, thoughts_tokens),"
                " searches = coalesce(?, searches)"
                " WHERE id = ? AND role = 'model'",
                values,
            )
            if not changed:
                rows = list(
                    await conn.execute_fetchall("SELECT role FROM turns WHERE id = ?", (turn_id,))
                )
                if rows:
                    raise ValueError(f"turn {turn_id} is a user turn, not a model turn")
                log.debug("model turn %d is gone (deleted while streaming)", turn_id)
                return
            await _insert_message_ids(conn, turn_id, ids)
            if status == "blocked":
                await conn.execute(
                    "UPDATE turns SET withdrawn = 'blocked'"
                    " WHERE id IN (?, (SELECT reply_to FROM turns WHERE id = ?))",
                    (turn_id, turn_id),
                )
            if metrics is not None:
                await conn.execute(
                    _METRICS_SQL,
                    (
                        metrics.first_chunk_latency,
                        metrics.first_visible_latency,
                        metrics.total_time,
                        metrics.chunk_count,
                        metrics.edit_count,
                        metrics.send_count,
                        metrics.rate_limited,
                        _clean(metrics.outcome),
                        time.time(),
                        turn_id,
                    ),
                )

        await self._write(op, transaction=bool(ids or metrics is not None or status == "blocked"))

    async def replace_replies(self, question_id: int, new_reply: int) -> int:
        """A question's answer was regenerated as `new_reply`: its other replies are marked
        "replaced" (out of history, kept for exports); returns how many."""

        async def op(conn: aiosqlite.Connection) -> int:
            return await _rowcount(
                conn,
                "UPDATE turns SET hidden = 'replaced'"
                " WHERE reply_to = ? AND id <> ? AND role = 'model' AND hidden IS NULL",
                (question_id, new_reply),
            )

        return await self._write(op, transaction=False)

    async def add_message_ids(self, turn_id: int, message_ids: Sequence[int]) -> None:
        """Attach Discord message ids to a turn (in order; ids it already has are skipped)."""
        ids = [int(m) for m in message_ids]
        if not ids:
            return

        async def op(conn: aiosqlite.Connection) -> None:
            await _insert_message_ids(conn, turn_id, ids)

        await self._write(op, transaction=len(ids) > 1)

    async def checkpoint(self, turn_id: int, text: str) -> None:
        """Save the text a reply has streamed so far (kept if the process dies before the end)."""
        cleaned = _clean(text)

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "UPDATE turns SET text = ? WHERE id = ? AND status = 'streaming'",
                (cleaned, turn_id),
            )

        await self._write(op, transaction=False)

    async def take_interrupted(self) -> list[Turn]:
        """The replies a crash left streaming, marked "interrupted" when the store was opened
        (with their checkpointed text and message ids); each is returned once."""
        ids, self._interrupted = self._interrupted, []

        async def op(conn: aiosqlite.Connection) -> list[Turn]:
            rows = await conn.execute_fetchall(
                _TURN_SELECT + " WHERE t.id IN (SELECT value FROM json_each(?)) ORDER BY t.id",
                (json.dumps(ids),),
            )
            return [_Row(r).turn for r in rows]

        return await self._read(op) if ids else []

    async def withdraw_message(self, message_id: int) -> Turn | None:
        """A Discord message was deleted: its turn leaves history (a question's text is erased
        too); returns the turn as it was, or None when no turn carries that message."""

        async def op(conn: aiosqlite.Connection) -> Turn | None:
            turn = await _turn_by_message(conn, message_id)
            if turn is not None:
                await conn.execute(
                    "UPDATE turns SET withdrawn = 'deleted',"
                    " text = CASE role WHEN 'user' THEN '' ELSE text END WHERE id = ?",
                    (turn.id,),
                )
            return turn

        return await self._write(op, transaction=False)

    async def mark_images_unusable(self, sha256s: Iterable[str], reason: str) -> None:
        """Gemini refused these images: they are never sent to it again."""
        rows = [(sha, _clean(reason), time.time()) for sha in sorted(set(sha256s))]
        if not rows:
            return

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "INSERT INTO unusable_images (sha256, reason, marked_at)"
                " SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM images WHERE sha256 = ?1)"
                " ON CONFLICT (sha256) DO NOTHING",
                rows,
            )

        await self._write(op)

    async def get_uploads(self, sha256s: Iterable[str]) -> dict[str, Upload]:
        """The Files API uploads recorded for these files, by hash (expired ones too)."""
        wanted = sorted(set(sha256s))
        if not wanted:
            return {}

        async def op(conn: aiosqlite.Connection) -> dict[str, Upload]:
            rows = await conn.execute_fetchall(
                "SELECT sha256, name, uri, mime_type, expires_at FROM gemini_files"
                " WHERE sha256 IN (SELECT value FROM json_each(?))",
                (json.dumps(wanted),),
            )
            return {r[0]: Upload(r[0], r[1], r[2], r[3], float(r[4])) for r in rows}

        return await self._read(op)

    async def save_upload(self, upload: Upload) -> None:
        """Record (or replace) a stored file's upload; nothing when the file is gone."""

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO gemini_files (sha256, name, uri, mime_type, expires_at, uploaded_at)"
                " SELECT ?1, ?2, ?3, ?4, ?5, ?6"
                " WHERE EXISTS (SELECT 1 FROM images WHERE sha256 = ?1)"
                " ON CONFLICT (sha256) DO UPDATE SET name = excluded.name, uri = excluded.uri,"
                " mime_type = excluded.mime_type, expires_at = excluded.expires_at,"
                " uploaded_at = excluded.uploaded_at",
                (
                    upload.sha256,
                    upload.name,
                    upload.uri,
                    upload.mime_type,
                    upload.expires_at,
                    time.time(),
                ),
            )
            if not (
                await conn.execute_fetchall(
                    "SELECT 1 FROM gemini_files WHERE sha256 = ?", (upload.sha256,)
                )
            ):  # the file was deleted meanwhile: its upload must go as well
                await conn.execute(
                    "INSERT INTO gemini_files_gone (name, queued_at) VALUES (?, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (upload.name, time.time()),
                )

        await self._write(op)

    async def take_gone_uploads(self) -> list[str]:
        """Names of uploads to delete from Gemini, each returned once."""

        async def op(conn: aiosqlite.Connection) -> list[str]:
            rows = await conn.execute_fetchall("DELETE FROM gemini_files_gone RETURNING name")
            return sorted(str(r[0]) for r in rows)

        return await self._write(op)

    # ----------------------------------------------------------------- reading

    async def load_history(
        self,
        channel_id: int,
        *,
        max_turns: int = 40,
        max_tokens: int = 24_000,
        image_turns: int = 6,
        before_turn: int | None = None,
        author_id: int | None = None,
    ) -> list[Turn]:
        """The channel's recent live turns, oldest first, within budget (see the package doc);
        with `author_id`, only that person's questions and the replies to them."""
        budget = HistoryBudget(max_turns, max_tokens, image_turns)
        return await self._read(
            functools.partial(
                _load_history,
                channel_id=channel_id,
                before_turn=before_turn,
                budget=budget,
                author_id=author_id,
            )
        )

    async def find_turn_by_message(self, message_id: int) -> Turn | None:
        """The turn (user or model, archived or not) carried by this Discord message, if any."""

        async def op(conn: aiosqlite.Connection) -> Turn | None:
            turn = await _turn_by_message(conn, message_id)
            if turn is not None:
                _with_data(turn, await _fetch_image_data(conn, (i.sha256 for i in turn.images)))
            return turn

        return await self._read(op)

    async def get_turn(self, turn_id: int) -> Turn | None:
        """One turn by id, with its image bytes."""

        async def op(conn: aiosqlite.Connection) -> Turn | None:
            rows = list(await conn.execute_fetchall(_TURN_SELECT + " WHERE t.id = ?", (turn_id,)))
            if not rows:
                return None
            turn = _Row(rows[0]).turn
            _with_data(turn, await _fetch_image_data(conn, (i.sha256 for i in turn.images)))
            return turn

        return await self._read(op)

    async def history_plan(self) -> list[str]:
        """How SQLite runs the history query (EXPLAIN QUERY PLAN), to check it uses its index."""

        async def op(conn: aiosqlite.Connection) -> list[str]:
            rows = await conn.execute_fetchall(
                "EXPLAIN QUERY PLAN " + _HISTORY_SQL,
                {"channel": 0, "before": MAX_ID, "author": None, "limit": 40},
            )
            return [str(r[3]) for r in rows]

        return await self._read(op)

    # ----------------------------------------------------------------- reset, export, forget

    async def reset_channel(self, channel_id: int) -> int:
        """Soft reset: archive the channel's live turns (hidden from history, kept for export)."""

        async def op(conn: aiosqlite.Connection) -> int:
            return await _rowcount(
                conn,
                "UPDATE turns SET archived = 1, archived_at = ?"
                " WHERE channel_id = ? AND archived = 0",
                (time.time(), channel_id),
            )

        return await self._write(op, transaction=False)

    async def export_channel(
        self,
        channel_id: int,
        fmt: Literal["markdown", "json"] = "markdown",
        *,
        include_archived: bool = True,
    ) -> str:
        """The channel's history (archived turns too, unless told not) as Markdown or JSON."""
        if fmt not in ("markdown", "json"):
            raise ValueError(f"unknown export format {fmt!r}")

        rows: list[_Row] = []
        # In chunks, so a long channel does not hold the connection for long; archived turns
        # first: every archived pair is older than every live one.
        for archived in (1, 0) if include_archived else (0,):
            after = (-1, -1)
            while True:
                chunk = await self._read(
                    functools.partial(_export_chunk, channel_id, archived, after)
                )
                rows += chunk
                if len(chunk) < EXPORT_CHUNK:
                    break
                last = chunk[-1].turn
                after = (_pair_key(last) or 0, last.id)
        settings = await self.get_channel_settings(channel_id)
        if fmt == "json":
            return _export_json(channel_id, rows, settings)
        return _export_markdown(channel_id, rows, settings)

    async def forget_user(self, author_id: int) -> int:
        """Delete every turn the user wrote and the model's replies to them; returns how many.

        Images no longer carried by any turn go too. Deleted content is overwritten in the
        file (secure_delete) and the WAL is checkpointed, so it does not linger on disk.
        """
        return await self._delete_turns("t.role = 'user' AND t.author_id = ?", (author_id,))

    async def forget_last(self, author_id: int, channel_id: int) -> int:
        """Delete the user's newest question still in the channel's history, and the replies
        to it (like :meth:`forget_user`, for one exchange); returns how many turns went."""
        return await self._delete_turns(
            "t.id = (SELECT max(id) FROM turns WHERE role = 'user' AND author_id = ?"
            " AND channel_id = ? AND archived = 0 AND withdrawn IS NULL)",
            (author_id, channel_id),
        )

    async def prune(self, *, older_than: float | None, archived_before: float) -> int:
        """Retention: delete the exchanges asked before `older_than` (None: keep them all) and
        those a reset archived before `archived_before` (Unix times), with their images, and
        give the freed pages back to the file system; returns how many turns went."""
        deleted = await self._delete_turns(
            "t.role = 'user' AND (t.created_at < ? OR (t.archived = 1 AND t.archived_at < ?))",
            (-math.inf if older_than is None else older_than, archived_before),
        )
        if deleted:
            await self._write(_incremental_vacuum, transaction=False)
        return deleted

    async def size_bytes(self) -> int:
        """The database file's size in use (pages × page size)."""

        async def op(conn: aiosqlite.Connection) -> int:
            (pages,) = await _one(conn, "PRAGMA page_count")
            (size,) = await _one(conn, "PRAGMA page_size")
            return int(pages) * int(size)

        return await self._read(op)

    async def purge_channel(self, channel_id: int) -> int:
        """Hard delete: every turn of the channel (archived too), replies to them, its settings."""
        deleted = await self._delete_turns(
            "t.channel_id = ?",
            (channel_id,),
            also=("DELETE FROM channel_settings WHERE channel_id = ?", (channel_id,)),
        )
        self._generation += 1
        self._settings.pop(channel_id, None)
        return deleted

    async def _delete_turns(
        self,
        where: str,
        params: tuple[Any, ...],
        also: tuple[str, tuple[Any, ...]] | None = None,
    ) -> int:
        """Delete the turns matching `where` (and, by cascade, the replies to them), their
        images no other turn carries, and run `also`, all in one transaction."""

        # `where` is one of this module's constant conditions; values are bound.
        async def op(conn: aiosqlite.Connection) -> int:
            await conn.execute("PRAGMA secure_delete = ON")
            try:
                (count,) = await _one(
                    conn,
                    f"WITH doomed AS (SELECT t.id FROM turns AS t WHERE {where})"
                    " SELECT (SELECT count(*) FROM doomed)"
                    " + (SELECT count(*) FROM turns WHERE reply_to IN (SELECT id FROM doomed)"
                    "    AND id NOT IN (SELECT id FROM doomed))",
                    params,
                )
                hashes = [
                    r[0]
                    for r in await conn.execute_fetchall(
                        "SELECT DISTINCT ti.sha256 FROM turn_images AS ti"
                        f" JOIN turns AS t ON t.id = ti.turn_id WHERE {where}",
                        params,
                    )
                ]
                await conn.execute(
                    f"DELETE FROM turns WHERE id IN (SELECT t.id FROM turns AS t WHERE {where})",
                    params,
                )
                if hashes:
                    await conn.execute(
                        "DELETE FROM images WHERE sha256 IN (SELECT value FROM json_each(?))"
                        " AND NOT EXISTS (SELECT 1 FROM turn_images AS ti"
                        "                 WHERE ti.sha256 = images.sha256)",
                        (json.dumps(hashes),),
                    )
                if also is not None:
                    await conn.execute(*also)
            finally:
                await conn.execute("PRAGMA secure_delete = OFF")
            return int(count)

        deleted = await self._write(op)
        if deleted:
            await self._write(_checkpoint, transaction=False)
        return deleted

    # ----------------------------------------------------------------- settings

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's persona and model (None where unset)."""
        if (cached := self._settings.get(channel_id)) is None:

            async def op(conn: aiosqlite.Connection) -> ChannelSettings:
                return await _settings(conn, channel_id)

            generation = self._generation
            cached = await self._read(op, urgent=True)
            if generation == self._generation:
                _remember(self._settings, channel_id, cached)
        return dataclasses.replace(cached)

    async def set_persona(self, channel_id: int, persona: str | None) -> None:
        """Set the channel's system instruction (None: back to the default)."""
        await self.set_setting(channel_id, "persona", persona)

    async def set_model(self, channel_id: int, model: str | None) -> None:
        """Set the channel's Gemini model (None: back to the default)."""
        await self.set_setting(channel_id, "model", model)

    async def set_setting(self, channel_id: int, name: str, value: str | None) -> None:
        """Set one of `SETTING_NAMES` for the channel (None or blank: back to the default)."""
        if name not in SETTING_NAMES:
            raise ValueError(f"unknown channel setting {name!r}")
        # `name` is one of the fixed column names checked above, never user text.
        sql = (
            f"INSERT INTO channel_settings (channel_id, {name}, updated_at) VALUES (?, ?, ?)"
            f" ON CONFLICT (channel_id) DO UPDATE SET {name} = excluded.{name},"
            " updated_at = excluded.updated_at"
        )

        value = _clean_optional(value)
        stored = value if value and value.strip() else None

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(sql, (channel_id, stored, time.time()))

        self._settings.pop(channel_id, None)
        self._generation += 1
        await self._write(op, transaction=False)

    # ----------------------------------------------------------------- ledger

    async def record_usage(
        self,
        *,
        user_id: int,
        channel_id: int,
        model: str,
        at: float,
        usage: TokenUsage,
        guild_id: int | None = None,
        turn_id: int | None = None,
    ) -> None:
        """Add one reply's token counts to the ledger (a turn is counted once: a second
        record for the same `turn_id` is ignored)."""
        values = (
            turn_id,
            user_id,
            channel_id,
            guild_id,
            _clean(model),
            at,
            utc_day(at),
            *astuple_usage(usage),
        )

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(_LEDGER_INSERT_SQL, values)

        await self._write(op, transaction=False)

    async def usage_by_model(
        self,
        first_day: int,
        last_day: int,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> list[UsageTotals]:
        """Ledger totals per model over UTC days `first_day`..`last_day` (see `utc_day`), for
        one user, channel or server (at most one of them), or for everything."""
        where, params = _ledger_filter(user_id, channel_id, guild_id)

        async def op(conn: aiosqlite.Connection) -> list[UsageTotals]:
            # `where` is one of _LEDGER_FILTERS' constant conditions; values are bound.
            rows = await conn.execute_fetchall(
                "SELECT model, sum(replies), sum(prompt_tokens), sum(output_tokens),"
                " sum(thoughts_tokens), sum(cached_tokens), sum(tool_use_prompt_tokens),"
                f" sum(total_tokens) FROM usage_daily WHERE {where} AND day BETWEEN ? AND ?"
                " GROUP BY model HAVING sum(replies) > 0 ORDER BY model",
                (*params, first_day, last_day),
            )
            return [UsageTotals(r[0], int(r[1]), TokenUsage(*map(int, r[2:]))) for r in rows]

        return await self._read(op)

    async def tokens_used(
        self, day: int, *, user_id: int | None = None, guild_id: int | None = None
    ) -> int:
        """Total tokens the ledger holds for one UTC day, for one user or one server."""
        where, params = _ledger_filter(user_id, None, guild_id)

        async def op(conn: aiosqlite.Connection) -> int:
            (total,) = await _one(
                conn,
                f"SELECT coalesce(sum(total_tokens), 0) FROM usage_daily WHERE {where} AND day = ?",
                (*params, day),
            )
            return int(total)

        return await self._read(op)

    async def get_guild_budget(self, guild_id: int) -> GuildBudget:
        """The server's own daily budgets (None where it follows the bot's settings)."""
        if (cached := self._budgets.get(guild_id)) is not None:
            return dataclasses.replace(cached)

        async def op(conn: aiosqlite.Connection) -> GuildBudget:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT server_tokens, user_tokens FROM guild_budgets WHERE guild_id = ?",
                    (guild_id,),
                )
            )
            if not rows:
                return GuildBudget(guild_id)
            return GuildBudget(guild_id, rows[0][0], rows[0][1])

        generation = self._generation
        budget = await self._read(op, urgent=True)
        if generation == self._generation:
            _remember(self._budgets, guild_id, budget)
        return dataclasses.replace(budget)

    async def set_guild_budget(self, budget: GuildBudget) -> None:
        """Store a server's own daily budgets (both None: back to the bot's settings)."""
        values = (budget.guild_id, budget.server_tokens, budget.user_tokens, time.time())

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO guild_budgets (guild_id, server_tokens, user_tokens, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (guild_id) DO UPDATE"
                " SET server_tokens = excluded.server_tokens,"
                " user_tokens = excluded.user_tokens, updated_at = excluded.updated_at",
                values,
            )

        await self._write(op, transaction=False)
        self._generation += 1
        self._budgets.pop(budget.guild_id, None)

    async def usage_plan(self) -> list[str]:
        """How SQLite runs the per-user budget query (EXPLAIN QUERY PLAN), to check its index."""

        async def op(conn: aiosqlite.Connection) -> list[str]:
            rows = await conn.execute_fetchall(
                "EXPLAIN QUERY PLAN SELECT sum(total_tokens) FROM usage_daily"
                " WHERE user_id = ? AND day = ?",
                (0, 0),
            )
            return [str(r[3]) for r in rows]

        return await self._read(op)

    # ----------------------------------------------------------------- stats

    async def stats(self, channel_id: int | None = None) -> Stats:
        """Counts over all stored turns (archived included), for one channel or everywhere.

        Reads the running totals that triggers keep, so it costs the same at any size.
        """
        where, params = ("", ()) if channel_id is None else (" AND channel_id = ?", (channel_id,))

        async def op(conn: aiosqlite.Connection) -> Stats:
            # `where` is one of the two constant filters above; the value is bound.
            groups = await conn.execute_fetchall(
                "SELECT role, status, sum(turns), sum(prompt_tokens), sum(output_tokens),"
                " sum(thoughts_tokens)"
                f" FROM turn_totals WHERE turns > 0{where} GROUP BY role, status",
                params,
            )
            (channels,) = await _one(
                conn,
                f"SELECT count(DISTINCT channel_id) FROM turn_totals WHERE turns > 0{where}",
                params,
            )
            if channel_id is None:
                (images,) = await _one(conn, "SELECT count(*) FROM images")
            else:
                (images,) = await _one(
                    conn,
                    "SELECT count(DISTINCT ti.sha256) FROM turn_images AS ti"
                    " JOIN turns AS t ON t.id = ti.turn_id WHERE t.channel_id = ?",
                    (channel_id,),
                )
            replies, first_n, first_sum, total_sum = await _one(
                conn,
                "SELECT coalesce(sum(replies), 0), coalesce(sum(first_chunk_n), 0),"
                " total(first_chunk_sum), total(total_time_sum)"
                f" FROM reply_totals WHERE replies > 0{where}",
                params,
            )
            by_status: dict[str, int] = {}
            counts = {"user": 0, "model": 0}
            prompt = output = thoughts = 0
            for role, status, n, p, o, th in groups:
                by_status[status] = by_status.get(status, 0) + n
                counts[role] += n
                prompt += p
                output += o
                thoughts += th
            return Stats(
                turns=counts["user"] + counts["model"],
                user_turns=counts["user"],
                model_turns=counts["model"],
                channels=int(channels),
                images=int(images),
                by_status=by_status,
                prompt_tokens=int(prompt),
                output_tokens=int(output),
                replies_measured=int(replies),
                avg_first_chunk_latency=first_sum / first_n if first_n else None,
                avg_total_time=total_sum / replies if replies else None,
                thoughts_tokens=int(thoughts),
            )

        return await self._read(op)


# --------------------------------------------------------------------- helpers


def _remember(cache: dict[int, T], key: int, value: T) -> None:
    """Keep `value` in a bounded in-memory cache (emptied when it grows past 50,000 keys)."""
    if len(cache) >= 50_000:
        cache.clear()
    cache[key] = value


def _log_abandoned_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a store write whose caller was cancelled failed", exc_info=task.exception())


async def _incremental_vacuum(conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA incremental_vacuum")


async def _checkpoint(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.debug("wal_checkpoint: %s", exc)


async def _prepare_images(images: Sequence[Media]) -> list[tuple[str, str, bytes]]:
    """(sha256 hex, MIME type, bytes) per image; large ones are hashed off the event loop."""
    if not images:
        return []
    blobs = [bytes(image.data) for image in images]

    def digest_all() -> list[str]:
        return [hashlib.sha256(blob).hexdigest() for blob in blobs]

    if sum(len(b) for b in blobs) > HASH_OFF_LOOP_BYTES:
        digests = await asyncio.to_thread(digest_all)
    else:
        digests = digest_all()
    return [
        (sha, _clean(image.mime_type), blob)
        for sha, image, blob in zip(digests, images, blobs, strict=True)
    ]


async def _turn_by_message(conn: aiosqlite.Connection, message_id: int) -> Turn | None:
    """The newest turn carried by a Discord message (without image bytes)."""
    rows = list(
        await conn.execute_fetchall(
            _TURN_SELECT + " WHERE t.id = (SELECT turn_id FROM turn_messages WHERE message_id = ?"
            " ORDER BY turn_id DESC LIMIT 1)",
            (int(message_id),),
        )
    )
    return _Row(rows[0]).turn if rows else None


async def _export_chunk(
    channel_id: int, archived: int, after: tuple[int, int], conn: aiosqlite.Connection
) -> list[_Row]:
    rows = await conn.execute_fetchall(_EXPORT_SQL, (channel_id, archived, *after, EXPORT_CHUNK))
    return [_Row(r) for r in rows]


async def _settings(conn: aiosqlite.Connection, channel_id: int) -> ChannelSettings:
    rows = list(
        await conn.execute_fetchall(
            f"SELECT {', '.join(SETTING_NAMES)} FROM channel_settings WHERE channel_id = ?",
            (channel_id,),
        )
    )
    if not rows:
        return ChannelSettings(channel_id)
    return ChannelSettings(channel_id, *rows[0])


def _pair_key(turn: Turn) -> int | None:
    return turn.id if turn.role == "user" else turn.reply_to


def _trim(newest_first: list[Turn], max_tokens: int, image_turns: int) -> list[Turn]:
    """Whole question/answer pairs, newest first, while they fit; returned oldest first.

    A pair is its user turn and the model turns answering it; a model turn whose question is
    not in `newest_first` (cut off by the row limit, or asked elsewhere) is dropped. Images
    cost tokens only within the last `image_turns` turns, the ones sent with their bytes.
    """
    pairs: list[list[Turn]] = []  # each newest first: model turns, then the user turn
    for turn in newest_first:
        if pairs and _pair_key(pairs[-1][0]) == _pair_key(turn):
            pairs[-1].append(turn)
        else:
            pairs.append([turn])
    chosen: list[Turn] = []
    used = 0
    for pair in pairs:
        if pair[-1].role != "user":
            continue  # an orphan: its question is not here
        cost = 0
        for offset, turn in enumerate(pair):
            with_images = len(chosen) + offset < image_turns
            cost += approx_tokens(turn.text, len(turn.images) if with_images else 0)
        if used + cost > max_tokens:
            break
        used += cost
        chosen.extend(pair)
    chosen.reverse()
    return chosen


def _turn_json(row: _Row) -> dict[str, Any]:
    t = row.turn

    def snowflake(value: int | None) -> str | None:
        return None if value is None else str(value)

    return {
        "id": t.id,
        "role": t.role,
        "author_id": snowflake(t.author_id),
        "author_name": t.author_name,
        "text": t.text,
        "status": t.status,
        "created_at": _iso(t.created_at),
        "reply_to": t.reply_to,
        "message_ids": [str(m) for m in t.message_ids],
        "images": [
            {"sha256": sha, "mime_type": mime, "size": size} for sha, mime, size in row.image_refs
        ],
        "model": t.model,
        "prompt_tokens": t.prompt_tokens,
        "output_tokens": t.output_tokens,
        "guild_id": snowflake(t.guild_id),
        "thread_id": snowflake(t.thread_id),
        "archived": row.archived,
        "archived_at": _iso(row.archived_at),
        "withdrawn": t.withdrawn,
        "replaced": t.hidden == "replaced",
    }


def _export_json(channel_id: int, rows: list[_Row], settings: ChannelSettings) -> str:
    doc = {
        "format": "gemcord-history",
        "version": 1,
        "channel_id": str(channel_id),
        "exported_at": _iso(time.time()),
        "settings": {"persona": settings.persona, "model": settings.model},
        "turns": [_turn_json(r) for r in rows],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


def _export_markdown(channel_id: int, rows: list[_Row], settings: ChannelSettings) -> str:
    archived = sum(r.archived for r in rows)
    out = [
        f"# Conversation history — channel {channel_id}",
        "",
        f"Exported {_iso(time.time())} · {len(rows)} turn(s)"
        + (f", {archived} archived by a reset" if archived else ""),
    ]
    if settings.model:
        out.append(f"Model: `{settings.model}`")
    if settings.persona:
        out += ["", "Persona:", "", *(f"> {line}" for line in settings.persona.splitlines())]
    section: bool | None = None
    for row in rows:
        if row.archived != section:
            section = row.archived
            out += ["", "## Archived (before a reset)" if section else "## Current", ""]
        t = row.turn
        who = t.author_name or (t.model if t.role == "model" else None) or t.role
        label = "model" if t.role == "model" else "user"
        head = f"### {who} ({label}) · {_iso(t.created_at)} · turn {t.id}"
        if t.status != "complete":
            head += f" · {t.status}"
        if t.withdrawn == "deleted":
            head += " · deleted on Discord"
        if t.hidden == "replaced":
            head += " · replaced by a regenerated answer"
        out += [head, ""]
        out.append(t.text.replace("\x00", "\ufffd") if t.text else "*(no text)*")
        for sha, mime, size in row.image_refs:
            kind = "image" if mime.startswith("image/") else "file"
            out.append(f"- {kind} `{sha[:16]}` ({mime}, {size:,} bytes)")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
