"""Images attached to a web question: ``files: [{name, type, data}]`` with ``data`` in base64,
checked like Discord attachments (per-image and per-question byte caps, a count cap, a pixel
cap); what cannot be used becomes one sentence naming the file."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
from dataclasses import dataclass, field

from bot.attachments import ImageRejected, Limits, human_size, validate_image
from bot.config import Settings
from storage import Media

log = logging.getLogger(__name__)

MAX_NAME = 100
"""Characters of a file name kept (longer names are shortened)."""
FILE_OVERHEAD = 1024
"""Bytes of the WebSocket message allowed per file besides its data (name, type, JSON)."""
MAX_FILES = 16
"""File entries one question may list at all (beyond the image cap, each gets a sentence)."""


@dataclass
class Checked:
    """The usable images of one question, and (file name, sentence) for each refused file."""

    images: list[Media] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Upload:
    """One file as the page sent it: its name and its bytes in base64 (not decoded yet)."""

    name: str
    data: str


def limits_for(settings: Settings) -> Limits:
    """The attachment caps of the settings, as the Discord cog builds them."""
    return Limits(
        settings.max_image_bytes,
        settings.max_request_image_bytes,
        settings.max_images,
        settings.max_image_pixels,
    )


def base64_length(n: int) -> int:
    """Characters ``n`` bytes take in padded standard base64."""
    return 4 * ((n + 2) // 3)


def message_cap(limits: Limits, base: int) -> int:
    """The largest WebSocket message: ``base`` for the text plus the allowed images in base64."""
    return base + base64_length(limits.max_request_bytes) + MAX_FILES * FILE_OVERHEAD


def decoded_length(data: str) -> int:
    """Bytes a base64 text decodes to (judged from its length, without decoding it)."""
    return len(data) * 3 // 4 - data[-2:].count("=")


def clean_name(value: object, index: int) -> str:
    """A file name safe to show in a sentence (no backticks or line breaks, not too long)."""
    name = value if isinstance(value, str) else ""
    name = " ".join(name.replace("`", "'").split())
    if not name:
        return f"file {index}"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def parse_files(value: object) -> list[Upload] | str:
    """The ask's ``files`` as uploads, or one sentence saying why they cannot be read."""
    if value is None:
        return []
    if not isinstance(value, list):
        return "The files must be a list of {name, type, data}."
    if len(value) > MAX_FILES:
        return f"Attach at most {MAX_FILES} files to one question."
    uploads = []
    for index, entry in enumerate(value, start=1):
        entry = entry if isinstance(entry, dict) else {}
        data = entry.get("data")
        name = clean_name(entry.get("name"), index)
        uploads.append(Upload(name, data if isinstance(data, str) else ""))
    return uploads


def decode_and_validate(upload: Upload, limits: Limits) -> Media:
    """Decode one upload's base64 and check it is a usable image (run it in a thread)."""
    try:
        data = base64.b64decode(upload.data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected(
            f"`{upload.name}` could not be read: its data is not valid base64."
        ) from None
    if not data:
        raise ImageRejected(f"`{upload.name}` is empty.")
    image = validate_image(data, upload.name, limits)
    return dataclasses.replace(image, name=upload.name)


async def collect_uploads(uploads: list[Upload], limits: Limits) -> Checked:
    """Check every upload; the usable images (names kept) and one sentence per refused file."""
    out = Checked()
    total = 0
    for upload in uploads:
        problem = None
        size = decoded_length(upload.data)
        if size > limits.max_image_bytes:
            problem = (
                f"`{upload.name}` is {human_size(size)}; the limit is "
                f"{human_size(limits.max_image_bytes)} per image."
            )
        elif len(out.images) >= limits.max_images:
            problem = f"`{upload.name}` skipped: at most {limits.max_images} images per question."
        elif total + size > limits.max_request_bytes:
            problem = (
                f"`{upload.name}` skipped: the images of one question may add up to "
                f"{human_size(limits.max_request_bytes)}."
            )
        else:
            try:
                out.images.append(await asyncio.to_thread(decode_and_validate, upload, limits))
                total += size
            except ImageRejected as exc:
                problem = str(exc)
        if problem is not None:
            log.info("refused web upload %s: %s", upload.name, problem)
            out.refused.append((upload.name, problem))
    return out
