"""Load benchmark (issue 10): the real bot, in its own process, streaming many replies at once
through the fake Discord (Discord's real limits) from the fake Gemini, all on 127.0.0.1.

    .venv/bin/python bench/bench_load.py                      # every point, ~2-3 minutes
    .venv/bin/python bench/bench_load.py --points 10x1,100x10
    .venv/bin/python bench/bench_load.py --quick              # smoke run, well under a minute
    .venv/bin/python bench/bench_load.py --points 500x50 --profile /tmp/bot.raw
    .venv/bin/python bench/bench_load.py --summarize-profile /tmp/bot.raw

A point ``RxC`` asks R questions at once, spread round-robin over C channels, each from its own
user (so the per-user cap never binds). The admission caps are raised so that every question is
admitted at once, unless ``--default-caps`` runs the bot with its own (5 replies per channel, 2
per user, 64 in all, 10 waiting per channel: then some questions wait for a slot and some are
refused, and the latency figures are also given over the questions admitted at once). Every
answer is scripted as ``--chunks`` chunks (60) at
``--rate`` chunks per second (10), ``--length`` characters (1,200: one Discord message). In the
middle of the load (half a stream after the last question) one more question is asked in an
otherwise quiet channel: the *quiet-channel probe*.

Processes: this process runs both fakes (and measures everything); the bot runs as
``python -m bot run`` in a child process, so its CPU time (``/proc/<pid>/stat``, all threads),
its peak RSS (``VmHWM``) and a py-spy profile are the bot's alone. A fresh bot, database and
fakes per point.

Figures per point (one table, and ``bench/results/load-<date>.json`` with every point):

exact
    replies whose final Discord messages equal ``split_message(model text)``.
429
    the fake's ``rate_limit_hits`` (any route, global included).
first vis
    the model's first chunk -> the reply's first Discord message (p50/p95).
gap
    the largest time between two visible updates of a reply while it streams (an interval
    that starts before the model's last chunk), p95/max over replies.
excess
    per channel: the moment its last reply is final - :func:`channel_floor`; p50/max over
    channels.
late
    replies first shown only after their stream had ended, and in brackets how many the floor
    schedule itself shows only after their stream ended (so the rest had create budget).
CPU s, CPU/chunk
    the bot's CPU seconds from the first question until every reply is stored as finished,
    and that divided by the chunks the fake Gemini streamed.
RSS
    the bot process's peak resident set (``VmHWM``), MB.
m->req p95
    the fake Discord's MESSAGE_CREATE dispatch of a question -> the fake Gemini's receipt of
    its request.
adm/wait/ref, m->req adm p95
    how many questions were admitted at once, waited for a slot (the bot put ⏳ on them) and
    were refused (the bot answered that its queue is full); m->req p95 over those admitted at
    once.
quiet
    the probe's MESSAGE_CREATE dispatch -> the first Discord message of its reply.

The fake Discord runs with its defaults (Discord's own limits: creates and edits 5 per 5 s per
channel, the ``bucket_model`` the fake defaults to, and the global 50 requests/s, which typing
requests count against too); ``--global-limit none`` leaves the global limit out to see the
per-channel pacing alone.

Nothing here is asserted: the goals of issue 10 are printed figures. Every wait is bounded
(``--timeout`` per point; a point is given up after ``STALL_SECONDS`` without any Discord call
while replies are unfinished, which is what a wedged discord.py HTTP client looks like); a reply
not finished by then counts as not exact. Each point also records the CPU of the bot's main
thread and of its other threads (``bot_cpu_by_thread_s``: py-spy counts the aiosqlite thread's
wake-ups as CPU, /proc does not), the fakes' CPU and event-loop lag (so a slow fake would show),
and the bot's WARNING/ERROR log lines by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import inspect
import itertools
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.splitting import split_message, split_pieces  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402
from tests.fakes.discord_models import FakeChannel, FakeMessage, FakeUser  # noqa: E402
from tests.fakes.gemini import RecordedRequest, Reply  # noqa: E402
from tests.harness import World, world  # noqa: E402
from tests.scenarios import chunked, model_text  # noqa: E402

ALL_POINTS = "1x1,3x1,10x1,100x10,200x10,500x50"
QUICK_POINTS = "1x1,3x1,10x2"
CAP_ENV = {
    "replies_per_user": "GEMCORD_REPLIES_PER_USER",
    "replies_per_channel": "GEMCORD_REPLIES_PER_CHANNEL",
    "replies_max": "GEMCORD_REPLIES_MAX",
    "queue_per_channel": "GEMCORD_QUEUE_PER_CHANNEL",
}
QUEUE_FULL_PREFIX = "⏳ I'm answering a lot of questions"  # bot.cogs.chat.QUEUE_FULL
WAITING = "⏳"  # bot.cogs.chat.WAITING: the reaction on a question waiting for a slot
QUESTION_TAG = re.compile(r"\[q(\d+)\]")
STALL_SECONDS = 20.0
LIMIT_HEADERS = ("x-ratelimit", "retry-after")  # the headers --bot-logs keeps of each call
"""A point is given up when replies are unfinished and the bot made no Discord call for this
long (longer than any wait the rate limits impose)."""


# --------------------------------------------------------------------------------------------
# the floor


def _fixed_window_schedule(releases: Sequence[float], limit: int, per: float) -> list[float]:
    """The earliest time each request can go out, in the order given, through one fixed-window
    limiter (`limit` per `per` s; a window opens at its first request, the next one at the first
    request at or after its end), each request taken in order of release (earliest first)."""
    order = sorted(range(len(releases)), key=lambda i: releases[i])
    out = [0.0] * len(releases)
    start: float | None = None
    count = 0
    for i in order:
        t = releases[i]
        if start is not None and t < start + per:
            if count < limit:
                count += 1
                out[i] = max(t, start)  # a window opened after the release: its start
                continue
            t = start + per  # window full: the next one opens when this one ends
        start, count = t, 1
        out[i] = t
    return out


@dataclass(frozen=True)
class Floor:
    """The floor schedule of one channel."""

    floor: float
    """When the channel's last message can be final at the earliest."""
    creates: list[float]
    """When each message is created in that schedule."""
    finals: list[float]
    """When each message is final (its create when it already carries the whole text)."""


