"""The pure splitter: exactness, limits, fence repairs, boundaries, streaming = batch."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.splitting import (
    CLOSE,
    CLOSED,
    MAX_LANG,
    ZWSP,
    Fence,
    Piece,
    commit_pieces,
    live_view,
    scan_fences,
    split_message,
    split_pieces,
)

# --- an independent oracle: Discord's fence rule, written the slow and obvious way ------------

_LANG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.#")


def fence_states(text: str) -> list[tuple[bool, str]]:
    """For every position 0..len(text): (is a code block open there, its language tag).

    Positions inside a ``` token report the state before the token. The tag counts from the
    position right after the newline that ends it (before that, nobody can know it is a tag).
    """
    states: list[tuple[bool, str]] = []
    is_open, tag, tag_known_at = False, "", 0
    i = 0

    def state(q: int) -> tuple[bool, str]:
        return (is_open, tag if is_open and q >= tag_known_at else "")

    while i < len(text):
        if text[i : i + 3] == "```":
            states += [state(q) for q in range(i, i + 3)]
            if is_open:
                is_open, tag = False, ""
            else:
                is_open, tag = True, ""
                j = i + 3
                while j < len(text) and text[j] in _LANG_CHARS:
                    j += 1
                newline = 1 if text[j : j + 1] == "\n" else 2 if text[j : j + 2] == "\r\n" else 0
                if newline and 0 < j - i - 3 <= MAX_LANG:
                    tag, tag_known_at = text[i + 3 : j], j + newline
            i += 3
        else:
            states.append(state(i))
            i += 1
    states.append(state(len(text)))
    return states


def fence_count(message: str) -> int:
    """How many ``` tokens a message has (left to right, non-overlapping)."""
    return len(re.findall("```", message))


def check_pieces(text: str, pieces: list[Piece], limit: int) -> list[str]:
    """Assert everything the splitter promises about ``pieces`` of ``text``; return contents."""
    assert pieces or not text
    position = 0
    for p in pieces:  # the spans tile the text exactly
        assert p.start == position and p.end > p.start
        position = p.end
    assert position == len(text)
    contents = [p.render(text) for p in pieces]
    for k, (p, content) in enumerate(zip(pieces, contents, strict=True)):
        assert len(content) <= limit, (k, len(content))
        assert content.strip(), "a blank message would be refused"
        assert fence_count(content) % 2 == 0, content
        body = text[p.start : p.end]
        # the repairs are exactly the allowed ones, and only where needed
        assert p.lead in ("", ZWSP) or re.fullmatch(r"```[A-Za-z0-9_+\-.#]*\n", p.lead)
        assert p.tail in ("", CLOSE)
        assert content == p.lead + body + p.tail
    return contents


def strip_repairs(text_pieces: list[str], leads: list[str], tails: list[str]) -> str:
    """Remove the repairs from message contents."""
    out = []
    for content, lead, tail in zip(text_pieces, leads, tails, strict=True):
        assert content.startswith(lead) and content.endswith(tail)
        out.append(content[len(lead) : len(content) - len(tail)])
    return "".join(out)


def check_repairs_against_oracle(text: str, pieces: list[Piece]) -> None:
    """Each repair is justified by the fence state of the whole text at the cut."""
    states = fence_states(text)
    for p in pieces:
        open_at_start, lang = states[p.start]
        if open_at_start:
            assert p.lead == f"```{lang}\n", (p, lang)
        else:
            assert p.lead in ("", ZWSP)
            assert (p.lead == ZWSP) == text[p.start : p.end].isspace()
        open_at_end, _ = states[p.end]
        assert (p.tail == CLOSE) == open_at_end


# --- strategies ------------------------------------------------------------------------------

WORDS = ["a", "word", "the", "splitting", "Ünïcödé", "naïve", "日本語", "ελληνικά", "x" * 40]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵🇺🇸", "❤️", "e\u0301", "1️⃣", "🏳️‍🌈"]
LANGS = ["", "py", "python", "js", "c++", "objective-c", "x" * 40]
SEPARATORS = [" ", " ", " ", "\n", "\n\n", "\r\n", "\r\n\r\n", "\t", "  ", "\n\n\n"]

