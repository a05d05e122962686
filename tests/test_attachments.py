"""Image checks: real bytes decide, limits are named, big images shrink, bombs are refused."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from bot.attachments import (
    Limits,
    as_text,
    collect_files,
    decode_slots,
    sniff,
    sniff_file,
    validate_image,
)

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(size: tuple[int, int] = (8, 8), color: str = "red", fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def gif_bytes() -> bytes:
    frames = [Image.new("P", (6, 6), i) for i in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of width×height: tens of KB that decode to width*height bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = bytes(1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@dataclass
class FakeAttachment:
    filename: str
    data: bytes
    content_type: str | None = None
    declared: int | None = None
    reads: int = 0

    @property
    def size(self) -> int:
        return self.declared if self.declared is not None else len(self.data)

    async def read(self) -> bytes:
        self.reads += 1
        return self.data


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_formats_sniffed_and_kept(fmt: str, mime: str) -> None:
    data = png_bytes(fmt=fmt)
    assert sniff(data) == mime
    image = validate_image(data, f"x.{fmt.lower()}", Limits())
    assert image.mime_type == mime and image.data == data


def test_the_heif_codecs_load_with_the_first_heif_image() -> None:
    """pillow-heif (some 6 MB of codecs) stays unloaded until a HEIC/HEIF image comes."""
    code = textwrap.dedent(
        """
        import io, sys
        import bot.app, bot.cogs.chat, bot.attachments as a
        from PIL import Image
        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, format="PNG")
        a.validate_image(png.getvalue(), "x.png", a.Limits())
        print("pillow_heif" in sys.modules)
        try:
            a.validate_image(b"\\0\\0\\0\\x18ftypheic" + bytes(40), "x.heic", a.Limits())
        except a.ImageRejected:  # not a real image: looks damaged
            print("pillow_heif" in sys.modules)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.stdout.split() == ["False", "True"], run.stderr


def test_heic_accepted() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    out = io.BytesIO()
    try:
        pillow_heif.from_pillow(Image.new("RGB", (16, 16), "blue")).save(out, format="HEIF")
    except Exception as exc:  # pragma: no cover - encoder missing in this build
        pytest.skip(f"no HEIF encoder: {exc}")
    image = validate_image(out.getvalue(), "photo.heic", Limits())
    assert image.mime_type in ("image/heic", "image/heif")


def test_gif_becomes_png_of_first_frame() -> None:
    image = validate_image(gif_bytes(), "anim.gif", Limits())
    assert image.mime_type == "image/png"
    with Image.open(io.BytesIO(image.data)) as img:
        assert img.format == "PNG" and img.size == (6, 6)


def test_corrupt_and_fake_images_refused() -> None:
    broken = png_bytes()[:40]
    with pytest.raises(ValueError, match="damaged"):
        validate_image(broken, "broken.png", Limits())
    with pytest.raises(ValueError, match="not a supported image"):
        validate_image(b"hello, I am text", "fake.png", Limits())


async def test_collect_reports_each_problem_and_keeps_the_rest() -> None:
    good = FakeAttachment("ok.png", png_bytes(), "image/png")
    huge = FakeAttachment("huge.png", b"x", "image/png", declared=30 * 1024 * 1024)
    blob = FakeAttachment("data.bin", bytes(range(256)) * 4, "application/octet-stream")
    corrupt = FakeAttachment("bad.png", png_bytes()[:30], "image/png")
    got = await collect_files([good, huge, blob, corrupt], Limits())
    assert [i.mime_type for i in got.files] == ["image/png"]
    assert len(got.problems) == 3
    assert "huge.png" in got.problems[0] and "10 MB" in got.problems[0]
    assert "data.bin" in got.problems[1] and "not a kind of file I can read" in got.problems[1]
    assert "bad.png" in got.problems[2]
    assert huge.reads == 0  # refused before download


async def test_count_and_request_limits() -> None:
    atts = [FakeAttachment(f"{i}.png", png_bytes(color="blue"), "image/png") for i in range(6)]
    got = await collect_files(atts, Limits(max_images=4))
    assert len(got.images) == 4 and len(got.problems) == 2
    assert all("at most 4" in p for p in got.problems)
    one = len(png_bytes(color="blue"))
    got = await collect_files(atts[:3], Limits(max_request_bytes=2 * one))
    assert len(got.images) == 2 and "add up to" in got.problems[0]


# --- pixel cap: refused from the header, before decoding --------------------------------------


@pytest.mark.parametrize(
    ("side", "said"),
    [
        (7000, "7000×7000 pixels (49 megapixels)"),  # our cap (40 Mpx) decides
        (10000, "far too many pixels"),  # Pillow's warning (> 89 Mpx), caught
        (20000, "far too many pixels"),  # Pillow's error (> 179 Mpx), caught
    ],
)
def test_pixel_bomb_refused_by_name_in_megapixels(side: int, said: str) -> None:
    data = bomb_png(side, side)
    assert len(data) < 100_000
    with pytest.raises(ValueError, match="megapixels") as refused:
        validate_image(data, "bomb.png", Limits())
    assert "`bomb.png`" in str(refused.value) and said in str(refused.value)
    assert "the limit is 40 megapixels" in str(refused.value)