def channel_floor(
    messages: Sequence[tuple[float, float]], limit: int = 5, per: float = 5.0
) -> Floor:
    """The floor of issue 10 for one channel.

    ``messages``: per message a reply needs, ``(first, last)``: the time of the model's chunk
    that first puts text in it and of the chunk that completes it (for a one-message reply:
    its first and last chunk). Each message needs a create at or after ``first`` and a final
    write at or after ``last``; creates and edits are each limited to ``limit`` per ``per`` s in
    fixed windows that open at their first request. Creates are scheduled as early as their
    release allows (earliest release first); a message created at or after ``last`` already
    carries its whole text and counts as that one create; the others need a final edit,
    scheduled the same way from ``last``. The floor is the latest final.

    This is the greedy schedule issue 10 defines (creates as early as possible, which is also
    what puts text on screen first). A renderer that holds a create back until a reply has ended
    could, in rare interleavings, save an edit and finish a little before it (a negative
    excess).
    """
    if not messages:
        return Floor(0.0, [], [])
    creates = _fixed_window_schedule([a for a, _ in messages], limit, per)
    needs_edit = [i for i, (_, b) in enumerate(messages) if creates[i] < b]
    edits = _fixed_window_schedule([messages[i][1] for i in needs_edit], limit, per)
    finals = list(creates)
    for i, t in zip(needs_edit, edits, strict=True):
        finals[i] = t
    return Floor(max(finals), creates, finals)


# hand-checked cases
assert channel_floor([(0.0, 6.0)]).floor == 6.0  # a create at 0, the final edit at 6
assert channel_floor([(1.0, 1.0)]).floor == 1.0  # whole text at once: one create
# six replies streaming 0..6 s: creates 0,0,0,0,0 and 5 (window 2), all six need a final edit
# at 6: five at 6, the sixth when the edit window that opened at 6 ends
assert channel_floor([(0.0, 6.0)] * 6).floor == 11.0
# ten short replies: five created at 0 (edited at 0.5), five created at 5 with their whole text
assert channel_floor([(0.0, 0.5)] * 10) == Floor(5.0, [0.0] * 5 + [5.0] * 5, [0.5] * 5 + [5.0] * 5)
# ten replies ending together at 6: "five-and-five" (creates 0 and 5, finals 6 and 11)
assert channel_floor([(0.0, 6.0)] * 10).floor == 11.0


# --------------------------------------------------------------------------------------------
# the bot in its own process


class LoopLag:
    """How late this process's event loop (the fakes') wakes up: a sleeper that measures its
    oversleep. A large figure means the fakes, not the bot, were slow."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100_000):  # bounded: ~80 minutes at 50 ms
            t = loop.time()
            await asyncio.sleep(self.interval)
            self.lags.append(loop.time() - t - self.interval)

    async def stop(self) -> dict[str, float | None]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        p99 = percentile(self.lags, 99)
        return {
            "p99_ms": None if p99 is None else round(p99 * 1000, 1),
            "max_ms": round(max(self.lags, default=0.0) * 1000, 1),
        }


class BotProcess:
    """``python -m bot run`` with the world's settings; CPU and memory read from /proc."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / "bot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        """Start the process (its log goes to ``bot.log`` in the work folder)."""
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "--env-file", str(self.workdir / "absent.env")],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU of every thread of the bot so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU so far of the main (event-loop) thread and of all other threads together
        (threads that ended are missing from the second figure)."""
        out = {"main": 0.0, "other": 0.0}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                key = "main" if int(task.name) == self.pid else "other"
                out[key] += (int(fields[11]) + int(fields[12])) / tick
        return out

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MB."""
        now = peak = 0.0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
        return now, peak

    def warning_summary(self, top: int = 8) -> dict[str, int]:
        """The bot's WARNING/ERROR log lines, counted by logger and message (digits dropped)."""
        counts: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                m = re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL)\s+(.*)", line)
                if m and "voice will NOT be supported" not in line:
                    text = re.sub(r"https?://\S+", "URL", m.group(2))
                    counts[re.sub(r"\d+(\.\d+)?", "N", f"{m.group(1)} {text}")[:110]] += 1
        return dict(counts.most_common(top))

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the bot closes itself), SIGKILL after `timeout` s; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        return self.proc.returncode


class Profiler:
    """py-spy recording the bot process (raw collapsed stacks, per thread, on-CPU only)."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if exe is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--output",
                str(out),
                "--rate",
                str(rate),
                "--threads",
                "--nonblocking",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def stop(self) -> str:
        """Stop recording (SIGINT makes py-spy write its file); py-spy's own messages."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        for _ in range(200):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        return err.strip()


# --------------------------------------------------------------------------------------------
# one point


