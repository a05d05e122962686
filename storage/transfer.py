"""`gemcord migrate`: copy a SQLite database into PostgreSQL, then prove the copy.

Both ends are first brought to this version's schema (the PostgreSQL migrations mirror the
SQLite ones number for number, so the tables and columns match). Every table is copied in
foreign-key order, in chunks, as an upsert on its primary key, so a run that was interrupted,
or a second run, simply converges. The running totals (`turn_totals`, `reply_totals`,
`usage_daily`) are not copied: PostgreSQL's triggers rebuild them from the rows, and they are
checked against the source's. Identity sequences continue after the highest copied id, and
the tables are analyzed for the planner.

Then, per table, the row count and a SHA-256 over every row (in key order, values normalized:
text as given, numbers, bytes) must be equal on both sides; any difference is an error naming
the table. The source must not be in use (its owner lock is taken) and no bot may be running
on the target (its shard locks must be free).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from storage.models import SchemaError, StorageError, StoreLocked
from storage.postgres import SHARD_LOCK, PostgresStore, _get, _put, _redact
from storage.sqlite import SQLiteStore, _lock_exclusively, _unlock

log = logging.getLogger(__name__)

CHUNK = 5_000  # rows per read and per COPY
DERIVED = {
    # table: the condition for a row that counts (an emptied total is kept by SQLite's triggers)
    "turn_totals": "turns <> 0",
    "reply_totals": "replies <> 0",
    "usage_daily": "replies <> 0",
}
SKIPPED = {"gemcord_schema"}


@dataclass
class Column:
    """One copied column and how its values are carried."""

    name: str
    kind: str  # "int", "float", "text", "bytes"


@dataclass
class Table:
    """One copied table."""

    name: str
    columns: list[Column]
    key: list[str]


@dataclass
class TableReport:
    """What one table looks like on both sides after the copy."""

    name: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def ok(self) -> bool:
        """Both sides hold the same rows."""
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///path` URL (a plain path is accepted too)."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]  # sqlite:////abs/path keeps its leading slash
    if url.startswith("sqlite://"):
        raise ValueError(f"{url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
    return url


async def migrate_database(
    source: str, target: str, *, progress: Callable[[str], None] = lambda _: None
) -> list[TableReport]:
    """Copy the SQLite database `source` (path or sqlite:/// URL) into the PostgreSQL database
    `target`, verify it, and return a report per table (StorageError if they differ)."""
    path = sqlite_path(source)
    if not await asyncio.to_thread(_is_file, path):
        raise StorageError(f"there is no SQLite database at {path}")
    # Bring both to this version's schema (the SQLite file as the bot itself would).
    store: Any = await SQLiteStore.open(path, recover_streaming=False)
    await store.close()
    store = await PostgresStore.open(target, recover_streaming=False)
    await store.close()
    lock = _lock_exclusively(path)  # no bot may write the source meanwhile
    try:
        conn = await asyncpg.connect(target)
        try:
            await _refuse_running_bots(conn, target)
            tables = await _tables(conn)
            with _open_sqlite(path) as db:
                _check_columns(db, tables)
                for table in tables:
                    copied = await _copy(db, conn, table)
                    progress(f"{table.name}: {copied:,} rows copied")
                await _continue_identities(conn, tables)
                await conn.execute("ANALYZE")  # fresh statistics for the planner after a bulk load
                reports = [await _compare(db, conn, t) for t in tables]
                reports += [await _compare_derived(db, conn, name) for name in DERIVED]
        finally:
            await conn.close()
    finally:
        _unlock(lock)
    bad = [r.name for r in reports if not r.ok]
    if bad:
        raise StorageError(
            "the copy differs from the source in " + ", ".join(bad) + " (was the target"
            " empty, or written to by a bot?); nothing in the source was changed"
        )
    return reports


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


class _open_sqlite:
    """A read-only sqlite3 connection (reads run on a worker thread)."""

    def __init__(self, path: str) -> None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


async def _refuse_running_bots(conn: asyncpg.Connection, target: str) -> None:
    held = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        SHARD_LOCK,
    )
    if held:
        raise StoreLocked(f"a gemcord bot is running on {_redact(target)}; stop it first")


_KINDS = {
    "boolean": "bool",
    "json": "text",
    "jsonb": "text",
    "bigint": "int",
    "integer": "int",
    "smallint": "int",
    "double precision": "float",
    "real": "float",
    "text": "text",
    "bytea": "bytes",
}


async def _tables(conn: asyncpg.Connection) -> list[Table]:
    """The store's tables (not the derived totals), parents before children."""
    names = [
        r[0]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        if r[0] not in DERIVED and r[0] not in SKIPPED
    ]
    tables: dict[str, Table] = {}
    for name in names:
        columns = []
        for col, dtype in await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1"
            " AND is_generated = 'NEVER' ORDER BY ordinal_position",
            name,
        ):
            if dtype not in _KINDS:
                raise SchemaError(f"{name}.{col} has type {dtype}, which migrate cannot copy")
            columns.append(Column(col, _KINDS[dtype]))
        key = [
            r[0]
            for r in await conn.fetch(
                "SELECT a.attname FROM pg_index AS i"
                " JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = $1::regclass AND i.indisprimary"
                " ORDER BY array_position(i.indkey::int2[], a.attnum)",
                name,
            )
        ]
        if not key:
            raise SchemaError(f"table {name} has no primary key, so migrate cannot re-run")
        tables[name] = Table(name, columns, key)
    parents: dict[str, set[str]] = {n: set() for n in tables}
    for child, parent in await conn.fetch(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
    ):
        if child in parents and parent in tables and parent != child:
            parents[child].add(parent)
    ordered: list[Table] = []
    while parents:
        ready = sorted(n for n, p in parents.items() if not p)
        if not ready:
            raise SchemaError(f"foreign keys form a cycle among {sorted(parents)}")
        for n in ready:
            ordered.append(tables[n])
            del parents[n]
        for p in parents.values():
            p.difference_update(ready)
    return ordered