def test_pixel_bomb_refused_without_decoding_it(tmp_path: Path) -> None:
    """Decoding 20000×20000 at one byte a pixel needs 400 MB; refusing it must not come close."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(20000, 20000))
    script = textwrap.dedent(
        """
        import sys, warnings
        from PIL import Image
        from bot.attachments import ImageRejected, Limits, validate_image
        warnings.simplefilter("error")  # any warning that escapes fails the run
        data = open(sys.argv[1], "rb").read()
        for pillow_guard in (89_478_485, None):  # Pillow's default guard, then ours alone
            Image.MAX_IMAGE_PIXELS = pillow_guard
            try:
                validate_image(data, "bomb.png", Limits())
            except ImageRejected as exc:
                print(exc)
            else:
                sys.exit("bomb accepted")
        # this process's own peak (VmHWM): ru_maxrss would also count the parent's memory
        # from before exec, which after the big-file tests is large
        status = open("/proc/self/status").read().splitlines()
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    pillow_said, we_said, peak_kb = run.stdout.splitlines()
    assert "far too many pixels" in pillow_said
    assert "20000×20000 pixels (400 megapixels)" in we_said
    assert int(peak_kb) < 200 * 1024


async def test_collect_names_the_bomb_and_keeps_the_rest() -> None:
    bomb = FakeAttachment("bomb.png", bomb_png(8000, 8000), "image/png")
    good = FakeAttachment("ok.png", png_bytes(), "image/png")
    got = await collect_files([bomb, good], Limits())
    assert [i.data for i in got.images] == [good.data]
    assert got.problems == [
        "`bomb.png` is 8000×8000 pixels (64 megapixels); the limit is 40 megapixels per image."
    ]


# --- downscaling: stored at what Gemini uses ---------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/png")],
)
def test_large_image_downscaled_to_max_side(fmt: str, mime: str) -> None:
    image = validate_image(png_bytes((4000, 3000), fmt=fmt), f"big.{fmt.lower()}", Limits())
    assert image.mime_type == mime
    img = decoded(image.data)
    assert img.size == (3072, 2304) and Image.MIME[img.format] == mime


def test_large_heic_becomes_jpeg() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    out = io.BytesIO()
    try:
        pillow_heif.from_pillow(Image.new("RGB", (3200, 1600), "blue")).save(out, format="HEIF")
    except Exception as exc:  # pragma: no cover - encoder missing in this build
        pytest.skip(f"no HEIF encoder: {exc}")
    image = validate_image(out.getvalue(), "photo.heic", Limits())
    assert image.mime_type == "image/jpeg"
    assert decoded(image.data).size == (3072, 1536)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_at_the_cap_kept_byte_for_byte(fmt: str) -> None:
    data = png_bytes((3072, 2000), fmt=fmt)
    assert validate_image(data, f"edge.{fmt.lower()}", Limits()).data == data


def test_rotated_jpeg_stored_upright() -> None:
    """EXIF orientation 6 (turn 90° clockwise): a 4000×3000 left-red/right-blue file shows
    3000×4000 with red on top."""
    img = Image.new("RGB", (4000, 3000), "blue")
    img.paste("red", (0, 0, 2000, 3000))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif.tobytes())
    image = validate_image(out.getvalue(), "phone.jpg", Limits())
    upright = decoded(image.data)
    assert upright.size == (2304, 3072)
    assert upright.getexif().get(0x0112) in (None, 1)
    red, blue = upright.getpixel((1152, 400)), upright.getpixel((1152, 2700))
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]


# --- decode concurrency: at most Limits.max_decodes at once, process-wide ----------------------


async def test_at_most_two_decodes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    two_in, gate, lock = asyncio.Event(), threading.Event(), threading.Lock()
    count = {"now": 0, "peak": 0}
    real_load = ImageFile.ImageFile.load

    def held_load(self: ImageFile.ImageFile) -> object:
        with lock:
            count["now"] += 1
            count["peak"] = max(count["peak"], count["now"])
            if count["now"] == 2:
                loop.call_soon_threadsafe(two_in.set)
        try:
            gate.wait()  # decodes stay in flight until the test has looked
            return real_load(self)
        finally:
            with lock:
                count["now"] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", held_load)
    limits = Limits()
    colors = ("red", "green", "blue", "white", "black", "yellow")
    datas = [png_bytes(color=c) for c in colors]
    jobs = asyncio.gather(
        *(
            asyncio.to_thread(validate_image, d, f"{c}.png", limits)
            for c, d in zip(colors, datas, strict=True)
        )
    )
    try:
        await two_in.wait()
        slots = decode_slots(limits.max_decodes)
        third_got_in = slots.acquire(blocking=False)
        if third_got_in:
            slots.release()
        assert not third_got_in  # both slots are held: the four others wait for one
    finally:
        gate.set()
        got = await jobs
    assert [i.data for i in got] == datas
    assert count["peak"] == 2


