"""The reply renderer against an in-memory channel, in virtual time.

Every test runs on an event loop whose clock jumps straight to the next timer when nothing is
ready, so seconds of streaming take milliseconds and timings are exact and repeatable.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import selectors
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.cancel import CancelToken
from bot.splitting import CLOSE, ZWSP, split_message, split_pieces
from bot.streaming import (
    ChannelPacer,
    PacerRegistry,
    RenderResult,
    RenderStyle,
    SinkMessageGone,
    SinkRateLimited,
    render_stream,
)

STYLE = RenderStyle()
MARK = STYLE.live_marker
STOPPED = STYLE.separator + STYLE.stopped

# --- virtual time ----------------------------------------------------------------------------


class _WarpSelector(selectors.BaseSelector):
    """Never blocks: when the loop would wait for a timer, move the clock to it instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: nothing is ready and no timer is scheduled")
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock starting at 0."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_WarpSelector(self))

    def time(self) -> float:
        return self.now


def vrun(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def now() -> float:
    return asyncio.get_running_loop().time()


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - now()))


def pacer(max_writes: int = 5, window: float = 5.0) -> ChannelPacer:
    return ChannelPacer(max_writes, window, clock=now)


# --- a fake channel ----------------------------------------------------------------------------


@dataclass
class Write:
    t: float
    kind: str
    reply: int
    message_id: int
    content: str


@dataclass
class FakeChannel:
    """Messages and a log of every write, with a Discord-like fixed-window bucket (optional)."""

    limit: int = 2000
    bucket: tuple[int, float] | None = (5, 5.0)
    latency: float = 0.05
    messages: dict[int, str] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    typing: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    refused_429: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    _window: tuple[float, int] = (-1e9, 0)

    def take(self) -> None:
        """Count a write against the bucket (fixed window opened by its first request)."""
        if self.bucket is None:
            return
        limit, per = self.bucket
        start, count = self._window
        t = now()
        if t >= start + per:
            start, count = t, 0
        if count >= limit:
            self.refused_429 += 1
            raise SinkRateLimited(start + per - t)
        self._window = (start, count + 1)

    def check(self, content: str) -> None:
        if not content.strip():
            self.violations.append(f"blank message {content!r}")
        if len(content) > self.limit:
            self.violations.append(f"message of {len(content)} characters")
        if len(re.findall("```", content)) % 2:
            self.violations.append(f"unbalanced fences in {content!r}")

    def visible(self, ids: list[int]) -> list[str]:
        return [self.messages[i] for i in ids if i in self.messages]


class FakeSink:
    """One reply's view of the channel; ``fault(kind, n)`` may return an exception to raise."""

    def __init__(
        self,
        channel: FakeChannel,
        reply: int = 0,
        fault: Callable[[str, int], BaseException | None] | None = None,
    ) -> None:
        self.channel = channel
        self.reply = reply
        self.fault = fault
        self.calls = 0

    async def _write(self, kind: str, message_id: int | None, content: str) -> int:
        t = now()
        self.calls += 1
        fault = self.fault(kind, self.calls) if self.fault else None
        if fault is None:
            self.channel.take()
        await asyncio.sleep(self.channel.latency)
        if fault is not None:
            raise fault
        if message_id is None:
            message_id = next(self.channel._ids)
        elif message_id not in self.channel.messages:
            raise SinkMessageGone(f"unknown message {message_id}")
        self.channel.check(content)
        self.channel.messages[message_id] = content
        self.channel.writes.append(Write(t, kind, self.reply, message_id, content))
        return message_id

    async def send(self, text: str) -> int:
        return await self._write("send", None, text)

    async def edit(self, message_id: int, text: str) -> None:
        await self._write("edit", message_id, text)

    async def typing(self) -> None:
        self.channel.typing.append(now())


# --- scripted model streams --------------------------------------------------------------------


