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
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.cancel import CancelToken
from bot.pacing import ChannelPacer, PacerRegistry, Slot, WriteBudget
from bot.splitting import CLOSE, ZWSP, split_message, split_pieces
from bot.streaming import (
    Button,
    Buttons,
    RenderResult,
    RenderStyle,
    SinkMessageGone,
    SinkRateLimited,
    Status,
    render_stream,
)

STYLE = RenderStyle()
MARK = STYLE.live_marker
STOPPED = STYLE.separator + STYLE.stopped

# --- virtual time ----------------------------------------------------------------------------


RUNAWAY = 3600.0
"""No test streams for an hour of virtual time: one that does loops forever."""


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
        if self._loop.now > RUNAWAY:
            raise RuntimeError(f"virtual time ran past {RUNAWAY} s: something waits forever")
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


PROGRESS = 5.0 / 4 * 1.05
"""Progress edits of a lone reply: 4 per window (one slot is kept for its last edit)."""


# --- a fake channel ----------------------------------------------------------------------------


@dataclass
class Write:
    t: float
    """When the write started (reached the channel)."""
    kind: str
    reply: int
    message_id: int
    content: str
    landed: float = 0.0
    """When the write took effect (the message showed ``content``)."""
    buttons: tuple[Button, ...] = ()


@dataclass
class FakeChannel:
    """Messages and a log of every write, with Discord-like fixed-window buckets (optional).

    Like Discord, sends (message creates) and edits each have their own bucket in a channel.
    """

    limit: int = 2000
    bucket: tuple[int, float] | None = (5, 5.0)
    latency: float = 0.05
    messages: dict[int, str] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    typing: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    refused_429: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def take(self, kind: str) -> None:
        """Count a write against its bucket (fixed window opened by its first request)."""
        if self.bucket is None:
            return
        limit, per = self.bucket
        start, count = self._windows.get(kind, (-1e9, 0))
        t = now()
        if t >= start + per:
            start, count = t, 0
        if count >= limit:
            self.refused_429 += 1
            raise SinkRateLimited(start + per - t)
        self._windows[kind] = (start, count + 1)

    def times(self, kind: str) -> list[float]:
        """When each write of ``kind`` started."""
        return [w.t for w in self.writes if w.kind == kind]

    def max_per_window(self, window: float = 5.0) -> dict[str, int]:
        """The most sends, and the most edits, that started in one of Discord's fixed windows."""
        return {kind: max_in_fixed_windows(self.times(kind), window) for kind in ("send", "edit")}

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

    async def _write(
        self, kind: str, message_id: int | None, content: str, buttons: Buttons = ()
    ) -> int:
        t = now()
        self.calls += 1
        fault = self.fault(kind, self.calls) if self.fault else None
        if fault is None:
            self.channel.take(kind)
        await asyncio.sleep(self.channel.latency)
        if fault is not None:
            raise fault
        if message_id is None:
            message_id = next(self.channel._ids)
        elif message_id not in self.channel.messages:
            raise SinkMessageGone(f"unknown message {message_id}")
        self.channel.check(content)
        self.channel.messages[message_id] = content
        self.channel.writes.append(Write(t, kind, self.reply, message_id, content, now(), buttons))
        return message_id

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        return await self._write("send", None, text, buttons)

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        await self._write("edit", message_id, text, buttons)

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


def fixed_window_start(times: list[float], t: float, per: float) -> float:
    """When the fixed window that counts the event at ``t`` opened (see below)."""
    start = None
    for u in sorted(times):
        if start is None or u >= start + per:
            start = u
        if u >= t:
            break
    assert start is not None
    return start


def max_in_fixed_windows(times: list[float], per: float) -> int:
    """The most events in one of Discord's fixed windows (a window opens at the first event at
    or after the end of the one before and lasts ``per`` seconds)."""
    best, start, count = 0, None, 0
    for t in sorted(times):
        if start is None or t >= start + per:
            start, count = t, 0
        count += 1
        best = max(best, count)
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


def check_order(channel: FakeChannel, result: RenderResult) -> None:
    """Messages are sent in order, each only once every earlier message of the reply shows its
    final content or has the write that gives it started: text never shows twice for longer
    than that write takes."""
    ids = result.message_ids
    sends = [w for w in channel.writes if w.kind == "send" and w.message_id in ids]
    assert [w.message_id for w in sends] == ids
    final_from: dict[int, float] = {}
    for w in channel.writes:
        if w.message_id in ids and w.content == result.contents[ids.index(w.message_id)]:
            final_from.setdefault(w.message_id, w.t)
    for j, send in enumerate(sends):
        for i in range(j):
            assert final_from[ids[i]] <= send.t, f"message {j} sent before message {i} was final"


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


def test_replies_waiting_together_show_one_typing_indicator_for_their_channel() -> None:
    """Three replies of a channel before their first text: one indicator for the channel,
    renewed every 8 s while any waits (each reply sent its own before: three at a time)."""

    async def main() -> None:
        channel = FakeChannel()
        shared = pacer()
        await asyncio.gather(
            render([(20.0, "late"), (1.0, " answer")], channel, channel_pacer=shared),
            render([(0.5, "soon"), (1.0, " done")], channel, channel_pacer=shared, reply=1),
            render([(20.0, "late"), (1.0, " too")], channel, channel_pacer=shared, reply=2),
        )
        first = channel.writes[0]
        assert (first.kind, first.t) == ("send", 0.5)
        assert channel.typing == pytest.approx([0.0, 8.0, 16.0])

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
        # the first edit needs no wait (sends and edits have their own buckets); the final one
        # does not wait for the steady spacing of progress edits either: the window has room
        assert [(w.t, w.kind, w.content) for w in channel.writes] == [
            (0.0, "send", "a" + MARK),
            (pytest.approx(0.2), "edit", "ab" + MARK),
            (pytest.approx(0.4), "edit", "abc"),
        ]
        assert result.final_lag == pytest.approx(channel.latency)

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
        step = 4.0 / 89
        await render(even_script(text, 90, 4.0), channel)
        edits = channel.times("edit")
        # the first edit goes as soon as the first message exists (the second chunk is there)
        assert edits[0] == pytest.approx(channel.latency) and step < channel.latency
        # progress is spread evenly; the last edit goes as soon as the text is complete
        assert all(b - a >= PROGRESS - 1e-9 for a, b in itertools.pairwise(edits[:-1]))
        assert 4.0 <= edits[-1] <= 4.0 + channel.latency  # after the progress edit in flight
        # the text written at each slot is everything that had arrived by then
        for w in channel.writes[:-1]:
            arrived = int(w.t / step + 1e-9) + 1
            assert w.content == text[: arrived * 10] + MARK
        assert channel.writes[-1].content == text

    vrun(main)


