"""Attachments: check size, download, tell the kind by the bytes, check, refuse clearly.

Images are checked and downscaled; text and code files (valid UTF-8, not binary, whatever
the extension) are decoded and capped in characters; PDF, audio and video are kept as they
are, within their size caps. A voice message is audio with a duration Discord gives."""

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
from typing import TYPE_CHECKING, Protocol

from PIL import Image, ImageOps

from storage import Media

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

ACCEPTED = "PNG, JPEG, WebP, HEIC, HEIF or GIF"
READABLE = (
    "images, text and code, PDF, audio (MP3, WAV, OGG, M4A/AAC, FLAC) and video (MP4, WebM, MOV)"
)
"""The kinds of file the bot reads, for refusals."""
KIND_WORDS = {
    "image": "image",
    "text": "text file",
    "pdf": "PDF",
    "audio": "audio file",
    "video": "video",
}
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
    max_files: int = 10
    """Files of every kind one message may carry."""
    max_text_bytes: int = 5 * 1024 * 1024
    """Largest text file downloaded (its text is then capped in characters)."""
    max_text_chars: int = 100_000
    """Characters of one text file sent; the rest is cut with a note."""
    max_text_chars_total: int = 200_000
    """Characters of all the text files of one message."""
    max_pdf_bytes: int = 50 * 1024 * 1024
    max_audio_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 600.0
    """Longest voice message (Discord says how long one is; other audio is capped by size)."""
    max_video_bytes: int = 100 * 1024 * 1024

    def max_bytes(self, kind: str) -> int:
        """The size cap of one file of this kind."""
        return {
            "image": self.max_image_bytes,
            "pdf": self.max_pdf_bytes,
            "audio": self.max_audio_bytes,
            "video": self.max_video_bytes,
        }.get(kind, self.max_text_bytes)


def limits_from(settings: Settings) -> Limits:
    """The caps on a question's files, from the settings (every front-end uses these)."""
    s = settings
    return Limits(
        s.max_image_bytes,
        s.max_request_image_bytes,
        s.max_images,
        s.max_image_pixels,
        max_files=s.max_files,
        max_text_bytes=s.max_text_bytes,
        max_text_chars=s.max_text_chars,
        max_text_chars_total=s.max_text_chars_total,
        max_pdf_bytes=s.max_pdf_bytes,
        max_audio_bytes=s.max_audio_bytes,
        max_audio_seconds=s.max_voice_seconds,
        max_video_bytes=s.max_video_bytes,
    )


@dataclass
class Collected:
    """Files to send, one friendly sentence per attachment we left out, and notes for the
    answer (a text file cut to its first characters)."""

    files: list[Media] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(file name, sentence) for each attachment left out."""
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """The sentences of the files left out."""
        return [sentence for _, sentence in self.refused]

    @property
    def images(self) -> list[Media]:
        """The images among the files."""
        return [f for f in self.files if f.mime_type.startswith("image/")]


NOT_ASKED = "So I didn't ask Gemini: try again with a file I can read, or without the file."
"""Said when none of a question's files could be used (the question is not sent)."""


def refusal(problems: list[str]) -> str:
    """Why none of a message's files could be used, and that the question was not sent."""
    return "\n".join([*problems, NOT_ASKED])


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


def redrawn(img: Image.Image, mime: str, max_side: int) -> Media:
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
    return Media(data=out.getvalue(), mime_type=out_mime)


