"""Image checks: real bytes decide, limits are named, GIF becomes PNG, nothing crashes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from PIL import Image

from bot.attachments import Limits, collect_images, sniff, validate_image


def png_bytes(size: tuple[int, int] = (8, 8), color: str = "red", fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def gif_bytes() -> bytes:
    frames = [Image.new("P", (6, 6), i) for i in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    return out.getvalue()


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
    image = validate_image(data, f"x.{fmt.lower()}")
    assert image.mime_type == mime and image.data == data


def test_heic_accepted() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    out = io.BytesIO()
    try:
        pillow_heif.from_pillow(Image.new("RGB", (16, 16), "blue")).save(out, format="HEIF")
    except Exception as exc:  # pragma: no cover - encoder missing in this build
        pytest.skip(f"no HEIF encoder: {exc}")
    image = validate_image(out.getvalue(), "photo.heic")
    assert image.mime_type in ("image/heic", "image/heif")


def test_gif_becomes_png_of_first_frame() -> None:
    image = validate_image(gif_bytes(), "anim.gif")
    assert image.mime_type == "image/png"
    with Image.open(io.BytesIO(image.data)) as img:
        assert img.format == "PNG" and img.size == (6, 6)


def test_corrupt_and_fake_images_refused() -> None:
    broken = png_bytes()[:40]
    with pytest.raises(ValueError, match="damaged"):
        validate_image(broken, "broken.png")
    with pytest.raises(ValueError, match="not a supported image"):
        validate_image(b"hello, I am text", "fake.png")


async def test_collect_reports_each_problem_and_keeps_the_rest() -> None:
    good = FakeAttachment("ok.png", png_bytes(), "image/png")
    huge = FakeAttachment("huge.png", b"x", "image/png", declared=30 * 1024 * 1024)
    text = FakeAttachment("notes.txt", b"plain text", "text/plain")
    corrupt = FakeAttachment("bad.png", png_bytes()[:30], "image/png")
    got = await collect_images([good, huge, text, corrupt], Limits())
    assert [i.mime_type for i in got.images] == ["image/png"]
    assert len(got.problems) == 3
    assert "huge.png" in got.problems[0] and "10 MB" in got.problems[0]
    assert "notes.txt" in got.problems[1] and "not an image" in got.problems[1]
    assert "bad.png" in got.problems[2]
    assert huge.reads == 0 and text.reads == 0  # refused before download


async def test_count_and_request_limits() -> None:
    atts = [FakeAttachment(f"{i}.png", png_bytes(color="blue"), "image/png") for i in range(6)]
    got = await collect_images(atts, Limits(max_images=4))
    assert len(got.images) == 4 and len(got.problems) == 2
    assert all("at most 4" in p for p in got.problems)
    one = len(png_bytes(color="blue"))
    got = await collect_images(atts[:3], Limits(max_request_bytes=2 * one))
    assert len(got.images) == 2 and "add up to" in got.problems[0]
