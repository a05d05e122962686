"""The Store on PostgreSQL through asyncpg: a connection pool, forward migrations, shard locks.

The methods themselves are shared with SQLite (storage/base.py), and so are their semantics
(see the package doc), proven by the same test suite; this module holds how they run here, and
the SQL in which PostgreSQL differs:
- Operations run concurrently on a pool of connections; each write with several statements
  is one transaction, and rows that two writers could both touch are locked (`FOR UPDATE`)
  or written with upserts. A write that meets a deadlock or a serialization failure is
  retried. A write, once called, finishes even when the caller is cancelled.
- Every value is a bound parameter; SQL text is only ever assembled from constants.
- PostgreSQL text cannot hold NUL: stored text escapes it (and the escape character) with
  U+FFFF, a noncharacter, and reads undo that, so any text round-trips as SQLite keeps it.
- Several bot processes may share one database, each running some Discord shards (a server's
  rows belong to the shard Discord gives it, DMs to shard 0). The process that owns shards
  (`recover_streaming=True`) holds a session advisory lock per shard for as long as the store
  is open (PostgreSQL drops it when the connection dies), marks only its own shards'
  "streaming" turns interrupted, and a second owner of any of them gets StoreLocked. That
  connection is asked every LOCK_CHECK_SECONDS whether it still holds them (a connection cut
  without a word is noticed only when used); one that dropped or does not answer is replaced
  and the locks taken again, and `health()` names the lost lock meanwhile (for good when
  another process took it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from storage.base import MAX_ID, BaseStore, Db, Op, TurnRow, clean
from storage.models import StorageError, StoreLocked
from storage.pg_schema import migrate_pg
from storage.shards import ShardSet

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_MAX = 10
EXPORT_CHUNK = 500  # turns an export reads per query
SHARD_LOCK = 0x67656D73  # "gems": advisory lock class for "a process owns shard N"
COUNT_LOCK = 0x67656D6E  # "gemn": shared advisory lock class for "owners split into N shards"
RETRIES = 5  # attempts of a write that meets a deadlock or a serialization failure
LOCK_CHECK_SECONDS = 15.0
"""How often the connection that holds the shard locks is asked whether it still holds them:
a connection cut without a word (a NAT or firewall dropping it, a failover) is noticed only
when used, and PostgreSQL drops the locks of a session it has ended."""
LOCK_CHECK_TIMEOUT = 5.0
"""Seconds that connection may take to answer before it counts as lost."""
_HELD_SQL = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND ((classid = $1 AND objid = ANY($2::oid[]))"
    " OR (classid = $3 AND objid = $4)) AND objsubid = 2"
)

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

# The turns of servers on the given shards (DMs: shard 0): $1 shard count, $2 shard ids.
_OWNED = "((coalesce(guild_id, 0) >> 22) % $1) = ANY($2::int[])"

_ESCAPED = re.compile("\uffff[01]")


def _put(text: str) -> str:
    """Text as PostgreSQL can store it: lone surrogates become U+FFFD; NUL is escaped."""
    text = clean(text)
    if "\x00" in text or "\uffff" in text:
        text = text.replace("\uffff", "\uffff1").replace("\x00", "\uffff0")
    return text


def _get(text: str | None) -> Any:
    """Stored text as it was given (undoes `_put`)."""
    if text is None or "\uffff" not in text:
        return text
    return _ESCAPED.sub(lambda m: "\x00" if m[0][1] == "0" else "\uffff", text)


def _row(record: asyncpg.Record) -> TurnRow:
    """A fetched turn, its text as it was given (see `_put`)."""
    row = TurnRow(record)
    turn = row.turn
    turn.text, turn.author_name, turn.model = (
        _get(turn.text),
        _get(turn.author_name),
        _get(turn.model),
    )
    turn.images = [dataclasses.replace(i, name=_get(i.name)) for i in turn.images]
    return row


class _PgDb:
    """A pooled connection as the shared code uses it (`storage.base.Db`)."""

    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> Iterable[Any]:
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.conn.execute(sql, *args)  # "UPDATE 2", "INSERT 0 1", …
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, args)

    async def pipeline(self, *steps: Awaitable[Any]) -> list[Any]:
        # one query at a time on a connection: in turn (after a failure, the rest never run)
        results: list[Any] = []
        try:
            for step in steps:
                results.append(await step)
        finally:
            for step in steps[len(results) + 1 :]:
                if inspect.iscoroutine(step):
                    step.close()
        return results


class PostgresStore(BaseStore):
    """Conversation history, images, settings and metrics in a PostgreSQL database."""

    _TURN_SELECT = _TURN_SELECT
    _TURNS_SQL = _TURN_SELECT + " WHERE t.id = ANY($1::bigint[]) ORDER BY t.id"
    _EXPORT_SQL = _EXPORT_SQL
    _FILE_DATA_SQL = (
        "SELECT sha256, data FROM images WHERE sha256 = ANY($1::text[])"
        " AND sha256 NOT IN (SELECT sha256 FROM unusable_images)"
    )
    _UPLOADS_SQL = (
        "SELECT sha256, name, uri, mime_type, expires_at FROM gemini_files"
        " WHERE sha256 = ANY($1::text[])"
    )
    _ORPHANS_SQL = (
        "DELETE FROM images WHERE sha256 = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM turn_images AS ti WHERE ti.sha256 = images.sha256)"
    )
    _FILE_KEPT_SQL = "SELECT 1 FROM images WHERE sha256 = $1 FOR KEY SHARE"
    _put = staticmethod(_put)
    _get = staticmethod(_get)
    _row = staticmethod(_row)

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        shards: ShardSet,
        lock_conn: asyncpg.Connection | None = None,
        lock_name: str = "",
    ) -> None:
        # BaseStore keeps settings and budgets in memory: a channel's or server's change only
        # through the process that runs its shard.
        super().__init__()
        self._pool = pool
        self.url = url
        self.shards = shards
        self._lock_conn = lock_conn
        self._relocking: asyncio.Task[None] | None = None
        self._lock_problem: str | None = None
        """Why this process does not hold its shard locks right now (None: it does)."""
        self._lock_pid: int | None = None
        """The server process of the lock connection (to end it if it outlives the connection)."""
        self._lock_name = lock_name
        """The lock connection's application_name, this process's own (see `_lock_name`)."""
        self._lock_watch: asyncio.Task[None] | None = None
        if lock_conn is not None:
            self._hold(lock_conn)
            self._lock_watch = asyncio.ensure_future(self._watch_lock())

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
        lock_name = _lock_name(shards)
        try:
            async with pool.acquire() as conn:
                await migrate_pg(conn)
            recovered: list[int] = []
            if recover_streaming:
                lock_conn = await _connect_lock(url, lock_name)
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
        store = cls(pool, url, shards, lock_conn, lock_name)
        store._interrupted = recovered
        return store

    async def _close(self) -> None:
        for task in (self._relocking, self._lock_watch):
            if task is not None:
                task.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await _close_quietly(self._pool, self._lock_conn)
        self._lock_conn = None

    async def health(self) -> str | None:
        """Also: whether this process still holds its shard locks (as the connection that holds
        them last answered, see :data:`LOCK_CHECK_SECONDS`)."""
        if self._lock_problem is not None:
            return self._lock_problem
        return await super().health()

    def _hold(self, conn: asyncpg.Connection) -> None:
        """`conn` holds this process's shard locks now."""
        self._lock_conn, self._lock_pid, self._lock_problem = conn, conn.get_server_pid(), None
        conn.add_termination_listener(self._lock_lost)

    def _shard_names(self) -> str:
        ids = self.shards.ids
        return f"shard{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"

    async def _watch_lock(self) -> None:
        """Ask the lock connection every :data:`LOCK_CHECK_SECONDS` whether it holds the locks."""
        while True:
            await asyncio.sleep(LOCK_CHECK_SECONDS)
            await self._check_lock()

    async def _check_lock(self) -> None:
        """Drop the lock connection (and so take the locks again) when it does not answer
        within :data:`LOCK_CHECK_TIMEOUT`, or answers that it no longer holds every lock."""
        conn = self._lock_conn
        if conn is None or self._closing is not None:
            return
        expected = len(self.shards.ids) + 1  # and the shared one for the shard count
        try:
            async with asyncio.timeout(LOCK_CHECK_TIMEOUT):
                held = await conn.fetchval(
                    _HELD_SQL, SHARD_LOCK, list(self.shards.ids), COUNT_LOCK, self.shards.count
                )
            if held == expected:
                return
            why = f"holds {held} of its {expected} locks"
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            why = f"does not answer ({type(exc).__name__})"
        log.error("the database connection that holds this process's shard lock(s) %s", why)
        conn.remove_termination_listener(self._lock_lost)
        conn.terminate()
        self._lock_lost(conn)

    def _lock_lost(self, _conn: asyncpg.Connection) -> None:
        """The connection holding the shard locks died (PostgreSQL restarted, a network cut):
        take them again, or say loudly that another process has."""
        if self._closing is not None:
            return
        self._lock_conn = None
        self._lock_problem = (
            f"this process lost its PostgreSQL lock on {self._shard_names()} (the database"
            " connection that held it dropped) and is taking it again"
        )
        log.error("lost the database connection that holds this process's shard lock(s)")
        self._relocking = asyncio.ensure_future(self._relock())

    async def _relock(self) -> None:
        delay = 0.5
        while self._closing is None:
            conn: asyncpg.Connection | None = None
            try:
                conn = await _connect_lock(self.url, self._lock_name)
                await _lock_shards(conn, self.shards, _redact(self.url))
            except StoreLocked as exc:
                if conn is not None and await _end_backend(conn, self._lock_pid, self._lock_name):
                    # the old connection's server process still held them: ended, try again
                    await _close_quietly(None, conn)
                    await asyncio.sleep(0.1)  # while it exits
                    continue
                await _close_quietly(None, conn)
                log.critical("%s: two processes now run the same shards; stop one", exc)
                self._lock_problem = (
                    f"this process lost its PostgreSQL lock on {self._shard_names()} and another"
                    " process has taken it: two processes run the same shards; restart this one"
                )
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                await _close_quietly(None, conn)
                log.warning("cannot take the shard lock(s) again yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._hold(conn)
            log.warning("holding this process's shard lock(s) again")
            return

    # ----------------------------------------------------------------- plumbing

    async def _read(self, op: Op[T], urgent: bool = False) -> T:
        self._check_open()
        async with self._pool.acquire() as conn:
            return await op(_PgDb(conn))

    async def _run_write(
        self,
        op: Op[T],
        transaction: bool,
        consistent: bool,
        urgent: bool,
        batch: Hashable,
        queued: Callable[[], object] | None,
    ) -> T:
        """On a pooled connection, in a transaction when the writes must commit together or
        the op must hold its row locks; a deadlock or serialization failure is retried. No
        `batch` and no `queued`: each write has a connection of its own, so none waits for
        another's trips."""
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    if not (transaction or consistent):
                        return await op(_PgDb(conn))
                    async with conn.transaction():
                        return await op(_PgDb(conn))
            except (
                asyncpg.DeadlockDetectedError,
                asyncpg.SerializationError,
            ) as exc:
                if attempt == RETRIES - 1:
                    raise
                log.debug("retrying a write after %s", type(exc).__name__)
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def _history_rows(
        self, db: Db, channel_id: int, before: int, author_id: int | None, limit: int
    ) -> Iterable[Any]:
        return await db.fetch(_HISTORY_SQL, channel_id, before, author_id, limit)

    async def _insert_message_ids(self, db: Db, turn_id: int, message_ids: Sequence[int]) -> None:
        """The turn is locked, so concurrent appends take their positions one after another."""
        if not message_ids:
            return
        if await db.fetchval("SELECT id FROM turns WHERE id = $1 FOR UPDATE", turn_id) is None:
            return
        have = await db.fetch(
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
            await db.executemany(
                "INSERT INTO turn_messages (turn_id, position, message_id) VALUES ($1, $2, $3)",
                rows,
            )

    @property
    def _export_chunk(self) -> int:
        return EXPORT_CHUNK

    # ----------------------------------------------------------------- PostgreSQL's own

    async def size_bytes(self) -> int:
        """The database's size on disk."""

        async def op(db: Db) -> int:
            return int(await db.fetchval("SELECT pg_database_size(current_database())"))

        return await self._read(op)

    async def history_plan(self) -> list[str]:
        """How PostgreSQL would run the history query on a large table (EXPLAIN)."""
        return await self._read(functools.partial(_plan, _HISTORY_SQL, (0, MAX_ID, None, 40)))

    async def usage_plan(self) -> list[str]:
        """How PostgreSQL would run the per-user budget query on a large table (EXPLAIN)."""
        sql = "SELECT sum(total_tokens) FROM usage_daily WHERE user_id = $1 AND day = $2"
        return await self._read(functools.partial(_plan, sql, (0, 0)))


# --------------------------------------------------------------------- helpers


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


def _lock_name(shards: ShardSet) -> str:
    """The application_name of a process's lock connections: a token of its own (so that it
    only ever ends its own), and its shards."""
    return f"gemcord {secrets.token_hex(4)} shards {shards.label()}"[:63]


async def _connect_lock(url: str, name: str) -> asyncpg.Connection:
    """A connection of its own to hold the shard locks."""
    return await asyncpg.connect(url, server_settings={"application_name": name})


async def _end_backend(conn: asyncpg.Connection, pid: int | None, name: str) -> bool:
    """End server process `pid` if it is still this process's old lock connection (which may
    hold the locks until PostgreSQL notices that its client is gone); whether it was."""
    if pid is None:
        return False
    try:
        return bool(
            await conn.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid = $1 AND application_name = $2",
                pid,
                name,
            )
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not end the old lock connection's server process: %s", exc)
        return False


async def _plan(sql: str, params: tuple[Any, ...], db: Db) -> list[str]:
    """EXPLAIN `sql` as if its tables were large (sequential scans priced out)."""
    assert isinstance(db, _PgDb)
    async with db.conn.transaction():
        await db.conn.execute("SET LOCAL enable_seqscan = off")
        rows = await db.conn.fetch("EXPLAIN " + sql, *params)
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
