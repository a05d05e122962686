"""Schema migrations: numbered SQL files in `storage/migrations/`, applied forward at start-up.

`PRAGMA user_version` holds the number of the last migration applied. Each migration runs in
its own `BEGIN IMMEDIATE` transaction together with the version bump, so a crash (or an error)
leaves the file at the previous version with its data untouched; the next start tries again.
A database whose version is newer than the newest file here is refused, never modified.
Migrations only ever add or transform: none may drop data. They run with foreign keys off
(as SQLite's recipe for rebuilding a table asks) and `PRAGMA foreign_key_check` must pass
before each commits.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import aiosqlite

from storage.models import SchemaError

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, one by one (triggers with inner semicolons stay whole)."""
        out: list[str] = []
        buffer = ""
        for line in self.sql.splitlines(keepends=True):
            buffer += line
            if sqlite3.complete_statement(buffer):
                statement = buffer.strip()
                if statement.rstrip(";").strip() and not _only_comments(statement):
                    out.append(statement)
                buffer = ""
        if buffer.strip() and not _only_comments(buffer):
            raise SchemaError(f"migration {self.version:04d}_{self.name} ends mid-statement")
        return out


def _only_comments(sql: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())


@cache
def load_migrations() -> tuple[Migration, ...]:
    """The shipped migrations in order; their numbers must run 1, 2, 3, … without gaps."""
    folder = importlib.resources.files("storage") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    check_sequence(found)
    return tuple(found)


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Refuse a list whose numbers are not exactly 1..n."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise SchemaError(f"migration numbers must run 1..n without gaps, found {numbers}")


def latest_version() -> int:
    """The schema version this code expects."""
    return len(load_migrations())


async def user_version(conn: aiosqlite.Connection) -> int:
    """The file's schema version (0 for a new, empty file)."""
    rows = list(await conn.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def migrate(
    conn: aiosqlite.Connection,
    migrations: Sequence[Migration] | None = None,
    *,
    target: int | None = None,
) -> tuple[int, int]:
    """Bring the schema up to `target` (default: the newest); returns (version before, after).

    `conn` must be in autocommit mode (isolation_level=None) with no transaction open.
    """
    migrations = load_migrations() if migrations is None else tuple(migrations)
    check_sequence(migrations)
    newest = len(migrations)
    target = newest if target is None else target
    if not 0 <= target <= newest:
        raise SchemaError(f"no migration {target}: the newest is {newest}")
    before = await user_version(conn)
    if before > newest:
        raise SchemaError(
            f"the database is at schema version {before}, newer than this code knows "
            f"({newest}); upgrade gemcord rather than open it with an older one"
        )
    for migration in migrations[before:target]:
        await _apply(conn, migration)
    after = await user_version(conn)
    if after != before:
        log.info("database schema migrated from version %d to %d", before, after)
    return before, after


async def _apply(conn: aiosqlite.Connection, migration: Migration) -> None:
    # Foreign keys off (outside the transaction, where SQLite honours it), so a migration can
    # rebuild a table that others reference; they are checked before the commit instead.
    (enforced,) = next(iter(await conn.execute_fetchall("PRAGMA foreign_keys")))
    await conn.execute("PRAGMA foreign_keys = OFF")
    try:
        await _apply_in_transaction(conn, migration)
    finally:
        await conn.execute(f"PRAGMA foreign_keys = {1 if enforced else 0}")


async def _apply_in_transaction(conn: aiosqlite.Connection, migration: Migration) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        current = await user_version(conn)  # another process may have got here first
        if current >= migration.version:
            await conn.execute("ROLLBACK")
            return
        if current != migration.version - 1:
            raise SchemaError(
                f"cannot apply migration {migration.version} to schema version {current}"
            )
        for statement in migration.statements():
            await conn.execute(statement)
        problems = list(await conn.execute_fetchall("PRAGMA foreign_key_check"))
        if problems:
            raise SchemaError(
                f"migration {migration.version:04d}_{migration.name} breaks foreign keys: "
                f"{problems[:5]}"
            )
        # PRAGMA takes no bound parameters; the version is an int from a file name.
        await conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    log.debug("applied migration %04d_%s", migration.version, migration.name)
