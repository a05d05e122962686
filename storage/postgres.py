"""The Store on PostgreSQL through asyncpg: a connection pool, forward migrations, shard locks.

The same semantics as `SQLiteStore` (see the package doc), proven by the same test suite; what
differs is how they are kept:
- Operations run concurrently on a pool of connections; each write with several statements
  is one transaction, and rows that two writers could both touch are locked (`FOR UPDATE`)
  or written with upserts. A write that meets a deadlock or a serialization failure is
  retried. A write, once called, finishes even when the caller is cancelled.
- Every value is a bound parameter; SQL text is only ever assembled from this module's
  constants.
- PostgreSQL text cannot hold NUL: stored text escapes it (and the escape character) with
  U+FFFF, a noncharacter, and reads undo that, so any text round-trips as SQLite keeps it.
- Several bot processes may share one database, each running some Discord shards (a server's
  rows belong to the shard Discord gives it, DMs to shard 0). The process that owns shards
  (`recover_streaming=True`) holds a session advisory lock per shard for as long as the store
  is open (PostgreSQL drops it when the connection dies), marks only its own shards'
  "streaming" turns interrupted, and a second owner of any of them gets StoreLocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import asyncpg

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
    StoredPart,
    StoreLocked,
    TokenUsage,
    Turn,
    TurnNotFound,
    Upload,
    UsageTotals,
    astuple_usage,
    utc_day,
)
from storage.pg_schema import migrate_pg
from storage.shards import ShardSet
from storage.sqlite import (
    MAX_ID,
    _clean,
    _export_json,
    _export_markdown,
    _log_abandoned_failure,
    _pair_key,
    _parts_to_json,
    _prepare_images,
    _remember,
    _Row,
    _trim,
    _with_data,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[asyncpg.Connection], Awaitable[T]]

POOL_MAX = 10
EXPORT_CHUNK = 500  # turns an export reads per query
SHARD_LOCK = 0x67656D73  # "gems": advisory lock class for "a process owns shard N"
COUNT_LOCK = 0x67656D6E  # "gemn": shared advisory lock class for "owners split into N shards"
RETRIES = 5  # attempts of a write that meets a deadlock or a serialization failure

_TURN_SELECT = """
SELECT t.id, t.channel_id, t.guild_id, t.thread_id, t.role, t.author_id, t.author_name,
       t.text, t.status, t.created_at, t.reply_to, t.prompt_tokens, t.output_tokens, t.model,
       coalesce((SELECT json_agg(json_build_array(m.position, m.message_id))
                   FROM turn_messages AS m WHERE m.turn_id = t.id), '[]')::text AS messages,
       coalesce((SELECT json_agg(json_build_array(ti.position, ti.sha256, i.mime_type, i.size,
                                            ti.name))
                   FROM turn_images AS ti JOIN images AS i ON i.sha256 = ti.sha256
                  WHERE ti.turn_id = t.id), '[]')::text AS images,
       t.archived, t.archived_at, t.withdrawn, t.hidden, t.parts, t.thoughts_tokens,
       t.searches
  FROM turns AS t
"""

_HISTORY_SQL = (
    _TURN_SELECT
    + """
 WHERE t.channel_id = $1 AND t.archived = 0 AND t.pair_key < $2 AND t.status <> 'streaming'
   AND t.withdrawn IS NULL AND t.hidden IS NULL
   AND ($3::bigint IS NULL
        OR (SELECT q.author_id FROM turns AS q WHERE q.id = t.pair_key) = $3::bigint)
 ORDER BY t.pair_key DESC, t.id DESC
 LIMIT $4
"""
)

_EXPORT_SQL = (
    _TURN_SELECT
    + """
 WHERE t.channel_id = $1 AND t.archived = $2 AND (t.pair_key, t.id) > ($3, $4)
   AND t.hidden IS DISTINCT FROM 'private'
 ORDER BY t.pair_key, t.id
 LIMIT $5
"""
)

_METRICS_SQL = """
INSERT INTO reply_metrics (turn_id, channel_id, first_chunk_latency, first_visible_latency,
                           total_time, chunk_count, edit_count, send_count, rate_limited,
                           outcome, recorded_at)
SELECT id, channel_id, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM turns WHERE id = $10
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

_LEDGER_INSERT_SQL = """
INSERT INTO usage (turn_id, user_id, channel_id, guild_id, model, at, day, prompt_tokens,
                   output_tokens, thoughts_tokens, cached_tokens, tool_use_prompt_tokens,
                   total_tokens)
VALUES ((SELECT id FROM turns WHERE id = $1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (turn_id) DO NOTHING
"""

