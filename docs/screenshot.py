"""Makes docs/web-chat.png, the README's picture of the web chat: `gemcord web --demo` in headless
Chromium (Debian's `chromium`, as the browser test uses), a question with a chart attached, and
its finished reply. The emoji of the page (📎 🎤) need a colour emoji font: Debian's
`fonts-noto-color-emoji`, which scripts/test installs with the browser.

Run from the checkout: `.venv/bin/python docs/screenshot.py [OUT.png]`.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from tests.web_server import chat_page, web_server  # noqa: E402

QUESTION = "Can you explain what this chart shows?"
PAPERCLIP = 0x1F4CE  # 📎, which the page's attach button shows


def chart() -> bytes:
    """A small bar chart, as someone might attach."""
    image = Image.new("RGB", (240, 150), "white")
    draw = ImageDraw.Draw(image)
    for i, height in enumerate((40, 75, 60, 110, 95)):
        draw.rectangle((20 + i * 44, 135 - height, 50 + i * 44, 135), fill=(88, 101, 242))
    draw.line((12, 135, 232, 135), fill="black", width=2)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def has_emoji_font() -> bool:
    """Whether fontconfig knows a font with the page's emoji."""
    found = subprocess.run(
        ["fc-list", f":charset={PAPERCLIP:x}", "family"], capture_output=True, text=True
    )
    return bool(found.stdout.strip())


async def main(out: Path) -> None:
    """Ask once in #general and take the picture when the reply is finished."""
    with tempfile.TemporaryDirectory() as tmp:
        async with web_server(Path(tmp) / "demo.db") as url, chat_page(url) as page:
            await page.set_input_files(
                "#files", files=[{"name": "sales.png", "mimeType": "image/png", "buffer": chart()}]
            )
            await page.fill("#text", QUESTION)
            await page.press("#text", "Enter")
            await page.wait_for_selector(".msg.model.complete .metrics")
            await page.screenshot(path=str(out))


if __name__ == "__main__":
    if not has_emoji_font():
        sys.exit("docs/screenshot.py: no emoji font: install Debian's fonts-noto-color-emoji")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "web-chat.png"
    asyncio.run(main(target))
    print(f"wrote {target}")
