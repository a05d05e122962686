"""Stored history + the new question → the Gemini request (system instruction and contents)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.attachments import human_size
from bot.links import without_discord_files
from bot.llm import ChatTurn, ModelPart
from storage import Media, StoredImage, Turn

DEFAULT_PERSONA = (
    "You are {name}, a friendly and knowledgeable assistant chatting in a Discord {place}. "
    "Answer helpfully, accurately and concisely unless someone asks for detail."
)

HOUSE_RULES = (
    "Several people may talk to you in the same channel: each of their messages starts with "
    "the speaker's name in square brackets, like [alice]. Answer the last message only; "
    "earlier messages are context, and those marked as answered separately get their own "
    "reply. Use names when it helps, but never start your own reply with a name tag. Discord "
    "renders Markdown: **bold**, *italics*, "
    "lists, headings, > quotes and fenced code blocks with a language tag; it does not "
    "render tables or LaTeX, so avoid them. Files people send follow their message (a text "
    "file as [file name] and its text); (earlier: name, size) stands for a file sent before "
    "that is no longer shown, (not shown: name, size) for one that could not be sent. The "
    "newest message ends with today's date."
)

TODAY = "(Today is {date}, UTC.)"
"""The last part of the newest user turn. The date lives there, not in the system instruction,
so the prompt's prefix (instruction, persona, older turns) stays byte-identical from one
question to the next, which Gemini's implicit cache rewards."""

INTERRUPTED = {
    "stopped": "[This reply was stopped by the user before it was finished.]",
    "failed": "[This reply was cut off by an error before it was finished.]",
    "interrupted": "[This reply was cut off by a restart of the bot before it was finished.]",
}

SEPARATE = "[This message is answered separately, in a reply of its own.]"
"""The model turn that stands for a reply still streaming (or never given), so that roles
alternate and no question is answered twice."""

MAX_INLINE_BYTES = 60 * 1024 * 1024
"""Default cap on the file bytes one request carries inline (Gemini takes about 100 MB,
base64 included)."""


QUOTE_LIMIT = 1500
"""Characters of a replied-to message that go along with the question."""


@dataclass(frozen=True)
class Quote:
    """The message a question replies to (on Discord, the "replying to" line above it)."""

    message_id: int
    author_name: str
    text: str
    by_bot: bool = False
    """True when it is one of the bot's own messages."""


@dataclass
class Question:
    """A new turn from Discord: who asked, where, what (text and checked files)."""

    channel_id: int
    author_id: int
    author_name: str
    text: str
    guild_id: int | None = None
    thread_id: int | None = None
    message_id: int | None = None
    images: list[Media] = field(default_factory=list)
    """The question's files, of every kind (images, text, PDF, audio, video)."""
    notes: list[str] = field(default_factory=list)
    """Lines to show under the answer (a text file cut to its first characters)."""
    in_dm: bool = False
    quote: Quote | None = None
    parent_id: int | None = None
    """For a thread or forum post: its parent channel, whose settings it inherits."""
    asked_as: int | None = None
    """The stored turn of a question asked before, whose answer is being regenerated."""
    private: bool = False
    """Only the asker sees the exchange: kept out of the channel's history and exports, and
    answered without that history."""


def with_quote(question: Question, history: Sequence[Turn]) -> str:
    """The question's text, preceded by the message it replies to unless the history already
    holds that message (a reply to an older answer, or to someone else's message, keeps its
    context)."""
    quote = question.quote
    if quote is None or not quote.text.strip():
        return question.text
    if question.text and any(quote.message_id in turn.message_ids for turn in history):
        return question.text
    snippet = " ".join(quote.text.split())
    if len(snippet) > QUOTE_LIMIT:
        snippet = snippet[: QUOTE_LIMIT - 1].rstrip() + "…"
    who = "your earlier message" if quote.by_bot else quote.author_name
    head = f'(replying to {who}: "{snippet}")'
    return f"{head}\n{question.text}" if question.text else head


def quote_line(label: str, text: str) -> str:
    """A message shown to the model as context: ``(label: "text")`` on one line, shortened."""
    snippet = " ".join(text.split())
    if len(snippet) > QUOTE_LIMIT:
        snippet = snippet[: QUOTE_LIMIT - 1].rstrip() + "…"
    return f'({label}: "{snippet}")'


def system_instruction(persona: str | None, bot_name: str, in_dm: bool) -> str:
    """The channel's persona (or the default one) followed by the house rules."""
    place = "direct message" if in_dm else "server channel"
    head = persona.strip() if persona and persona.strip() else DEFAULT_PERSONA
    return head.replace("{name}", bot_name).replace("{place}", place) + "\n\n" + HOUSE_RULES


def today_note(today: dt.date | None = None) -> str:
    """The date line that ends the newest user turn (today in UTC by default)."""
    day = today or dt.datetime.now(dt.UTC).date()
    return TODAY.format(date=f"{day:%A} {day.day} {day:%B %Y}")


