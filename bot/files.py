"""Files that Gemini reads through its Files API: a video (always) and any file too large to
send inline. Each is uploaded once per content hash and reused while Gemini keeps it (48 h),
uploaded again when it expired or is gone, and deleted from Gemini when its stored file goes
(``/forget``, retention). Uploads run concurrently, a few at a time process-wide; stopping the
reply cancels them (they run in the task that reads the answer)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.conversation import not_shown
from bot.llm import ChatTurn, FileRejected, LLMError
from storage import Media, Store, Upload

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.llm import GeminiClient

log = logging.getLogger(__name__)

_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def upload_slots(n: int) -> asyncio.Semaphore:
    """The process-wide gate letting at most `n` uploads run at once (per event loop)."""
    gates = _SLOTS.setdefault(asyncio.get_running_loop(), {})
    if (slots := gates.get(n)) is None:
        slots = gates[n] = asyncio.Semaphore(max(1, n))
    return slots


def needs_upload(media: Media, settings: Settings) -> bool:
    """Whether a file goes through the Files API rather than inline: video always, other
    files above GEMCORD_INLINE_FILE_MB (text files are sent as text)."""
    if media.uri or media.is_text:
        return False
    return media.mime_type.startswith("video/") or len(media.data) > settings.inline_file_bytes


@dataclasses.dataclass
class Refused:
    """A file that could not reach Gemini through the Files API, and why."""

    media: Media
    sha256: str
    error: LLMError

    @property
    def rejected(self) -> bool:
        """Gemini itself could not process it (it will never take it): not a passing failure."""
        return isinstance(self.error, FileRejected)


async def attach_uploads(
    contents: Sequence[ChatTurn], llm: GeminiClient, store: Store, settings: Settings
) -> list[Refused]:
    """Upload (or reuse) every file of `contents` that goes through the Files API and put its
    URI in its place; a file that fails is replaced by a placeholder and returned."""
    places: list[tuple[ChatTurn, int, Media]] = [
        (turn, i, part)
        for turn in contents
        for i, part in enumerate(turn.parts)
        if isinstance(part, Media) and needs_upload(part, settings)
    ]
    if not places:
        return []
    hashes = await asyncio.to_thread(lambda: [media.sha256 for _, _, media in places])
    known = await store.get_uploads(hashes)
    slots = upload_slots(settings.uploads_at_once)

    async def one(media: Media, sha: str) -> Upload:
        upload = known.get(sha)
        if upload is not None and await llm.upload_alive(upload):
            return upload
        async with slots:
            if upload is not None:
                log.info("upload of %s expired or is gone: uploading it again", media.name)
            upload = await llm.upload_file(media, sha)
        await store.save_upload(upload)
        return upload

    first = {sha: media for (_, _, media), sha in reversed(list(zip(places, hashes, strict=True)))}
    done = await asyncio.gather(*(one(m, sha) for sha, m in first.items()), return_exceptions=True)
    by_hash = dict(zip(first, done, strict=True))  # a file sent twice is uploaded once
    refused: list[Refused] = []
    for (turn, i, media), sha in zip(places, hashes, strict=True):
        result = by_hash[sha]
        if isinstance(result, Upload):
            turn.parts[i] = dataclasses.replace(media, uri=result.uri, mime_type=result.mime_type)
            continue
        if not isinstance(result, LLMError):
            raise result
        log.warning("could not upload %s to Gemini: %s", media.name, result.detail or result)
        turn.parts[i] = not_shown(media.name, len(media.data))
        refused.append(Refused(media, sha, result))
    return refused


async def delete_gone_uploads(llm: GeminiClient, store: Store) -> int:
    """Delete from Gemini the uploads whose stored file went (or that were replaced); how many.
    A failure is logged: the upload then simply expires within 48 hours."""
    names = await store.take_gone_uploads()
    for name in names:
        try:
            await llm.delete_file(name)
        except LLMError as exc:
            log.warning("could not delete upload %s from Gemini: %s", name, exc.detail or exc)
    if names:
        log.info("deleted %d upload(s) from Gemini", len(names))
    return len(names)
