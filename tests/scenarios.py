"""Scripted streaming scenarios through the real bot and both fakes, with what they measure.

Used by the end-to-end renderer tests (which assert exactness, limits and zero 429s) and by
`bench/bench_e2e_stream.py` (which prints the timings).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from bot.splitting import split_message
from tests.fakes.discord_models import FakeChannel, FakeUser
from tests.fakes.gemini import Reply
from tests.harness import World

WORDS = (
    "gemini streams text into discord while the renderer buffers chunks and paces every edit "
    "so that the channel bucket is never exceeded and nothing is lost on the way"
).split()

CODE = (
    '```python\ndef greet(name: str) -> str:\n    return f"hello {name}"\n\n\n'
    'print(greet("x"))\n```'
)


def model_text(length: int, seed: int = 1) -> str:
    """Prose with paragraphs and a few code blocks, exactly `length` characters long."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < length:
        if rng.random() < 0.08:
            piece = "\n\n" + CODE + "\n\n"
        else:
            piece = rng.choice(WORDS) + ("\n\n" if rng.random() < 0.03 else " ")
        parts.append(piece)
        size += len(piece)
    text = "".join(parts)[:length]
    return text[:-1] + "." if text[-1].isspace() else text


def chunked(text: str, n: int) -> list[str]:
    """`text` in `n` nearly equal chunks."""
    step = len(text) / n
    return [text[round(i * step) : round((i + 1) * step)] for i in range(n)]


@dataclass
class Measured:
    """One reply as Discord showed it, and how it trailed the model."""

    text: str
    contents: list[str]
    message_ids: list[int]
    first_chunk_to_visible: float
    final_lag: float
    max_lag: float
    writes: int


async def stream_replies(
    w: World,
    channel: FakeChannel,
    askers: list[FakeUser],
    *,
    length: int = 6000,
    chunks: int = 300,
    seconds: float = 5.0,
) -> list[Measured]:
    """Ask the bot once per asker, at the same time, in one channel; each reply is scripted as
    `length` characters in `chunks` chunks over `seconds`."""
    [replies] = await stream_replies_in_channels(
        w, [(channel, askers)], length=length, chunks=chunks, seconds=seconds
    )
    return replies


async def stream_replies_in_channels(
    w: World,
    groups: list[tuple[FakeChannel, list[FakeUser]]],
    *,
    length: int = 6000,
    chunks: int = 300,
    seconds: float = 5.0,
) -> list[list[Measured]]:
    """Like `stream_replies`, with every (channel, askers) group asking at the same time; the
    replies of each group, in the order of its askers."""
    asks = [(channel, user) for channel, users in groups for user in users]
    texts = [model_text(length, seed=i + 1) for i in range(len(asks))]
    start_index = len(w.gemini.requests)
    for text in texts:
        w.gemini.script(Reply(chunks=chunked(text, chunks), delay=seconds / chunks))
    questions = await asyncio.gather(
        *(w.mention(channel, user, f"question {i}") for i, (channel, user) in enumerate(asks))
    )
    await asyncio.gather(*(w.reply_done(q.id, timeout=seconds * 8 + 10) for q in questions))
    assert w.bot is not None
    out = []
    for q, (channel, _) in zip(questions, asks, strict=True):
        turn = await w.bot.store.find_turn_by_message(q.id)
        assert turn is not None
        reply = next(
            t
            for t in await w.bot.store.load_history(channel.id, max_turns=1000)
            if t.reply_to == turn.id
        )
        asked = q.content.split(">", 1)[1].strip()
        req_index = next(
            i
            for i, r in enumerate(w.gemini.requests[start_index:], start_index)
            if (r.question_text() or "").endswith(asked)
        )
        text = "".join(w.gemini.requests[req_index].reply.chunks)  # type: ignore[union-attr]
        out.append(_measure_ids(w, text, req_index, reply.message_ids))
    grouped, k = [], 0
    for _, users in groups:
        grouped.append(out[k : k + len(users)])
        k += len(users)
    return grouped


def _measure_ids(w: World, text: str, request_index: int, message_ids: list[int]) -> Measured:
    req = w.gemini.requests[request_index]
    chain = [w.discord.message(i) for i in message_ids]
    chunk_ends: list[int] = []
    end = 0
    for c in req.reply.chunks:  # type: ignore[union-attr]
        end += len(c)
        chunk_ends.append(end)
    # (time, characters of the model's text visible) after each write of this reply
    timeline: list[tuple[float, int]] = []
    for index, m in enumerate(chain):
        done = sum(len(x) for x in split_message(text)[:index])
        for rev in m.revisions:
            visible = rev.content.replace(" ▌", "")
            timeline.append((rev.t, done + _text_chars(visible)))
    timeline.sort()
    lag = 0.0
    for t, need in zip(req.chunk_times, chunk_ends, strict=False):
        shown_at = next((tt for tt, n in timeline if tt >= t and n >= need), None)
        if shown_at is not None:
            lag = max(lag, shown_at - t)
    final_t = max(t for t, _ in timeline)
    return Measured(
        text=text,
        contents=[m.content for m in chain],
        message_ids=message_ids,
        first_chunk_to_visible=timeline[0][0] - req.chunk_times[0],
        final_lag=final_t - req.chunk_times[-1],
        max_lag=lag,
        writes=len(timeline),
    )


def _text_chars(content: str) -> int:
    """Characters of model text in a message (fence repairs and markers roughly excluded)."""
    if content.startswith("```") and "\n" in content:
        first_line, rest = content.split("\n", 1)
        if len(first_line) <= 40:
            content = rest
    if content.endswith("\n```"):
        content = content[:-4]
    return len(content)
