"""Splitting a reply into chat messages of bounded length, with code fences repaired at the cuts.

Pure functions, no I/O. A reply is cut into :class:`Piece` s: a span ``text[start:end]`` of the
model's text plus the *repairs* around it. Concatenating the spans gives the text back exactly;
the repairs are the only additions:

- ``lead``: ``"```lang\\n"`` reopening a code block that was open at the cut (same language tag),
  or a zero-width space (:data:`ZWSP`) before a body made only of whitespace (which Discord would
  refuse as empty; this only happens for runs of whitespace longer than a whole message);
- ``tail``: ``"\\n```"`` closing a code block that is open at the end of the piece.

Fences follow Discord's rule: every ````` (three backticks, taken left to right) opens or
closes a code block, wherever it stands; the language tag is the word right after an opening
fence when a newline follows it. With the repairs, the fence count of every message is even.

Cuts are made after a run of whitespace, preferring (while the message stays at least
:data:`FILL` full) a paragraph break, then a line break, then any space; a cut in the middle of a
word happens only for a word longer than a message, and even then never inside a fence, a
``\\r\\n`` or an emoji/combining sequence when it can be avoided. Each cut depends only on the
text up to a message length past the previous cut, so cutting a growing text as it streams in
(:func:`commit_pieces`) and cutting the complete text (:func:`split_pieces`) agree.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CLOSE",
    "CLOSED",
    "FENCE",
    "FILL",
    "LIMIT",
    "MAX_LANG",
    "MIN_LIMIT",
    "ZWSP",
    "Fence",
    "Piece",
    "commit_pieces",
    "live_view",
    "render_pieces",
    "scan_fences",
    "split_message",
    "split_pieces",
]

LIMIT = 2000
"""Discord's limit on message content, in characters (code points)."""
MIN_LIMIT = 64
"""The smallest limit the splitter accepts (room for the longest repairs plus some text)."""
FENCE = "```"
CLOSE = "\n```"
"""The repair that closes a code block left open at the end of a message."""
ZWSP = "\u200b"
"""The repair that keeps a whitespace-only message from being empty to Discord."""
MAX_LANG = 32
"""Longer language tags are not repeated when a code block is reopened."""
FILL = 0.75
"""A paragraph or line break is preferred only if it leaves the message at least this full."""

_LANG = re.compile(rf"[A-Za-z0-9_+\-.#]{{1,{MAX_LANG}}}(?=\r?\n)")
_TAG_CHARS = re.compile(r"[A-Za-z0-9_+\-.#]*")
_WS_RUN = re.compile(r"\s+")
_NON_WS = re.compile(r"\S")
_MAX_BACKOFF = MAX_LANG + 8

_PARA, _LINE, _WORD = 3, 2, 1


@dataclass(frozen=True, slots=True)
class Fence:
    """Whether a code block is open at some point of the text, and its language tag."""

    open: bool = False
    lang: str = ""

    def reopen(self) -> str:
        """The repair that reopens this block at the start of the next message ('' if closed)."""
        return f"{FENCE}{self.lang}\n" if self.open else ""


CLOSED = Fence()


@dataclass(frozen=True, slots=True)
class Piece:
    """One message's share of the text: ``text[start:end]`` with repairs before and after it."""

    start: int
    end: int
    lead: str = ""
    tail: str = ""

    def render(self, text: str) -> str:
        """The message content for this piece of ``text``."""
        return f"{self.lead}{text[self.start : self.end]}{self.tail}"

    @property
    def length(self) -> int:
        """Length of the rendered message."""
        return len(self.lead) + self.end - self.start + len(self.tail)


def scan_fences(text: str, start: int = 0, end: int | None = None, state: Fence = CLOSED) -> Fence:
    """The fence state after ``text[start:end]``, given the state at ``start``."""
    end = len(text) if end is None else end
    is_open, lang = state.open, state.lang
    i = start
    while (j := text.find(FENCE, i, end)) >= 0:
        if is_open:
            is_open, lang = False, ""
        else:
            m = _LANG.match(text, j + 3, end)
            is_open, lang = True, m.group() if m else ""
        i = j + 3
    return Fence(is_open, lang)


def _check_limit(limit: int) -> None:
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters, got {limit}")


def _extends_grapheme(ch: str) -> bool:
    """Characters that attach to the one before them (never start a message with one)."""
    o = ord(ch)
    return (
        o == 0x200D  # zero-width joiner
        or 0xFE00 <= o <= 0xFE0F  # variation selectors
        or 0x1F3FB <= o <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= o <= 0xE007F  # emoji tag sequences
        or 0xE0100 <= o <= 0xE01EF  # variation selectors supplement
        or unicodedata.category(ch) in ("Mn", "Mc", "Me")  # combining marks
    )


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _bad_cut(text: str, start: int, c: int) -> bool:
    """Whether cutting between ``text[c-1]`` and ``text[c]`` would break something."""
    a, b = text[c - 1], text[c]
    if a == "\r" and b == "\n":
        return True
    if a == "`" and b == "`":  # inside a run of backticks: only between whole fences
        r = c - 1
        while r > start and text[r - 1] == "`":
            r -= 1
        return (c - r) % 3 != 0
    if a == "\u200d" or _extends_grapheme(b):
        return True
    if _is_regional(a) and _is_regional(b):  # flags are pairs of regional indicators
        n, r = 0, c - 1
        while r >= start and _is_regional(text[r]):
            n, r = n + 1, r - 1
        return n % 2 == 1
    return False