_LEDGER_FILTERS = {
    "user": "user_id = $1",
    "channel": "channel_id = $1",
    "guild": "guild_id = $1",
}

# The turns of servers on the given shards (DMs: shard 0): $1 shard count, $2 shard ids.
_OWNED = "((coalesce(guild_id, 0) >> 22) % $1) = ANY($2::int[])"

_ESCAPED = re.compile("\uffff[01]")


def _put(text: str) -> str:
    """Text as PostgreSQL can store it: lone surrogates become U+FFFD; NUL is escaped."""
    text = _clean(text)
    if "\x00" in text or "\uffff" in text:
        text = text.replace("\uffff", "\uffff1").replace("\x00", "\uffff0")
    return text


def _get(text: str | None) -> Any:
    """Stored text as it was given (undoes `_put`)."""
    if text is None or "\uffff" not in text:
        return text
    return _ESCAPED.sub(lambda m: "\x00" if m[0][1] == "0" else "\uffff", text)


def _row(record: asyncpg.Record) -> _Row:
    """A fetched turn, its text as it was given (see `_put`)."""
    row = _Row(record)
    turn = row.turn
    turn.text, turn.author_name, turn.model = (
        _get(turn.text),
        _get(turn.author_name),
        _get(turn.model),
    )
    turn.images = [dataclasses.replace(i, name=_get(i.name)) for i in turn.images]
    return row


async def _fetch_image_data(conn: asyncpg.Connection, hashes: Iterable[str]) -> dict[str, bytes]:
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT sha256, data FROM images WHERE sha256 = ANY($1::text[])"
        " AND sha256 NOT IN (SELECT sha256 FROM unusable_images)",
        wanted,
    )
    return {r[0]: bytes(r[1]) for r in rows}


async def _insert_message_ids(
    conn: asyncpg.Connection, turn_id: int, message_ids: Sequence[int]
) -> None:
    """Append message ids to a turn (ids it has are skipped); runs inside a transaction."""
    if not message_ids:
        return
    if await conn.fetchval("SELECT id FROM turns WHERE id = $1 FOR UPDATE", turn_id) is None:
        return
    have = await conn.fetch(
        "SELECT position, message_id FROM turn_messages WHERE turn_id = $1", turn_id
    )
    known = {r[1] for r in have}
    position = max((r[0] for r in have), default=-1) + 1
    rows = []
    for message_id in message_ids:
        if message_id not in known:
            known.add(message_id)
            rows.append((turn_id, position, message_id))
            position += 1
    if rows:
        await conn.executemany(
            "INSERT INTO turn_messages (turn_id, position, message_id) VALUES ($1, $2, $3)", rows
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
            _put(author_name),
            _put(text),
            time.time(),
            hidden,
        )
        names = [_put(image.name) for image in images]
        return cls(values, [int(m) for m in message_ids], list(prepared), names)

    @property
    def needs_transaction(self) -> bool:
        """Whether inserting it takes more than one statement."""
        return bool(self.ids or self.prepared)

    async def insert(self, conn: asyncpg.Connection) -> int:
        """Insert the turn, claim its message, link its images; its turn id."""
        turn_id = int(
            await conn.fetchval(
                "INSERT INTO turns (channel_id, guild_id, thread_id, role, author_id,"
                " author_name, text, status, created_at, hidden)"
                " VALUES ($1, $2, $3, 'user', $4, $5, $6, 'complete', $7, $8) RETURNING id",
                *self.values,
            )
        )
        ids, prepared = self.ids, self.prepared
        if ids:
            claimed = await conn.fetchval(
                "INSERT INTO answered (message_id, turn_id) VALUES ($1, $2)"
                " ON CONFLICT (message_id) DO NOTHING RETURNING turn_id",
                ids[0],
                turn_id,
            )
            if claimed is None:
                raise AlreadyAnswered(f"message {ids[0]} was asked before")
        await _insert_message_ids(conn, turn_id, ids)
        if prepared:
            now = time.time()
            await conn.executemany(
                "INSERT INTO images (sha256, mime_type, size, created_at, data)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING",
                [(sha, mime, len(data), now, data) for sha, mime, data in prepared],
            )
            await conn.executemany(
                "INSERT INTO turn_images (turn_id, position, sha256, name) VALUES ($1, $2, $3, $4)",
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
        _put(author_name),
        time.time(),
        _put(model),
        reply_to,
    )


