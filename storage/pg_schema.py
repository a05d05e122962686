"""PostgreSQL schema migrations: numbered SQL files in `storage/migrations/postgres/`.

They mirror the SQLite ones number for number (a database migrated to N holds the same data
model on either engine), see `storage/migrations/postgres/README.md`. The version applied is
kept in `gemcord_schema`; each migration runs in one transaction with its version bump, under
a transaction-level advisory lock, so processes starting at once apply each file exactly once.
A database newer than this code is refused, never modified.
"""

from __future__ import annotations

import importlib.resources
import logging
from functools import cache

import asyncpg

from storage.models import SchemaError
from storage.schema import _FILE_NAME, Migration, check_sequence

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x67656D63  # "gemc": the advisory lock that serializes migrations


@cache
def load_pg_migrations() -> tuple[Migration, ...]:
    """The shipped PostgreSQL migrations in order (numbers 1..n without gaps)."""
    folder = importlib.resources.files("storage") / "migrations" / "postgres"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    check_sequence(found)
    return tuple(found)


async def pg_version(conn: asyncpg.Connection) -> int:
    """The database's schema version (0 when gemcord never ran on it)."""
    exists = await conn.fetchval("SELECT to_regclass('gemcord_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM gemcord_schema"))


async def migrate_pg(conn: asyncpg.Connection) -> tuple[int, int]:
    """Bring the schema to the newest version; returns (version before, after)."""
    migrations = load_pg_migrations()
    newest = len(migrations)
    before = await pg_version(conn)
    if before > newest:
        raise SchemaError(
            f"the database is at schema version {before}, newer than this code knows "
            f"({newest}); upgrade gemcord rather than open it with an older one"
        )
    for migration in migrations[before:]:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS gemcord_schema"
                " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = await pg_version(conn)  # another process may have got here first
            if current >= migration.version:
                continue
            if current != migration.version - 1:
                raise SchemaError(
                    f"cannot apply migration {migration.version} to schema version {current}"
                )
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO gemcord_schema (version) VALUES ($1)", migration.version
            )
        log.debug("applied PostgreSQL migration %04d_%s", migration.version, migration.name)
    after = await pg_version(conn)
    if after != before:
        log.info("database schema migrated from version %d to %d", before, after)
    return before, after