_atom = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(EMOJI),
    st.sampled_from(SEPARATORS),
    st.builds(
        lambda lang, nl: f"```{lang}{nl}",
        st.sampled_from(LANGS),
        st.sampled_from(["\n", "\r\n", ""]),
    ),
    st.sampled_from(["```", "``", "`", "\n```\n", "````", "~~~"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=ZWSP), max_size=12),
    st.builds(
        lambda n, c: c * n,
        st.integers(50, 700),
        st.sampled_from(["x", "é", "😀", "`", " ", "\n", "ab", "🇫🇷", "e\u0301"]),
    ),
)
texts = st.lists(_atom, max_size=120).map("".join)
limits = st.integers(64, 400)


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, limit=limits)
def test_split_is_exact_bounded_and_balanced(text: str, limit: int) -> None:
    pieces = split_pieces(text, limit)
    event(f"messages: {min(len(pieces), 6)}")
    event(f"repairs: {bool(any(p.lead or p.tail for p in pieces))}")
    contents = check_pieces(text, pieces, limit)
    check_repairs_against_oracle(text, pieces)
    assert strip_repairs(contents, [p.lead for p in pieces], [p.tail for p in pieces]) == text
    assert split_message(text, limit) == contents


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, limit=limits, data=st.data())
def test_streaming_commits_agree_with_the_batch_split(text: str, limit: int, data) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=30)))
    committed: list[Piece] = []
    start, state = 0, CLOSED
    for end in [*cuts, len(text)]:
        prefix = text[:end]
        new, start, state = commit_pieces(prefix, start, state, limit)
        for p in new:  # committed pieces are final: they fit and are followed by more text
            assert p.length <= limit and p.end < len(prefix)
        committed += new
        view, shown = live_view(prefix, start, state, limit, " ▌")
        assert len(view) <= limit
        assert start <= shown <= len(prefix)
        assert fence_count(view) % 2 == 0
        assert view.startswith(state.reopen() + prefix[start:shown])
    final = committed + split_pieces(text, limit, start=start, state=state)
    assert final == split_pieces(text, limit)


@settings(max_examples=200, deadline=None)
@given(text=texts, limit=limits)
def test_cuts_avoid_breaking_crlf_fences_and_graphemes_when_there_is_a_choice(
    text: str, limit: int
) -> None:
    for p in split_pieces(text, limit)[:-1]:
        c = p.end
        a, b = text[c - 1], text[c]
        assert not (a == "\r" and b == "\n")
        if a.isspace() and b.isspace():  # a hard cut inside whitespace: only with no other choice
            assert not re.search(r"\S\s+\S", text[p.start : c]), (p, text[p.start : c])


# --- examples --------------------------------------------------------------------------------


def prose(n_paragraphs: int, words_per: int = 60) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    paragraphs = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(words_per))
        for i in range(n_paragraphs)
    ]
    return "\n\n".join(paragraphs)


def test_short_text_is_one_message_untouched() -> None:
    assert split_message("Hello **world**") == ["Hello **world**"]
    assert split_message("") == []
    text = "x" * 2000
    assert split_message(text) == [text]


def test_prefers_a_paragraph_break() -> None:
    text = prose(40)
    messages = split_message(text)
    assert len(messages) > 1
    for m in messages[:-1]:
        assert m.endswith("\n\n")
        assert len(m) <= 2000
    assert "".join(messages) == text


def test_falls_back_to_a_line_then_a_word_then_a_hard_cut() -> None:
    lines = "\n".join(f"line number {i} with some words" for i in range(200))
    for m in split_message(lines)[:-1]:
        assert m.endswith("\n")
    words = " ".join(["word"] * 1000)
    ms = split_message(words)
    assert all(m.endswith(" ") for m in ms[:-1]) and "".join(ms) == words
    long_word = "y" * 4500
    assert [len(m) for m in split_message(long_word)] == [2000, 2000, 500]
    assert split_message("hi " + long_word)[0] == "hi "


