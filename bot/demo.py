"""The demo model: a built-in scripted stand-in for Gemini (`gemcord web --demo`), so the
streaming, stop and memory can be seen with no account and no key. It never calls the network.

It offers what the reply engine uses of :class:`bot.llm.GeminiClient`: ``stream(...)`` returns an
async iterator of text chunks (after one thought, shown as the reply's status line) with
``outcome`` (set when it ends) and ``aclose()``; uploads of the Files API are stood in for.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence

from bot.llm import ChatTurn, LLMError, ModelPart, StreamOutcome, Thinking, Thought, Tool
from storage import Media, Upload

LABEL = "demo model (scripted, no Gemini)"

ANSWER = """*This is the **demo model**: a built-in script, not Gemini. Set `GEMINI_API_KEY` \
and start without `--demo` to talk to Gemini.*

You asked: “{question}”{images} — question {number} in this channel.

Here is what a streamed reply looks like:

1. The first words show up **as soon as** the model sends them.
2. The text then grows in paced steps (at most a few updates a second).
3. Press **Stop** at any time: the text so far stays, marked as stopped.

```python
def greet(name: str) -> str:
    return f"Hello, {{name}}!"
```

Each channel keeps its own history, so a reload shows this conversation again. \
Ask with the word `long` for a much longer answer, or with `error` to see a failure.
"""

THOUGHT = "**Reading your question**\nThe demo pretends to think for a moment."
"""The demo's one thought: the page shows its heading while the answer has not begun."""

LONG_EXTRA = (
    "\n\nAnd here is more text, paragraph {n} of {total}, streamed slowly so you can stop it."
)


class DemoModel:
    """Streams a canned Markdown answer in small chunks, ``delay`` seconds apart."""

    label = LABEL

    def __init__(self, delay: float = 0.12, chunk_words: int = 2) -> None:
        self.delay = delay
        self.chunk_words = chunk_words

    def stream(
        self,
        *,
        model: str,
        contents: Sequence[ChatTurn],
        system_instruction: str | None = None,
        max_output_tokens: int | None = None,
        thinking: Thinking | None = None,
        tools: Sequence[Tool] = (),
    ) -> DemoStream:
        """One scripted answer to the last question in ``contents`` (no thinking, no tools)."""
        question = _last_question(contents)
        asked = sum(1 for turn in contents if turn.role == "user")
        if re.search(r"\berror\b", question, re.IGNORECASE):
            return DemoStream([], self.delay, fail=True)
        text = ANSWER.format(question=_short(question), images=_images_note(contents), number=asked)
        if re.search(r"\blong\b", question, re.IGNORECASE):
            total = 60
            text += "".join(LONG_EXTRA.format(n=n, total=total) for n in range(1, total + 1))
        return DemoStream(_chunks(text, self.chunk_words), self.delay)

    async def upload_file(self, media: Media, sha256: str) -> Upload:
        """A stand-in for a Files API upload (a video, a large file): nothing leaves."""
        name = f"files/demo-{sha256[:16]}"
        return Upload(sha256, name, f"demo://{name}", media.mime_type, time.time() + 48 * 3600)

    async def upload_alive(self, upload: Upload) -> bool:
        """Whether a stand-in upload is still "kept" (48 hours, as Gemini keeps them)."""
        return upload.expires_at > time.time()

    async def delete_file(self, name: str) -> None:
        """Nothing to delete."""

    async def aclose(self) -> None:
        """Nothing to release."""


class DemoStream:
    """One scripted answer being streamed."""

    def __init__(self, chunks: list[str], delay: float, *, fail: bool = False) -> None:
        self._chunks = chunks
        self._delay = delay
        self._fail = fail
        self._closed = False
        self.outcome: StreamOutcome | None = None
        self.parts: list[ModelPart] = []
        """The model turn's parts (the demo keeps none: its answer is stored as text)."""

    def __aiter__(self) -> AsyncIterator[str | Thought]:
        return self._run()

    async def _run(self) -> AsyncIterator[str | Thought]:
        sent = 0
        try:
            if self._fail:
                await asyncio.sleep(self._delay)
                raise LLMError(
                    "⚠ The demo model failed on purpose, because the question said “error”.",
                    detail="demo failure",
                )
            await asyncio.sleep(self._delay)
            yield Thought(THOUGHT)
            for chunk in self._chunks:
                if self._closed:
                    return
                await asyncio.sleep(self._delay)
                sent += 1
                yield chunk
        finally:
            finish = "STOP" if sent == len(self._chunks) and not self._fail else None
            self.outcome = StreamOutcome(finish, None, None, None, None, None, LABEL)

    async def aclose(self) -> None:
        """Stop streaming (the iterator ends at its next step)."""
        self._closed = True


def _last_question(contents: Sequence[ChatTurn]) -> str:
    for turn in reversed(contents):
        if turn.role == "user":
            texts = [p for p in turn.parts if isinstance(p, str)]
            return texts[0] if texts else ""  # the question; the date note comes after it
    return ""


def _images_note(contents: Sequence[ChatTurn]) -> str:
    """`` (+N image(s), +N file(s))`` for the files of the newest user turn, or nothing."""
    for turn in reversed(contents):
        if turn.role == "user":
            media = [p for p in turn.parts if isinstance(p, Media)]
            images = sum(1 for p in media if p.mime_type.startswith("image/"))
            texts = sum(1 for p in turn.parts if isinstance(p, str) and p.startswith("[file "))
            counts = [(images, "image"), (len(media) - images + texts, "file")]
            said = [f"+{n} {what}{'s' if n != 1 else ''}" for n, what in counts if n]
            return f" ({', '.join(said)})" if said else ""
    return ""


def _short(question: str) -> str:
    """The question without the speaker prefix and date note the engine adds, on one line."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", question.strip())
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:119] + "…"


def _chunks(text: str, words: int) -> list[str]:
    pieces = re.findall(r"\S+\s*|\s+", text)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]