def _cut(text: str, start: int, state: Fence, limit: int, hi: int) -> int:
    """Where the message starting at ``start`` ends: some ``c`` in ``(start, hi]``.

    The message (repairs included) fits in ``limit``. Reads ``text`` only up to ``text[hi]``.
    """
    lead = state.reopen()
    room = limit - len(lead)
    hi = min(hi, start + room, len(text) - 1)
    token_ends = []
    i = start
    while (j := text.find(FENCE, i, hi)) >= 0:
        token_ends.append(j + 3)
        i = j + 3
    m = _NON_WS.search(text, start, hi + 1)
    first = m.start() if m else hi + 1  # the body text[start:c] is blank iff c <= first

    def open_at(c: int) -> bool:
        return state.open ^ (bisect.bisect_right(token_ends, c) % 2 == 1)

    def fits(c: int) -> bool:
        extra = len(CLOSE) if open_at(c) else (1 if not lead and c <= first else 0)
        return c - start + extra <= room

    def in_opening_line(c: int) -> bool:
        """Right after an opening fence, in what may be its language tag."""
        k = bisect.bisect_right(token_ends, c)
        if k == 0 or not open_at(c):
            return False
        e = token_ends[k - 1]
        return c - e <= MAX_LANG and _TAG_CHARS.fullmatch(text, e, c) is not None

    threshold = start + FILL * room
    best = {_PARA: 0, _LINE: 0, _WORD: 0}
    for run in _WS_RUN.finditer(text, start, hi + 1):
        c = run.end()
        if c > hi or c <= first or not fits(c):
            continue
        newlines = run.group().count("\n")
        kind = _PARA if newlines >= 2 else _LINE if newlines == 1 else _WORD
        if kind == _LINE and text.startswith(FENCE, c, hi + 1) and not open_at(c):
            kind = _PARA  # a line break before a code block starts: as good as a paragraph
        if c >= threshold:
            for k in (_PARA, _LINE):
                if kind >= k:
                    best[k] = c
        best[_WORD] = c
    for k in (_PARA, _LINE, _WORD):
        if best[k]:
            return best[k]

    # No break fits: cut a word, as late as fits, backing off from places that break something.
    c0 = hi
    while c0 > start + 1 and not fits(c0):
        c0 -= 1
    for c in range(c0, max(start, c0 - _MAX_BACKOFF), -1):
        if fits(c) and not _bad_cut(text, start, c) and not in_opening_line(c):
            return c
    return c0


def _piece(text: str, start: int, end: int, state: Fence) -> tuple[Piece, Fence]:
    """The piece ``text[start:end]`` with its repairs, and the fence state after it."""
    after = scan_fences(text, start, end, state)
    lead = state.reopen()
    if not lead and (start == end or text[start:end].isspace()):
        lead = ZWSP
    return Piece(start, end, lead, CLOSE if after.open else ""), after


def split_pieces(
    text: str, limit: int = LIMIT, *, start: int = 0, state: Fence = CLOSED
) -> list[Piece]:
    """Cut ``text[start:]`` (complete) into pieces; ``state`` is the fence state at ``start``."""
    _check_limit(limit)
    pieces: list[Piece] = []
    n = len(text)
    while start < n:
        last, _ = _piece(text, start, n, state)
        if last.length <= limit:
            pieces.append(last)
            break
        c = _cut(text, start, state, limit, n - 1)
        piece, state = _piece(text, start, c, state)
        pieces.append(piece)
        start = c
    return pieces


def commit_pieces(
    text: str, start: int, state: Fence, limit: int = LIMIT
) -> tuple[list[Piece], int, Fence]:
    """The pieces of a still-growing ``text[start:]`` that no continuation can change.

    Returns them with the new start and the fence state there. Finishing with
    :func:`split_pieces` from that point gives the same pieces as splitting the whole text.
    """
    _check_limit(limit)
    pieces: list[Piece] = []
    while len(state.reopen()) + len(text) - start > limit:
        c = _cut(text, start, state, limit, start + limit - len(state.reopen()))
        piece, state = _piece(text, start, c, state)
        pieces.append(piece)
        start = c
    return pieces, start, state


def live_view(
    text: str, start: int, state: Fence, limit: int = LIMIT, marker: str = ""
) -> tuple[str, int]:
    """Content showing a growing ``text[start:]`` with a live ``marker``, and where it stops.

    Everything is shown when it fits; otherwise as much as fits, cut as :func:`split_pieces`
    would (the rest shows once it is committed to the next message).
    """
    _check_limit(limit)
    lead = state.reopen()
    n = len(text)
    after = scan_fences(text, start, n, state)
    content = f"{lead}{text[start:]}{marker}{CLOSE if after.open else ''}"
    if len(content) <= limit or n - start < 2:
        return content, n
    c = _cut(text, start, state, limit - len(marker), n - 1)
    after = scan_fences(text, start, c, state)
    return f"{lead}{text[start:c]}{marker}{CLOSE if after.open else ''}", c


def render_pieces(text: str, pieces: Sequence[Piece]) -> list[str]:
    """The message contents for ``pieces`` of ``text``."""
    return [p.render(text) for p in pieces]


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """Cut a complete text into messages of at most ``limit`` characters, fences repaired."""
    return render_pieces(text, split_pieces(text, limit))