@dataclass
class Config:
    chunks: int
    rate: float
    length: int
    caps: dict[str, int] | None
    """None: the bot's own defaults."""
    timeout: float | None
    bucket_model: str | None
    global_limit: tuple[int, float] | None
    profile: Path | None
    profile_point: str | None
    profile_rate: int
    bot_logs: Path | None = None


@dataclass
class ReplyFigures:
    """One reply as Discord showed it."""

    index: int
    channel: int
    finished: bool
    exact: bool
    messages: int
    writes: int
    first_chunk: float | None = None
    last_chunk: float | None = None
    first_visible: float | None = None
    """The model's first chunk -> its first Discord message, s."""
    final_at: float | None = None
    """monotonic time the reply's text last changed (its final text shown)."""
    final_lag: float | None = None
    progress_gap: float | None = None
    shown_after_end: bool = False
    mention_to_request: float | None = None
    admission: str = "admitted"
    """"admitted" (at once), "waited" (for a slot) or "refused" (the bot's queue was full)."""
    segments: list[tuple[float, float]] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _segments(
    text: str, chunk_texts: Sequence[str], times: Sequence[float]
) -> list[tuple[float, float]]:
    """Per message of the split text: (time of the chunk that first reaches it, time of the
    chunk that completes it)."""
    ends, total = [], 0
    for c in chunk_texts:
        total += len(c)
        ends.append(total)
    n = min(len(ends), len(times))

    def when(offset: int) -> float:
        for e, t in zip(ends[:n], times[:n], strict=True):
            if e >= offset:
                return t
        return times[n - 1]

    pieces = split_pieces(text)
    return [
        (when(p.start + 1), when(p.end) if k < len(pieces) - 1 else times[n - 1])
        for k, p in enumerate(pieces)
    ]


def _finished_replies(db_path: Path, questions: dict[int, int]) -> dict[int, tuple[str, list[int]]]:
    """question index -> (status, message ids) for replies no longer streaming."""
    by_message = {mid: i for i, mid in questions.items()}
    out: dict[int, tuple[str, list[int]]] = {}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)) as db:
        rows = db.execute(
            "SELECT a.message_id, r.id, r.status FROM answered AS a"
            " JOIN turns AS r ON r.reply_to = a.turn_id WHERE r.status != 'streaming'"
        ).fetchall()
        turn_ids = {turn: (mid, status) for mid, turn, status in rows if mid in by_message}
        ids: dict[int, list[tuple[int, int]]] = defaultdict(list)
        if turn_ids:
            marks = ",".join("?" * len(turn_ids))
            for turn, pos, mid in db.execute(
                "SELECT turn_id, position, message_id FROM turn_messages"
                f" WHERE turn_id IN ({marks})",
                list(turn_ids),
            ):
                ids[turn].append((pos, mid))
    for turn, (mid, status) in turn_ids.items():
        out[by_message[mid]] = (status, [m for _, m in sorted(ids[turn])])
    return out


class Admissions:
    """Which questions the bot queued (it put ⏳ on them) or refused (its notice that the queue
    is full replies to them), read from the fake Discord's calls as they come."""

    _REACTION_PATH = re.compile(r"/messages/(\d+)/reactions/([^/]+)/@me$")

    def __init__(self, w: World, asked: dict[int, int]) -> None:
        self.w = w
        self.by_message = {mid: i for i, mid in asked.items()}
        self.waited: set[int] = set()
        self.refused: set[int] = set()
        self._seen = 0

    def update(self) -> None:
        """Read the calls made since the last update."""
        calls = self.w.discord.calls
        for c in calls[self._seen :]:
            if c.route == "message_create" and isinstance(c.json, dict):
                ref = c.json.get("message_reference") or {}
                if str(c.json.get("content") or "").startswith(QUEUE_FULL_PREFIX):
                    i = self.by_message.get(int(ref.get("message_id") or 0))
                    if i is not None:
                        self.refused.add(i)
            elif c.method == "PUT" and (m := self._REACTION_PATH.search(c.path)):
                i = self.by_message.get(int(m[1]))
                if i is not None and urllib.parse.unquote(m[2]) == WAITING:
                    self.waited.add(i)
        self._seen = len(calls)

    def of(self, index: int) -> str:
        """ "refused", "waited" or "admitted" (at once)."""
        if index in self.refused:
            return "refused"
        return "waited" if index in self.waited else "admitted"


def _reply_figures(
    w: World,
    index: int,
    channel: FakeChannel,
    text: str,
    request: RecordedRequest | None,
    finished: tuple[str, list[int]] | None,
    dispatched: float | None,
) -> ReplyFigures:
    fig = ReplyFigures(index, channel.id, finished is not None, False, 0, 0)
    if request is not None and dispatched is not None:
        fig.mention_to_request = request.received_at - dispatched
    if request is None or not request.chunk_times:
        return fig
    times = request.chunk_times
    fig.first_chunk, fig.last_chunk = times[0], times[-1]
    chunk_texts = list(request.reply.chunks) if request.reply is not None else []
    fig.segments = _segments(text, chunk_texts, times)
    if finished is None:
        return fig
    chain: list[FakeMessage] = [w.discord.message(i) for i in finished[1]]
    fig.messages = len(chain)
    fig.exact = [m.content for m in chain] == split_message(text)
    fig.writes = sum(len(m.revisions) for m in chain)
    # When the text changed: a write of a message's buttons alone (an older reply losing its
    # Regenerate button, maybe long after, see bot.regenerate.Offers) shows nothing new.
    updates = sorted(
        rev.t
        for m in chain
        for before, rev in zip([None, *m.revisions], m.revisions, strict=False)
        if before is None or rev.content != before.content
    )
    if not updates:
        return fig
    fig.first_visible = updates[0] - times[0]
    fig.final_at = updates[-1]
    fig.final_lag = updates[-1] - times[-1]
    fig.shown_after_end = updates[0] >= times[-1]
    gaps = [b - a for a, b in itertools.pairwise(updates) if a < times[-1]]
    fig.progress_gap = max(gaps) if gaps else None
    return fig


