"""Files attached to a web question. The ask lists them (``files: [{name, type, size}]``) and the
page sends each file's bytes right after it, one binary WebSocket message per file in the same
order (an empty one for a file larger than ``max_file`` in ``hello``). They then go through the
Discord attachments' intake (:func:`bot.attachments.collect_files`): the same kinds, limits and
one-sentence refusals."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMessage, WSMsgType

from bot.attachments import Limits, precheck

log = logging.getLogger(__name__)

MAX_NAME = 100
"""Characters of a file name kept (longer names are shortened)."""
MAX_FILES = 16
"""File entries one question may list at all (beyond the file cap, each gets a sentence)."""
FILE_WAIT = 300.0
"""Seconds the server waits for each file's bytes once a question listed it."""
NOT_ARRIVED = "The files of that question did not arrive: try again."


@dataclass
class Received:
    """One file of a question, as the page declared and sent it (an
    :class:`bot.attachments.AttachmentLike`)."""

    filename: str
    size: int
    content_type: str | None
    data: bytes = field(default=b"", repr=False)

    async def read(self) -> bytes:
        """The file's bytes (already received)."""
        return self.data


def largest_file(limits: Limits) -> int:
    """The largest file of any kind the limits allow."""
    kinds = ("image", "text", "pdf", "audio", "video")
    return max(limits.max_bytes(kind) for kind in kinds)


def message_cap(limits: Limits, base: int) -> int:
    """The largest WebSocket message: ``base`` for a question, or the largest file's bytes."""
    return max(base, largest_file(limits))


def clean_name(value: object, index: int) -> str:
    """A file name safe to show in a sentence (no backticks or line breaks, not too long)."""
    name = value if isinstance(value, str) else ""
    name = " ".join(name.replace("`", "'").split())
    if not name:
        return f"file {index}"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def parse_files(value: object) -> list[Received] | str:
    """The ask's ``files`` (their bytes not received yet), or one sentence saying why they
    cannot be read."""
    if value is None:
        return []
    if not isinstance(value, list):
        return "The files must be a list of {name, type, size}."
    if len(value) > MAX_FILES:
        return f"Attach at most {MAX_FILES} files to one question."
    files = []
    for index, entry in enumerate(value, start=1):
        entry = entry if isinstance(entry, dict) else {}
        kind, size = entry.get("type"), entry.get("size")
        files.append(
            Received(
                clean_name(entry.get("name"), index),
                size if isinstance(size, int) and size >= 0 else 0,
                kind if isinstance(kind, str) and kind else None,
            )
        )
    return files


async def receive_files(
    receive: Callable[[], Awaitable[WSMessage]], files: list[Received], limits: Limits
) -> str | None:
    """Read each file's bytes (its binary message) into ``files``; None, or a sentence when
    they did not all arrive. The bytes of a file refused by its declared kind and size are
    not kept."""
    for file in files:
        msg = await receive()
        if msg.type != WSMsgType.BINARY:
            log.info("web question: %s came instead of the bytes of %s", msg.type, file.filename)
            return NOT_ARRIVED
        data: bytes = msg.data
        if data:
            file.size = len(data)
        if precheck(file, limits) is None:
            file.data = data
    return None