# --- every other kind ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "found"),
    [
        (b"%PDF-1.7\n", ("pdf", "application/pdf")),
        (b"ID3\x04\x00", ("audio", "audio/mp3")),
        (b"\xff\xfb\x90\x00", ("audio", "audio/mp3")),
        (b"\xff\xf1\x50\x80", ("audio", "audio/aac")),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", ("audio", "audio/wav")),
        (b"OggS\x00\x02", ("audio", "audio/ogg")),
        (b"fLaC\x00\x00", ("audio", "audio/flac")),
        (b"FORM\x00\x00\x00\x00AIFF", ("audio", "audio/aiff")),
        (b"\x00\x00\x00\x20ftypM4A \x00", ("audio", "audio/aac")),
        (b"\x00\x00\x00\x18ftypisom\x00", ("video", "video/mp4")),
        (b"\x00\x00\x00\x14ftypqt  \x00", ("video", "video/mov")),
        (b"\x00\x00\x00\x14ftyp3gp4\x00", ("video", "video/3gpp")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", ("video", "video/webm")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01matroska", None),
        (b"\x00\x00\x00\x18ftypheic\x00", None),  # an image, not a video
        (b"PK\x03\x04", None),
    ],
)
def test_kinds_told_by_their_bytes(head: bytes, found: tuple[str, str] | None) -> None:
    assert sniff_file(head + bytes(64)) == found


def test_text_is_utf8_and_not_binary() -> None:
    assert as_text("naïve café — 日本\n".encode()) == "naïve café — 日本\n"
    assert as_text(b"\xef\xbb\xbfwith a BOM") == "with a BOM"
    assert as_text(b"\x1b[31mred\x1b[0m log line\n") is not None  # colour codes are fine
    assert as_text(b"abc\x00def") is None
    assert as_text(b"\xff\xfe\x00") is None
    assert as_text(bytes(range(1, 32)) * 10) is None


async def test_text_caps_per_file_and_per_message() -> None:
    limits = Limits(max_text_chars=10, max_text_chars_total=15)
    a = FakeAttachment("a.md", b"0123456789abc")
    b = FakeAttachment("b.rs", b"fn main() {}", "application/rls-services+xml")
    c = FakeAttachment("c.txt", b"never read")
    got = await collect_files([a, b, c], limits)
    assert [(f.name, f.mime_type) for f in got.files] == [
        ("a.md", "text/plain"),
        ("b.rs", "text/plain"),
    ]
    assert (
        got.files[0].data.startswith(b"0123456789\n[") and b"of 13 characters" in got.files[0].data
    )
    assert got.files[1].data.startswith(b"fn ma\n[")  # what the message had left: 5
    assert got.notes == [
        "-# ✂ `a.md` is long: I read its first 10 characters of 13.",
        "-# ✂ `b.rs` is long: I read its first 5 characters of 12.",
    ]
    assert len(got.problems) == 1 and "`c.txt` skipped" in got.problems[0]


@dataclass
class FakeVoice(FakeAttachment):
    duration: float = 5.0

    def is_voice_message(self) -> bool:
        return True


async def test_voice_messages_named_by_length_and_capped_before_download() -> None:
    ok = FakeVoice("voice-message.ogg", b"OggS" + bytes(100), "audio/ogg", duration=4.6)
    long = FakeVoice("voice-message.ogg", b"OggS" + bytes(100), "audio/ogg", duration=700)
    got = await collect_files([ok, long], Limits(max_audio_seconds=600))
    assert [(f.name, f.mime_type) for f in got.files] == [("voice message (5 s)", "audio/ogg")]
    assert got.problems == ["Your voice message is 700 s long; the limit is 600 s."]
    assert long.reads == 0


async def test_each_kind_has_its_own_size_cap_and_a_count_cap() -> None:
    limits = Limits(max_pdf_bytes=100, max_audio_bytes=100, max_video_bytes=100, max_files=2)
    big_pdf = FakeAttachment("big.pdf", b"%PDF-" + bytes(200), "application/pdf")
    unlabeled = FakeAttachment("song", b"ID3" + bytes(200))  # no type: told after download
    files = [FakeAttachment(f"{i}.txt", b"hi") for i in range(3)]
    got = await collect_files([big_pdf, unlabeled, *files], limits)
    assert big_pdf.reads == 0 and unlabeled.reads == 1
    assert got.problems[0] == "`big.pdf` is 1 KB; the limit is 1 KB per PDF."
    assert "`song` is 1 KB; the limit is 1 KB per audio file." == got.problems[1]
    assert [f.name for f in got.files] == ["0.txt", "1.txt"]
    assert got.problems[2] == "`2.txt` skipped: at most 2 files per message."