def _write_calls(w: World, path: Path) -> None:
    """Every Discord call of the run, one JSON object a line: when it began and ended
    (monotonic seconds), its route, channel, status and rate-limit headers."""
    with path.open("w") as out:
        for c in w.discord.calls:
            limits = {k: v for k, v in c.headers.items() if k.lower().startswith(LIMIT_HEADERS)}
            row = {"t": c.t_start, "end": c.t_end, "method": c.method, "route": c.route}
            row |= {"channel": c.channel_id, "status": c.status, "path": c.path, "headers": limits}
            out.write(json.dumps(row) + "\n")


def _add_people(w: World, n: int, prefix: str) -> list[FakeUser]:
    people = []
    for i in range(n):
        user = w.discord.add_user(f"{prefix}{i}")
        w.discord.add_member(w.guild, user)
        people.append(user)
    return people


async def run_point(replies: int, channels: int, cfg: Config) -> dict[str, Any]:
    """Run one point with a fresh bot, database and fakes; every figure of it."""
    label = f"{replies}x{channels}"
    stream_s = cfg.chunks / cfg.rate
    per_channel = math.ceil(replies / channels)
    timeout = cfg.timeout or min(
        600.0, 60 + stream_s + 5 * math.ceil(per_channel / 5) + 2 * replies / 40
    )
    texts = [model_text(cfg.length, seed=i + 1) for i in range(replies + 1)]
    fake_kw: dict[str, Any] = {"rate_limit": (5, 5.0)}
    params = inspect.signature(FakeDiscord).parameters
    if cfg.bucket_model is not None:
        if "bucket_model" not in params:
            raise SystemExit("this FakeDiscord has no bucket_model option")
        fake_kw["bucket_model"] = cfg.bucket_model
    if cfg.global_limit is not None:
        fake_kw["global_rate_limit"] = cfg.global_limit if cfg.global_limit[0] > 0 else None
    env = {
        "LOG_LEVEL": "WARNING",
        "GEMCORD_COOLDOWN_SECONDS": "0",
        "GEMCORD_NOTICE_SECONDS": "0",
        **{CAP_ENV[k]: str(v) for k, v in (cfg.caps or {}).items()},
    }
    result: dict[str, Any] = {"point": label, "replies": replies, "channels": channels}
    with tempfile.TemporaryDirectory(prefix="gemcord-load-") as tmp:
        async with world(Path(tmp), env, start=False, **fake_kw) as w:
            result["bucket_model"] = getattr(w.discord, "bucket_model", "n/a (no option)")
            result["global_rate_limit"] = w.discord.global_rate_limit

            def reply_for(rec: RecordedRequest) -> Reply:
                found = QUESTION_TAG.findall(rec.last_user_text() or "")
                if not found or int(found[-1]) >= len(texts):
                    return Reply(chunks=["(no tag)"])
                return Reply(chunks=chunked(texts[int(found[-1])], cfg.chunks), delay=1 / cfg.rate)

            w.gemini.default_reply = reply_for
            chans = [w.general, w.random][:channels]
            while len(chans) < channels:
                chans.append(w.discord.add_text_channel(w.guild, f"load{len(chans)}"))
            quiet = w.discord.add_text_channel(w.guild, "quiet")
            people = _add_people(w, replies + 1, "asker")
            where = [chans[i % channels] for i in range(replies)] + [quiet]

            bot_env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("GEMCORD_", "GEMINI_", "GOOGLE_", "DISCORD_"))
            }
            bot_env.update(w.env)
            bot_env["NO_PROXY"] = bot_env["no_proxy"] = "127.0.0.1,localhost"
            bot = BotProcess(bot_env, Path(tmp))
            profiler: Profiler | None = None
            try:
                bot.start()
                try:
                    await w.discord.wait_for(
                        lambda: w.discord.gateway.ready() or not bot.alive(), timeout=60
                    )
                except TimeoutError:
                    pass
                if not bot.alive() or not w.discord.gateway.ready():
                    raise RuntimeError(f"the bot did not start:\n{bot.log_tail()}")
                await asyncio.sleep(1.0)  # let start-up work (command sync, on_ready) settle
                result["rss_idle_mb"] = round(bot.memory_mb()[0], 1)
                if cfg.profile is not None and cfg.profile_point == label:
                    profiler = Profiler(bot.pid, cfg.profile, cfg.profile_rate)
                    await asyncio.sleep(0.5)

                cpu0, fake_cpu0, t0 = bot.cpu_seconds(), time.process_time(), time.monotonic()
                threads0 = bot.thread_cpu_seconds()
                lag = LoopLag()
                lag.start()
                seen_events = len(w.discord.gateway_events)
                questions = await asyncio.gather(
                    *(
                        w.mention(where[i], people[i], f"[q{i}] tell me something")
                        for i in range(replies)
                    )
                )
                await asyncio.sleep(stream_s / 2)
                probe = await w.mention(quiet, people[replies], f"[q{replies}] a quiet question")
                asked = {i: q.id for i, q in enumerate([*questions, probe])}
                admissions = Admissions(w, asked)

                finished: dict[int, tuple[str, list[int]]] = {}
                deadline = t0 + timeout
                calls, last_call = len(w.discord.calls), time.monotonic()
                stalled = False
                while time.monotonic() < deadline and bot.alive():
                    # in a thread: a busy database must never stall the fakes' event loop
                    with contextlib.suppress(sqlite3.Error):
                        finished = await asyncio.to_thread(_finished_replies, w.db_path, asked)
                    admissions.update()
                    if len(finished.keys() | admissions.refused) == len(asked):
                        break
                    if len(w.discord.calls) != calls:
                        calls, last_call = len(w.discord.calls), time.monotonic()
                    elif time.monotonic() - last_call > STALL_SECONDS:
                        stalled = True  # unfinished replies, and the bot calls Discord no more
                        break
                    await asyncio.sleep(0.2)
                result["stalled"] = stalled
                t1 = time.monotonic()
                alive = bot.alive()
                cpu = bot.cpu_seconds() - cpu0 if alive else None
                if alive:
                    threads1 = bot.thread_cpu_seconds()
                    result["bot_cpu_by_thread_s"] = {
                        k: round(threads1[k] - threads0[k], 3) for k in threads1
                    }
                rss_peak = bot.memory_mb()[1] if alive else None
                fake_cpu = time.process_time() - fake_cpu0
                result["fakes_loop_lag"] = await lag.stop()
                if profiler is not None:
                    result["profile"] = str(cfg.profile)
                    result["profile_messages"] = await profiler.stop()
                    profiler = None
            finally:
                if profiler is not None:
                    await profiler.stop()
                stop_t = time.monotonic()
                code = await bot.stop()
                result["bot_stop_s"] = round(time.monotonic() - stop_t, 2)
            result["bot_exit_code"] = code
            result["bot_log_warnings"] = bot.warning_summary()
            if code not in (0, None):
                result["bot_log_tail"] = bot.log_tail()
            if cfg.bot_logs is not None:
                cfg.bot_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(bot.log_path, cfg.bot_logs / f"bot-{label}.log")
                _write_calls(w, cfg.bot_logs / f"calls-{label}.jsonl")

            # ----- figures
            dispatched: dict[int, float] = {}
            for e in w.discord.gateway_events[seen_events:]:
                if e.name == "MESSAGE_CREATE" and e.delivered:
                    dispatched.setdefault(int(e.data["id"]), e.t)
            requests: dict[int, RecordedRequest] = {}
            request_count: Counter[int] = Counter()
            for rec in w.gemini.requests:
                found = QUESTION_TAG.findall(rec.last_user_text() or "")
                if found:
                    request_count[int(found[-1])] += 1
                    requests.setdefault(int(found[-1]), rec)
            figs = [
                _reply_figures(
                    w,
                    i,
                    where[i],
                    texts[i],
                    requests.get(i),
                    finished.get(i),
                    dispatched.get(asked[i]),
                )
                for i in range(replies + 1)
            ]
            await asyncio.sleep(0.5)  # a last ⏳ may still be on its way (its own slow bucket)
            admissions.update()
            for f in figs:
                f.admission = admissions.of(f.index)
            load, probe_fig = figs[:replies], figs[replies]
            by_channel: dict[int, list[ReplyFigures]] = defaultdict(list)
            for f in load:
                by_channel[f.channel].append(f)
            excess, floors, late_floor = [], [], 0
            for chan_figs in by_channel.values():
                streamed = [f for f in chan_figs if f.segments]
                if not streamed:
                    continue
                fl = channel_floor([s for f in streamed for s in f.segments])
                start = min(f.first_chunk for f in streamed)  # type: ignore[type-var]
                floors.append(fl.floor - start)
                k = 0
                for f in streamed:
                    if fl.creates[k] >= f.last_chunk:  # type: ignore[operator]
                        late_floor += 1
                    k += len(f.segments)
                if len(streamed) == len(chan_figs) and all(f.final_at for f in chan_figs):
                    excess.append(max(f.final_at for f in chan_figs) - fl.floor)  # type: ignore[type-var]
            chunks_streamed = sum(r.chunks_sent for r in w.gemini.requests)
            dispatched_probe = dispatched.get(probe.id)
            probe_first = None
            if probe_fig.finished and finished.get(replies) and dispatched_probe is not None:
                first_msg = w.discord.message(finished[replies][1][0])
                probe_first = first_msg.revisions[0].t - dispatched_probe

            def ms(x: float | None) -> float | None:
                return None if x is None else round(x * 1000, 1)

            def vals(name: str) -> list[float]:
                return [getattr(f, name) for f in load if getattr(f, name) is not None]

            admitted_m2r = [
                f.mention_to_request
                for f in load
                if f.admission == "admitted" and f.mention_to_request is not None
            ]
            admitted_fv = [
                f.first_visible
                for f in load
                if f.admission == "admitted" and f.first_visible is not None
            ]

            result.update(
                wall_s=round(t1 - t0, 2),
                timed_out=len(finished.keys() | admissions.refused) < len(asked),
                finished=sum(f.finished for f in load),
                exact=sum(f.exact for f in load),
                statuses=dict(Counter(finished[i][0] for i in finished if i < replies)),
                gemini_requests=len(w.gemini.requests),
                questions_with_retries=sum(1 for c in request_count.values() if c > 1),
                rate_limit_hits=len(w.discord.rate_limit_hits),
                rate_limit_hits_by_route=dict(
                    Counter(
                        f"{h.route}{' (global)' if h.is_global else ''}"
                        for h in w.discord.rate_limit_hits
                    )
                ),
                first_visible_ms={
                    "p50": ms(percentile(vals("first_visible"), 50)),
                    "p95": ms(percentile(vals("first_visible"), 95)),
                    "max": ms(max(vals("first_visible"), default=None)),
                },
                progress_gap_s={
                    "p50": percentile(vals("progress_gap"), 50),
                    "p95": percentile(vals("progress_gap"), 95),
                    "max": max(vals("progress_gap"), default=None),
                },
                final_lag_s={
                    "p50": percentile(vals("final_lag"), 50),
                    "p95": percentile(vals("final_lag"), 95),
                    "max": max(vals("final_lag"), default=None),
                },
                channel_excess_s={
                    "p50": percentile(excess, 50),
                    "max": max(excess, default=None),
                    "per_channel": [round(x, 3) for x in excess],
                },
                channel_floor_after_first_chunk_s=[round(x, 3) for x in floors],
                shown_after_stream_end=sum(f.shown_after_end for f in load),
                shown_after_stream_end_in_floor=late_floor,
                bot_cpu_s=None if cpu is None else round(cpu, 3),
                chunks_streamed=chunks_streamed,
                bot_cpu_per_chunk_ms=None
                if cpu is None or not chunks_streamed
                else round(cpu / chunks_streamed * 1000, 4),
                bot_rss_peak_mb=None if rss_peak is None else round(rss_peak, 1),
                fakes_cpu_s=round(fake_cpu, 3),
                mention_to_request_ms={
                    "p50": ms(percentile(vals("mention_to_request"), 50)),
                    "p95": ms(percentile(vals("mention_to_request"), 95)),
                    "max": ms(max(vals("mention_to_request"), default=None)),
                },
                admission=dict(Counter(f.admission for f in load)),
                first_visible_admitted_ms={
                    "p50": ms(percentile(admitted_fv, 50)),
                    "p95": ms(percentile(admitted_fv, 95)),
                },
                mention_to_request_admitted_ms={
                    "p50": ms(percentile(admitted_m2r, 50)),
                    "p95": ms(percentile(admitted_m2r, 95)),
                    "max": ms(max(admitted_m2r, default=None)),
                },
                quiet_probe_admission=probe_fig.admission,
                quiet_probe_ms=ms(probe_first),
                quiet_probe_exact=probe_fig.exact,
                quiet_probe_mention_to_request_ms=ms(probe_fig.mention_to_request),
            )
            for key in ("progress_gap_s", "final_lag_s", "channel_excess_s"):
                for k, v in result[key].items():
                    if isinstance(v, float):
                        result[key][k] = round(v, 3)
            result["replies_detail"] = [
                {
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in asdict(f).items()
                    if k not in ("segments", "first_chunk", "last_chunk", "final_at")
                }
                for f in figs
            ]
    return result


