"""bot.thinking: the thinking config per model and setting, and the live status line."""

from __future__ import annotations

import pytest

from bot.llm import Thinking
from bot.thinking import heading, thinking_for, thought_status


@pytest.mark.parametrize(
    ("model", "setting", "expected"),
    [
        ("gemini-2.5-flash", "auto", Thinking()),
        ("gemini-2.5-flash", "off", Thinking(budget=0, include_thoughts=False)),
        ("gemini-2.5-flash", "low", Thinking(budget=1024)),
        ("gemini-2.5-flash-lite", "medium", Thinking(budget=8192)),
        ("gemini-2.5-flash", "high", Thinking(budget=24576)),
        ("gemini-2.5-pro", "off", Thinking(budget=128, include_thoughts=False)),
        ("gemini-2.5-pro", "high", Thinking(budget=32768)),
        ("models/gemini-3-pro-preview", "auto", Thinking()),
        ("gemini-3-pro-preview", "off", Thinking(level="low", include_thoughts=False)),
        ("gemini-3-pro-preview", "medium", Thinking(level="high")),
        ("gemini-3-flash-preview", "off", Thinking(level="minimal", include_thoughts=False)),
        ("gemini-3-flash-preview", "medium", Thinking(level="medium")),
        ("gemini-2.0-flash", "high", None),
        ("gemini-1.5-pro", "auto", None),
        ("gemma-3-27b-it", "low", None),
        ("gemini-2.5-flash-image", "auto", None),
        ("gemini-2.5-flash-preview-tts", "high", None),
        ("gemini-flash-latest", "low", Thinking(budget=1024)),
    ],
)
def test_thinking_config_per_model(model: str, setting: str, expected: Thinking | None) -> None:
    assert thinking_for(model, setting) == expected


def test_the_status_line_shows_the_latest_heading() -> None:
    summary = "**Reading the question**\n\nThey ask.\n\n**Comparing `a` and *b***\n\nHm."
    assert heading(summary) == "Comparing a and b"
    assert thought_status(summary) == "-# 💭 Comparing a and b…"
    assert heading("no heading here\nlast line: done.") == "last line: done"
    assert heading("  \n ") is None and thought_status("") is None
    long = heading("**" + "word " * 50 + "**")
    assert long is not None and len(long) <= 100 and long.endswith("…")
    assert "\n" not in (heading("**two\nlines**") or "")
