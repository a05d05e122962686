"""Google Search grounding shown the way people can check it: citation markers in the answer,
one compact sources line after it, and the searches as Google links (Search Suggestions).

Gemini sends grounding metadata in one or more chunks (usually the last, sometimes earlier);
each chunk's supports point into that chunk's own source list, so :class:`Citations` merges
them into one numbered list of pages (by address) first. A support's segment ends a number of
UTF-8 bytes into the answer text (the API counts bytes, not characters); the marker goes there.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from bot.llm import Grounding, Source
from bot.splitting import scan_fences

SEARCH_URL = "https://www.google.com/search?q={}"
SOURCES_LIMIT = 1900
"""Longest sources line (a notice shares its message with nothing else when it is this long)."""
TITLE_LIMIT = 60
_MARKDOWN = re.compile(r"([*_~|`>\[\]\\])")


@dataclass
class Citations:
    """Grounding merged across the chunks of one answer."""

    queries: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    marks: dict[int, list[int]] = field(default_factory=dict)
    """Source numbers (0-based) by the byte offset in the answer text where they go."""

    def add(self, grounding: Grounding) -> None:
        """Merge one chunk's grounding metadata."""
        for query in grounding.queries:
            if query not in self.queries:
                self.queries.append(query)
        local: list[int] = []
        for source in grounding.sources:
            known = next((i for i, s in enumerate(self.sources) if s.uri == source.uri), None)
            if known is None:
                known = len(self.sources)
                self.sources.append(source)
            local.append(known)
        for support in grounding.supports:
            numbers = self.marks.setdefault(support.end, [])
            for index in support.sources:
                if 0 <= index < len(local) and local[index] not in numbers:
                    numbers.append(local[index])

    @property
    def empty(self) -> bool:
        """Whether nothing was grounded."""
        return not self.sources and not self.queries

    def mark(self, answer: str) -> list[tuple[int, str]]:
        """Where each marker goes in ``answer`` (character offsets, ascending) and its text,
        e.g. ``(27, "[1][3]")``; markers land before the whitespace a segment ends with, and
        never inside a code block."""
        encoded = answer.encode()
        out: dict[int, str] = {}
        for end, numbers in sorted(self.marks.items()):
            if not numbers or end <= 0:
                continue
            end = min(end, len(encoded))
            position = len(encoded[:end].decode(errors="ignore"))
            while position > 0 and answer[position - 1].isspace():
                position -= 1
            if scan_fences(answer, 0, position).open:
                continue  # never inside a code block
            markers = "".join(f"[{n + 1}]" for n in sorted(numbers))
            out[position] = out.get(position, "") + markers
        return sorted(out.items())

    def sources_line(self, limit: int = SOURCES_LIMIT) -> str | None:
        """``-# Sources: [1] <https://…> title · [2] …``, whole entries only, within ``limit``."""
        if not self.sources:
            return None
        line = "-# Sources:"
        for n, source in enumerate(self.sources, 1):
            if not source.uri:
                continue
            entry = f" [{n}] <{source.uri}>"
            if title := _title(source.title):
                entry += f" {title}"
            more = entry if line.endswith(":") else " ·" + entry
            if len(line) + len(more) > limit:
                break
            line += more
        return None if line.endswith(":") else line

    def suggestions(self) -> list[tuple[str, str]]:
        """Each search as (query, Google results URL), for the Search Suggestions buttons."""
        return [(q, search_url(q)) for q in self.queries]


def search_url(query: str) -> str:
    """Google's results page for a search."""
    return SEARCH_URL.format(urllib.parse.quote_plus(query))


def _title(title: str) -> str:
    title = " ".join(title.split())
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 1].rstrip() + "…"
    return _MARKDOWN.sub(r"\\\1", title)


def searching_status(queries: list[str]) -> str:
    """The status line while the model searches ("-# 🔎 searching: query · query…")."""
    if not queries:
        return "-# 🔎 searching…"
    shown = _MARKDOWN.sub(r"\\\1", " · ".join(" ".join(q.split())[:80] for q in queries[:3]))
    return f"-# 🔎 searching: {shown}…"