# --------------------------------------------------------------------------------------------
# output


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


COLUMNS = (
    ("point", 8),
    ("exact", 9),
    ("429", 5),
    ("first vis p50/p95 ms", 21),
    ("gap p95/max s", 14),
    ("excess p50/max s", 17),
    ("late (floor)", 13),
    ("CPU s", 7),
    ("CPU/chunk ms", 13),
    ("RSS MB", 7),
    ("m->req p95 ms", 14),
    ("quiet ms", 9),
    ("adm/wait/ref", 14),
    ("m->req adm p95", 15),
    ("first vis adm p50/p95", 22),
)


def table_row(r: dict[str, Any]) -> str:
    cells = [
        r["point"],
        f"{r['exact']}/{r['replies']}",
        str(r["rate_limit_hits"]),
        f"{_f(r['first_visible_ms']['p50'], '.0f')}/{_f(r['first_visible_ms']['p95'], '.0f')}",
        f"{_f(r['progress_gap_s']['p95'], '.2f')}/{_f(r['progress_gap_s']['max'], '.2f')}",
        f"{_f(r['channel_excess_s']['p50'], '.2f')}/{_f(r['channel_excess_s']['max'], '.2f')}",
        f"{r['shown_after_stream_end']} ({r['shown_after_stream_end_in_floor']})",
        _f(r["bot_cpu_s"], ".2f"),
        _f(r["bot_cpu_per_chunk_ms"], ".3f"),
        _f(r["bot_rss_peak_mb"], ".0f"),
        _f(r["mention_to_request_ms"]["p95"], ".0f"),
        _f(r["quiet_probe_ms"], ".0f"),
        "/".join(str(r["admission"].get(k, 0)) for k in ("admitted", "waited", "refused")),
        _f(r["mention_to_request_admitted_ms"]["p95"], ".0f"),
        "/".join(_f(r.get("first_visible_admitted_ms", {}).get(k), ".0f") for k in ("p50", "p95")),
    ]
    return "".join(f"{c:>{wd}}" for c, (_, wd) in zip(cells, COLUMNS, strict=True))


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("discord.py", "google-genai", "aiohttp", "pydantic", "aiosqlite"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    dirty: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bot", "storage"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mem_total_mb": _meminfo_mb(),
        "packages": versions,
        "git_head": commit,
        "uncommitted_in_bot_or_storage": dirty,  # the bot runs from the working tree
    }