def test_a_fast_reply_trails_the_model_by_at_most_one_edit_interval() -> None:
    async def main() -> None:
        channel = FakeChannel()  # 5 sends and 5 edits per 5 s, refusing with 429 beyond
        text = prose(6000, 7)
        result = await render(even_script(text, 300, 5.0), channel)
        check_final(channel, result)
        check_order(channel, result)
        assert len(result.message_ids) == 4 and result.rate_limited == channel.refused_429 == 0
        assert max(channel.max_per_window().values()) <= 5
        # a message break costs little: the new message's send goes with the old message's
        # final edit (each from its own bucket), or once that edit's response is in when
        # discord.py would not let both through at once, or when the hold on the channel ends
        # if that edit emptied the edit window (at most the window's margin of doubt)
        edits = channel.times("edit")
        for k, s in enumerate(w for w in channel.writes if w.kind == "send"):
            if k:
                before = [t for t in edits if t <= s.t]
                opened = fixed_window_start(edits, before[-1], 5.0)
                emptied = sum(1 for t in before if t >= opened) == 5
                assert s.t - before[-1] <= channel.latency + 1e-9 or (
                    emptied and s.t <= opened + 5.0 + 0.25 + 1e-9
                )
        interval = PROGRESS + channel.latency + 1e-9
        assert result.max_lag is not None and result.max_lag <= interval
        assert result.final_lag is not None and result.final_lag <= interval

    vrun(main)


def test_a_new_message_waits_for_the_final_edit_of_the_one_before() -> None:
    async def main() -> None:
        channel = FakeChannel(latency=0.3)
        # the first message shows 1,900 characters; then the text grows past the limit and
        # is cut at the paragraph break at 1,600, so 300 shown characters move on
        first, rest = "w " * 800 + "\n\n", "v " * 150 + "x " * 300
        script = [(0.0, first[:-2] + "w " * 150), (0.1, "\n\n"), (0.4, rest)]
        result = await render(script, channel)
        check_final(channel, result)
        check_order(channel, result)
        sends = [w for w in channel.writes if w.kind == "send"]
        final_edit = next(w for w in channel.writes if w.content == result.contents[0])
        assert sends[1].t == final_edit.t  # together, not one interval apart

    vrun(main)


def test_replies_asked_together_show_their_first_text_at_once() -> None:
    async def main(burst: int | None) -> list[float]:
        channel = FakeChannel()
        shared = ChannelPacer(5, 5.0, send_burst=burst, clock=now)
        await asyncio.gather(
            *(
                render(even_script(prose(600, k), 10, 1.0), channel, channel_pacer=shared)
                for k in range(5)
            )
        )
        assert channel.refused_429 == 0 and not channel.violations
        return channel.times("send")

    # every reply shows its first text on its first chunk, as fast as discord.py lets the
    # creates through: a channel's new bucket lets one request through until its first
    # response, then two at a time while each leaves two in the window, then one at a time;
    # the fifth, which empties the window (and so would hold the channel's edits until its
    # end), once the four replies' last edits have gone (their answers end at 1.0)
    assert vrun(lambda: main(None)) == pytest.approx([0.0, 0.05, 0.05, 0.1, 1.15])
    # spread evenly, the first goes at once; by the next slot (1.05) the other replies have
    # ended, and a send that carries a whole reply is a final write: those go at once
    assert vrun(lambda: main(1)) == pytest.approx([0.0, 1.0, 1.05, 1.1, 1.15])


def test_three_concurrent_replies_share_the_channel_budgets() -> None:
    async def main() -> tuple[list[RenderResult], FakeChannel]:
        channel = FakeChannel()  # fixed windows of 5 per 5 s, refusing with 429 beyond them
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
            check_order(channel, result)
            assert len(result.message_ids) <= 4
            assert result.rate_limited == 0
        return results, channel

    results, channel = vrun(main)
    assert channel.refused_429 == 0
    assert channel.max_per_window()["send"] == 5  # used, never exceeded
    assert channel.max_per_window()["edit"] <= 5
    # sends go out in a burst: every reply shows its first text on its first chunk
    for k in range(3):
        first = min(w.t for w in channel.writes if w.reply == k)
        assert first == pytest.approx(0.3 * k)
    # the channel's sends are the bottleneck (12 messages): three full windows
    sends = channel.times("send")
    assert len(sends) == sum(len(r.message_ids) for r in results) == 12
    # so the last reply is done sooner than the 11 send intervals of even spreading
    assert max(w.landed for w in channel.writes) == pytest.approx(sends[-1] + channel.latency)
    assert sends[-1] <= 10.5 + 0.3 + 1e-9


