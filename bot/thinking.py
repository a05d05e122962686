"""How much a model thinks, per the channel's `thinking` setting, and the live status line
that shows what it is thinking about.

Gemini 3 models take a thinking level (3 Pro: low or high; 3 Flash also minimal and medium),
2.5 models a token budget (2.5 Pro cannot turn thinking off: at least 128 tokens; Flash and
Flash-Lite can, with 0). Never both in one request. Older models (1.x, 2.0, Gemma) and the
image, speech and live variants do not think, so they get no thinking config at all.
"auto" leaves the amount to the model and only asks for thought summaries; "off" asks for as
little thinking as the model allows and no summaries.
"""

from __future__ import annotations

import re

from bot.llm import Thinking

_LEVELS = {"low": "low", "medium": "medium", "high": "high"}
_BUDGETS = {"low": 1024, "medium": 8192, "high": 24576}
_NO_THINKING = re.compile(r"^(gemini-(1\.|2\.0)|gemma|learnlm)|-(image|tts|live|embedding)")


def thinking_for(model: str, setting: str) -> Thinking | None:
    """The thinking config for ``model`` at ``setting`` (auto, off, low, medium, high)."""
    name = model.strip().lower().removeprefix("models/")
    if _NO_THINKING.search(name):
        return None
    if name.startswith("gemini-3"):
        pro = "-pro" in name
        if setting == "off":
            return Thinking(level="low" if pro else "minimal", include_thoughts=False)
        if setting in _LEVELS:
            level = _LEVELS[setting]
            if pro and level == "medium":
                level = "high"  # 3 Pro has low and high only
            return Thinking(level=level)
        return Thinking()
    pro = "-pro" in name
    if setting == "off":
        return Thinking(budget=128 if pro else 0, include_thoughts=False)
    if setting in _BUDGETS:
        budget = _BUDGETS[setting]
        return Thinking(budget=32768 if pro and setting == "high" else budget)
    return Thinking()


THOUGHT_STATUS = "-# 💭 {}…"
HEADING_LIMIT = 100
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


def heading(thoughts: str) -> str | None:
    """The latest heading of a thought summary (Gemini starts each with **a bold title**),
    else its last non-blank line; one line of at most ``HEADING_LIMIT`` characters, without
    Markdown, or None when there is nothing to show."""
    titles = _BOLD.findall(thoughts)
    if titles:
        line = titles[-1]
    else:
        lines = [line for line in thoughts.splitlines() if line.strip()]
        if not lines:
            return None
        line = lines[-1]
    line = " ".join(re.sub(r"[*_`~|>#\[\]]", "", line).split()).rstrip(" .…:")
    if len(line) > HEADING_LIMIT:
        line = line[: HEADING_LIMIT - 1].rstrip() + "…"
    return line or None


def thought_status(thoughts: str) -> str | None:
    """The status line for a reply still thinking ("-# 💭 Comparing the two approaches…")."""
    title = heading(thoughts)
    return THOUGHT_STATUS.format(title) if title else None