def _meminfo_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


# --------------------------------------------------------------------------------------------
# profile summary


def _module_of(frame: str) -> str:
    """The package (or our own module) of a py-spy frame such as ``f (genai/models.py:12)``."""
    m = re.search(r"\((.*?):\d+\)$", frame)
    path = m.group(1) if m else frame
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = path.split("/")
    if parts[0] in ("bot", "storage", "tests") and len(parts) > 1:
        return f"{parts[0]}/{parts[1].removesuffix('.py')}"
    if parts[0] == "google" and len(parts) > 1:
        return f"google/{parts[1]}"
    return parts[0].removesuffix(".py")


def _thread_name(frame: str) -> str:
    """``thread (123): asyncio_0`` -> ``asyncio executor``; other names as they are."""
    name = frame.split(": ", 1)[-1]
    return re.sub(r"^asyncio_\d+$", "asyncio executor", name)


LAYERS = (
    ("google-genai SDK (its aiohttp reads and pydantic parsing included)", ("genai/",)),
    ("discord.py (REST, gateway, its aiohttp)", ("discord/",)),
    ("store (aiosqlite thread and storage/)", ("aiosqlite/", "storage/", "sqlite3/")),
    (
        "bot code (other than the above)",
        (
            "bot/streaming",
            "bot/answer",
            "bot/conversation",
            "bot/splitting",
            "bot/sink",
            "bot/cogs",
            "bot/llm",
            "bot/admission",
            "bot/inflight",
        ),
    ),
    ("aiohttp (outside genai and discord.py)", ("aiohttp/",)),
    ("epoll (selectors)", ("selectors.py",)),
)