def test_a_paragraph_break_far_from_the_end_loses_to_a_later_line_break() -> None:
    text = "intro\n\n" + "\n".join(["a line of text"] * 300)
    first = split_message(text)[0]
    assert len(first) > 1500 and first.endswith("\n")


def test_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # a comment" for i in range(300))
    text = f"Here:\n```python\n{code}\n```\nDone."
    messages = split_message(text)
    assert len(messages) >= 3
    assert messages[0].startswith("Here:")
    for m in messages[1:]:
        assert m.startswith("```python\n")
    for m in messages:
        assert fence_count(m) % 2 == 0 and len(m) <= 2000
    for m in messages[:-1]:
        assert m.endswith("\n```")
    assert messages[-1].endswith("```\nDone.")
    pieces = split_pieces(text)
    check_repairs_against_oracle(text, pieces)
    assert "".join(text[p.start : p.end] for p in pieces) == text


def test_block_that_starts_late_moves_to_the_next_message_whole() -> None:
    text = prose(1, 290) + "\n```js\n" + "let x = 1;\n" * 50 + "```\n"
    assert len(text) > 2000
    messages = split_message(text)
    assert messages[1].startswith("```js\n") and fence_count(messages[0]) == 0
    assert split_pieces(text)[1].lead == ""  # the model's own fence, not a repair


def test_unclosed_block_is_closed_at_the_end() -> None:
    assert split_message("```py\nx = 1") == ["```py\nx = 1" + CLOSE]
    assert scan_fences("```py\nx = 1") == Fence(True, "py")
    assert scan_fences("```py") == Fence(True, "")  # no newline yet: no language tag
    assert scan_fences("```py\r\nx```") == CLOSED


def test_long_language_tag_is_not_repeated() -> None:
    lang = "x" * (MAX_LANG + 1)
    text = f"```{lang}\n" + "code line\n" * 400
    assert all(m.startswith("```\n") for m in split_message(text)[1:])


def test_twenty_thousand_characters_take_the_minimum_sensible_number_of_messages() -> None:
    text = prose(120, 28)[:20_000]
    messages = split_message(text)
    assert "".join(messages) == text
    assert math.ceil(len(text) / 2000) <= len(messages) <= 11
    assert min(len(m) for m in messages[:-1]) >= 1500


def test_crlf_and_emoji_sequences_are_not_split() -> None:
    family = "👨‍👩‍👧‍👦"
    text = family * 800  # no spaces: a hard cut is needed
    for p in split_pieces(text)[:-1]:
        assert text[p.end] == "👨" and len(p.render(text)) <= 2000
    flags = "🇫🇷" * 1500
    for p in split_pieces(flags)[:-1]:
        assert (p.end - p.start) % 2 == 0
    crlf = "x" * 1999 + "\r\n" + "y" * 100
    pieces = split_pieces(crlf)
    assert crlf[pieces[0].end - 1 : pieces[0].end + 1] != "\r\n"
    assert "".join(crlf[p.start : p.end] for p in pieces) == crlf


def test_a_fence_token_is_never_cut() -> None:
    text = "`" * 4000
    for p in split_pieces(text)[:-1]:
        assert (p.end - p.start) % 3 == 0


def test_whitespace_longer_than_a_message_stays_exact_and_never_blank() -> None:
    text = "start" + " " * 5000 + "end"
    pieces = split_pieces(text)
    contents = check_pieces(text, pieces, 2000)
    assert any(p.lead == ZWSP for p in pieces)
    assert all(c.strip() for c in contents)


def test_live_view_shows_the_latest_text_with_the_marker() -> None:
    view, shown = live_view("Hello", 0, CLOSED, 2000, " ▌")
    assert (view, shown) == ("Hello ▌", 5)
    view, shown = live_view("```py\nx = 1", 0, CLOSED, 2000, " ▌")
    assert view == "```py\nx = 1 ▌\n```" and shown == 11
    text = "word " * 399 + "abcd"  # 1999 characters: fits, but not with the marker
    view, shown = live_view(text, 0, CLOSED, 2000, " ▌")
    assert len(view) <= 2000 and view.endswith(" ▌") and shown < len(text)


def test_limit_is_checked() -> None:
    with pytest.raises(ValueError):
        split_message("x", limit=10)