async def _insert_model_turn(conn: asyncpg.Connection, values: tuple[Any, ...]) -> int:
    """Insert a "streaming" model turn (see `start_model_turn`); its turn id."""
    turn_id = await conn.fetchval(
        "INSERT INTO turns (channel_id, guild_id, thread_id, role, author_id,"
        " author_name, text, status, reply_to, created_at, model, archived,"
        " archived_at, hidden)"
        " SELECT $1, $2, $3, 'model', $4, $5, '', 'streaming', id, $6, $7, archived,"
        " archived_at, hidden FROM turns WHERE id = $8 AND role = 'user'"
        " RETURNING id",
        *values,
    )
    if turn_id is None:
        raise TurnNotFound(f"no user turn {values[-1]} to reply to")
    return int(turn_id)


async def _load_history(
    conn: asyncpg.Connection,
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
    rows = await conn.fetch(_HISTORY_SQL, channel_id, before, author_id, budget.max_turns)
    chosen = _trim([_row(r).turn for r in rows], budget.max_tokens, image_turns)
    window = chosen[max(0, len(chosen) - image_turns) :] if image_turns else []
    data = await _fetch_image_data(conn, (i.sha256 for t in window for i in t.images))
    for turn in window:
        _with_data(turn, data)
    return chosen


async def _turn_by_message(conn: asyncpg.Connection, message_id: int) -> Turn | None:
    row = await conn.fetchrow(
        _TURN_SELECT + " WHERE t.id = (SELECT turn_id FROM turn_messages WHERE message_id = $1"
        " ORDER BY turn_id DESC LIMIT 1)",
        int(message_id),
    )
    return _row(row).turn if row is not None else None


def _ledger_filter(
    user_id: int | None, channel_id: int | None, guild_id: int | None
) -> tuple[str, tuple[int | None, ...]]:
    """The constant WHERE condition (on $1) and its value for a ledger query's scope."""
    given = {
        k: v
        for k, v in (("user", user_id), ("channel", channel_id), ("guild", guild_id))
        if v is not None
    }
    if len(given) > 1:
        raise ValueError("give at most one of user_id, channel_id, guild_id")
    if not given:
        return "$1::bigint IS NULL", (None,)  # everything: the condition always holds
    ((kind, value),) = given.items()
    return _LEDGER_FILTERS[kind], (int(value),)


async def _settings(conn: asyncpg.Connection, channel_id: int) -> ChannelSettings:
    row = await conn.fetchrow(
        f"SELECT {', '.join(SETTING_NAMES)} FROM channel_settings WHERE channel_id = $1",
        channel_id,
    )
    if row is None:
        return ChannelSettings(channel_id)
    return ChannelSettings(channel_id, *(_get(v) for v in row))


class PostgresStore:
    """Conversation history, images, settings and metrics in a PostgreSQL database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        shards: ShardSet,
        lock_conn: asyncpg.Connection | None = None,
    ) -> None:
        self._pool = pool
        self.url = url
        self.shards = shards
        self._lock_conn = lock_conn
        self._interrupted: list[int] = []
        # Settings and budgets of a channel or server change only through the process that runs
        # its shard, and every question reads them: kept in memory, dropped on each write.
        self._settings: dict[int, ChannelSettings] = {}
        self._budgets: dict[int, GuildBudget] = {}
        self._generation = 0
        self._closing: asyncio.Future[None] | None = None
        self._writes: set[asyncio.Task[Any]] = set()
        self._relocking: asyncio.Task[None] | None = None
        if lock_conn is not None:
            lock_conn.add_termination_listener(self._lock_lost)

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls, url: str, *, recover_streaming: bool = True, shards: ShardSet | None = None
    ) -> PostgresStore:
        """Connect, migrate, lock this process's shards and mark their leftover streaming
        turns interrupted (unless `recover_streaming=False`: a health check)."""
        shards = shards or ShardSet()
        where = _redact(url)
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_MAX)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StorageError(f"cannot open the database {where}: {exc}") from exc
        lock_conn: asyncpg.Connection | None = None
        try:
            async with pool.acquire() as conn:
                await migrate_pg(conn)
            recovered: list[int] = []
            if recover_streaming:
                lock_conn = await asyncpg.connect(url)
                await _lock_shards(lock_conn, shards, where)
                rows = await pool.fetch(
                    "UPDATE turns SET status = 'interrupted', finished_at = $3"
                    f" WHERE status = 'streaming' AND {_OWNED} RETURNING id",
                    shards.count,
                    list(shards.ids),
                    time.time(),
                )
                recovered = sorted(int(r[0]) for r in rows)
        except asyncpg.PostgresError as exc:
            await _close_quietly(pool, lock_conn)
            raise StorageError(f"cannot use the database {where}: {exc}") from exc
        except BaseException:
            await _close_quietly(pool, lock_conn)
            raise
        if recovered:
            log.warning("%d reply(ies) were cut off by the last shutdown", len(recovered))
        store = cls(pool, url, shards, lock_conn)
        store._interrupted = recovered
        return store

    async def close(self) -> None:
        """Finish the writes in flight, then close the pool; later calls are refused."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._relocking is not None:
            self._relocking.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await _close_quietly(self._pool, self._lock_conn)
        self._lock_conn = None

    def _lock_lost(self, _conn: asyncpg.Connection) -> None:
        """The connection holding the shard locks died (PostgreSQL restarted, a network cut):
        take them again, or say loudly that another process has."""
        if self._closing is not None:
            return
        self._lock_conn = None
        log.error("lost the database connection that holds this process's shard lock(s)")
        self._relocking = asyncio.ensure_future(self._relock())

    async def _relock(self) -> None:
        delay = 0.5
        while self._closing is None:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.url)
                await _lock_shards(conn, self.shards, _redact(self.url))
            except StoreLocked as exc:
                await _close_quietly(None, conn)
                log.critical("%s: two processes now run the same shards; stop one", exc)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                await _close_quietly(None, conn)
                log.warning("cannot take the shard lock(s) again yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._lock_conn = conn
            conn.add_termination_listener(self._lock_lost)
            log.warning("holding this process's shard lock(s) again")
            return

    # ----------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closing is not None:
            raise StoreClosed("the store is closed")

    async def _read(self, op: Op[T]) -> T:
        self._check_open()
        async with self._pool.acquire() as conn:
            return await op(conn)

    async def _write(self, op: Op[T], *, transaction: bool = True) -> T:
        """Run `op` on a pooled connection (in a transaction); it completes even if we are
        cancelled."""
        self._check_open()
        task = asyncio.create_task(self._pooled_write(op, transaction))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_abandoned_failure)
            raise

    async def _pooled_write(self, op: Op[T], transaction: bool) -> T:
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    if not transaction:
                        return await op(conn)
                    async with conn.transaction():
                        return await op(conn)
            except (
                asyncpg.DeadlockDetectedError,
                asyncpg.SerializationError,
            ) as exc:
                if attempt == RETRIES - 1:
                    raise
                log.debug("retrying a write after %s", type(exc).__name__)
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

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
        in one transaction on one pooled connection; `history_author` as `load_history`'s
        `author_id`."""
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

        async def op(conn: asyncpg.Connection) -> ReplyStart:
            user_turn = await question.insert(conn)
            reply = _model_turn_values(channel_id, guild_id, thread_id, 0, "", model, user_turn)
            model_turn = await _insert_model_turn(conn, reply)
            turns = await _load_history(conn, channel_id, user_turn, history, history_author)
            return ReplyStart(user_turn, model_turn, turns)

        return await self._write(op)

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
        """`start_model_turn` and `load_history(before_turn=reply_to)` in one transaction
        (`history_author` as `load_history`'s `author_id`)."""
        reply = _model_turn_values(channel_id, guild_id, thread_id, 0, "", model, reply_to)

        async def op(conn: asyncpg.Connection) -> ReplyStart:
            model_turn = await _insert_model_turn(conn, reply)
            turns = await _load_history(conn, channel_id, reply_to, history, history_author)
            return ReplyStart(reply_to, model_turn, turns)

        return await self._write(op)

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
        tokens and Google searches (and its metrics), all at once."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a finished turn's status must be one of {sorted(FINAL_STATUSES)}")
        # The JSON is ASCII (json.dumps escapes the rest), so `_put` leaves it as SQLite has it.
        parts_json = _parts_to_json(parts)
        values = (
            _put(text),
            status,
            time.time(),
            prompt_tokens,
            output_tokens,
            None if parts_json is None else _put(parts_json),
            thoughts_tokens,
            _put(json.dumps([_clean(q) for q in searches])) if searches else None,
            turn_id,
        )
        ids = [int(m) for m in message_ids]

        async def op(conn: asyncpg.Connection) -> None:
            changed = await conn.fetchval(
                "UPDATE turns SET text = $1, status = $2, finished_at = $3,"
                " prompt_tokens = coalesce($4, prompt_tokens),"
                " output_tokens = coalesce($5, output_tokens),"
                " parts = coalesce($6, parts), thoughts_tokens = coalesce($7, thoughts_tokens),"
                " searches = coalesce($8, searches)"
                " WHERE id = $9 AND role = 'model' RETURNING id",
                *values,
            )
            if changed is None:
                if await conn.fetchval("SELECT role FROM turns WHERE id = $1", turn_id):
                    raise ValueError(f"turn {turn_id} is a user turn, not a model turn")
                log.debug("model turn %d is gone (deleted while streaming)", turn_id)
                return
            await _insert_message_ids(conn, turn_id, ids)
            if status == "blocked":
                await conn.execute(
                    "UPDATE turns SET withdrawn = 'blocked'"
                    " WHERE id = $1 OR id = (SELECT reply_to FROM turns WHERE id = $1)",
                    turn_id,
                )
            if metrics is not None:
                await conn.execute(
                    _METRICS_SQL,
                    metrics.first_chunk_latency,
                    metrics.first_visible_latency,
                    metrics.total_time,
                    metrics.chunk_count,
                    metrics.edit_count,
                    metrics.send_count,
                    metrics.rate_limited,
                    _put(metrics.outcome),
                    time.time(),
                    turn_id,
                )

        await self._write(op)

    async def replace_replies(self, question_id: int, new_reply: int) -> int:
        """A question's answer was regenerated as `new_reply`: its other replies are marked
        "replaced" (out of history, kept for exports); returns how many."""

        async def op(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "UPDATE turns SET hidden = 'replaced'"
                " WHERE reply_to = $1 AND id <> $2 AND role = 'model' AND hidden IS NULL",
                question_id,
                new_reply,
            )
            return int(status.split()[-1])

        return await self._write(op, transaction=False)

    async def add_message_ids(self, turn_id: int, message_ids: Sequence[int]) -> None:
        """Attach Discord message ids to a turn (in order; ids it already has are skipped)."""
        ids = [int(m) for m in message_ids]
        if not ids:
            return

        async def op(conn: asyncpg.Connection) -> None:
            await _insert_message_ids(conn, turn_id, ids)

        await self._write(op)

    async def checkpoint(self, turn_id: int, text: str) -> None:
        """Save the text a reply has streamed so far (kept if the process dies before the end)."""
        stored = _put(text)

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE turns SET text = $1 WHERE id = $2 AND status = 'streaming'",
                stored,
                turn_id,
            )

        await self._write(op, transaction=False)

    async def take_interrupted(self) -> list[Turn]:
        """The replies a crash left streaming (in this process's shards), each returned once."""
        ids, self._interrupted = self._interrupted, []

        async def op(conn: asyncpg.Connection) -> list[Turn]:
            rows = await conn.fetch(
                _TURN_SELECT + " WHERE t.id = ANY($1::bigint[]) ORDER BY t.id", ids
            )
            return [_row(r).turn for r in rows]

        return await self._read(op) if ids else []

    async def withdraw_message(self, message_id: int) -> Turn | None:
        """A Discord message was deleted: its turn leaves history (a question's text is erased
        too); returns the turn as it was, or None when no turn carries that message."""

        async def op(conn: asyncpg.Connection) -> Turn | None:
            turn = await _turn_by_message(conn, message_id)
            if turn is not None:
                await conn.execute(
                    "UPDATE turns SET withdrawn = 'deleted',"
                    " text = CASE role WHEN 'user' THEN '' ELSE text END WHERE id = $1",
                    turn.id,
                )
            return turn

        return await self._write(op)

    async def mark_images_unusable(self, sha256s: Iterable[str], reason: str) -> None:
        """Gemini refused these images: they are never sent to it again."""
        rows = [(sha, _put(reason), time.time()) for sha in sorted(set(sha256s))]
        if not rows:
            return

        async def op(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "INSERT INTO unusable_images (sha256, reason, marked_at)"
                " SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM images WHERE sha256 = $1)"
                " ON CONFLICT (sha256) DO NOTHING",
                rows,
            )

        await self._write(op)

    async def get_uploads(self, sha256s: Iterable[str]) -> dict[str, Upload]:
        """The Files API uploads recorded for these files, by hash (expired ones too)."""
        wanted = sorted(set(sha256s))
        if not wanted:
            return {}

        async def op(conn: asyncpg.Connection) -> dict[str, Upload]:
            rows = await conn.fetch(
                "SELECT sha256, name, uri, mime_type, expires_at FROM gemini_files"
                " WHERE sha256 = ANY($1::text[])",
                wanted,
            )
            return {
                r[0]: Upload(r[0], _get(r[1]), _get(r[2]), _get(r[3]), float(r[4])) for r in rows
            }

        return await self._read(op)

    async def save_upload(self, upload: Upload) -> None:
        """Record (or replace) a stored file's upload; when the file is gone (deleted
        meanwhile), the upload is queued to be deleted from Gemini instead."""
        name = _put(upload.name)
        values = (upload.sha256, name, _put(upload.uri), _put(upload.mime_type))

        async def op(conn: asyncpg.Connection) -> None:
            # The file's row is locked against a concurrent delete until this commits; a
            # delete after that takes the upload with it (by cascade, queued by trigger).
            stored = await conn.fetchval(
                "SELECT 1 FROM images WHERE sha256 = $1 FOR KEY SHARE", upload.sha256
            )
            if stored is None:
                await conn.execute(
                    "INSERT INTO gemini_files_gone (name, queued_at) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO NOTHING",
                    name,
                    time.time(),
                )
                return
            await conn.execute(
                "INSERT INTO gemini_files (sha256, name, uri, mime_type, expires_at, uploaded_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (sha256) DO UPDATE SET name = excluded.name, uri = excluded.uri,"
                " mime_type = excluded.mime_type, expires_at = excluded.expires_at,"
                " uploaded_at = excluded.uploaded_at",
                *values,
                upload.expires_at,
                time.time(),
            )

        await self._write(op)

    async def take_gone_uploads(self) -> list[str]:
        """Names of uploads to delete from Gemini, each returned once."""

        async def op(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch("DELETE FROM gemini_files_gone RETURNING name")
            return sorted(_get(r[0]) for r in rows)

        return await self._write(op, transaction=False)

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

        async def op(conn: asyncpg.Connection) -> Turn | None:
            turn = await _turn_by_message(conn, message_id)
            if turn is not None:
                _with_data(turn, await _fetch_image_data(conn, (i.sha256 for i in turn.images)))
            return turn

        return await self._read(op)

    async def get_turn(self, turn_id: int) -> Turn | None:
        """One turn by id, with its image bytes."""

        async def op(conn: asyncpg.Connection) -> Turn | None:
            row = await conn.fetchrow(_TURN_SELECT + " WHERE t.id = $1", turn_id)
            if row is None:
                return None
            turn = _row(row).turn
            _with_data(turn, await _fetch_image_data(conn, (i.sha256 for i in turn.images)))
            return turn

        return await self._read(op)

    async def history_plan(self) -> list[str]:
        """How PostgreSQL would run the history query on a large table (EXPLAIN)."""
        return await self._read(functools.partial(_plan, _HISTORY_SQL, (0, MAX_ID, None, 40)))

    async def usage_plan(self) -> list[str]:
        """How PostgreSQL would run the per-user budget query on a large table (EXPLAIN)."""
        sql = "SELECT sum(total_tokens) FROM usage_daily WHERE user_id = $1 AND day = $2"
        return await self._read(functools.partial(_plan, sql, (0, 0)))

    # ----------------------------------------------------------------- reset, export, forget

    async def reset_channel(self, channel_id: int) -> int:
        """Soft reset: archive the channel's live turns (hidden from history, kept for export)."""

        async def op(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "UPDATE turns SET archived = 1, archived_at = $1"
                " WHERE channel_id = $2 AND archived = 0",
                time.time(),
                channel_id,
            )
            return int(status.split()[-1])

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

        Images no longer carried by any turn go too. PostgreSQL reclaims the space of deleted
        rows by (auto)vacuum.
        """
        return await self._delete_turns("t.role = 'user' AND t.author_id = $1", (author_id,))

    async def forget_last(self, author_id: int, channel_id: int) -> int:
        """Delete the user's newest question still in the channel's history, and the replies
        to it (like :meth:`forget_user`, for one exchange); returns how many turns went."""
        return await self._delete_turns(
            "t.id = (SELECT max(id) FROM turns WHERE role = 'user' AND author_id = $1"
            " AND channel_id = $2 AND archived = 0 AND withdrawn IS NULL)",
            (author_id, channel_id),
        )

    async def prune(self, *, older_than: float | None, archived_before: float) -> int:
        """Retention: delete the exchanges asked before `older_than` (None: keep them all) and
        those a reset archived before `archived_before` (Unix times); returns turns deleted."""
        return await self._delete_turns(
            "t.role = 'user' AND (t.created_at < $1 OR (t.archived = 1 AND t.archived_at < $2))",
            (-math.inf if older_than is None else older_than, archived_before),
        )

    async def size_bytes(self) -> int:
        """The database's size on disk."""

        async def op(conn: asyncpg.Connection) -> int:
            return int(await conn.fetchval("SELECT pg_database_size(current_database())"))

        return await self._read(op)

    async def purge_channel(self, channel_id: int) -> int:
        """Hard delete: every turn of the channel (archived too), replies to them, its settings."""
        deleted = await self._delete_turns(
            "t.channel_id = $1",
            (channel_id,),
            also="DELETE FROM channel_settings WHERE channel_id = $1",
        )
        self._generation += 1
        self._settings.pop(channel_id, None)
        return deleted

    async def _delete_turns(
        self, where: str, params: tuple[Any, ...], also: str | None = None
    ) -> int:
        """Delete the turns matching `where` (and, by cascade, the replies to them), their
        images no other turn carries, and run `also` (same parameters), in one transaction."""

        # `where` is one of this module's constant conditions; values are bound.
        async def op(conn: asyncpg.Connection) -> int:
            count = await conn.fetchval(
                f"WITH doomed AS (SELECT t.id FROM turns AS t WHERE {where})"
                " SELECT (SELECT count(*) FROM doomed)"
                " + (SELECT count(*) FROM turns WHERE reply_to IN (SELECT id FROM doomed)"
                "    AND id NOT IN (SELECT id FROM doomed))",
                *params,
            )
            hashes = [
                r[0]
                for r in await conn.fetch(
                    "SELECT DISTINCT ti.sha256 FROM turn_images AS ti"
                    f" JOIN turns AS t ON t.id = ti.turn_id WHERE {where}",
                    *params,
                )
            ]
            await conn.execute(
                f"DELETE FROM turns WHERE id IN (SELECT t.id FROM turns AS t WHERE {where})",
                *params,
            )
            if hashes:
                await conn.execute(
                    "DELETE FROM images WHERE sha256 = ANY($1::text[])"
                    " AND NOT EXISTS (SELECT 1 FROM turn_images AS ti"
                    "                 WHERE ti.sha256 = images.sha256)",
                    hashes,
                )
            if also is not None:
                await conn.execute(also, *params)
            return int(count)

        return await self._write(op)

    # ----------------------------------------------------------------- settings

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's persona and model (None where unset)."""
        if (cached := self._settings.get(channel_id)) is None:
            generation = self._generation
            cached = await self._read(functools.partial(_settings, channel_id=channel_id))
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
            f"INSERT INTO channel_settings (channel_id, {name}, updated_at) VALUES ($1, $2, $3)"
            f" ON CONFLICT (channel_id) DO UPDATE SET {name} = excluded.{name},"
            " updated_at = excluded.updated_at"
        )
        stored = _put(value) if value and value.strip() else None

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(sql, channel_id, stored, time.time())

        self._generation += 1
        self._settings.pop(channel_id, None)
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
        """Add one reply's token counts to the ledger (a turn is counted once)."""
        values = (
            turn_id,
            user_id,
            channel_id,
            guild_id,
            _put(model),
            at,
            utc_day(at),
            *astuple_usage(usage),
        )

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(_LEDGER_INSERT_SQL, *values)

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
        """Ledger totals per model over UTC days `first_day`..`last_day`, for one user,
        channel or server (at most one of them), or for everything."""
        where, params = _ledger_filter(user_id, channel_id, guild_id)

        async def op(conn: asyncpg.Connection) -> list[UsageTotals]:
            rows = await conn.fetch(
                "SELECT model, sum(replies), sum(prompt_tokens), sum(output_tokens),"
                " sum(thoughts_tokens), sum(cached_tokens), sum(tool_use_prompt_tokens),"
                f" sum(total_tokens) FROM usage_daily WHERE {where} AND day BETWEEN $2 AND $3"
                " GROUP BY model HAVING sum(replies) > 0 ORDER BY model",
                *params,
                first_day,
                last_day,
            )
            return [
                UsageTotals(_get(r[0]), int(r[1]), TokenUsage(*(int(v) for v in list(r)[2:])))
                for r in rows
            ]

        return await self._read(op)

    async def tokens_used(
        self, day: int, *, user_id: int | None = None, guild_id: int | None = None
    ) -> int:
        """Total tokens the ledger holds for one UTC day, for one user or one server."""
        where, params = _ledger_filter(user_id, None, guild_id)

        async def op(conn: asyncpg.Connection) -> int:
            total = await conn.fetchval(
                "SELECT coalesce(sum(total_tokens), 0) FROM usage_daily"
                f" WHERE {where} AND day = $2",
                *params,
                day,
            )
            return int(total)

        return await self._read(op)

    async def get_guild_budget(self, guild_id: int) -> GuildBudget:
        """The server's own daily budgets (None where it follows the bot's settings)."""
        if (cached := self._budgets.get(guild_id)) is not None:
            return dataclasses.replace(cached)

        async def op(conn: asyncpg.Connection) -> GuildBudget:
            row = await conn.fetchrow(
                "SELECT server_tokens, user_tokens FROM guild_budgets WHERE guild_id = $1",
                guild_id,
            )
            if row is None:
                return GuildBudget(guild_id)
            return GuildBudget(guild_id, row[0], row[1])

        generation = self._generation
        budget = await self._read(op)
        if generation == self._generation:
            _remember(self._budgets, guild_id, budget)
        return dataclasses.replace(budget)

    async def set_guild_budget(self, budget: GuildBudget) -> None:
        """Store a server's own daily budgets (both None: back to the bot's settings)."""
        values = (budget.guild_id, budget.server_tokens, budget.user_tokens, time.time())

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO guild_budgets (guild_id, server_tokens, user_tokens, updated_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (guild_id) DO UPDATE"
                " SET server_tokens = excluded.server_tokens,"
                " user_tokens = excluded.user_tokens, updated_at = excluded.updated_at",
                *values,
            )

        await self._write(op, transaction=False)
        self._generation += 1
        self._budgets.pop(budget.guild_id, None)

    # ----------------------------------------------------------------- stats

    async def stats(self, channel_id: int | None = None) -> Stats:
        """Counts over all stored turns (archived included), for one channel or everywhere.

        Reads the running totals that triggers keep, so it costs the same at any size.
        """
        # NULL for "every channel": one constant condition, the value bound.
        where = " AND ($1::bigint IS NULL OR channel_id = $1)"

        async def op(conn: asyncpg.Connection) -> Stats:
            groups = await conn.fetch(
                "SELECT role, status, sum(turns), sum(prompt_tokens), sum(output_tokens),"
                " sum(thoughts_tokens)"
                f" FROM turn_totals WHERE turns > 0{where} GROUP BY role, status",
                channel_id,
            )
            channels = await conn.fetchval(
                f"SELECT count(DISTINCT channel_id) FROM turn_totals WHERE turns > 0{where}",
                channel_id,
            )
            if channel_id is None:
                images = await conn.fetchval("SELECT count(*) FROM images")
            else:
                images = await conn.fetchval(
                    "SELECT count(DISTINCT ti.sha256) FROM turn_images AS ti"
                    " JOIN turns AS t ON t.id = ti.turn_id WHERE t.channel_id = $1",
                    channel_id,
                )
            replies, first_n, first_sum, total_sum = await conn.fetchrow(
                "SELECT coalesce(sum(replies), 0)::bigint, coalesce(sum(first_chunk_n), 0)::bigint,"
                " coalesce(sum(first_chunk_sum), 0.0), coalesce(sum(total_time_sum), 0.0)"
                f" FROM reply_totals WHERE replies > 0{where}",
                channel_id,
            )
            by_status: dict[str, int] = {}
            counts = {"user": 0, "model": 0}
            prompt = output = thoughts = 0
            for role, status, n, p, o, th in groups:
                by_status[status] = by_status.get(status, 0) + int(n)
                counts[role] += int(n)
                prompt += int(p)
                output += int(o)
                thoughts += int(th)
            return Stats(
                turns=counts["user"] + counts["model"],
                user_turns=counts["user"],
                model_turns=counts["model"],
                channels=int(channels),
                images=int(images),
                by_status=by_status,
                prompt_tokens=prompt,
                output_tokens=output,
                replies_measured=int(replies),
                avg_first_chunk_latency=first_sum / first_n if first_n else None,
                avg_total_time=total_sum / replies if replies else None,
                thoughts_tokens=thoughts,
            )

        return await self._read(op)