def _layer(body: list[str]) -> str:
    """Which layer a sample belongs to: the first of :data:`LAYERS` with a frame in the stack
    (so pydantic under google-genai counts as google-genai)."""
    for name, marks in LAYERS:
        if any(mark in frame for frame in body for mark in marks):
            return name
    return "asyncio machinery and the rest"


def summarize_profile(path: Path, top: int = 20) -> str:
    """Shares of on-CPU samples in a py-spy raw (collapsed) file: per thread, per module
    (self time), top functions by self and by inclusive time."""
    threads: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    self_mod: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    incl_mod: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = _thread_name(frames[0]) if frames[0].startswith(("thread", "process")) else "?"
        body = [f for f in frames if not f.startswith(("thread (", "process ("))]
        if not body:
            continue
        total += n
        threads[thread] += n
        layers[_layer(body)] += n
        self_fn[body[-1]] += n
        self_mod[_module_of(body[-1])] += n
        for f in set(body):
            incl_fn[f] += n
        for mod in {_module_of(f) for f in body}:
            incl_mod[mod] += n
    if not total:
        return f"{path}: no samples"
    pct = lambda n: f"{100 * n / total:5.1f} %"  # noqa: E731
    out = [f"{path}: {total} on-CPU samples"]
    out.append("by thread:")
    out += [f"  {pct(n)}  {t}" for t, n in threads.most_common(8)]
    out.append("by layer (each sample once; see LAYERS):")
    out += [f"  {pct(n)}  {t}" for t, n in layers.most_common()]
    out.append("by module (self):")
    out += [f"  {pct(n)}  {m}" for m, n in self_mod.most_common(top)]
    out.append("by module (inclusive):")
    out += [f"  {pct(n)}  {m}" for m, n in incl_mod.most_common(top)]
    out.append("functions (self):")
    out += [f"  {pct(n)}  {f}" for f, n in self_fn.most_common(top)]
    out.append("functions (inclusive):")
    out += [f"  {pct(n)}  {f}" for f, n in incl_fn.most_common(top + 10)]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------


def _default_caps() -> dict[str, int]:
    """The bot's own admission caps (bot.config.Settings), by environment variable."""
    from bot.config import Settings

    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    names = {
        "GEMCORD_REPLIES_PER_USER": "replies_per_user",
        "GEMCORD_REPLIES_PER_CHANNEL": "replies_per_channel",
        "GEMCORD_REPLIES_MAX": "replies_per_process",
        "GEMCORD_QUEUE_PER_CHANNEL": "queue_per_channel",
    }
    return {env: fields[name] for env, name in names.items()}


def parse_points(spec: str) -> list[tuple[int, int]]:
    points = []
    for item in spec.split(","):
        r, _, c = item.strip().lower().partition("x")
        points.append((int(r), int(c or 1)))
    if not points or any(r < 1 or c < 1 or c > r for r, c in points):
        raise SystemExit(f"bad --points {spec!r}: RxC with 1 <= C <= R, comma-separated")
    return points