def test_replies_that_end_go_before_progress_of_those_still_streaming() -> None:
    async def main() -> FakeChannel:
        channel = FakeChannel()
        shared = pacer()
        long_text, short = prose(1500, 1), [prose(300, seed) for seed in (2, 3, 4)]
        await asyncio.gather(
            render(even_script(long_text, 100, 10.0), channel, channel_pacer=shared, reply=0),
            *(
                render(even_script(text, 30, 3.0), channel, channel_pacer=shared, reply=k)
                for k, text in enumerate(short, 1)
            ),
        )
        return channel

    channel = vrun(main)
    assert channel.refused_429 == 0 and channel.max_per_window()["edit"] <= 5
    finals = {k: max(w.t for w in channel.writes if w.reply == k) for k in (1, 2, 3)}
    progress = [w.t for w in channel.writes if w.reply == 0 and w.kind == "edit"]
    # the three replies that ended at 3 s show their last text before the long one's next edit
    next_progress = min(t for t in progress if t >= 3.0)
    assert all(t <= next_progress for t in finals.values())


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
        timelines = [sorted((w.t, w.kind, w.content) for w in ch.writes) for ch in channels]
        assert timelines[0] == timelines[1]  # the same as if each were alone
        edits = channels[0].times("edit")
        assert edits[:2] == pytest.approx([edits[0] + k * PROGRESS for k in range(2)])
        assert edits[0] == pytest.approx(channels[0].latency)  # once the first message exists

    vrun(main)


def test_all_channels_together_stay_within_the_bots_global_budget() -> None:
    async def main() -> None:
        registry = PacerRegistry(clock=now, requests_per_second=12)
        channels = [FakeChannel() for _ in range(8)]
        results = await asyncio.gather(
            *(
                render(
                    even_script(prose(1500, k), 60, 6.0), channels[k], channel_pacer=registry.get(k)
                )
                for k in range(8)
            )
        )
        every = [w.t for ch in channels for w in ch.writes] + [
            t for ch in channels for t in ch.typing
        ]
        # what Discord allows the bot, all routes, in any second (wherever its windows begin)
        assert max_in_window(every, 1.0) <= 12
        for channel, result in zip(channels, results, strict=True):
            check_final(channel, result)
            assert channel.max_per_window()["send"] <= 5 and channel.max_per_window()["edit"] <= 5
            assert channel.refused_429 == 0

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