@functools.cache
def heif_checks() -> bool:
    """Whether HEIC/HEIF images decode, for the integrity check (Gemini takes the bytes as
    they are). pillow-heif is loaded with the first such image: its codecs take some 6 MB."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pragma: no cover - pillow-heif is a dependency, but stay usable without
        return False
    register_heif_opener()
    return True


def validate_image(data: bytes, filename: str, limits: Limits) -> Media:
    """Check the bytes are a supported image within the pixel cap; downscale it or GIF → PNG."""
    mime = sniff(data)
    if mime is None:
        raise ImageRejected(f"`{filename}` is not a supported image ({ACCEPTED}).")
    if mime in ("image/heic", "image/heif") and not heif_checks():
        return Media(data=data, mime_type=mime)
    with open_header(data, filename, limits) as img, decode_slots(limits.max_decodes):
        try:
            img.load()
            if mime == "image/gif" or max(img.size) > limits.max_side:
                return redrawn(img, mime, limits.max_side)
        except UNREADABLE:
            raise damaged(filename) from None
    return Media(data=data, mime_type=mime)


TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-")
AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A "}


def sniff_file(data: bytes) -> tuple[str, str] | None:
    """(kind, MIME type Gemini takes) of a PDF, audio or video file by its bytes, else None."""
    head = data[:64]
    if head.startswith(b"%PDF-"):
        return "pdf", "application/pdf"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF2):
        return "audio", "audio/mp3"  # ID3 tag, or an MPEG audio frame (layer III)
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio", "audio/aac"  # ADTS
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio", "audio/wav"
    if head.startswith(b"OggS"):
        return "audio", "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio", "audio/flac"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "audio/aiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in AUDIO_BRANDS:
            return "audio", "audio/aac"
        if brand == b"qt  ":
            return "video", "video/mov"
        if brand.startswith(b"3g"):
            return "video", "video/3gpp"
        if brand not in HEIF_BRANDS and brand not in (b"avif", b"avis"):
            return "video", "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in data[:4096]:
        return "video", "video/webm"
    return None


def as_text(data: bytes) -> str | None:
    """The file's text when it is valid UTF-8 and not binary (no NUL, few control codes)."""
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    sample = text[:20_000]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f\v\x1b")
    return text if controls * 100 <= len(sample) else None


def declared_kind(att: AttachmentLike) -> str:
    """The kind an attachment says it is (by type or name), before it is downloaded."""
    ctype = (att.content_type or "").split(";")[0].strip().lower()
    name = att.filename.lower()
    if looks_like_image(att):
        return "image"
    if ctype == "application/pdf" or name.endswith(".pdf"):
        return "pdf"
    if ctype.startswith("audio/") or is_voice(att):
        return "audio"
    if ctype.startswith("video/"):
        return "video"
    return "text"


def is_voice(att: AttachmentLike) -> bool:
    """Whether the attachment is the recording of a Discord voice message."""
    check = getattr(att, "is_voice_message", None)
    return bool(check()) if callable(check) else False


def voice_seconds(att: AttachmentLike) -> float | None:
    """A voice message's length as Discord gives it (None for other files)."""
    duration = getattr(att, "duration", None)
    return float(duration) if is_voice(att) and duration is not None else None


def display_name(att: AttachmentLike) -> str:
    """What the file is called in history and notices (a voice message by its length)."""
    seconds = voice_seconds(att)
    if seconds is not None:
        return f"voice message ({max(1, round(seconds))} s)"
    return att.filename


def precheck(att: AttachmentLike, limits: Limits) -> str | None:
    """Why an attachment cannot be used, judged without downloading it (declared size, and a
    voice message's length)."""
    kind = declared_kind(att)
    cap = limits.max_bytes(kind)
    if att.size > cap:
        what = KIND_WORDS[kind] if kind != "text" else "file of this kind"
        return (
            f"`{att.filename}` is {human_size(att.size)}; the limit is {human_size(cap)} "
            f"per {what}."
        )
    seconds = voice_seconds(att)
    if seconds is not None and seconds > limits.max_audio_seconds:
        return (
            f"Your voice message is {round(seconds)} s long; the limit is "
            f"{round(limits.max_audio_seconds)} s."
        )
    return None


