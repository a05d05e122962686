"""Image attachments: check size, download, check the bytes, convert GIF, refuse clearly."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image, UnidentifiedImageError

from storage import ImageIn

log = logging.getLogger(__name__)

try:  # HEIC/HEIF decoding for the integrity check; Gemini takes the bytes as they are.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_CHECKS = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but stay usable without
    HEIF_CHECKS = False

ACCEPTED = "PNG, JPEG, WebP, HEIC, HEIF or GIF"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif", ".gif")
DOWNLOAD_TIMEOUT = 30.0
"""Seconds one attachment may take to download from Discord before it is given up."""
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"heif"}


class AttachmentLike(Protocol):
    """What we need of a discord.py Attachment."""

    filename: str
    size: int
    content_type: str | None

    async def read(self) -> bytes: ...


class ImageRejected(ValueError):
    """An attachment we will not send to Gemini; the message is the friendly reason."""


@dataclass
class Limits:
    """Caps on what one message may carry."""

    max_image_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 20 * 1024 * 1024
    max_images: int = 4


@dataclass
class Collected:
    """Images to send, and one friendly sentence per attachment we left out."""

    images: list[ImageIn] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def human_size(n: int) -> str:
    """Bytes as a short human figure (`3.2 MB`, `900 KB`)."""
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.1f}".rstrip("0").rstrip(".") + " MB"
    return f"{max(1, round(n / 1024))} KB"


def sniff(data: bytes) -> str | None:
    """The image MIME type the bytes really are, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "image/heic" if data[8:12] in {b"heic", b"heix", b"hevc", b"hevx"} else "image/heif"
    return None


def looks_like_image(att: AttachmentLike) -> bool:
    """Whether the attachment says it is an image (by its type or its name)."""
    ctype = (att.content_type or "").split(";")[0].strip().lower()
    return ctype.startswith("image/") or att.filename.lower().endswith(IMAGE_EXTENSIONS)


def validate_image(data: bytes, filename: str) -> ImageIn:
    """Check the bytes decode as a supported image; GIFs become a PNG of their first frame."""
    mime = sniff(data)
    if mime is None:
        raise ImageRejected(f"`{filename}` is not a supported image ({ACCEPTED}).")
    if mime in ("image/heic", "image/heif") and not HEIF_CHECKS:
        return ImageIn(data=data, mime_type=mime)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if mime == "image/gif":
                img.seek(0)
                out = io.BytesIO()
                img.convert("RGBA").save(out, format="PNG")
                return ImageIn(data=out.getvalue(), mime_type="image/png")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ImageRejected(
            f"`{filename}` looks damaged: I could not read it as an image."
        ) from None
    return ImageIn(data=data, mime_type=mime)


def precheck(att: AttachmentLike, limits: Limits) -> str | None:
    """Why an attachment cannot be used, judged without downloading it (type, declared size)."""
    if not looks_like_image(att):
        return f"`{att.filename}` is not an image, so I skipped it ({ACCEPTED})."
    if att.size > limits.max_image_bytes:
        return (
            f"`{att.filename}` is {human_size(att.size)}; the limit is "
            f"{human_size(limits.max_image_bytes)} per image."
        )
    return None


async def collect_images(attachments: Sequence[AttachmentLike], limits: Limits) -> Collected:
    """Download and check every attachment; what cannot be used becomes a problem sentence.

    Type and declared size are checked before downloading, so an oversized file is never
    fetched.
    """
    out = Collected()
    total = 0
    for att in attachments:
        if (problem := precheck(att, limits)) is not None:
            out.problems.append(problem)
            continue
        if len(out.images) >= limits.max_images:
            out.problems.append(
                f"`{att.filename}` skipped: at most {limits.max_images} images per message."
            )
            continue
        if total + att.size > limits.max_request_bytes:
            out.problems.append(
                f"`{att.filename}` skipped: the images of one message may add up to "
                f"{human_size(limits.max_request_bytes)}."
            )
            continue
        try:
            async with asyncio.timeout(DOWNLOAD_TIMEOUT):
                data = await att.read()
        except Exception as exc:
            log.warning("could not download attachment %s: %s", att.filename, exc)
            out.problems.append(f"`{att.filename}` could not be downloaded from Discord.")
            continue
        if len(data) > limits.max_image_bytes:
            out.problems.append(
                f"`{att.filename}` is {human_size(len(data))}; the limit is "
                f"{human_size(limits.max_image_bytes)} per image."
            )
            continue
        try:
            image = await asyncio.to_thread(validate_image, data, att.filename)
        except ImageRejected as exc:
            log.info("rejected attachment %s: %s", att.filename, exc)
            out.problems.append(str(exc))
            continue
        total += len(image.data)
        out.images.append(image)
    return out
