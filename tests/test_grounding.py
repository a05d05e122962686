"""bot.grounding: citations merged across chunks, markers at UTF-8 byte offsets, sources."""

from __future__ import annotations

from bot.grounding import Citations, searching_status
from bot.llm import Grounding, Source, Support

A = Source("https://a.example/1", "A site")
B = Source("https://b.example/2", "B *site*")


def test_chunks_are_merged_by_address_and_markers_land_at_byte_offsets() -> None:
    answer = "Café au lait is French.\nIt is milky."
    first_end = len("Café au lait is French.\n".encode())  # ends after the newline, in bytes
    citations = Citations()
    citations.add(Grounding(("coffee",), (A,), (Support(first_end, (0,)),)))
    # a later chunk lists its sources in another order: its indices are its own
    end = len(answer.encode())
    citations.add(Grounding(("coffee", "milk"), (B, A), (Support(end, (0, 1)),)))
    assert citations.queries == ["coffee", "milk"]
    assert citations.sources == [A, B]
    # before the newline the segment ended with; [1][2] in source order
    assert citations.mark(answer) == [(23, "[1]"), (len(answer), "[1][2]")]


def test_a_support_past_the_text_or_without_sources_is_ignored_or_clamped() -> None:
    citations = Citations()
    citations.add(Grounding((), (A,), (Support(999, (0,)), Support(3, (5,)))))
    assert citations.mark("short") == [(5, "[1]")]


def test_the_sources_line_keeps_whole_entries_within_its_limit() -> None:
    citations = Citations()
    sources = tuple(Source(f"https://s.example/{'x' * 80}/{i}", f"Site {i}") for i in range(9))
    citations.add(Grounding(("q",), sources, ()))
    line = citations.sources_line(limit=400)
    assert line is not None and len(line) <= 400
    assert line.startswith("-# Sources: [1] <https://s.example/")
    assert line.count(" · ") + 1 == line.count("<https://")
    assert "[9]" not in line
    escaped = Citations()
    escaped.add(Grounding((), (B,), ()))
    assert escaped.sources_line() == "-# Sources: [1] <https://b.example/2> B \\*site\\*"
    assert Citations().sources_line() is None


def test_search_suggestions_and_the_searching_status() -> None:
    citations = Citations()
    citations.add(Grounding(("café & crème", "tea"), (), ()))
    assert citations.suggestions() == [
        ("café & crème", "https://www.google.com/search?q=caf%C3%A9+%26+cr%C3%A8me"),
        ("tea", "https://www.google.com/search?q=tea"),
    ]
    assert searching_status(["a_b", "c"]) == "-# 🔎 searching: a\\_b · c…"
    assert searching_status([]) == "-# 🔎 searching…"


def test_no_marker_lands_inside_a_code_block() -> None:
    answer = "Run this:\n```python\nx = 1\n```\nDone."
    citations = Citations()
    inside = len(b"Run this:\n```python\nx =")
    citations.add(Grounding((), (A,), (Support(inside, (0,)), Support(len(answer), (0,)))))
    assert citations.mark(answer) == [(len(answer), "[1]")]
