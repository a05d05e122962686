"""The reply renderer: streams model text into chat messages, paced per channel.

Knows nothing of discord.py: it writes through a :class:`MessageSink` (send / edit / typing),
which a Discord adapter, a console or a test implements.

How a reply is shown:

- Until the first non-blank text, the typing indicator (re-triggered every ~8 s), and the
  latest :class:`Status` line the stream gave, if any (what the model is doing: thinking,
  searching), shown live in the first message until the answer's text replaces it (a
  :class:`StatusSink` shows it apart instead).
- The first message is sent as soon as that text arrives (when the channel's budget allows),
  then edited as more text comes, with a live marker (``▌``) at the end.
- Writes go through the channel's :class:`ChannelPacer`, shared by every reply streaming in that
  channel (see :mod:`bot.pacing`). Like Discord, it keeps two budgets, one for sends (message
  creates) and one for edits, each at most ``max_writes`` in each of Discord's fixed windows,
  its slots reserved when a write starts and handed to the longest-waiting reply first, a
  reply's last text (final) before a message's last text (closing) before progress. Progress
  edits are spread evenly and never push the channel's last final into a later window; sends
  and final writes go as soon as the window has room and discord.py will let them through at
  once.
  Each write carries the latest text at the moment its slot comes up; text that arrives in
  between is buffered, never dropped, and nothing is written when nothing visible changed.
- A reply writes its sends and its edits in two lanes, each one write at a time. A new message is
  sent only when every earlier message shows its final content or has its final edit in flight,
  so at a message break the old message's final edit and the new message's send go out together
  (each from its own budget) or one response apart, and no text shows twice for longer.
- A message is finished at 2,000 characters (see :mod:`bot.splitting`: paragraph, line, then
  word boundaries; code blocks closed and reopened) and the text continues in a new message.
- The final write of each message removes the marker. A stopped reply keeps its text and ends
  with a short "stopped" line, a failed one with the error's ``user_message``, and a reply with
  no text at all says so: no message is ever blank.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from bot.cancel import CancelToken
from bot.pacing import ChannelPacer, Clock, Sleep, WriteKind
from bot.splitting import (
    CLOSED,
    LIMIT,
    MIN_LIMIT,
    Fence,
    Piece,
    commit_pieces,
    live_view,
    split_pieces,
)

__all__ = [
    "DEFAULT_STYLE",
    "Button",
    "Buttons",
    "MessageSink",
    "RenderResult",
    "RenderStyle",
    "SinkMessageGone",
    "SinkRateLimited",
    "Status",
    "StatusSink",
    "plain_status",
    "render_stream",
]

log = logging.getLogger(__name__)

State = Literal["complete", "stopped", "failed", "empty", "gone"]


# --- the sink ----------------------------------------------------------------------------------


class SinkRateLimited(Exception):
    """The platform answered 429; ``retry_after`` is how long it asked us to wait, in seconds."""

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = max(0.0, float(retry_after))
        super().__init__(message or f"rate limited; retry after {self.retry_after:.3f} s")


class SinkMessageGone(Exception):
    """The message being edited no longer exists (someone deleted it)."""


@dataclass(frozen=True)
class Button:
    """A button under a reply: an action the bot handles (its custom id), or a link."""

    label: str
    action: str = ""
    url: str = ""
    emoji: str = ""


Buttons = tuple[Button, ...]


class MessageSink(Protocol):
    """Where a reply is written: a Discord channel, an interaction, a console, a test."""

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        """Post a new message (the first one replies to the question); return its id."""
        ...

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        """Replace the content (and the buttons) of a message sent earlier."""
        ...

    async def typing(self) -> None:
        """Show the typing indicator once (it lasts about 10 s on Discord)."""
        ...


_ESCAPED = re.compile(r"\\([*_~|`>\[\]\\])")
"""Markdown escaped for Discord."""


def plain_status(line: str) -> str:
    """A status line as plain text: without Discord's small-text prefix and escapes."""
    return _ESCAPED.sub(r"\1", line.removeprefix("-# "))


@runtime_checkable
class StatusSink(Protocol):
    """A sink that shows the live :class:`Status` line apart from the reply (a web page's
    status), so the renderer never writes it as message text."""

    def show_status(self, line: str) -> None:
        """Show this status line now; it must not block (schedule any write)."""
        ...


