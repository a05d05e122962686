"""Stored history + the new question → the Gemini request (system instruction and contents)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.llm import ChatTurn, ImagePart
from storage import ImageIn, Turn

DEFAULT_PERSONA = (
    "You are {name}, a friendly and knowledgeable assistant chatting in a Discord {place}. "
    "Answer helpfully, accurately and concisely unless someone asks for detail."
)

HOUSE_RULES = (
    "Several people may talk to you in the same channel: each of their messages starts with "
    "the speaker's name in square brackets, like [alice]. Use names when it helps, but never "
    "start your own reply with a name tag. Discord renders Markdown: **bold**, *italics*, "
    "lists, headings, > quotes and fenced code blocks with a language tag; it does not "
    "render tables or LaTeX, so avoid them. Today is {date}."
)

INTERRUPTED = {
    "stopped": "[This reply was stopped by the user before it was finished.]",
    "failed": "[This reply was cut off by an error before it was finished.]",
    "blocked": "[This reply was withheld by the safety filter.]",
}


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
    """A new turn from Discord: who asked, where, what (text and validated images)."""

    channel_id: int
    author_id: int
    author_name: str
    text: str
    guild_id: int | None = None
    thread_id: int | None = None
    message_id: int | None = None
    images: list[ImageIn] = field(default_factory=list)
    in_dm: bool = False
    quote: Quote | None = None


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


def system_instruction(persona: str | None, bot_name: str, in_dm: bool) -> str:
    """The channel's persona (or the default one) followed by the house rules."""
    place = "direct message" if in_dm else "server channel"
    head = persona.strip() if persona and persona.strip() else DEFAULT_PERSONA
    today = dt.datetime.now(dt.UTC).strftime("%A %d %B %Y")
    return (
        head.replace("{name}", bot_name).replace("{place}", place)
        + "\n\n"
        + (HOUSE_RULES.format(date=today))
    )


def _user_text(name: str, text: str) -> str:
    return f"[{name}] {text}" if text else f"[{name}] (sent an image)"


def _model_text(turn: Turn) -> str:
    note = INTERRUPTED.get(turn.status)
    if note:
        return f"{turn.text}\n\n{note}" if turn.text else note
    return turn.text or "(no reply)"


def build_contents(history: Sequence[Turn], question: Question) -> list[ChatTurn]:
    """Gemini contents: history in order (speaker names on user turns), then the new turn.

    Neighbouring turns of the same role (two questions asked at once) are merged, since
    Gemini expects user and model turns to alternate.
    """
    contents: list[ChatTurn] = []

    def add(role: str, parts: list[str | ImagePart]) -> None:
        if contents and contents[-1].role == role:
            contents[-1].parts.extend(parts)
        else:
            contents.append(ChatTurn(role=role, parts=parts))  # type: ignore[arg-type]

    for turn in history:
        if turn.role == "user":
            parts: list[str | ImagePart] = [_user_text(turn.author_name, turn.text)]
            parts += [ImagePart(i.data, i.mime_type) for i in turn.images if i.data is not None]
            add("user", parts)
        else:
            add("model", [_model_text(turn)])
    new_parts: list[str | ImagePart] = [_user_text(question.author_name, question.text)]
    new_parts += [ImagePart(i.data, i.mime_type) for i in question.images]
    add("user", new_parts)
    if contents[0].role == "model":
        contents.pop(0)
    return contents