@dataclass
class Probe:
    """What happened to a scripted stream."""

    started: bool = False
    yielded: list[str] = field(default_factory=list)
    closed_at: float | None = None


async def scripted(
    script: list[tuple[float, str | BaseException]], probe: Probe | None = None
) -> AsyncIterator[str]:
    """Yield each chunk ``delay`` seconds after the previous one (or raise it)."""
    probe = probe if probe is not None else Probe()
    probe.started = True
    try:
        for delay, item in script:
            await asyncio.sleep(delay)
            if isinstance(item, BaseException):
                raise item
            probe.yielded.append(item)
            yield item
    finally:
        probe.closed_at = now()


def even_script(text: str, n: int, duration: float, first: float = 0.0) -> list[tuple[float, Any]]:
    """``text`` in ``n`` chunks spread over ``duration`` seconds, the first after ``first``."""
    size = -(-len(text) // n)
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    step = duration / max(1, len(chunks) - 1)
    return [(first if i == 0 else step, c) for i, c in enumerate(chunks)]


def prose(length: int, seed: int = 0) -> str:
    words = ["stream", "reply", "Discord", "edit", "budget", "naïve", "😀", "code", "`x`", "and"]
    out: list[str] = []
    i = seed
    while sum(map(len, out)) < length:
        sentence = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(5 + i % 13))
        out.append(sentence + (".\n\n" if i % 4 == 3 else ". "))
        i += 1
    return "".join(out)[:length]


class ModelError(Exception):
    """Like bot.llm.LLMError: carries a message fit for Discord."""

    def __init__(self, user_message: str) -> None:
        super().__init__("upstream detail")
        self.user_message = user_message