# --- what the renderer shows and returns ----------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """A live-only line the stream may yield between text chunks (say, "-# 💭 Planning…"):
    shown while the reply has no text yet, never part of the text or the final messages."""

    line: str


@dataclass(frozen=True)
class RenderStyle:
    """The marker and notices the renderer adds to a reply."""

    live_marker: str = " ▌"
    separator: str = "\n\n"
    """Between the reply's text and a notice appended to it."""
    stopped: str = "-# ⏹ stopped"
    stopped_before_text: str = "-# ⏹ stopped before any text"
    interrupted: str = "-# ↻ interrupted by a restart"
    """A reply stopped because the bot is shutting down (its token's reason is "restart")."""
    generic_failure: str = "⚠ Something went wrong while answering."
    empty: str = "⚠ The model returned no text."
    max_notice: int = 300

    def failure(self, error: BaseException | None, limit: int = LIMIT) -> str:
        """The notice for a failed reply: the error's ``user_message``, or a generic one."""
        message = getattr(error, "user_message", None)
        if not isinstance(message, str) or not message.strip():
            return self.generic_failure
        message = " ".join(message.split()).replace("`", "'")  # one line, no code fences
        longest = min(self.max_notice, limit)
        if len(message) > longest:
            message = message[: longest - 1].rstrip() + "…"
        return message


DEFAULT_STYLE = RenderStyle()


@dataclass
class RenderResult:
    """How a reply ended, where it is, and how it went."""

    state: State
    text: str
    """The model's full text as received (exact)."""
    message_ids: list[int]
    error: BaseException | None
    first_chunk_latency: float | None
    """Seconds from the start to the first chunk."""
    first_visible_latency: float | None
    """Seconds from the start until the first model text was visible (its send returned)."""
    total_time: float
    chunks: int
    edits: int
    sends: int
    rate_limited: int
    """429s the sink reported while writing this reply."""
    contents: list[str] = field(default_factory=list)
    """The last content written to each message."""
    pieces: list[Piece] = field(default_factory=list)
    """Which span of ``text`` (of the decorated text, if ``decorate`` changed it), and which
    repairs, each final message holds."""
    notice: str | None = None
    """The stopped / failed / empty notice shown, if any."""
    max_lag: float | None = None
    """Longest time any text took from arriving to being visible."""
    final_lag: float | None = None
    """Seconds from the end of the stream (or the stop) until the final state was visible."""


@dataclass
class _Message:
    id: int
    content: str
    start: int  # the span of the text it shows
    end: int


@dataclass
class _Write:
    index: int
    content: str
    start: int
    end: int
    buttons: Buttons = ()


# --- the renderer ------------------------------------------------------------------------------


async def render_stream(
    chunks: AsyncIterable[str | Status],
    sink: MessageSink,
    pacer: ChannelPacer,
    cancel: CancelToken,
    *,
    on_message: Callable[[int], object] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    style: RenderStyle = DEFAULT_STYLE,
    limit: int = LIMIT,
    typing_interval: float = 8.0,
    max_attempts: int = 3,
    retry_backoff: float = 0.5,
    max_rate_limits: int = 10,
    write_timeout: float | None = 60.0,
    end_notice: Callable[[], str | None] | None = None,
    decorate: Callable[[str], str] | None = None,
    buttons: Callable[[bool], Buttons] | None = None,
) -> RenderResult:
    """Stream ``chunks`` into ``sink`` until they end, fail, or ``cancel`` fires.

    ``chunks`` is iterated in a task of its own, which is cancelled the moment ``cancel`` fires
    or a message is deleted (that closes an async generator from within, releasing its HTTP
    connection). ``on_message(id)`` is called right after each new message is sent.
    Never raises for stream or sink errors (see :attr:`RenderResult.state` and ``error``);
    cancelling the task that runs this propagates as usual.

    Options: ``clock``/``sleep`` (for tests on virtual time; the pacer has its own), ``style``
    (markers and notices), ``limit`` (characters per message), ``typing_interval`` (seconds
    between typing triggers before the first text). A write that fails with anything but a 429
    or a deleted message, or takes longer than ``write_timeout``, is retried with the latest
    text after ``retry_backoff`` (doubling) up to ``max_attempts`` times in a row; a 429 slows
    the budget it hit (the channel's sends or its edits) and is retried, up to
    ``max_rate_limits`` in a row. Then the reply is "failed". Sends and edits count their
    failures separately. ``end_notice()``, asked once when a stream with text ends normally, may
    return a short line to add to a complete reply (say, that the answer hit its length limit).
    ``decorate(text)``, asked once too, may return the text a complete reply shows instead
    (say, with citation markers); earlier messages are then edited to match.
    ``buttons(live)`` gives the buttons of the reply's last message: asked once with True for
    its writes while the text streams, once with False for its final state (no write of its
    own: a message's final text always differs from its live text). Earlier messages have none.
    """
    renderer = _Renderer(
        chunks,
        sink,
        pacer,
        cancel,
        on_message=on_message,
        clock=clock,
        sleep=sleep,
        style=style,
        limit=limit,
        typing_interval=typing_interval,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        max_rate_limits=max_rate_limits,
        write_timeout=write_timeout,
        end_notice=end_notice,
        decorate=decorate,
        buttons=buttons,
    )
    return await renderer.run()


