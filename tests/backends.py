"""The two storage engines as one test fixture: the same suite runs against SQLite and a real
PostgreSQL server (started once per test run by tests/pg_server.py; each test gets a fresh
database). GEMCORD_SKIP_POSTGRES=1 skips the PostgreSQL half, loudly."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage import Store, open_store
from storage.shards import ShardSet
from tests import pg_server

SKIP_POSTGRES = os.environ.get("GEMCORD_SKIP_POSTGRES") == "1"
SKIP_REASON = "GEMCORD_SKIP_POSTGRES=1: the PostgreSQL half of the storage suite is SKIPPED"
_names = itertools.count(1)


@dataclass
class Backend:
    """One engine with one database: open stores on it, and reach its tables directly."""

    name: str
    location: str
    integrity_error: tuple[type[BaseException], ...]
    _pg: asyncpg.Connection | None = field(default=None, repr=False)

    async def open(
        self, *, recover_streaming: bool = True, shards: ShardSet | None = None
    ) -> Store:
        """A store on this backend's database."""
        return await open_store(self.location, recover_streaming=recover_streaming, shards=shards)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL (with `?` placeholders) outside the store; returns the rows as tuples."""
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as db:
                return [tuple(r) for r in db.execute(sql, params)]
        if self._pg is None:
            self._pg = await asyncpg.connect(self.location)
        numbered = iter(range(1, 1000))
        query = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)
        return [tuple(r) for r in await self._pg.fetch(query, *params)]

    async def aclose(self) -> None:
        """Drop the direct connection."""
        if self._pg is not None:
            await self._pg.close()
            self._pg = None


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PgServer]:
    """A throw-away PostgreSQL server for the whole run."""
    if SKIP_POSTGRES:
        pytest.skip(SKIP_REASON)
    server = pg_server.start()
    try:
        yield server
    finally:
        server.stop()


async def new_database(server: pg_server.PgServer) -> str:
    """Create an empty database on the server; returns its URL."""
    name = f"t{os.getpid()}_{next(_names)}"
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')  # a name made here, not input
    finally:
        await admin.close()
    return server.url(name)


async def drop_database(server: pg_server.PgServer, url: str) -> None:
    """Drop a database made by `new_database` (closing whatever is still connected)."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each storage engine in turn, with an empty database."""
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "data" / "gemcord.db"), (sqlite3.IntegrityError,))
    return request.getfixturevalue("pg_backend")


@pytest.fixture
async def pg_backend(postgres: pg_server.PgServer) -> AsyncIterator[Backend]:
    """PostgreSQL alone, with an empty database."""
    server = postgres
    url = await new_database(server)
    b = Backend("postgres", url, (asyncpg.IntegrityConstraintViolationError,))
    try:
        yield b
    finally:
        await b.aclose()
        await drop_database(server, url)