async def render(
    script: list[tuple[float, Any]],
    channel: FakeChannel | None = None,
    *,
    cancel: CancelToken | None = None,
    probe: Probe | None = None,
    channel_pacer: ChannelPacer | None = None,
    fault: Callable[[str, int], BaseException | None] | None = None,
    reply: int = 0,
    **kwargs: Any,
) -> RenderResult:
    channel = channel if channel is not None else FakeChannel()
    return await render_stream(
        scripted(script, probe),
        FakeSink(channel, reply, fault),
        channel_pacer or pacer(),
        cancel or CancelToken(),
        clock=now,
        **kwargs,
    )


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open interval [t, t + window)."""
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        j = i
        while j < len(times) and times[j] < t + window - 1e-9:
            j += 1
        best = max(best, j - i)
    return best


def final_contents(channel: FakeChannel, result: RenderResult) -> list[str]:
    return channel.visible(result.message_ids)


def check_final(channel: FakeChannel, result: RenderResult, limit: int = 2000) -> None:
    """The channel shows exactly the pieces of the text, repairs valid, nothing blank or long."""
    contents = final_contents(channel, result)
    assert contents == result.contents
    assert not channel.violations
    pieces = result.pieces
    position = 0
    for p in pieces:
        assert p.start == position
        position = p.end
    assert position == (len(result.text) if pieces else 0)
    for k, p in enumerate(pieces):
        expected = p.render(result.text)
        if k == len(pieces) - 1 and result.notice and len(contents) == len(pieces):
            expected += STYLE.separator + result.notice
        assert contents[k] == expected
        assert p.lead in ("", ZWSP) or re.fullmatch(r"```[A-Za-z0-9_+\-.#]*\n", p.lead)
        assert p.tail in ("", CLOSE)
    if len(contents) == len(pieces) + 1:
        assert contents[-1] == result.notice
    else:
        assert len(contents) == len(pieces)
    for c in contents:
        assert len(c) <= limit and c.strip() and len(re.findall("```", c)) % 2 == 0


# --- the first text ----------------------------------------------------------------------------


def test_first_send_happens_on_the_first_chunk() -> None:
    async def main() -> None:
        channel = FakeChannel()
        result = await render([(3.0, "Hello"), (0.4, " world")], channel)
        first = channel.writes[0]
        assert (first.kind, first.t, first.content) == ("send", 3.0, "Hello" + MARK)
        assert channel.typing == [0.0]
        assert result.state == "complete"
        assert final_contents(channel, result) == ["Hello world"]
        assert result.first_chunk_latency == pytest.approx(3.0)
        assert result.first_visible_latency == pytest.approx(3.0 + channel.latency)
        assert (result.sends, result.edits, result.chunks) == (1, 1, 2)

    vrun(main)


def test_typing_is_renewed_until_the_first_text() -> None:
    async def main() -> None:
        channel = FakeChannel()
        await render([(20.0, "late"), (30.0, " answer")], channel)
        assert channel.typing == [0.0, 8.0, 16.0]

    vrun(main)


def test_leading_whitespace_waits_for_visible_text() -> None:
    async def main() -> None:
        channel = FakeChannel()
        result = await render([(0.0, "\n\n"), (1.0, "  "), (1.0, "Hi"), (1.0, "!")], channel)
        assert channel.writes[0].t == 2.0
        assert channel.writes[0].content == "\n\n  Hi" + MARK
        assert result.text == "\n\n  Hi!"
        assert final_contents(channel, result) == ["\n\n  Hi!"]

    vrun(main)


# --- buffering and pacing --------------------------------------------------------------------


def test_no_text_is_lost_when_the_stream_ends_mid_interval() -> None:
    async def main() -> None:
        channel = FakeChannel()
        result = await render([(0.0, "a"), (0.2, "b"), (0.2, "c")], channel)
        assert [(w.kind, w.content) for w in channel.writes] == [
            ("send", "a" + MARK),
            ("edit", "abc"),
        ]
        assert channel.writes[1].t == pytest.approx(1.05)  # the next slot, not later
        assert result.final_lag == pytest.approx(1.05 - 0.4 + channel.latency)

    vrun(main)


def test_nothing_is_written_when_nothing_visible_changed() -> None:
    async def main() -> None:
        channel = FakeChannel()
        script = [(0.0, "same"), *[(0.5, "") for _ in range(10)], (0.5, "!")]
        result = await render(script, channel)
        assert [w.content for w in channel.writes] == ["same" + MARK, "same!"]
        assert result.chunks == 12

    vrun(main)


def test_each_write_carries_the_latest_text() -> None:
    async def main() -> None:
        channel = FakeChannel()
        text = prose(900)
        await render(even_script(text, 90, 4.0), channel)
        times = [w.t for w in channel.writes]
        assert all(b - a >= 1.05 - 1e-9 for a, b in itertools.pairwise(times))
        # the text written at each slot is everything that had arrived by then
        for w in channel.writes[:-1]:
            arrived = int(w.t / (4.0 / 89) + 1e-9) + 1
            assert w.content == text[: arrived * 10] + MARK

    vrun(main)


def test_three_concurrent_replies_share_the_channel_budget() -> None:
    async def main() -> tuple[list[RenderResult], FakeChannel]:
        channel = FakeChannel()  # a fixed window of 5 per 5 s, refusing with 429 beyond it
        shared = pacer()
        texts = [prose(6000, seed) for seed in range(3)]

        async def one(k: int) -> RenderResult:
            await asyncio.sleep(0.3 * k)
            return await render(
                even_script(texts[k], 300, 5.0), channel, channel_pacer=shared, reply=k
            )

        results = await asyncio.gather(*(one(k) for k in range(3)))
        for k, result in enumerate(results):
            assert result.state == "complete"
            assert result.text == texts[k]
            check_final(channel, result)
            assert len(result.message_ids) <= 4
            assert result.rate_limited == 0
        return results, channel

    _, channel = vrun(main)
    assert channel.refused_429 == 0
    assert max_in_window([w.t for w in channel.writes], 5.0) <= 5
    # fair: every reply shows its first text within a few slots of its first chunk
    for k in range(3):
        first = min(w.t for w in channel.writes if w.reply == k)
        assert first - 0.3 * k <= 3 * 1.05 + 1e-9


def test_replies_in_different_channels_do_not_wait_for_each_other() -> None:
    async def main() -> None:
        registry = PacerRegistry(clock=now)
        channels = [FakeChannel(), FakeChannel()]
        text = prose(3000)
        await asyncio.gather(
            *(
                render(even_script(text, 100, 3.0), channels[k], channel_pacer=registry.get(k))
                for k in range(2)
            )
        )
        assert registry.get(0) is not registry.get(1) and registry.get(0) is registry.get(0)
        for ch in channels:
            times = [w.t for w in ch.writes]
            assert times[:4] == pytest.approx([0.0, 1.05, 2.1, 3.15])

    vrun(main)


def test_a_long_reply_takes_the_minimum_sensible_number_of_messages() -> None:
    async def main() -> None:
        channel = FakeChannel(bucket=None)
        text = prose(20_000, 5)
        result = await render(even_script(text, 1000, 20.0), channel)
        check_final(channel, result)
        assert final_contents(channel, result) == split_message(text)
        assert 10 <= len(result.message_ids) <= 12
        assert sent_ids(channel) == result.message_ids

    def sent_ids(channel: FakeChannel) -> list[int]:
        return [w.message_id for w in channel.writes if w.kind == "send"]

    vrun(main)


# --- random texts, random chunkings ------------------------------------------------------------

_atoms = st.one_of(
    st.sampled_from(["word", "Ünïcödé", "日本語", "😀", "👨‍👩‍👧‍👦", "🇫🇷", "e\u0301", "x" * 30]),
    st.sampled_from([" ", " ", "\n", "\n\n", "\r\n", "\t"]),
    st.sampled_from(["```", "```py\n", "```c++\r\n", "\n```\n", "``", "`"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=ZWSP), max_size=8),
    st.builds(lambda n, c: c * n, st.integers(20, 300), st.sampled_from(["y", " ", "\n", "`"])),
)
_texts = st.lists(_atoms, max_size=90).map("".join)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, list[tuple[float, str]]]:
    text = draw(_texts)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=25))))
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    delays = draw(st.lists(st.sampled_from([0.0, 0.01, 0.3, 1.0, 2.5]), min_size=len(chunks)))
    return text, list(zip(delays, chunks, strict=False))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=chunked(), limit=st.integers(70, 300))
def test_any_text_any_chunking_ends_exact_bounded_and_balanced(
    case: tuple[str, list[tuple[float, str]]], limit: int
) -> None:
    text, script = case

    async def main() -> tuple[RenderResult, FakeChannel]:
        channel = FakeChannel(limit=limit)
        result = await render(script, channel, limit=limit)
        return result, channel

    result, channel = vrun(main)
    assert result.text == text
    assert not channel.violations  # every write, not only the last: short, non-blank, balanced
    assert max_in_window([w.t for w in channel.writes], 5.0) <= 5 and channel.refused_429 == 0
    if text.strip():
        assert result.state == "complete"
        assert result.pieces == split_pieces(text, limit)
        assert final_contents(channel, result) == split_message(text, limit)
        check_final(channel, result, limit)
        event(f"messages: {min(len(result.message_ids), 5)}")
    else:
        assert result.state == "empty"
        assert final_contents(channel, result) == [STYLE.empty]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=chunked(),
    at=st.floats(0.0, 8.0),
    how=st.sampled_from(["stop", "error"]),
    limit=st.integers(70, 300),
)
def test_a_stop_or_an_error_at_any_moment_keeps_the_text_so_far(
    case: tuple[str, list[tuple[float, str]]], at: float, how: str, limit: int
) -> None:
    text, script = case
    error = ModelError("⚠ The connection to Gemini dropped; the answer is incomplete.")
    if how == "error":  # the stream fails after the chunks that arrive before `at`
        elapsed, k = 0.0, 0
        while k < len(script) and elapsed + script[k][0] < at:
            elapsed, k = elapsed + script[k][0], k + 1
        script = [*script[:k], (max(0.0, at - elapsed), error)]

    async def main() -> tuple[RenderResult, FakeChannel, Probe]:
        channel, cancel, probe = FakeChannel(limit=limit), CancelToken(), Probe()
        if how == "stop":
            asyncio.get_running_loop().call_at(at, cancel.cancel)
        result = await render(script, channel, cancel=cancel, probe=probe, limit=limit)
        return result, channel, probe

    result, channel, probe = vrun(main)
    event(f"{how}: {result.state}")
    assert text.startswith(result.text)
    assert result.text == "".join(probe.yielded)
    assert not channel.violations
    check_final(channel, result, limit)
    assert probe.closed_at is not None
    if result.state == "stopped":
        assert probe.closed_at <= at + 1e-9  # reading stopped the moment the token fired
        expected = STYLE.stopped if result.text.strip() else STYLE.stopped_before_text
        assert result.notice == expected
    elif result.state == "failed":
        assert result.error is error and result.notice == error.user_message
    else:
        assert result.state in ("complete", "empty") and result.text == text
    if result.pieces:
        assert result.pieces == split_pieces(result.text, limit)


# --- stopping ------------------------------------------------------------------------------------


def test_stop_mid_stream_closes_the_stream_at_once_and_marks_the_text() -> None:
    async def main() -> None:
        channel, cancel, probe = FakeChannel(), CancelToken(), Probe()
        script = [(0.0, "Partial "), (1.0, "answer"), (100.0, " never read")]
        asyncio.get_running_loop().call_at(2.5, cancel.cancel, "stopped", 42)
        result = await render(script, channel, cancel=cancel, probe=probe)
        assert probe.closed_at == 2.5  # the generator's finally ran right away
        assert probe.yielded == ["Partial ", "answer"]
        assert result.state == "stopped" and result.text == "Partial answer"
        assert final_contents(channel, result) == ["Partial answer" + STOPPED]
        assert channel.writes[-1].t <= 2.5 + 1.05
        assert result.total_time < 4

    vrun(main)


def test_stop_inside_a_code_block_closes_it_before_the_marker() -> None:
    async def main() -> None:
        channel, cancel = FakeChannel(), CancelToken()
        asyncio.get_running_loop().call_at(1.5, cancel.cancel)
        script = [(0.0, "Look:\n```py\nx = 1\n"), (1.0, "y = 2"), (9.0, "\n```")]
        result = await render(script, channel, cancel=cancel)
        assert final_contents(channel, result) == ["Look:\n```py\nx = 1\ny = 2\n```" + STOPPED]

    vrun(main)


def test_stop_before_the_first_chunk() -> None:
    async def main() -> None:
        channel, cancel, probe = FakeChannel(), CancelToken(), Probe()
        asyncio.get_running_loop().call_at(1.0, cancel.cancel)
        result = await render([(30.0, "too late")], channel, cancel=cancel, probe=probe)
        assert probe.closed_at == 1.0 and probe.yielded == []
        assert result.state == "stopped" and result.text == ""
        assert final_contents(channel, result) == [STYLE.stopped_before_text]
        assert channel.typing == [0.0]
        assert result.first_visible_latency is None

    vrun(main)


def test_stopped_before_the_renderer_started_never_opens_the_stream() -> None:
    async def main() -> None:
        channel, cancel, probe = FakeChannel(), CancelToken(), Probe()
        cancel.cancel()
        result = await render([(0.0, "text")], channel, cancel=cancel, probe=probe)
        assert not probe.started  # no request was made
        assert result.state == "stopped"
        assert final_contents(channel, result) == [STYLE.stopped_before_text]

    vrun(main)


def test_a_stop_after_the_stream_ended_changes_nothing() -> None:
    async def main() -> None:
        channel, cancel = FakeChannel(), CancelToken()
        asyncio.get_running_loop().call_at(0.5, cancel.cancel)
        result = await render([(0.0, "a"), (0.2, "b")], channel, cancel=cancel)
        assert result.state == "complete"
        assert final_contents(channel, result) == ["ab"]

    vrun(main)


class SlowClosingStream:
    """An async iterator (not a generator) whose aclose takes a while, like a network close."""

    def __init__(self) -> None:
        self.sent = False
        self.closed_at: float | None = None
        self.close_task: asyncio.Task[Any] | None = None

    def __aiter__(self) -> SlowClosingStream:
        return self

    async def __anext__(self) -> str:
        if not self.sent:
            self.sent = True
            return "some text"
        await asyncio.sleep(1000)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.close_task = asyncio.current_task()
        await asyncio.sleep(10)
        self.closed_at = now()


def test_the_stopped_edit_does_not_wait_for_the_stream_to_close() -> None:
    async def main() -> None:
        channel, cancel, stream = FakeChannel(), CancelToken(), SlowClosingStream()
        asyncio.get_running_loop().call_at(2.0, cancel.cancel)
        task = asyncio.current_task()
        result = await render_stream(stream, FakeSink(channel), pacer(), cancel, clock=now)
        assert final_contents(channel, result) == ["some text" + STOPPED]
        assert channel.writes[-1].t == 2.0  # at once: the channel had a free slot
        assert stream.closed_at == pytest.approx(12.0)  # closed before render_stream returned
        assert stream.close_task is not task  # by the task that iterated it

    vrun(main)


def test_cancelling_the_renderer_task_propagates_and_closes_the_stream() -> None:
    async def main() -> None:
        channel, probe = FakeChannel(), Probe()
        task = asyncio.create_task(render([(0.0, "a"), (50.0, "b")], channel, probe=probe))
        await asyncio.sleep(2.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert probe.closed_at == 2.0

    vrun(main)


# --- failures ------------------------------------------------------------------------------------


def test_stream_error_keeps_the_text_and_shows_the_reason() -> None:
    async def main() -> None:
        channel = FakeChannel()
        error = ModelError("⚠ Gemini is rate-limited, try again in a minute")
        result = await render([(0.0, "Half an "), (0.5, "answer"), (0.5, error)], channel)
        assert result.state == "failed" and result.error is error
        assert result.text == "Half an answer"
        assert final_contents(channel, result) == [
            "Half an answer\n\n⚠ Gemini is rate-limited, try again in a minute"
        ]

    vrun(main)


def test_failure_before_any_text_is_a_message_with_the_reason() -> None:
    async def main() -> None:
        channel = FakeChannel()
        result = await render([(1.0, ModelError("🚫 Gemini declined to answer this."))], channel)
        assert final_contents(channel, result) == ["🚫 Gemini declined to answer this."]
        channel = FakeChannel()
        result = await render([(0.0, " "), (1.0, RuntimeError("boom"))], channel)
        assert result.state == "failed" and isinstance(result.error, RuntimeError)
        assert final_contents(channel, result) == [STYLE.generic_failure]

    vrun(main)


def test_a_notice_that_does_not_fit_goes_into_its_own_message() -> None:
    async def main() -> None:
        channel = FakeChannel()
        text = "z" * 1990
        result = await render([(0.0, text), (1.0, ModelError("⚠ dropped"))], channel)
        assert final_contents(channel, result) == [text, "⚠ dropped"]
        check_final(channel, result)

    vrun(main)


def test_empty_stream_says_so() -> None:
    async def main() -> None:
        for script in ([], [(0.5, ""), (0.5, "\n \n")]):
            channel = FakeChannel()
            result = await render(script, channel)
            assert result.state == "empty"
            assert final_contents(channel, result) == [STYLE.empty]
            assert result.text == "".join(c for _, c in script)

    vrun(main)


def test_sink_rate_limit_slows_the_channel_and_loses_nothing() -> None:
    async def main() -> None:
        channel = FakeChannel(bucket=None)
        shared = pacer()

        def fault(kind: str, n: int) -> BaseException | None:
            return SinkRateLimited(2.0) if n == 3 else None

        text = prose(1500)
        script = even_script(text, 50, 6.0)
        result = await render(script, channel, channel_pacer=shared, fault=fault)
        assert result.rate_limited == 1 and shared.rate_limited == 1
        assert result.state == "complete"
        assert final_contents(channel, result) == [text]
        times = [w.t for w in channel.writes]
        # two writes, then the refused third at 2.1, then nothing until the retry_after passed
        assert times[:2] == pytest.approx([0.0, 1.05])
        assert times[2] >= 2.1 + 2.0
        gaps = [b - a for a, b in itertools.pairwise(times[2:])]
        assert all(g >= 2 * 1.05 - 1e-9 for g in gaps)  # slower for a while afterwards

    vrun(main)


def test_a_deleted_message_stops_the_reply_cleanly() -> None:
    async def main() -> None:
        channel, probe = FakeChannel(), Probe()

        async def delete_first() -> None:
            await sleep_until(1.5)
            channel.messages.pop(min(channel.messages))

        deleter = asyncio.create_task(delete_first())
        text = prose(5000)
        result = await render(even_script(text, 100, 10.0), channel, probe=probe)
        await deleter
        assert result.state == "gone" and isinstance(result.error, SinkMessageGone)
        assert len(result.message_ids) == 1 and channel.messages == {}
        assert [w.kind for w in channel.writes] == ["send", "edit"]
        assert probe.closed_at is not None and probe.closed_at < 2.5  # stopped reading at once
        assert result.text == "".join(probe.yielded)

    vrun(main)


def test_a_transient_sink_error_is_retried() -> None:
    async def main() -> None:
        channel = FakeChannel()

        def fault(kind: str, n: int) -> BaseException | None:
            return ConnectionResetError("reset") if n == 2 else None

        result = await render([(0.0, "a"), (0.2, "b")], channel, fault=fault)
        assert result.state == "complete" and final_contents(channel, result) == ["ab"]

    vrun(main)


def test_a_broken_sink_gives_up_as_failed_without_raising() -> None:
    async def main() -> None:
        channel, probe = FakeChannel(), Probe()

        def fault(kind: str, n: int) -> BaseException | None:
            return OSError("network down") if n >= 2 else None

        script = [(0.0, "a"), (0.2, "b"), (100.0, "c")]
        result = await render(script, channel, fault=fault, probe=probe)
        assert result.state == "failed" and isinstance(result.error, OSError)
        assert result.text == "ab" and probe.closed_at is not None
        assert result.total_time < 10

    vrun(main)


def test_a_sink_that_always_answers_429_is_given_up() -> None:
    async def main() -> None:
        channel = FakeChannel()
        result = await render(
            [(0.0, "a")], channel, fault=lambda kind, n: SinkRateLimited(0.5), max_rate_limits=4
        )
        assert result.state == "failed" and result.rate_limited == 4

    vrun(main)


# --- callbacks and metrics ---------------------------------------------------------------------


def test_on_message_is_called_for_every_new_message_in_order() -> None:
    async def main() -> None:
        channel = FakeChannel(bucket=None)
        seen: list[tuple[int, float]] = []
        text = prose(5000, 3)
        result = await render(
            even_script(text, 50, 3.0), channel, on_message=lambda mid: seen.append((mid, now()))
        )
        assert [mid for mid, _ in seen] == result.message_ids and len(seen) >= 3
        sends = [w for w in channel.writes if w.kind == "send"]
        for (mid, t), w in zip(seen, sends, strict=True):
            assert mid == w.message_id and t == pytest.approx(w.t + channel.latency)

    vrun(main)


def test_metrics_are_reported() -> None:
    async def main() -> None:
        channel = FakeChannel()
        text = prose(3000)
        result = await render(even_script(text, 150, 5.0, first=0.7), channel)
        assert result.chunks == 150
        assert result.sends == len(result.message_ids) == 2
        assert result.sends + result.edits == len(channel.writes)
        assert result.first_chunk_latency == pytest.approx(0.7)
        assert result.first_visible_latency == pytest.approx(0.7 + channel.latency)
        assert result.total_time == pytest.approx(channel.writes[-1].t + channel.latency)
        assert result.max_lag is not None and result.max_lag <= 2 * 1.05 + channel.latency
        assert result.final_lag is not None and result.final_lag <= 2 * 1.05 + channel.latency

    vrun(main)


# --- the pacer -----------------------------------------------------------------------------------


def test_pacer_spreads_writes_and_serves_the_longest_waiting_first() -> None:
    async def main() -> None:
        p = pacer()
        order: list[tuple[str, float]] = []

        async def writer(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            await p.acquire()
            order.append((name, now()))

        await asyncio.gather(writer("a", 0.0), writer("b", 0.01), writer("c", 0.02))
        await asyncio.gather(writer("c", 0.0), writer("a", 0.001))
        assert [n for n, _ in order] == ["a", "b", "c", "c", "a"]
        assert [t for _, t in order] == pytest.approx([0.0, 1.05, 2.1, 3.15, 4.2])
        assert p.writes == 5

    vrun(main)


def test_pacer_never_exceeds_the_budget_in_any_window() -> None:
    async def main() -> None:
        p = ChannelPacer(3, 2.0, clock=now, margin=0.0)
        times = []
        for _ in range(12):
            await p.acquire()
            times.append(now())
        assert max_in_window(times, 2.0) <= 3

    vrun(main)


def test_pacer_penalty_pauses_then_slows_then_recovers() -> None:
    async def main() -> None:
        p = pacer()
        await p.acquire()
        p.penalize(3.0)
        assert p.interval() == pytest.approx(2.1)
        await p.acquire()
        assert now() == pytest.approx(3.05)
        await p.acquire()
        assert now() == pytest.approx(3.05 + 2.1)
        await asyncio.sleep(30)
        assert p.interval() == pytest.approx(1.05)

    vrun(main)


def test_registry_forgets_idle_channels_but_never_a_pacer_in_use() -> None:
    async def main() -> None:
        registry = PacerRegistry(clock=now, idle_ttl=60)
        held = registry.get(1)
        await held.acquire()
        registry.get(2)
        await asyncio.sleep(120)
        registry.prune()
        assert len(registry) == 0
        assert registry.get(1) is held  # still referenced by a reply: the same budget
        await held.acquire()
        assert now() == 120

    vrun(main)


def test_a_write_that_hangs_is_timed_out_and_retried() -> None:
    async def main() -> None:
        channel = FakeChannel()
        sink = FakeSink(channel)
        hung = asyncio.Event()

        async def edit(message_id: int, text: str) -> None:
            if not hung.is_set():
                hung.set()
                await asyncio.sleep(3600)
            await FakeSink.edit(sink, message_id, text)

        sink.edit = edit  # type: ignore[method-assign]
        result = await render_stream(
            scripted([(0.0, "a"), (0.2, "b")]),
            sink,
            pacer(),
            CancelToken(),
            clock=now,
            write_timeout=10.0,
        )
        assert result.state == "complete" and final_contents(channel, result) == ["ab"]
        assert 11 < result.total_time < 15

    vrun(main)


def test_pacer_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        ChannelPacer(0, 5.0)
    with pytest.raises(ValueError):
        PacerRegistry(5, 0.0)
