"""Image attachments: check size, download, check the bytes, downscale, refuse clearly."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image, ImageOps

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
REENCODE = {  # MIME type received -> (Pillow format, MIME type stored) when an image is redrawn
    "image/png": ("PNG", "image/png"),
    "image/gif": ("PNG", "image/png"),
    "image/jpeg": ("JPEG", "image/jpeg"),
    "image/webp": ("WEBP", "image/webp"),
    "image/heic": ("JPEG", "image/jpeg"),
    "image/heif": ("JPEG", "image/jpeg"),
}
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
"""What Pillow raises for bytes it cannot decode (UnidentifiedImageError is an OSError)."""
_OPEN_LOCK = threading.Lock()
"""Serialises reading headers: `warnings.catch_warnings` is not thread-safe."""


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
    max_pixels: int = 40_000_000
    """Width × height one image may declare; checked from its header, before decoding.

    Pillow's own guard (about 89 million pixels) applies as well."""
    max_side: int = 3072
    """Longest side an image is stored with; larger ones are downscaled."""
    max_decodes: int = 2
    """Images decoded at once, process-wide."""


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


def megapixels(n: int) -> str:
    """A pixel count as a short figure of megapixels (`40`, `12.5`)."""
    return f"{n / 1_000_000:.1f}".rstrip("0").rstrip(".")


@functools.cache
def decode_slots(n: int) -> threading.BoundedSemaphore:
    """The process-wide gate letting at most `n` images decode at once."""
    return threading.BoundedSemaphore(n)


def damaged(filename: str) -> ImageRejected:
    """The refusal for bytes that do not decode."""
    return ImageRejected(f"`{filename}` looks damaged: I could not read it as an image.")


def open_header(data: bytes, filename: str, limits: Limits) -> Image.Image:
    """Open the image reading only its header; refuse it if it declares too many pixels."""
    limit = megapixels(limits.max_pixels)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(
            f"`{filename}` has far too many pixels; the limit is {limit} megapixels per image."
        ) from None
    except UNREADABLE:
        raise damaged(filename) from None
    width, height = img.size
    if width * height > limits.max_pixels:
        img.close()
        raise ImageRejected(
            f"`{filename}` is {width}×{height} pixels ({megapixels(width * height)} megapixels); "
            f"the limit is {limit} megapixels per image."
        )
    return img


def redrawn(img: Image.Image, mime: str, max_side: int) -> ImageIn:
    """The loaded image upright, fitted within `max_side`, re-encoded as REENCODE says."""
    fmt, out_mime = REENCODE[mime]
    if fmt == "JPEG":
        mode = "L" if img.mode == "L" else "RGB"
    else:
        mode = img.mode if img.mode in ("RGB", "RGBA", "L", "LA") else "RGBA"
    frame = img if img.mode == mode else img.convert(mode)
    frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    ImageOps.exif_transpose(frame, in_place=True)
    out = io.BytesIO()
    frame.save(out, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return ImageIn(data=out.getvalue(), mime_type=out_mime)


def validate_image(data: bytes, filename: str, limits: Limits) -> ImageIn:
    """Check the bytes are a supported image within the pixel cap; downscale it or GIF → PNG."""
    mime = sniff(data)
    if mime is None:
        raise ImageRejected(f"`{filename}` is not a supported image ({ACCEPTED}).")
    if mime in ("image/heic", "image/heif") and not HEIF_CHECKS:
        return ImageIn(data=data, mime_type=mime)
    with open_header(data, filename, limits) as img, decode_slots(limits.max_decodes):
        try:
            img.load()
            if mime == "image/gif" or max(img.size) > limits.max_side:
                return redrawn(img, mime, limits.max_side)
        except UNREADABLE:
            raise damaged(filename) from None
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
            image = await asyncio.to_thread(validate_image, data, att.filename, limits)
        except ImageRejected as exc:
            log.info("rejected attachment %s: %s", att.filename, exc)
            out.problems.append(str(exc))
            continue
        total += len(image.data)
        out.images.append(dataclasses.replace(image, name=att.filename))
    return out