def _user_text(name: str, text: str, files: Sequence[Media | StoredImage] = ()) -> str:
    """A question as the model sees it: the speaker's name, then the text, where Discord file
    links (signed, expiring; files go as parts) are only named."""
    if text:
        return f"[{name}] {without_discord_files(text)}"
    sent = ", ".join(f.name or "an image" for f in files)
    return f"[{name}] (sent: {sent})" if sent else f"[{name}] (sent nothing)"


def file_parts(files: Sequence[Media]) -> list[str | Media]:
    """A turn's files as parts: text files as text headed by their name, others as they are."""
    return [
        f"[file {f.name or 'text'}]\n{f.data.decode('utf-8', 'replace')}" if f.is_text else f
        for f in files
    ]


def earlier(name: str, size: int) -> str:
    """The placeholder for a file of history that the request leaves out."""
    return f"(earlier: {name or 'an image'}, {human_size(size)})"


def not_shown(name: str, size: int) -> str:
    """The placeholder for a file that could not be sent with this request."""
    return f"(not shown: {name or 'a file'}, {human_size(size)})"


def _stored_files(turn: Turn) -> list[str | Media]:
    """A stored turn's files: with their bytes while within the budget, else a placeholder."""
    kept = [
        Media(f.data, f.mime_type, name=f.name) if f.data is not None else earlier(f.name, f.size)
        for f in turn.images
    ]
    return [p for f in kept for p in (file_parts([f]) if isinstance(f, Media) else [f])]


def _model_text(turn: Turn) -> str:
    note = INTERRUPTED.get(turn.status)
    if note:
        return f"{turn.text}\n\n{note}" if turn.text else note
    return turn.text or "(no reply)"


def _model_parts(turn: Turn, model: str | None) -> list[str | Media | ModelPart]:
    """A model turn as sent back: its parts as Gemini sent them (thought signatures exactly
    as received, images its code drew inline where they came) when it is complete and from
    ``model`` (signatures are only valid for the model that made them), else its text and
    then its images. Unsigned thought summaries are left out: the model reads nothing from
    them. An image outside the history's file budget is named by a placeholder."""
    if turn.status != "complete" or not turn.parts or model is None or turn.model != model:
        return [_model_text(turn), *_stored_files(turn)]
    files = {f.sha256: f for f in turn.images}
    parts: list[str | Media | ModelPart] = []
    for p in turn.parts:
        if p.kind == "image":
            if (f := files.get(p.detail or "")) is None:
                continue
            if f.data is None:
                parts.append(earlier(f.name, f.size))
            else:
                media = Media(f.data, f.mime_type, name=f.name)
                parts.append(ModelPart("image", "", p.signature, media=media))
        elif p.kind != "thought" or p.signature is not None:
            parts.append(ModelPart(p.kind, p.text, p.signature, p.detail))
    return parts or [_model_text(turn)]


def build_contents(
    history: Sequence[Turn],
    question: Question,
    *,
    max_inline_bytes: int = MAX_INLINE_BYTES,
    today: dt.date | None = None,
    uploaded: Callable[[Media], bool] = lambda media: False,
    model: str | None = None,
) -> list[ChatTurn]:
    """Gemini contents: history in order (speaker names on user turns), then the new question
    alone as the last user turn, ending with today's date (:func:`today_note`).

    A complete reply by ``model`` goes back as the parts Gemini sent (with their thought
    signatures and the images its code drew); any other reply as its text and images.

    An earlier question without a finished reply (still streaming, or lost) is followed by a
    :data:`SEPARATE` model turn, so roles alternate and nobody's question is answered twice.
    Inline files beyond ``max_inline_bytes``, counted from the newest, are left out (oldest
    first) and named by a placeholder; files that ``uploaded`` says go through the Files API
    do not count.
    """
    contents: list[ChatTurn] = []
    for turn in history:
        if turn.role == "user":
            if contents and contents[-1].role == "user":
                contents.append(ChatTurn("model", [SEPARATE]))
            head = _user_text(turn.author_name, turn.text, turn.images)
            contents.append(ChatTurn("user", [head, *_stored_files(turn)]))
        elif contents and contents[-1].role == "user":
            contents.append(ChatTurn("model", _model_parts(turn, model)))
    if contents and contents[-1].role == "user":
        contents.append(ChatTurn("model", [SEPARATE]))
    files = file_parts(question.images)
    question_text = _user_text(question.author_name, question.text, question.images)
    contents.append(ChatTurn("user", [question_text, *files, today_note(today)]))
    _cap_inline_bytes(contents, max_inline_bytes, uploaded)
    return contents


def _cap_inline_bytes(
    contents: list[ChatTurn], limit: int, uploaded: Callable[[Media], bool]
) -> None:
    """Replace inline files by placeholders, oldest first, until the request's inline bytes
    fit ``limit``."""
    total = 0
    for turn in reversed(contents):
        kept: list[str | Media | ModelPart] = []
        for part in reversed(turn.parts):
            media = part.media if isinstance(part, ModelPart) else part
            if isinstance(media, Media) and not uploaded(media):
                if total + len(media.data) > limit:
                    part = earlier(media.name, len(media.data))
                else:
                    total += len(media.data)
            kept.append(part)
        turn.parts = kept[::-1]