def _check_columns(db: sqlite3.Connection, tables: Sequence[Table]) -> None:
    for table in tables:
        have = {r[1] for r in db.execute(f'PRAGMA table_xinfo("{table.name}")')}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise SchemaError(
                f"the SQLite table {table.name} lacks {missing}: are both at the same version?"
            )


def _select(table: Table, *, pg: bool = False, where: str = "") -> str:
    """SELECT every column in key order (text keys in byte order on both engines)."""
    # Names come from PostgreSQL's catalog of our own schema, quoted.
    cols = ", ".join(f'"{c.name}"' for c in table.columns)
    kinds = {c.name: c.kind for c in table.columns}
    order = ", ".join(
        f'"{k}"' + (' COLLATE "C"' if pg and kinds[k] == "text" else "") for k in table.key
    )
    condition = f" WHERE {where}" if where else ""
    return f'SELECT {cols} FROM "{table.name}"{condition} ORDER BY {order}'


def _chunks(db: sqlite3.Connection, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    cursor = db.execute(sql)
    while rows := cursor.fetchmany(CHUNK):
        yield rows


async def _read_chunks(db: sqlite3.Connection, sql: str) -> Any:
    """The rows of `sql` on the SQLite side, CHUNK at a time, read off the event loop."""
    it = _chunks(db, sql)
    while True:
        rows = await asyncio.to_thread(next, it, None)
        if rows is None:
            return
        yield rows


def _to_pg(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "text":
        return _put(str(value))
    if kind == "float":
        return float(value)
    if kind == "bytes":
        return bytes(value)
    if kind == "bool":
        return bool(value)
    return int(value)


async def _copy(db: sqlite3.Connection, conn: asyncpg.Connection, table: Table) -> int:
    names = [c.name for c in table.columns]
    cols = ", ".join(f'"{c}"' for c in names)
    keys = ", ".join(f'"{k}"' for k in table.key)
    others = [c for c in names if c not in table.key]
    update = (
        "DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in others)
        if others
        else "DO NOTHING"
    )
    await conn.execute(
        f'CREATE TEMP TABLE IF NOT EXISTS "in_{table.name}" AS'
        f' SELECT {cols} FROM "{table.name}" WITH NO DATA'
    )
    copied = 0
    async for rows in _read_chunks(db, _select(table)):
        records = [
            tuple(_to_pg(c.kind, v) for c, v in zip(table.columns, row, strict=True))
            for row in rows
        ]
        async with conn.transaction():
            await conn.execute(f'TRUNCATE "in_{table.name}"')
            await conn.copy_records_to_table(f"in_{table.name}", records=records, columns=names)
            await conn.execute(
                f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM "in_{table.name}"'
                f" ORDER BY {keys} ON CONFLICT ({keys}) {update}"
            )
        copied += len(records)
    return copied


async def _continue_identities(conn: asyncpg.Connection, tables: Sequence[Table]) -> None:
    for table in tables:
        for (col,) in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND table_name = $1 AND is_identity = 'YES'",
            table.name,
        ):
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence($1, $2),"
                f' (SELECT coalesce(max("{col}"), 0) + 1 FROM "{table.name}"), false)',
                table.name,
                col,
            )


def _normal(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "float":
        return round(float(value), 6)
    if kind == "bytes":
        return hashlib.sha256(bytes(value)).hexdigest()
    if kind in ("int", "bool"):
        return int(value)
    return value


class _Digest:
    def __init__(self, kinds: Sequence[str], decode_text: bool) -> None:
        self.kinds = kinds
        self.decode = decode_text
        self.hash = hashlib.sha256()
        self.rows = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            values = [
                _normal(k, _get(v) if self.decode and k == "text" else v)
                for k, v in zip(self.kinds, row, strict=True)
            ]
            self.hash.update(repr(values).encode("utf-8", "surrogatepass"))
            self.rows += 1


async def _digest_pg(conn: asyncpg.Connection, sql: str, kinds: Sequence[str]) -> _Digest:
    digest = _Digest(kinds, decode_text=True)
    async with conn.transaction():
        cursor = await conn.cursor(sql)
        while rows := await cursor.fetch(CHUNK):
            digest.add(rows)
    return digest


async def _compare(db: sqlite3.Connection, conn: asyncpg.Connection, table: Table) -> TableReport:
    kinds = [c.kind for c in table.columns]
    mine = _Digest(kinds, decode_text=False)
    async for rows in _read_chunks(db, _select(table)):
        mine.add(rows)
    theirs = await _digest_pg(conn, _select(table, pg=True), kinds)
    return TableReport(
        table.name, mine.rows, theirs.rows, mine.hash.hexdigest(), theirs.hash.hexdigest()
    )


async def _compare_derived(
    db: sqlite3.Connection, conn: asyncpg.Connection, name: str
) -> TableReport:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        name,
    )
    columns = [Column(r[0], _KINDS[r[1]]) for r in rows]
    table = Table(name, columns, [c.name for c in columns if c.kind != "float"])
    kinds = [c.kind for c in columns]
    mine = _Digest(kinds, decode_text=False)
    async for chunk in _read_chunks(db, _select(table, where=DERIVED[name])):
        mine.add(chunk)
    theirs = await _digest_pg(conn, _select(table, pg=True, where=DERIVED[name]), kinds)
    return TableReport(name, mine.rows, theirs.rows, mine.hash.hexdigest(), theirs.hash.hexdigest())
