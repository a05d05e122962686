"""A Unix socket in front of the test PostgreSQL server's, through which any connection can be
cut without a word to either side, as a NAT or firewall that drops a connection does."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass
class Link:
    """One client connection through the relay."""

    startup: bytes = b""
    cut: bool = False
    """Nothing passes any more, either way, and neither side is told (a NAT or firewall that
    dropped the connection, a failover)."""

    @property
    def holds_locks(self) -> bool:
        """Whether this is a store's lock connection (by its application_name)."""
        return b"application_name\x00gemcord " in self.startup


class Relay:
    """A Unix socket in front of PostgreSQL's, through which any connection can be cut."""

    def __init__(self, url: str) -> None:
        self.target = os.path.join(parse_qs(urlsplit(url).query)["host"][0], ".s.PGSQL.5432")
        self.folder = tempfile.mkdtemp(prefix="pgcut", dir="/tmp")  # socket paths are short
        self.url = re.sub(r"host=[^&]*", f"host={self.folder}", url)
        self.links: list[Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Relay:
        path = os.path.join(self.folder, ".s.PGSQL.5432")
        self._server = await asyncio.start_unix_server(self._relay, path=path)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        shutil.rmtree(self.folder, ignore_errors=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link()
        self.links.append(link)
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        for args in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pump(link, *args))
            self._tasks.add(task)

    async def _pump(
        self, link: Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: bool
    ) -> None:
        while data := await src.read(65536):
            if client and len(link.startup) < 4096:
                link.startup += data
            if not link.cut:
                dst.write(data)
        if not link.cut:
            dst.close()