def test_buttons_ride_on_the_last_messages_writes_and_cost_no_write_of_their_own() -> None:
    stop, again = Button("Stop", action="stop"), Button("Again", action="again")
    text = prose(5_000, 3)

    async def run(buttons: Any) -> tuple[FakeChannel, RenderResult]:
        channel = FakeChannel()
        return channel, await render(even_script(text, 50, 10.0), channel, buttons=buttons)

    async def main() -> None:
        asked: list[bool] = []

        def buttons(live: bool) -> tuple[Button, ...]:
            asked.append(live)
            return (stop,) if live else (again,)

        channel, result = await run(buttons)
        plain, plain_result = await run(None)
        assert [(w.kind, w.content) for w in channel.writes] == [
            (w.kind, w.content) for w in plain.writes
        ], "buttons changed what was written"
        assert sorted(asked) == [False, True], "each set is asked for once"
        check_final(channel, result)
        ids = result.message_ids
        assert len(ids) >= 3
        sends = {w.message_id: i for i, w in enumerate(channel.writes) if w.kind == "send"}
        for i, w in enumerate(channel.writes):
            final = w.content == result.contents[ids.index(w.message_id)]
            newest = max(m for m, at in sends.items() if at <= i)
            if final and w.message_id == ids[-1]:
                assert w.buttons == (again,)  # the last message's final write
            elif w.message_id == newest and not final:
                assert w.buttons == (stop,)  # the live message while the text streams
            else:
                assert w.buttons == ()  # an earlier message, done
        last = [w for w in channel.writes if w.message_id == ids[-1]][-1]
        assert last.buttons == (again,) and plain_result.contents == result.contents

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
    assert max(channel.max_per_window().values()) <= 5 and channel.refused_429 == 0
    if text.strip():
        assert result.state == "complete"
        assert result.pieces == split_pieces(text, limit)
        assert final_contents(channel, result) == split_message(text, limit)
        check_final(channel, result, limit)
        check_order(channel, result)
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
    check_order(channel, result)
    assert max(channel.max_per_window().values()) <= 5 and channel.refused_429 == 0
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 6000) | st.integers(2100, 6000), min_size=1, max_size=3),
    seconds=st.sampled_from([0.5, 3.0, 8.0]),
    faults=st.lists(
        st.tuples(
            st.sampled_from(["send", "edit"]),
            st.integers(1, 5),
            st.sampled_from(["reset", "429"]),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_concurrent_replies_with_failing_writes_end_exact_within_both_budgets(
    lengths: list[int], seconds: float, faults: list[tuple[str, int, str]]
) -> None:
    # every reply's sink fails some of its sends and edits (never twice in a row, so no reply
    # gives up); the channel's real buckets must never refuse a write
    failing = {(kind, 2 * n): how for kind, n, how in faults}
    fired: list[str] = []

    def fault_for() -> Callable[[str, int], BaseException | None]:
        seen = {"send": 0, "edit": 0}

        def fault(kind: str, _: int) -> BaseException | None:
            seen[kind] += 1
            how = failing.get((kind, seen[kind]))
            if how is None:
                return None
            fired.append(f"{kind} {how}")
            return ConnectionResetError("reset") if how == "reset" else SinkRateLimited(0.7)

        return fault

    texts = [prose(n, seed) for seed, n in enumerate(lengths)]

    async def main() -> tuple[list[RenderResult], FakeChannel]:
        channel, shared = FakeChannel(), pacer()

        async def one(k: int) -> RenderResult:
            await asyncio.sleep(0.2 * k)
            script = even_script(texts[k], max(1, len(texts[k]) // 40), seconds)
            return await render(script, channel, channel_pacer=shared, fault=fault_for(), reply=k)

        return list(await asyncio.gather(*(one(k) for k in range(len(texts))))), channel

    results, channel = vrun(main)
    assert channel.refused_429 == 0 and max(channel.max_per_window().values()) <= 5
    assert not channel.violations
    for k, result in enumerate(results):
        assert result.state == "complete", result.error
        assert result.text == texts[k]
        assert final_contents(channel, result) == split_message(texts[k])
        check_final(channel, result)
        sends = [w.message_id for w in channel.writes if w.kind == "send" and w.reply == k]
        assert sends == result.message_ids  # sent in order, none twice
    assert sum(r.rate_limited for r in results) == sum(f.endswith("429") for f in fired)
    event(f"faults fired: {min(len(fired), 4)}{'+' if len(fired) > 4 else ''}")
    for f in set(fired):
        event(f)


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


def nth(kind: str, n: int, error: BaseException) -> Callable[[str, int], BaseException | None]:
    """A fault that fails the ``n``-th write of ``kind`` (counting from 1) with ``error``."""
    seen = {"send": 0, "edit": 0}

    def fault(k: str, _: int) -> BaseException | None:
        seen[k] += 1
        return error if k == kind and seen[k] == n else None

    return fault


def test_an_edit_429_slows_the_edits_and_loses_nothing() -> None:
    async def main() -> None:
        channel = FakeChannel(bucket=None)
        shared = pacer()
        text = prose(1500)
        script = even_script(text, 50, 6.0)
        result = await render(
            script, channel, channel_pacer=shared, fault=nth("edit", 3, SinkRateLimited(2.0))
        )
        assert result.rate_limited == 1
        assert (shared.edits.rate_limited, shared.sends.rate_limited) == (1, 0)
        assert result.state == "complete"
        assert final_contents(channel, result) == [text]
        times, step = channel.times("edit"), 6.0 / 49
        # two edits (the first with the second chunk), then the refused third, then nothing
        # until the retry_after passed
        assert times[:2] == pytest.approx([step, step + PROGRESS])
        assert times[2] >= step + 2 * PROGRESS + 2.0
        gaps = [b - a for a, b in itertools.pairwise(times[2:])]
        assert all(g >= 2 * 1.05 - 1e-9 for g in gaps)  # slower for a while afterwards
        assert shared.sends.interval() == pytest.approx(1.05)  # the other bucket was not hit

    vrun(main)


def test_a_send_429_slows_the_sends_and_loses_nothing() -> None:
    async def main() -> None:
        channel = FakeChannel(bucket=None)
        shared = pacer()
        text = prose(9000, 2)
        script = even_script(text, 90, 4.5)
        refuse = nth("send", 2, SinkRateLimited(3.0))
        refused: list[float] = []

        def fault(kind: str, n: int) -> BaseException | None:
            error = refuse(kind, n)
            if error is not None:
                refused.append(now())
            return error

        result = await render(script, channel, channel_pacer=shared, fault=fault)
        assert result.rate_limited == 1
        assert (shared.sends.rate_limited, shared.edits.rate_limited) == (1, 0)
        assert result.state == "complete"
        assert final_contents(channel, result) == split_message(text)
        check_final(channel, result)
        check_order(channel, result)
        sends = channel.times("send")
        # the second send went out with the first message's final edit and was refused; the
        # retry waited for the retry_after, and from then on the sends were spread (no burst),
        # at a doubled interval
        assert len(refused) == 1
        assert any(w.kind == "edit" and w.t == refused[0] for w in channel.writes)
        assert sends[1] >= refused[0] + 3.0
        assert len(sends) >= 4
        assert all(b - a >= 2 * 1.05 - 1e-9 for a, b in itertools.pairwise(sends[1:]))
        edits = channel.times("edit")
        assert all(b - a == pytest.approx(1.05) for a, b in itertools.pairwise(edits[:4]))
        assert shared.edits.interval() == pytest.approx(1.05)

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
        assert [w.kind for w in channel.writes] == ["send", "edit", "edit"]
        assert all(w.landed < 1.5 for w in channel.writes)  # the next edit found it gone
        # stopped reading at once: when the next edit (one progress interval on) found it gone
        assert probe.closed_at is not None and probe.closed_at < 1.5 + PROGRESS + 0.2
        assert result.text == "".join(probe.yielded)

    vrun(main)


def test_a_reply_that_stops_writing_gives_up_its_place_in_the_queue() -> None:
    async def main() -> None:
        channel = FakeChannel()
        shared = ChannelPacer(5, 5.0, send_burst=1, clock=now)  # sends spread: a queue forms
        hog_times: list[float] = []

        async def hog() -> None:  # another reply's sends, one after the other
            await asyncio.sleep(0.5)
            for _ in range(5):
                await shared.sends.acquire()
                hog_times.append(now())

        async def delete_first() -> None:
            await sleep_until(1.5)
            channel.messages.pop(min(channel.messages))

        tasks = [asyncio.create_task(hog()), asyncio.create_task(delete_first())]
        text = prose(3000, 4)
        # (still streaming at 2.2 s: a reply whose text has ended would go first, see
        # test_replies_that_end_go_before_progress_of_those_still_streaming)
        result = await render(even_script(text, 40, 2.5), channel, channel_pacer=shared)
        # the old message's final edit (at about 1.67) found it deleted while the next
        # message's send waited for a slot behind the other reply's: the reply ended at once
        assert result.state == "gone"
        assert result.total_time == pytest.approx(1.717, abs=0.01)
        await asyncio.gather(*tasks)
        assert [w.kind for w in channel.writes] == ["send", "edit"]
        # the slot the reply was waiting for went to the other reply, not to waste
        assert hog_times == pytest.approx([1.05, 2.1, 3.15, 4.2, 5.25])
        assert shared.sends.writes == 1 + 5

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


def test_budget_spreads_writes_and_serves_the_longest_waiting_first() -> None:
    async def main() -> None:
        b = WriteBudget(5, 5.0, clock=now)
        order: list[tuple[str, float]] = []

        async def writer(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            await b.acquire()
            order.append((name, now()))

        await asyncio.gather(writer("a", 0.0), writer("b", 0.01), writer("c", 0.02))
        await asyncio.gather(writer("c", 0.0), writer("a", 0.001))
        assert [n for n, _ in order] == ["a", "b", "c", "c", "a"]
        assert [t for _, t in order] == pytest.approx([0.0, 1.05, 2.1, 3.15, 4.2])
        assert b.writes == 5

    vrun(main)


def test_budget_never_exceeds_its_limit_in_any_window() -> None:
    async def main() -> None:
        b = WriteBudget(3, 2.0, clock=now, margin=0.0)
        times = []
        for _ in range(12):
            await b.acquire()
            times.append(now())
        assert max_in_window(times, 2.0) <= 3

    vrun(main)


def test_a_burst_budget_lets_writes_go_at_once_but_never_exceeds_its_window() -> None:
    async def main() -> None:
        for burst in (4, 5):
            b = WriteBudget(5, 5.0, burst=burst, clock=now)
            start = now()
            times = []
            for _ in range(11):
                await b.acquire()
                times.append(now() - start)
            # Discord's fixed windows: 5 at once, the next 5 once the window (and the margin
            # of doubt at its edge) has passed
            assert times == pytest.approx([0.0] * 5 + [5.25] * 5 + [10.5])
            assert max_in_fixed_windows(times, 5.0) == 5
            assert all(t <= k * 1.05 + 1e-9 for k, t in enumerate(times))  # never later than even
            await asyncio.sleep(60)

    vrun(main)


def test_a_write_that_says_when_its_response_came_holds_the_next_until_its_window_ends() -> None:
    """A reaction (one per 0.25 s): the first one's response takes 0.2 s, so Discord may have
    opened its window as late as then; the next waits until that window has surely ended,
    where a write that says nothing of its response would go 0.26 s after the first began."""

    async def main() -> None:
        pacer = ChannelPacer(clock=now)
        starts: list[float] = []
        for transit in (0.2, 0.0, 0.0):
            async with pacer.reactions.write():
                starts.append(now())
                await asyncio.sleep(transit)
        assert starts == pytest.approx([0.0, 0.45, 0.7125])

    vrun(main)


def test_a_reaction_teaches_the_global_budget_nothing_of_its_transit() -> None:
    """discord.py holds each reaction until the reset of the one before (one a window), so
    its time to a response is not the way to Discord: taken as such by the bot's global budget,
    it held every other channel's writes as if they might land in a window about to end."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=45, clock=now)
        assert pacers.requests is not None
        before = pacers.requests.transit
        async with pacers.get(1).reactions.write():
            await asyncio.sleep(0.3)  # discord.py waits for the reaction bucket's reset
        assert pacers.requests.transit == before

    vrun(main)


def test_a_typing_indicator_teaches_the_global_budget_its_transit() -> None:
    """The typing indicator takes a slot of the bot's global budget and tells when its
    response came: one that reached a lagging Discord late holds the global windows as a late
    write does. (Untold, 37 of them once reached the fake at once, with the creates after them
    in the same second: a global 429.)"""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=45, clock=now)
        assert pacers.requests is not None
        wait, slot = pacers.get(1).typing(8.0)
        assert wait == 0 and slot is not None
        await asyncio.sleep(0.3)
        slot.done()
        assert pacers.requests.transit == pytest.approx(0.3)
        wait, slot = pacers.get(1).typing(8.0)  # the channel shows it already
        assert wait == pytest.approx(7.7) and slot is None

    vrun(main)


def test_a_write_waiting_for_the_global_budget_leaves_its_channel_free() -> None:
    """A channel's write takes its channel slot only once the bot's global budget has one free
    too: granted before, it would count as in flight in discord.py's view of the channel (holding
    the channel's other route) while it waited. Waiting so, it still keeps the optional typing
    indicator from taking the global slot that frees first."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=1, clock=now)
        busy, quiet = pacers.get(1), pacers.get(2)
        first = await busy.sends.slot(final=True)  # the one global slot of this second
        first.done()
        held = asyncio.create_task(quiet.sends.slot(final=True))
        await asyncio.sleep(0.5)
        assert not held.done() and quiet.client._in_flight == []  # not granted: not in flight
        assert pacers.requests is not None and pacers.requests.busy  # so optional requests
        # (typing, progress edits) give way to it when a global slot frees
        slot = await held
        assert now() == pytest.approx(1.05)  # the global window (and its margin) ended
        assert quiet.client._in_flight == [slot]
        slot.done()

    vrun(main)


def test_a_write_due_before_its_window_ends_takes_the_first_global_slot_free() -> None:
    """Writes held by the bot's global budget: the one that would empty its channel's window
    (it goes near the window's end, or it misses it) takes the first slot that frees, before
    a write of another channel that asked earlier."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=2, clock=now)
        ending, other = pacers.get(1), pacers.get(2)
        for at in (0.0, 0.0, 1.05, 1.5):  # four creates in the window, each with a global slot
            await sleep_until(at)
            (await ending.sends.slot(final=True)).done()
        await sleep_until(1.6)
        first = asyncio.create_task(other.sends.slot(final=True))
        await sleep_until(1.7)
        fifth = asyncio.create_task(ending.sends.slot(final=True))
        done, _ = await asyncio.wait([first, fifth], return_when=asyncio.FIRST_COMPLETED)
        assert done == {fifth} and now() == pytest.approx(2.1)
        (await fifth).done()
        (await first).done()
        assert now() == pytest.approx(2.55)

    vrun(main)


async def fifth_create_waiting(pacer: ChannelPacer) -> asyncio.Task[Slot]:
    """A channel with a reply streaming and four creates in its window (which ends at 5 s):
    its fifth create, waiting for the window's end (it goes at 4.5 s)."""
    pacer.follow(lambda: True)
    for at in (0.0, 0.0, 0.0, 1.05):
        await sleep_until(at)
        (await pacer.sends.slot(final=True)).done()
    return asyncio.create_task(pacer.sends.slot(final=True))


def test_a_write_due_before_its_window_ends_keeps_a_global_slot_for_itself() -> None:
    """A channel's write that empties its window waits for the window's end (a live reply may
    need its last edit meanwhile) and then has the window's last moments to go. From a global
    window before, other channels' writes leave it a slot of the bot's global budget: taken,
    it would have gone after its window ended, its slot lost."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=3, clock=now)
        ending, other = pacers.get(1), pacers.get(2)
        fifth = await fifth_create_waiting(ending)
        await sleep_until(4.3)
        starts = []
        for _ in range(3):
            (await other.sends.slot(final=True)).done()
            starts.append(now())
            if len(starts) == 2:
                assert not fifth.done()
        slot = await fifth
        slot.done()
        assert slot.started == pytest.approx(4.5)  # at its window's end (less 0.5 s)
        assert starts == pytest.approx([4.3, 4.3, 5.35])  # the third after the fifth
        assert ending.sends.writes == 5 and ending.sends._windows[0][1] == 5

    vrun(main)


def test_signs_go_around_a_global_slot_kept_for_a_write_due() -> None:
    """The global slot kept for a write due does not hold back optional requests (⏳ signs,
    typing) while others are free: counted as busy, 10 channels' writes due kept the ⏳ of
    their queued questions away for up to 20 s."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=3, clock=now)
        ending, other = pacers.get(1), pacers.get(2)
        fifth = await fifth_create_waiting(ending)
        await sleep_until(4.2)  # it is due at 4.5
        async with other.reactions.write():
            assert now() == pytest.approx(4.2)
        (await fifth).done()
        assert now() == pytest.approx(4.5)

    vrun(main)


def test_writes_held_by_the_global_budget_wait_in_line_without_looking() -> None:
    """Writes held until the bot's global budget has a slot free go in the order they came,
    and only the first of them looks again when one frees: with each of them looking, 50 busy
    channels made the pacer's work 17 times what it was (500x50, caps lifted)."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=1, clock=now)
        assert pacers.requests is not None
        looks = 0
        delay = pacers.requests.delay

        def counted(*args: Any, **kwargs: Any) -> float:
            nonlocal looks
            looks += 1
            return delay(*args, **kwargs)

        pacers.requests.delay = counted  # type: ignore[method-assign]
        (await pacers.get(0).sends.slot(final=True)).done()
        order: list[int] = []

        async def create(channel: int) -> None:
            await asyncio.sleep(0.1 + channel / 100)
            (await pacers.get(channel).sends.slot(final=True)).done()
            order.append(channel)

        await asyncio.gather(*(create(c) for c in range(1, 11)))
        assert order == list(range(1, 11)) and now() == pytest.approx(10.5)
        assert looks <= 6 * 10  # 77 when each looked

    vrun(main)


def test_a_quiet_channel_goes_first_among_writes_held_by_the_global_budget() -> None:
    """Of the writes held until the bot's global budget has a slot free, the one of the
    channel that wrote least recently goes first: a question in a quiet channel does not wait
    behind every busy channel (1.1 s at 500x50 with caps lifted, 0.18 s so)."""

    async def main() -> None:
        pacers = PacerRegistry(requests_per_second=1, clock=now)
        busy, quiet = pacers.get(1), pacers.get(2)
        (await busy.sends.slot(final=True)).done()
        starts: dict[str, float] = {}

        async def create(name: str, pacer: ChannelPacer, at: float) -> None:
            await asyncio.sleep(at)
            (await pacer.sends.slot(final=True)).done()
            starts[name] = now()

        await asyncio.gather(create("busy", busy, 0.1), create("quiet", quiet, 0.2))
        assert starts == pytest.approx({"quiet": 1.05, "busy": 2.1})

    vrun(main)


def test_a_write_near_a_window_edge_waits_until_the_window_has_surely_ended() -> None:
    async def main() -> None:
        b = WriteBudget(5, 5.0, burst=5, clock=now)  # windows of 5 s, 0.25 s of doubt
        for _ in range(4):
            await b.acquire()
        await sleep_until(4.9)  # it could land in the first window or open the next one
        await b.acquire()
        assert now() == pytest.approx(5.25)  # so it waits until the first has surely ended
        times = []
        for _ in range(5):
            await b.acquire()
            times.append(now())
        # it opened the next window: four more fit at once, the fifth once that one has ended
        assert times == pytest.approx([5.25] * 4 + [10.5])

    vrun(main)


def test_a_window_opened_by_a_write_that_never_arrived_may_open_later() -> None:
    async def main() -> None:
        b = ChannelPacer(5, 5.0, clock=now).sends
        slot = await b.slot()
        slot.done(reached=False)  # a network error: Discord may never have counted it
        await sleep_until(1.0)
        times = []
        for _ in range(5):
            s = await b.slot()
            times.append(now())
            s.done()
        # the failed write may have counted (four more fit), and the window may have opened
        # only with the next write, at 1.0: it is full until 5 s after that write's response
        assert times == pytest.approx([1.0] * 4 + [6.0])

    vrun(main)


def test_a_burst_budget_serves_the_longest_waiting_first() -> None:
    async def main() -> None:
        b = WriteBudget(5, 5.0, burst=4, clock=now)
        order: list[tuple[str, float]] = []

        async def writer(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            await b.acquire()
            order.append((name, now()))

        await asyncio.gather(*(writer(n, 0.01 * k) for k, n in enumerate("abcdefg")))
        assert order == [
            ("a", 0.0),
            ("b", 0.01),
            ("c", 0.02),
            ("d", 0.03),
            ("e", 0.04),
            ("f", pytest.approx(5.25)),
            ("g", pytest.approx(5.25)),
        ]

    vrun(main)


def test_a_burst_budget_after_a_429_pauses_then_spreads_then_bursts_again() -> None:
    async def main() -> None:
        b = WriteBudget(5, 5.0, burst=4, clock=now)
        await b.acquire()
        await b.acquire()
        assert now() == 0.0 and b.current_burst() == 4
        b.penalize(3.0)
        assert b.current_burst() == 1 and b.interval() == pytest.approx(2.1)
        times = []
        for _ in range(3):
            await b.acquire()
            times.append(now())
        # (the second waits at the first window's edge until it has surely ended, at 5.25)
        assert times == pytest.approx([3.05, 5.25, 5.25 + 2.1])
        await asyncio.sleep(30)
        assert b.current_burst() == 4
        start = now()
        for _ in range(4):
            await b.acquire()
        assert now() == start

    vrun(main)


def test_budget_penalty_pauses_then_slows_then_recovers() -> None:
    async def main() -> None:
        b = WriteBudget(5, 5.0, clock=now)
        await b.acquire()
        b.penalize(3.0)
        assert b.interval() == pytest.approx(2.1)
        await b.acquire()
        assert now() == pytest.approx(3.05)
        await b.acquire()
        assert now() == pytest.approx(5.25)  # 3.05 + 2.1, at the window's edge: once it ended
        await asyncio.sleep(30)
        assert b.interval() == pytest.approx(1.05)

    vrun(main)


def test_a_channel_has_one_budget_for_sends_and_one_for_edits() -> None:
    async def main() -> None:
        p = pacer()
        assert p.budget("send") is p.sends and p.budget("edit") is p.edits
        assert p.sends is not p.edits
        started: dict[str, list[float]] = {"send": [], "edit": []}

        async def writer(kind: Literal["send", "edit"], n: int) -> None:
            for _ in range(n):
                await p.budget(kind).acquire()
                started[kind].append(now())

        await asyncio.gather(writer("send", 6), writer("edit", 6))
        # sends at once until the window is full; the 5th empties it, and as discord.py then
        # holds every message write of the channel (one bucket hash for both routes) until
        # the reset, the edits start once the sends' window has ended, then spread evenly
        assert started == {
            "send": pytest.approx([0.0] * 5 + [5.25]),
            "edit": pytest.approx([5.25 + k * 1.05 for k in range(6)]),
        }
        assert (p.sends.burst, p.edits.burst) == (4, 1)
        assert p.writes == 12
        p.sends.penalize(2.0)  # a 429 on one route slows that route only
        assert (p.sends.interval(), p.edits.interval()) == pytest.approx((2.1, 1.05))
        assert p.rate_limited == 1

        custom = ChannelPacer(5, 5.0, max_sends=2, send_window=4.0, clock=now)
        assert (custom.sends.max_writes, custom.sends.window) == (2, 4.0)
        assert (custom.edits.max_writes, custom.edits.window) == (5, 5.0)

    vrun(main)


def test_registry_forgets_idle_channels_but_never_a_pacer_in_use() -> None:
    async def main() -> None:
        registry = PacerRegistry(clock=now, idle_ttl=60)
        held = registry.get(1)
        await held.edits.acquire()
        registry.get(2)
        await asyncio.sleep(120)
        registry.prune()
        assert len(registry) == 0
        assert registry.get(1) is held  # still referenced by a reply: the same budgets
        await held.edits.acquire()
        assert now() == 120

    vrun(main)


def test_registry_gives_every_channel_both_budgets() -> None:
    registry = PacerRegistry(4, 8.0)  # as bot/app.py calls it: edits per window, window
    p = registry.get(7)
    assert (p.edits.max_writes, p.edits.window) == (p.sends.max_writes, p.sends.window) == (4, 8.0)
    assert (p.edits.burst, p.sends.burst) == (1, 3)  # sends in bursts, one short of the bucket
    p = PacerRegistry(4, 8.0, max_sends=3, send_window=6.0).get(7)
    assert (p.edits.max_writes, p.edits.window, p.sends.max_writes, p.sends.window) == (
        4,
        8.0,
        3,
        6.0,
    )
    assert p.sends.burst == 2
    assert PacerRegistry(4, 8.0, send_burst=4).get(7).sends.burst == 4
    assert PacerRegistry(1, 1.0).get(7).sends.burst == 1


def test_a_write_that_hangs_is_timed_out_and_retried() -> None:
    async def main() -> None:
        channel = FakeChannel()
        sink = FakeSink(channel)
        hung = asyncio.Event()

        async def edit(message_id: int, text: str, buttons: Buttons = ()) -> None:
            if not hung.is_set():
                hung.set()
                await asyncio.sleep(3600)
            await FakeSink.edit(sink, message_id, text, buttons)

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
        # the edit of "b" (at 0.2) timed out after 10 s and was retried after the backoff
        assert result.total_time == pytest.approx(0.2 + 10.0 + 0.5 + channel.latency)

    vrun(main)


def test_pacer_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        ChannelPacer(0, 5.0)
    with pytest.raises(ValueError):
        ChannelPacer(5, 5.0, max_sends=0)
    with pytest.raises(ValueError):
        WriteBudget(5, -1.0)
    with pytest.raises(ValueError):
        WriteBudget(5, 5.0, burst=0)
    with pytest.raises(ValueError):
        WriteBudget(5, 5.0, burst=6)
    with pytest.raises(ValueError):
        ChannelPacer(5, 5.0, max_sends=3, send_burst=4)
    with pytest.raises(ValueError):
        PacerRegistry(5, 5.0, send_burst=0)
    with pytest.raises(ValueError):
        PacerRegistry(5, 5.0, send_window=0.0)
    with pytest.raises(ValueError):
        PacerRegistry(5, 0.0)


def test_end_notice_is_added_to_a_complete_reply_only() -> None:
    async def main() -> None:
        channel = FakeChannel()
        asked: list[int] = []

        def note() -> str:
            asked.append(1)
            return "-# ✂ cut short"

        result = await render([(0.0, "Hello "), (0.1, "world")], channel, end_notice=note)
        assert result.state == "complete" and result.text == "Hello world"
        assert final_contents(channel, result) == ["Hello world\n\n-# ✂ cut short"]
        assert result.notice == "-# ✂ cut short" and asked == [1]

        quiet = FakeChannel()
        result = await render([(0.0, "Hi")], quiet, end_notice=lambda: None)
        assert final_contents(quiet, result) == ["Hi"] and result.notice is None

        failed = FakeChannel()
        result = await render([(0.0, "Hi"), (0.1, ModelError("⚠ broke"))], failed, end_notice=note)
        assert final_contents(failed, result) == ["Hi\n\n⚠ broke"]

    vrun(main)


def test_a_channel_keeps_one_edit_slot_per_reply_still_to_be_final() -> None:
    async def main() -> None:
        channel, shared = FakeChannel(), pacer()
        seen: list[int] = []

        async def watch() -> None:
            for _ in range(40):
                seen.append(shared.live)
                await asyncio.sleep(0.25)

        stop = CancelToken()

        async def stopper() -> None:
            await sleep_until(2.0)
            stop.cancel()

        watcher = asyncio.create_task(watch())
        stopping = asyncio.create_task(stopper())
        results = await asyncio.gather(
            render(even_script(prose(900, 1), 30, 6.0), channel, channel_pacer=shared, reply=0),
            render(
                even_script(prose(900, 2), 30, 6.0),
                channel,
                channel_pacer=shared,
                cancel=stop,
                reply=1,
            ),
        )
        await watcher
        await stopping
        assert [r.state for r in results] == ["complete", "stopped"]
        # both counted once their first message is out, the stopped one no longer after its
        # stop, neither once done; progress never took the slots kept for their last edits
        assert max(seen) == 2 and seen[-1] == 0 and shared.live == 0
        assert seen[4:8] == [2, 2, 2, 2]
        assert 1 in seen[9:]
        edits_in_first_window = [t for t in channel.times("edit") if t < 5.0]
        assert len(edits_in_first_window) <= 5 - 2 + 1  # 3 of progress, then the stopped one


def test_a_status_line_shows_until_the_answer_replaces_it() -> None:
    async def main() -> None:
        channel = FakeChannel()
        script = [
            (0.5, Status("-# 💭 Planning…")),
            (2.0, Status("-# 💭 Comparing the two approaches…")),
            (9.5, "The answer"),
            (0.5, " is 42."),
        ]
        result = await render(script, channel)
        shown = [w.content for w in channel.writes]
        assert shown[0] == "-# 💭 Planning…"
        assert "-# 💭 Comparing the two approaches…" in shown
        assert shown.index("-# 💭 Comparing the two approaches…") < shown.index("The answer" + MARK)
        assert result.state == "complete" and result.text == "The answer is 42."
        assert final_contents(channel, result) == ["The answer is 42."]
        assert len(result.message_ids) == 1
        # The typing indicator stays while only the status line shows (Discord clears it
        # when the bot posts, so it is shown again right after the status line's send).
        assert channel.typing == [0.0, pytest.approx(0.55), pytest.approx(8.55)]
        # First *text* visible: the answer, not the status line.
        assert result.first_visible_latency is not None
        assert result.first_visible_latency >= 12.0
        check_final(channel, result)

    vrun(main)


def test_a_status_line_alone_ends_as_an_empty_reply_or_a_stop() -> None:
    async def main() -> None:
        channel = FakeChannel()
        result = await render([(0.1, Status("-# 💭 Thinking…")), (1.0, "")], channel)
        assert result.state == "empty"
        assert final_contents(channel, result) == [STYLE.empty]

        token = CancelToken()
        stopped = FakeChannel()

        async def stop_later() -> None:
            await asyncio.sleep(2.0)
            token.cancel()

        task = asyncio.create_task(stop_later())
        result = await render(
            [(0.1, Status("-# 💭 Thinking…")), (10.0, "late")], stopped, cancel=token
        )
        await task
        assert result.state == "stopped"
        assert final_contents(stopped, result) == [STYLE.stopped_before_text]

    vrun(main)


def test_decorate_changes_the_final_text_of_every_message() -> None:
    async def main() -> None:
        channel = FakeChannel()
        text = prose(3000, seed=3)
        marked = text[:100] + "[1]" + text[100:2900] + "[2]" + text[2900:]
        result = await render(even_script(text, 30, 6.0), channel, decorate=lambda t: marked)
        assert result.text == text
        contents = final_contents(channel, result)
        assert "".join(p.render(marked) for p in result.pieces) == "".join(contents)
        assert "[1]" in contents[0] and "[2]" in contents[-1]
        assert not channel.violations
        # Each message is final once, the earlier ones edited again for the markers at the end.
        assert max(channel.max_per_window().values()) <= 5

        plain = FakeChannel()
        result = await render(
            [(0.0, "Hi"), (0.1, ModelError("⚠ broke"))], plain, decorate=lambda t: t + "[1]"
        )
        assert final_contents(plain, result) == ["Hi\n\n⚠ broke"]

    vrun(main)