async def main(args: argparse.Namespace) -> int:
    logging.disable(logging.WARNING)
    points = parse_points(args.points or (QUICK_POINTS if args.quick else ALL_POINTS))
    chunks = args.chunks or (20 if args.quick else 60)
    rate = args.rate or (20.0 if args.quick else 10.0)
    caps = None if args.default_caps else {k: getattr(args, k) for k in CAP_ENV}
    gl = None
    if args.global_limit:
        if args.global_limit == "none":
            gl = (0, 1.0)
        else:
            n, _, per = args.global_limit.partition("/")
            gl = (int(n), float(per or 1))
    largest = max(points, key=lambda p: p[0] * 1000 + p[1])
    cfg = Config(
        chunks=chunks,
        rate=rate,
        length=args.length,
        caps=caps,
        timeout=args.timeout,
        bucket_model=args.bucket_model,
        global_limit=gl,
        profile=args.profile,
        profile_point=args.profile_point or f"{largest[0]}x{largest[1]}",
        profile_rate=args.profile_rate,
        bot_logs=args.bot_logs,
    )
    mach = machine()
    params = inspect.signature(FakeDiscord).parameters
    model = cfg.bucket_model or (
        params["bucket_model"].default if "bucket_model" in params else "n/a (no option)"
    )
    glimit = "none" if gl and gl[0] <= 0 else (gl or params["global_rate_limit"].default)
    print(
        f"gemcord load bench: {len(points)} point(s); answers of {cfg.length} characters in "
        f"{chunks} chunks at {rate:g}/s ({chunks / rate:g} s); fake Discord rate_limit=(5, 5.0), "
        f"bucket_model={model!r}, global_rate_limit={glimit}"
    )
    print(
        "admission caps: "
        + (
            ", ".join(f"{CAP_ENV[k]}={v}" for k, v in caps.items())
            if caps is not None
            else "the bot's defaults ("
            + ", ".join(f"{k}={v}" for k, v in _default_caps().items())
            + ")"
        )
        + "; GEMCORD_COOLDOWN_SECONDS=0, GEMCORD_NOTICE_SECONDS=0"
    )
    print(f"machine: {mach['nproc']} CPUs, {mach['cpu_model']}, Python {mach['python']}")
    results = []
    for replies, channels in points:
        t = time.monotonic()
        try:
            r = await asyncio.wait_for(run_point(replies, channels, cfg), timeout=900)
        except Exception as exc:  # one failing point must not lose the others
            print(f"{replies}x{channels}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            results.append(
                {"point": f"{replies}x{channels}", "error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        results.append(r)
        print(
            f"  {r['point']}: {time.monotonic() - t:.0f} s; bucket_model={r['bucket_model']}, "
            f"global limit {r['global_rate_limit']}; 429s by route {r['rate_limit_hits_by_route']}"
            f"; fakes CPU {r['fakes_cpu_s']:.1f} s over {r['wall_s']:.1f} s, their loop lag "
            f"max {r['fakes_loop_lag']['max_ms']:.0f} ms"
            + ("; STALLED" if r.get("stalled") else "; TIMED OUT" if r["timed_out"] else "")
            + (f"; bot exit {r['bot_exit_code']}" if r["bot_exit_code"] not in (0, None) else ""),
            flush=True,
        )
        for line, n in list(r["bot_log_warnings"].items())[:4]:
            print(f"    bot log {n:>5} x {line}", flush=True)
    print()
    print("".join(f"{name:>{wd}}" for name, wd in COLUMNS))
    for r in results:
        print(table_row(r) if "error" not in r else f"{r['point']:>8}  FAILED: {r['error']}")
    print(
        "late (floor): replies first shown after their stream ended (of those, the floor schedule "
        "shows that many late too); quiet: probe channel's mention -> first text; adm/wait/ref: "
        "questions admitted at once / waiting for a slot / refused (queue full), m->req adm and "
        "first vis adm over those admitted at once"
    )
    out = args.output or ROOT / "bench" / "results" / f"load-{datetime.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": "bench/bench_load.py",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": mach,
        "settings": {
            "chunks": chunks,
            "chunks_per_second": rate,
            "length": cfg.length,
            "rate_limit": [5, 5.0],
            "caps_env": {CAP_ENV[k]: v for k, v in caps.items()}
            if caps is not None
            else {"defaults": _default_caps()},
            "cooldown_seconds": 0,
            "notice_seconds": 0,
        },
        "points": results,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    for r in results:
        if r.get("profile"):
            print(f"\nprofile of {r['point']} ({r['profile_messages'][-300:]}):")
            print(summarize_profile(Path(r["profile"])))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", help=f"comma-separated RxC (default {ALL_POINTS})")
    p.add_argument(
        "--quick", action="store_true", help=f"smoke run: points {QUICK_POINTS}, 20 chunks at 20/s"
    )
    p.add_argument("--chunks", type=int, help="chunks per answer (default 60)")
    p.add_argument("--rate", type=float, help="chunks per second (default 10)")
    p.add_argument("--length", type=int, default=1200, help="characters per answer (1200)")
    p.add_argument("--replies-per-user", type=int, default=1000)
    p.add_argument("--replies-per-channel", type=int, default=1000)
    p.add_argument("--replies-max", type=int, default=10000)
    p.add_argument("--queue-per-channel", type=int, default=1000)
    p.add_argument(
        "--default-caps",
        action="store_true",
        help="run the bot with its own admission caps (the four options above are ignored)",
    )
    p.add_argument("--bucket-model", help="FakeDiscord bucket_model (default: the fake's own)")
    p.add_argument(
        "--global-limit",
        help="the fake's global limit as N/SECONDS, or 'none' (default: the fake's)",
    )
    p.add_argument("--timeout", type=float, help="seconds to wait for a point's replies")
    p.add_argument("--output", type=Path, help="JSON path (default bench/results/load-DATE.json)")
    p.add_argument("--profile", type=Path, help="py-spy raw output for the profiled point")
    p.add_argument("--profile-point", help="which point to profile (default the largest)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument(
        "--bot-logs",
        type=Path,
        help="keep each point's bot log, and every Discord call (JSON lines), in this folder",
    )
    p.add_argument("--summarize-profile", type=Path, help="only summarize a py-spy raw file")
    a = p.parse_args()
    if a.summarize_profile:
        print(summarize_profile(a.summarize_profile))
        sys.exit(0)
    sys.exit(asyncio.run(main(a)))