# --------------------------------------------------------------------- helpers


async def _export_chunk(
    channel_id: int, archived: int, after: tuple[int, int], conn: asyncpg.Connection
) -> list[_Row]:
    rows = await conn.fetch(_EXPORT_SQL, channel_id, archived, *after, EXPORT_CHUNK)
    return [_row(r) for r in rows]


async def _lock_shards(conn: asyncpg.Connection, shards: ShardSet, where: str) -> None:
    """Hold this process's shards (session advisory locks, dropped with the connection);
    StoreLocked if another process runs one of them, or splits the servers differently."""
    await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", COUNT_LOCK, shards.count)
    other = await conn.fetchval(
        "SELECT min(objid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = $1 AND objsubid = 2 AND objid <> $2",
        COUNT_LOCK,
        shards.count,
    )
    if other is not None:
        raise StoreLocked(
            f"another gemcord process runs with GEMCORD_SHARD_COUNT={other} on the database"
            f" {where}; every process must use the same count ({shards.count} here)"
        )
    for shard in shards.ids:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", SHARD_LOCK, shard):
            raise StoreLocked(
                f"another gemcord process is already running shard {shard} on the database {where}"
            )


async def _plan(sql: str, params: tuple[Any, ...], conn: asyncpg.Connection) -> list[str]:
    """EXPLAIN `sql` as if its tables were large (sequential scans priced out)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + sql, *params)
    return [str(r[0]) for r in rows]


async def _close_quietly(pool: asyncpg.Pool | None, lock_conn: asyncpg.Connection | None) -> None:
    if lock_conn is not None:
        try:
            await lock_conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("closing the lock connection: %s", exc)
    if pool is not None:
        await pool.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
