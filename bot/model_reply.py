"""One reply as the model sends it, turned into what the renderer shows: answer text, the live
status line (thinking, searching), code the model ran as fenced blocks, and at the end the
citation markers, the sources line and the line naming links Gemini could not open.

The thought summary, the images the code produced and the searches are kept for the reply's
buttons (Thoughts, Search Suggestions) and its files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bot.grounding import SOURCES_LIMIT, Citations, search_url, searching_status
from bot.links import failed_line
from bot.llm import (
    CodeOutput,
    CodeRun,
    Event,
    Grounding,
    LinkStatus,
    ModelPart,
    OutputImage,
    Thought,
)
from bot.streaming import Button, Buttons, Status
from bot.thinking import thought_status
from storage import Media, StoredPart, Turn

THOUGHTS = "gemcord:thoughts:{turn}"
"""The Thoughts button's custom id (bot/buttons.py handles the click)."""
MAX_SUGGESTIONS = 5
"""Search Suggestions shown as link buttons (one row)."""
LABEL_LIMIT = 80
"""Discord's longest button label."""
MAX_FIGURES = 10
"""Images of the code kept with a reply (Discord's most attachments on one message)."""
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}

_FAILED = {
    "OUTCOME_FAILED": "-# ⚠ the code failed",
    "OUTCOME_DEADLINE_EXCEEDED": "-# ⏱ the code ran out of time",
}


class ModelReply:
    """Collects one reply's events (see :meth:`take`) and says how to show them."""

    def __init__(self) -> None:
        self.thoughts: list[str] = []
        self.citations = Citations()
        self.links: list[tuple[str, str]] = []
        self.images: list[OutputImage] = []
        self._answer: list[str] = []  # the model's own answer text
        self._shown = 0  # characters yielded so far (answer text and code blocks)
        self._inserted: list[tuple[int, int]] = []  # (answer offset, characters) of code blocks
        self._ends_line = True

    @property
    def thought_summary(self) -> str:
        """The whole thought summary, as streamed."""
        return "".join(self.thoughts).strip()

    @property
    def has_text(self) -> bool:
        """Whether any answer text (or code) was shown."""
        return self._shown > 0

    def take(self, event: Event) -> Iterator[str | Status]:
        """What to hand the renderer for one stream event."""
        if isinstance(event, str):
            self._answer.append(event)
            yield from self._show(event)
        elif isinstance(event, Thought):
            self.thoughts.append(event.text)
            if not self.has_text and (line := thought_status(self.thought_summary)):
                yield Status(line)
        elif isinstance(event, Grounding):
            self.citations.add(event)
            if not self.has_text and event.queries:
                yield Status(searching_status(self.citations.queries))
        elif isinstance(event, LinkStatus):
            self.links.extend(event.links)
        elif isinstance(event, CodeRun):
            language = event.language.lower() if event.language != "LANGUAGE_UNSPECIFIED" else ""
            yield from self._block(f"```{language}\n{_unfence(event.code)}\n```\n")
        elif isinstance(event, CodeOutput):
            block = f"```\n{_unfence(event.output)}\n```\n" if event.output.strip() else ""
            if not event.ok:
                block += _FAILED.get(event.outcome, "-# ⚠ the code did not finish") + "\n"
            if block:
                yield from self._block(block)
        elif isinstance(event, OutputImage):
            self.images.append(event)

    def _show(self, text: str) -> Iterator[str]:
        if text:
            self._shown += len(text)
            self._ends_line = text.endswith("\n")
            yield text

    def _block(self, block: str) -> Iterator[str]:
        """A code block of our own, on lines of its own."""
        if not self._ends_line:
            block = "\n" + block
        self._inserted.append((sum(map(len, self._answer)), len(block)))
        yield from self._show(block)

    def decorate(self, shown: str) -> str:
        """The shown text with citation markers at the ends of the grounded segments."""
        answer = "".join(self._answer)
        marks = self.citations.mark(answer)
        if not marks:
            return shown
        out: list[str] = []
        last = 0
        for position, marker in marks:
            at = position + sum(n for offset, n in self._inserted if offset < position)
            if at > len(shown):
                break
            out += [shown[last:at], marker]
            last = at
        out.append(shown[last:])
        return "".join(out)

    def buttons(self, turn_id: int) -> Buttons:
        """The buttons this reply keeps once finished (see :func:`lasting_buttons`)."""
        return lasting_buttons(turn_id, bool(self.thought_summary), self.citations.queries)

    def notices(self, room: int = SOURCES_LIMIT) -> list[str]:
        """Lines after a complete answer: the links Gemini could not open, then the sources
        (cut to whole entries so that every line fits in ``room`` characters)."""
        failed = failed_line(self.links)
        room -= len(failed) + 1 if failed else 0
        sources = self.citations.sources_line(room)
        return [line for line in (failed, sources) if line]


def lasting_buttons(turn_id: int, thoughts: bool, searches: Sequence[str]) -> Buttons:
    """The buttons a finished reply keeps: 💭 Thoughts (when the model shared any) and each
    Google search it made as a link to the results (Search Suggestions, which Google's terms
    ask grounded answers to show)."""
    buttons = [Button("Thoughts", THOUGHTS.format(turn=turn_id), emoji="💭")] if thoughts else []
    for query in searches[:MAX_SUGGESTIONS]:
        label = " ".join(query.split())
        if len(label) > LABEL_LIMIT:
            label = label[: LABEL_LIMIT - 1] + "…"
        buttons.append(Button(label, url=search_url(query), emoji="🔎"))
    return tuple(buttons)


def stored_buttons(turn: Turn) -> Buttons:
    """The lasting buttons of a stored reply (see :func:`lasting_buttons`)."""
    thoughts = any(p.kind == "thought" and p.text.strip() for p in turn.parts)
    return lasting_buttons(turn.id, thoughts, turn.searches)


def figure_name(number: int, mime_type: str) -> str:
    """The file name of the code's ``number``-th image: ``figure-1.png``."""
    return f"figure-{number}.{_EXTENSIONS.get(mime_type, 'png')}"


def stored_parts(
    parts: Sequence[ModelPart], max_bytes: int
) -> tuple[list[StoredPart], list[Media]]:
    """A model turn's parts as the store keeps them, and the images its code drew as the
    turn's files (named ``figure-N``; the first :data:`MAX_FIGURES` of at most ``max_bytes``
    each, the store's limit for an image), which their "image" parts name by hash."""
    stored: list[StoredPart] = []
    images: list[Media] = []
    for part in parts:
        if part.media is None:
            stored.append(StoredPart(part.kind, part.text, part.signature, part.detail))
        elif len(images) < MAX_FIGURES and len(part.media.data) <= max_bytes:
            mime = part.media.mime_type
            image = Media(part.media.data, mime, name=figure_name(len(images) + 1, mime))
            images.append(image)
            stored.append(StoredPart("image", "", part.signature, image.sha256))
    return stored, images


def _unfence(text: str) -> str:
    """Text that cannot close the fence around it."""
    return text.rstrip("\n").replace("```", "`\u200b``")