@dataclass(frozen=True)
class _End:
    """Why a reply ended before its text could simply be shown whole."""

    state: State
    error: BaseException | None
    halted: bool
    """Writing stopped too (a message was deleted, or the sink kept failing)."""


class _Renderer:
    def __init__(
        self,
        chunks: AsyncIterable[str | Status],
        sink: MessageSink,
        pacer: ChannelPacer,
        cancel: CancelToken,
        *,
        on_message: Callable[[int], object] | None,
        clock: Clock,
        sleep: Sleep,
        style: RenderStyle,
        limit: int,
        typing_interval: float,
        max_attempts: int,
        retry_backoff: float,
        max_rate_limits: int,
        write_timeout: float | None,
        end_notice: Callable[[], str | None] | None = None,
        decorate: Callable[[str], str] | None = None,
        buttons: Callable[[bool], Buttons] | None = None,
    ) -> None:
        if limit < MIN_LIMIT + len(style.live_marker):
            raise ValueError(f"limit {limit} is too small (at least {MIN_LIMIT} plus the marker)")
        for notice in (
            style.stopped,
            style.stopped_before_text,
            style.interrupted,
            style.generic_failure,
            style.empty,
        ):
            if not notice.strip() or len(notice) > min(limit, style.max_notice):
                raise ValueError(f"notice {notice!r} must be non-blank and fit in a message")
        self.chunks = chunks
        self.sink = sink
        self.pacer = pacer
        self.cancel = cancel
        self.on_message = on_message
        self.clock = clock
        self.sleep = sleep
        self.style = style
        self.limit = limit
        self.typing_interval = typing_interval
        self.max_attempts = max(1, max_attempts)
        self.retry_backoff = retry_backoff
        self.max_rate_limits = max(1, max_rate_limits)
        self.write_timeout = write_timeout
        self.end_notice = end_notice
        self.decorate = decorate
        self._status: str | None = None  # the live-only line shown until text arrives
        self.buttons = buttons
        self._buttons: dict[bool, Buttons] = {}  # live / final, each asked for once

        # text as received
        self._parts: list[str] = []
        self._len = 0
        self._has_text = False  # any non-whitespace yet
        self._arrivals: deque[tuple[int, float]] = deque()  # (end offset, time) per chunk
        self._chunks = 0
        self._t0 = 0.0
        self._t_first_chunk: float | None = None
        self._t_end: float | None = None  # when reading ended (end, error, or stop)

        # how reading goes: init → reading → closing → done
        self._phase: Literal["init", "reading", "closing", "done"] = "init"
        self._end: _End | None = None  # why the reply ended early, if it did (see _conclude)
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

        # layout: committed pieces are final whatever comes next
        self._committed: list[Piece] = []
        self._seg_start = 0
        self._seg_state: Fence = CLOSED
        self._final: tuple[list[Piece], list[str], str | None] | None = None

        # what is written: two lanes per reply, one for sends and one for edits
        self._messages: list[_Message] = []
        self._committed_contents: list[str] = []  # rendered self._committed (final, cached)
        self._editing: _Write | None = None  # the edit in flight
        self._writing: set[WriteKind] = set()  # lanes with a write in flight
        self._lanes: dict[WriteKind, asyncio.Task[None]] = {}
        self._typing: asyncio.Task[None] | None = None
        self._sends = 0
        self._edits = 0
        self._rate_limited = 0
        self._failures: dict[WriteKind, int] = {"send": 0, "edit": 0}
        self._consecutive_429: dict[WriteKind, int] = {"send": 0, "edit": 0}
        self._t_first_visible: float | None = None
        self._t_last_write: float | None = None
        self._max_lag: float | None = None
        self._warned_extra = False

    # -- text ----------------------------------------------------------------------------------

    def _text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def _add(self, chunk: str) -> None:
        now = self.clock()
        self._chunks += 1
        if self._t_first_chunk is None:
            self._t_first_chunk = now
        if not chunk:
            return
        self._parts.append(chunk)
        self._len += len(chunk)
        self._arrivals.append((self._len, now))
        if not self._has_text and not chunk.isspace():
            self._has_text = True
        self._changed()

    def _set_status(self, line: str) -> None:
        line = " ".join(line.split())[: self.limit - len(self.style.live_marker)]
        if isinstance(self.sink, StatusSink):  # shown apart: never a write of the reply's text
            if line and not self._has_text:
                self.sink.show_status(line)
            return
        if line and line != self._status:
            self._status = line
            if not self._has_text:
                self._changed()

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, it: AsyncIterator[str | Status]) -> None:
        not_ours: asyncio.CancelledError | None = None
        try:
            if self.cancel.cancelled:
                self._conclude("stopped")
            if self._end is None:
                self._phase = "reading"
                async for chunk in it:
                    if isinstance(chunk, str):
                        self._add(chunk)
                    elif isinstance(chunk, Status):
                        self._set_status(chunk.line)
                    elif chunk is not None:
                        raise TypeError(f"stream yielded {type(chunk).__name__}, not str")
                    if self.cancel.cancelled:
                        self._conclude("stopped")
                        break
        except asyncio.CancelledError as exc:
            if self._end is not None:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # we stopped reading on purpose; this task carries on
            else:
                not_ours = exc
        except Exception as exc:
            self._conclude("failed", exc)
        # The outcome is known: the final write need not wait for the stream to close.
        self._phase = "closing"
        self._t_end = self.clock()
        self._changed()
        self.pacer.wake()  # a progress write waiting for its slot is now the final one
        try:
            await _aclose(it)
        finally:
            self._phase = "done"
        if not_ours is not None:
            raise not_ours

    @property
    def _done(self) -> bool:
        """Whether the text is final (reading ended; the stream may still be closing)."""
        return self._phase in ("closing", "done")

    def _is_done(self) -> bool:
        return self._done

    def _closing_edit(self) -> bool:
        """Whether a message that is complete (the text has moved on to the next one) still
        shows less: its last edit is due, and the next message waits for it."""
        committed, messages = self._committed_contents, self._messages
        return any(
            messages[i].content != committed[i] for i in range(min(len(messages), len(committed)))
        )

    def _stop_reading(self) -> None:
        """Stop reading now; the reader task closes the stream on its way out."""
        if self._reader is not None and self._phase == "reading":
            self._reader.cancel()

    def _on_cancel(self) -> None:
        if self._phase not in ("init", "reading"):
            return  # too late: the stream has ended, the final write is on its way
        self._conclude("stopped")
        self._stop_reading()
        self._changed()

    async def _keep_typing(self) -> None:
        while self._t_first_visible is None and not self._done:
            wait, slot = self.pacer.typing(self.typing_interval)
            if wait:  # the channel shows it already, or no global slot is spare
                await self.sleep(wait)
                continue
            reached = False
            try:
                await self.sink.typing()
                reached = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("typing indicator failed: %r", exc)
            finally:
                if slot is not None:  # the global budget learns how long it took
                    slot.done(reached)
            await self.sleep(self.typing_interval)

    # -- the main loop ---------------------------------------------------------------------------

    async def run(self) -> RenderResult:
        self._t0 = self.clock()
        it = aiter(self.chunks)
        helpers: list[asyncio.Task[None]] = []
        forget_cancel: Callable[[], None] | None = None
        if self.cancel.cancelled:  # never start the request
            self._conclude("stopped")
            self._phase = "done"
            self._t_end = self._t0
            await _aclose(it)
        else:
            self._reader = asyncio.create_task(self._read(it))
            forget_cancel = self.cancel.on_cancel(self._on_cancel)
            self._typing = asyncio.create_task(self._keep_typing())
            helpers.append(self._typing)
        self.pacer.follow(self._needs_final)
        kinds: tuple[WriteKind, ...] = ("send", "edit")
        self._lanes = {kind: asyncio.create_task(self._lane(kind)) for kind in kinds}
        lanes = list(self._lanes.values())
        try:
            await asyncio.wait(lanes, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in lanes:
                task.cancel()
            try:
                await asyncio.wait(lanes)
            finally:
                self.pacer.forget(self._needs_final)
            for task in helpers:
                task.cancel()
            if forget_cancel is not None:
                forget_cancel()
            if self._typing is not None:
                self._typing.cancel()
            if self._reader is not None and not self._reader.done():
                self._conclude("stopped")
                self._stop_reading()
                await asyncio.wait([self._reader])
        for task in lanes:  # a lane only ends with an exception if there is a bug
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        return self._result()

    @property
    def _halted(self) -> bool:
        """Whether writing has stopped for good (a message was deleted, or the sink broke)."""
        return self._end is not None and self._end.halted

    def _conclude(
        self, state: State, error: BaseException | None = None, *, halted: bool = False
    ) -> None:
        """Record why the reply ends early: "stopped" or "failed" (the stream's error) while
        writing goes on to show it, or, with ``halted``, "gone" or "failed" (the sink's error)
        when writing cannot go on. A halt is the end; otherwise the first cause found is."""
        if self._end is None or (halted and not self._end.halted):
            self._end = _End(state, error, halted)

    def _changed(self) -> None:
        """Wake the lanes: text arrived, reading ended, or a write started or ended."""
        self._wake.set()

    async def _wait_for_change(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    async def _lane(self, kind: WriteKind) -> None:
        """Write the reply's sends (or its edits), one at a time, each in a slot of the channel.

        A new message is sent only when every earlier message already shows its final content
        or has its final edit in flight, so a reader never sees text twice for longer than that
        edit takes; that edit and the send go out together, each from its own budget.
        """
        budget = self.pacer.budget(kind)
        while not self._halted:
            layout = self._layout()
            write = self._pick(kind, layout, ready_only=True)
            if write is None:
                if self._done and not self._writing and self._settled(layout):
                    self._changed()  # the other lane may be waiting: it is done too
                    return
                await self._wait_for_change()
                continue
            slot = await budget.slot(final=self._is_done, closing=self._closing_edit)
            reached = True
            try:
                # The slot is ours: write the latest text. The send goes even if, rarely, an
                # earlier message's final edit failed meanwhile (the edit lane retries it).
                write = self._pick(kind, self._layout(), ready_only=False)
                if write is None:
                    log.debug("a %s slot went unused", kind)
                    continue
                if self._typing is not None and write.end > write.start:
                    self._typing.cancel()  # a status line alone keeps the typing indicator
                reached = await self._perform(kind, write)
            finally:
                slot.done(reached)

    def _layout(self) -> tuple[list[str], list[tuple[int, int]]] | None:
        """What every message should show now, and the span of the text each shows."""
        text = self._text()
        if self._done:
            pieces, contents, _ = self._final_layout(text)
            spans = [(p.start, p.end) for p in pieces]
            spans += [(spans[-1][1], spans[-1][1]) if spans else (0, 0)] * (
                len(contents) - len(spans)
            )
            return contents, spans
        if not self._has_text:
            return None if self._status is None else ([self._status], [(0, 0)])
        new, self._seg_start, self._seg_state = commit_pieces(
            text, self._seg_start, self._seg_state, self.limit
        )
        if new:
            self._committed += new
            self._committed_contents += [p.render(text) for p in new]
            self.pacer.wake()  # a waiting edit of the message just completed is now final
        live, shown = live_view(
            text, self._seg_start, self._seg_state, self.limit, self.style.live_marker
        )
        contents = [*self._committed_contents, live]
        spans = [(p.start, p.end) for p in self._committed]
        spans.append((self._seg_start, shown))
        return contents, spans

    def _pick(
        self,
        kind: WriteKind,
        layout: tuple[list[str], list[tuple[int, int]]] | None,
        *,
        ready_only: bool,
    ) -> _Write | None:
        """The lane's next write: the first stale message (edits) or the next message (sends).

        With ``ready_only``, a send waits until the messages before it are final or have their
        final edit in flight.
        """
        if layout is None:
            return None
        contents, spans = layout
        messages = self._messages
        if len(messages) > len(contents) and not self._warned_extra:
            self._warned_extra = True
            log.warning("renderer left %d extra messages", len(messages) - len(contents))
        if kind == "edit":
            for i in range(min(len(messages), len(contents))):
                if messages[i].content != contents[i]:
                    return _Write(i, contents[i], *spans[i], self._buttons_of(i, len(contents)))
            return None
        n = len(messages)
        if n >= len(contents):
            return None
        if ready_only:
            editing = self._editing
            for i, msg in enumerate(messages):
                if msg.content != contents[i] and (
                    editing is None or editing.index != i or editing.content != contents[i]
                ):
                    return None
        return _Write(n, contents[n], *spans[n], self._buttons_of(n, len(contents)))

    def _buttons_of(self, index: int, count: int) -> Buttons:
        """The buttons of message ``index`` of ``count``: only the last one has any."""
        if self.buttons is None or index != count - 1:
            return ()
        live = not self._done
        if live not in self._buttons:
            try:
                self._buttons[live] = tuple(self.buttons(live))
            except Exception:
                log.exception("the reply's buttons could not be made")
                self._buttons[live] = ()
        return self._buttons[live]

    def _settled(self, layout: tuple[list[str], list[tuple[int, int]]] | None) -> bool:
        """Whether every message shows what it should and no message is missing."""
        return self._pick("edit", layout, ready_only=False) is None and (
            self._pick("send", layout, ready_only=False) is None
        )

    def _final_layout(self, text: str) -> tuple[list[Piece], list[str], str | None]:
        """The final messages: pieces of text with their contents, and the notice added."""
        if self._final is not None:
            return self._final
        style = self.style
        pieces: list[Piece] = []
        end = self._end
        shown = self.decorate(text) if self.decorate and end is None and self._has_text else text
        if shown != text:  # decorated: split afresh (earlier messages are edited to match)
            text = shown
            pieces = split_pieces(text, self.limit)
        elif self._has_text:
            pieces = self._committed + split_pieces(
                text, self.limit, start=self._seg_start, state=self._seg_state
            )
        contents = [p.render(text) for p in pieces]
        notice: str | None = None
        if end is not None and end.state == "stopped" and self.cancel.reason == "restart":
            notice = style.interrupted
        elif end is not None and end.state == "stopped":
            notice = style.stopped if contents else style.stopped_before_text
        elif end is not None and end.state == "failed":
            notice = style.failure(end.error, self.limit)
        elif not contents:
            notice = style.empty
        elif self.end_notice is not None and (extra := self.end_notice()):
            lines = (" ".join(line.split()) for line in extra.splitlines())
            notice = "\n".join(line for line in lines if line)[: self.limit]
        if notice is not None:
            if contents and len(contents[-1]) + len(style.separator) + len(notice) <= self.limit:
                contents[-1] += style.separator + notice
            else:
                contents.append(notice)
        self._final = pieces, contents, notice
        return self._final

    # -- writing -------------------------------------------------------------------------------

    async def _perform(self, kind: WriteKind, write: _Write) -> bool:
        """Write once; whether the platform surely counted the write (not after a 429, a
        timeout or a network failure)."""
        self._writing.add(kind)
        try:
            return await self._attempt(kind, write)
        finally:
            self._writing.discard(kind)
            self._changed()

    async def _attempt(self, kind: WriteKind, write: _Write) -> bool:
        try:
            if kind == "edit":
                msg = self._messages[write.index]
                self._editing = write
                self._changed()  # a send waiting for this final edit may go with it
                try:
                    await asyncio.wait_for(
                        self.sink.edit(msg.id, write.content, write.buttons), self.write_timeout
                    )
                finally:
                    self._editing = None
                msg.content, msg.start, msg.end = write.content, write.start, write.end
                self._edits += 1
            else:
                message_id = await asyncio.wait_for(
                    self.sink.send(write.content, write.buttons), self.write_timeout
                )
                self._messages.append(_Message(message_id, write.content, write.start, write.end))
                self._sends += 1
                if write.end == write.start and self._typing is not None:
                    # Discord ends the typing indicator when the bot posts: show it again
                    # below the status line.
                    self._typing.cancel()
                    self._typing = asyncio.create_task(self._keep_typing())
                if self.on_message is not None:
                    try:
                        outcome = self.on_message(message_id)
                        if inspect.isawaitable(outcome):
                            asyncio.ensure_future(outcome).add_done_callback(_log_failure)
                    except Exception:
                        log.exception("on_message callback failed")
        except SinkRateLimited as exc:
            self._rate_limited += 1
            self._consecutive_429[kind] += 1
            self.pacer.budget(kind).penalize(exc.retry_after)
            log.warning("%s rate-limited (retry after %.2f s)", kind, exc.retry_after)
            if self._consecutive_429[kind] >= self.max_rate_limits:
                self._give_up(exc)
            return False
        except SinkMessageGone as exc:
            log.info("a message of the reply was deleted; stopping the reply: %s", exc)
            self._conclude("gone", exc, halted=True)
            self._halt()
            return True
        except Exception as exc:  # network trouble and the like: retry a few times, then give up
            self._failures[kind] += 1
            if self._failures[kind] >= self.max_attempts:
                self._give_up(exc)
                return False
            log.warning("%s failed (attempt %d): %r", kind, self._failures[kind], exc)
            await self.sleep(self.retry_backoff * 2 ** (self._failures[kind] - 1))
            return False
        self._failures[kind] = self._consecutive_429[kind] = 0
        now = self.clock()
        self._t_last_write = now
        if write.end > write.start and self._t_first_visible is None:
            self._t_first_visible = now
        self._note_visible(now)
        return True

    def _needs_final(self) -> bool:
        """Whether the reply will need a last edit: a message is out, or the first one waits
        to be sent while the model still streams (see :attr:`ChannelPacer.live`)."""
        return bool(self._messages) or (
            not self._done and (self._has_text or self._status is not None)
        )

    def _give_up(self, exc: BaseException) -> None:
        log.error(
            "giving up writing a reply after %r; %d characters of text are in the result",
            exc,
            self._len,
        )
        self._conclude("failed", exc, halted=True)
        self._halt()

    def _halt(self) -> None:
        """Stop writing and reading: a lane waiting for a slot gives it up at once."""
        current = asyncio.current_task()
        for kind, task in self._lanes.items():
            if kind not in self._writing and task is not current:
                task.cancel()
        self._stop_reading()
        self._changed()

    def _note_visible(self, now: float) -> None:
        """Track how long text took to become visible (the contiguous prefix shown)."""
        shown = 0
        for msg in self._messages:
            if msg.start > shown:
                break
            shown = max(shown, msg.end)
        while self._arrivals and self._arrivals[0][0] <= shown:
            _, t = self._arrivals.popleft()
            lag = now - t
            if self._max_lag is None or lag > self._max_lag:
                self._max_lag = lag

    # -- the result ------------------------------------------------------------------------------

    def _result(self) -> RenderResult:
        text = self._text()
        now = self.clock()
        state: State
        error: BaseException | None = None
        pieces: list[Piece] = []
        notice: str | None = None
        end = self._end
        if end is not None and end.halted:
            state, error = end.state, end.error
        else:
            pieces, _, notice = self._final_layout(text)
            if end is not None:
                state, error = end.state, end.error
            elif not self._has_text:
                state = "empty"
            else:
                state = "complete"
        final_lag = None
        halted = end is not None and end.halted
        if not halted and self._t_end is not None:
            if self._t_last_write is not None and self._t_last_write >= self._t_end:
                final_lag = self._t_last_write - self._t_end
        return RenderResult(
            state=state,
            text=text,
            message_ids=[m.id for m in self._messages],
            error=error,
            first_chunk_latency=_since(self._t0, self._t_first_chunk),
            first_visible_latency=_since(self._t0, self._t_first_visible),
            total_time=now - self._t0,
            chunks=self._chunks,
            edits=self._edits,
            sends=self._sends,
            rate_limited=self._rate_limited,
            contents=[m.content for m in self._messages],
            pieces=pieces,
            notice=notice,
            max_lag=self._max_lag,
            final_lag=final_lag,
        )


def _since(t0: float, t: float | None) -> float | None:
    return None if t is None else t - t0


async def _aclose(it: object) -> None:
    """Close an async generator (from the task that iterated it)."""
    aclose = getattr(it, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:
        log.debug("closing the stream failed: %r", exc)


def _log_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("on_message callback failed: %r", future.exception())