class _Intake:
    """One message's files being collected: the running totals the caps apply to."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.out = Collected()
        self.image_bytes = 0
        self.text_chars = 0

    def refuse(self, att: AttachmentLike, problem: str) -> None:
        self.out.refused.append((att.filename, problem))

    def image(self, att: AttachmentLike, image: Media) -> None:
        limits = self.limits
        if len(self.out.images) >= limits.max_images:
            self.refuse(
                att, f"`{att.filename}` skipped: at most {limits.max_images} images per message."
            )
        elif self.image_bytes + len(image.data) > limits.max_request_bytes:
            self.refuse(
                att,
                f"`{att.filename}` skipped: the images of one message may add up to "
                f"{human_size(limits.max_request_bytes)}.",
            )
        else:
            self.image_bytes += len(image.data)
            self.out.files.append(dataclasses.replace(image, name=att.filename))

    def text(self, att: AttachmentLike, text: str) -> None:
        limits = self.limits
        room = min(limits.max_text_chars, limits.max_text_chars_total - self.text_chars)
        if room <= 0:
            self.refuse(
                att,
                f"`{att.filename}` skipped: the text files of one message may add up to "
                f"{limits.max_text_chars_total:,} characters.",
            )
            return
        if len(text) > room:
            self.out.notes.append(
                f"-# ✂ `{att.filename}` is long: I read its first {room:,} characters "
                f"of {len(text):,}."
            )
            text = text[:room] + f"\n[… cut here: the first {room:,} of {len(text):,} characters]"
        self.text_chars += min(room, len(text))
        self.out.files.append(Media(text.encode(), "text/plain", name=att.filename))


async def collect_files(attachments: Sequence[AttachmentLike], limits: Limits) -> Collected:
    """Download and check every attachment; what cannot be used becomes a problem sentence.

    The declared size is checked before downloading, so an oversized file is never fetched;
    the kind is then told by the bytes (an image, a PDF, audio, video, else text when it is
    UTF-8 and not binary).
    """
    intake = _Intake(limits)
    for att in attachments:
        if (problem := precheck(att, limits)) is not None:
            intake.refuse(att, problem)
            continue
        if len(intake.out.files) >= limits.max_files:
            intake.refuse(
                att, f"`{att.filename}` skipped: at most {limits.max_files} files per message."
            )
            continue
        try:
            async with asyncio.timeout(DOWNLOAD_TIMEOUT):
                data = await att.read()
        except Exception as exc:
            log.warning("could not download attachment %s: %s", att.filename, exc)
            intake.refuse(att, f"`{att.filename}` could not be downloaded from Discord.")
            continue
        await _take(intake, att, data)
    return intake.out


async def _take(intake: _Intake, att: AttachmentLike, data: bytes) -> None:
    """Check one downloaded file and add it (or its refusal) to the intake."""
    limits = intake.limits
    if not data:
        intake.refuse(att, f"`{att.filename}` is empty.")
        return
    if (mime := sniff(data)) is not None:
        if len(data) > limits.max_image_bytes:
            intake.refuse(
                att,
                f"`{att.filename}` is {human_size(len(data))}; the limit is "
                f"{human_size(limits.max_image_bytes)} per image.",
            )
            return
        try:
            image = await asyncio.to_thread(validate_image, data, att.filename, limits)
        except ImageRejected as exc:
            log.info("rejected attachment %s: %s", att.filename, exc)
            intake.refuse(att, str(exc))
            return
        intake.image(att, image)
        return
    if (found := sniff_file(data)) is not None:
        kind, mime = found
        cap = limits.max_bytes(kind)
        if len(data) > cap:
            intake.refuse(
                att,
                f"`{att.filename}` is {human_size(len(data))}; the limit is {human_size(cap)} "
                f"per {KIND_WORDS[kind]}.",
            )
            return
        intake.out.files.append(Media(data, mime, name=display_name(att)))
        return
    text = await asyncio.to_thread(as_text, data) if len(data) > 256 * 1024 else as_text(data)
    if text is not None and len(data) <= limits.max_text_bytes:
        intake.text(att, text)
        return
    if looks_like_image(att):
        intake.refuse(att, f"`{att.filename}` is not a supported image ({ACCEPTED}).")
    else:
        intake.refuse(att, f"`{att.filename}` is not a kind of file I can read ({READABLE}).")
