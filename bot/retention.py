"""Keeping the database healthy for months: retention, freed pages given back, a size warning."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bot.files import delete_gone_uploads

if TYPE_CHECKING:
    from bot.app import Gemcord

log = logging.getLogger(__name__)

DAY = 86_400.0
INTERVAL = 3_600.0
"""Seconds between two rounds."""


async def tidy(bot: Gemcord) -> int:
    """One round: delete what retention allows (and those files' uploads from Gemini), warn
    when the file is large; turns deleted."""
    s = bot.settings
    now = time.time()
    deleted = await bot.store.prune(
        older_than=now - s.retention_days * DAY if s.retention_days else None,
        archived_before=now - s.reset_grace_days * DAY,
    )
    if deleted:
        log.info("retention: deleted %d old turn(s)", deleted)
    await delete_gone_uploads(bot.llm, bot.store)
    size = await bot.store.size_bytes()
    if size > s.db_warn_bytes:
        log.warning(
            "the database is %.0f MB, over GEMCORD_DB_WARN_MB (%.0f MB): consider "
            "GEMCORD_RETENTION_DAYS",
            size / 2**20,
            s.db_warn_bytes / 2**20,
        )
    return deleted


async def tidy_forever(bot: Gemcord) -> None:
    """Run :func:`tidy` at start-up and then every hour, logging (not raising) failures."""
    while True:
        try:
            await tidy(bot)
        except Exception:
            log.exception("retention round failed")
        await asyncio.sleep(INTERVAL)
