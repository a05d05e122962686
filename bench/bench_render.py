"""Bench the reply renderer against a loopback REST server with a Discord-like bucket.

Runs ``render_stream`` over a scripted model stream (default: 6,000 characters in 300 chunks
over 5 s) into a sink that talks HTTP to a small aiohttp server on 127.0.0.1. The server keeps
messages and, like Discord, two fixed-window buckets per channel: one for message creates and one
for message edits (5 per 5 s each, opened by the first request), and answers 429 beyond them.
Prints, per reply:

- renderer overhead: model's first chunk → the renderer calling ``send`` (goal < 5 ms; for a
  reply that shares its channel this includes waiting for the channel's next send slot);
- first chunk → first text visible on the server (goal: the overhead plus one round trip);
- the largest lag between a chunk arriving and its text being visible on the server while the
  model streams (goal: one edit interval), and from the last chunk to the final text;
- sends and edits used versus each bucket's allowance over the same time, and 429s (goal 0).

At a message break the old message's final edit and the new message's send go out together,
each from its own bucket, so a fast reply trails the model by about one edit interval at most.
Several replies in one channel share both buckets. Edits are spread evenly; sends go out in
bursts (up to 4 at once, the 5th of a window late in it), so replies asked together show their
first text at once. Every message costs one create, so when they stream faster than the
channel's creates allow, their final text waits for the channel's send slots (the figures show
by how much).

Usage: ``python bench/bench_render.py [--chars 6000] [--chunks 300] [--seconds 5]``.
Scenarios: one reply alone; then three replies at once in one channel, next to a slower reply
(6,000 characters over 15 s) in another channel. About 25 s in all.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.cancel import CancelToken
from bot.pacing import PacerRegistry
from bot.splitting import CLOSE
from bot.streaming import (
    DEFAULT_STYLE,
    Buttons,
    RenderResult,
    SinkMessageGone,
    SinkRateLimited,
    render_stream,
)

MARK = DEFAULT_STYLE.live_marker
SLOW = 3  # the slower reply streams this many times longer


# --- the loopback server -------------------------------------------------------------------------


@dataclass
class Accepted:
    t: float
    channel: int
    kind: str
    """``send`` (message create) or ``edit``."""
    message_id: int
    content: str


KINDS = ("send", "edit")


@dataclass
class Server:
    """Messages, a log of accepted writes, and per channel a fixed-window bucket for creates and
    another for edits."""

    limit: int = 5
    per: float = 5.0
    log: list[Accepted] = field(default_factory=list)
    messages: dict[int, str] = field(default_factory=dict)
    refused: dict[tuple[int, str], int] = field(default_factory=dict)
    windows: dict[tuple[int, str], tuple[float, int]] = field(default_factory=dict)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def take(self, channel: int, kind: str) -> float | None:
        """Count a write; return None if allowed, else the seconds until its window resets."""
        t = time.monotonic()
        key = (channel, kind)
        start, count = self.windows.get(key, (-math.inf, 0))
        if t >= start + self.per:
            start, count = t, 0
        if count >= self.limit:
            self.refused[key] = self.refused.get(key, 0) + 1
            return start + self.per - t
        self.windows[key] = (start, count + 1)
        return None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/channels/{channel}/messages", self.send)
        app.router.add_patch("/channels/{channel}/messages/{message}", self.edit)
        app.router.add_post("/channels/{channel}/typing", self.typing)
        app.router.add_get("/ping", self.ping)
        return app

    async def _write(self, request: web.Request, message_id: int | None) -> web.Response:
        channel = int(request.match_info["channel"])
        kind = "send" if message_id is None else "edit"
        body = await request.json()
        if (retry := self.take(channel, kind)) is not None:
            return web.json_response({"message": "rate limited", "retry_after": retry}, status=429)
        if message_id is None:
            message_id = next(self.ids)
        elif message_id not in self.messages:
            return web.json_response({"message": "Unknown Message", "code": 10008}, status=404)
        content = body["content"]
        if not content.strip() or len(content) > 2000:
            return web.json_response({"message": "bad content"}, status=400)
        self.messages[message_id] = content
        self.log.append(Accepted(time.monotonic(), channel, kind, message_id, content))
        return web.json_response({"id": str(message_id)})

    async def send(self, request: web.Request) -> web.Response:
        return await self._write(request, None)

    async def edit(self, request: web.Request) -> web.Response:
        return await self._write(request, int(request.match_info["message"]))

    async def typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})


class HttpSink:
    """A MessageSink over the loopback server; records when the renderer calls it."""

    def __init__(self, session: ClientSession, base: str, channel: int) -> None:
        self.session = session
        self.url = f"{base}/channels/{channel}"
        self.calls: list[float] = []

    async def _call(self, method: str, url: str, text: str) -> dict:
        self.calls.append(time.monotonic())
        async with self.session.request(method, url, json={"content": text}) as resp:
            data = await resp.json()
            if resp.status == 429:
                raise SinkRateLimited(float(data["retry_after"]))
            if resp.status == 404:
                raise SinkMessageGone(data["message"])
            resp.raise_for_status()
            return data

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        return int((await self._call("POST", f"{self.url}/messages", text))["id"])

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        await self._call("PATCH", f"{self.url}/messages/{message_id}", text)

    async def typing(self) -> None:
        async with self.session.post(f"{self.url}/typing"):
            pass


# --- the scripted model -------------------------------------------------------------------------


def reply_text(chars: int, seed: int = 0) -> str:
    """Markdown-ish prose with paragraphs, a list and a code block, ``chars`` long."""
    words = "the renderer paces edits per channel while the model streams its answer".split()
    parts: list[str] = []
    i = seed
    while sum(map(len, parts)) < chars:
        if i % 9 == 4:
            code = "\n".join(f"    total += step({k})  # accumulate" for k in range(12))
            parts.append(f"```python\ndef run():\n{code}\n```\n\n")
        elif i % 5 == 2:
            parts.append("".join(f"- {words[(i + k) % len(words)]} item {k}\n" for k in range(6)))
            parts.append("\n")
        else:
            n = 25 + (i * 17) % 60
            parts.append(" ".join(words[(i * 3 + k) % len(words)] for k in range(n)) + ".\n\n")
        i += 1
    return "".join(parts)[:chars]


@dataclass
class Model:
    """A scripted stream that records when each chunk was handed over."""

    text: str
    chunks: int
    seconds: float
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (end offset, time)

    async def stream(self):
        size = math.ceil(len(self.text) / self.chunks)
        pieces = [self.text[i : i + size] for i in range(0, len(self.text), size)]
        step = self.seconds / max(1, len(pieces) - 1)
        t0 = time.monotonic()
        end = 0
        for k, piece in enumerate(pieces):
            await asyncio.sleep(max(0.0, t0 + k * step - time.monotonic()))
            end += len(piece)
            self.arrivals.append((end, time.monotonic()))
            yield piece


# --- measuring ----------------------------------------------------------------------------------


def visible_prefix_over_time(log: list[Accepted], result: RenderResult) -> list[tuple[float, int]]:
    """(server time, length of the model text visible as a contiguous prefix) after each write."""
    index = {mid: k for k, mid in enumerate(result.message_ids)}
    pieces = result.pieces
    spans: dict[int, tuple[int, int]] = {}
    out = []
    for w in log:
        k = index.get(w.message_id)
        if k is None:
            continue
        p = pieces[k]
        body = w.content[len(p.lead) :]
        if body.endswith(MARK + CLOSE):
            body = body[: -len(MARK + CLOSE)]
        elif body.endswith(MARK):
            body = body[: -len(MARK)]
        elif p.tail:
            body = body[: -len(p.tail)]
        assert result.text.startswith(body, p.start), "server shows text the model did not send"
        spans[k] = (p.start, p.start + len(body))
        shown = 0
        for j in range(len(pieces)):
            if j not in spans or spans[j][0] > shown:
                break
            shown = max(shown, spans[j][1])
        out.append((w.t, shown))
    return out


@dataclass
class Figures:
    name: str
    result: RenderResult
    overhead_ms: float
    first_visible_ms: float
    max_lag: float
    p95_lag: float
    over_interval: int
    final_lag: float
    messages: int


def measure(
    name: str,
    model: Model,
    sink: HttpSink,
    result: RenderResult,
    log: list[Accepted],
    interval: float,
) -> Figures:
    assert result.state == "complete" and result.text == model.text, result.state
    timeline = visible_prefix_over_time(log, result)
    lags = []
    for end, t_arrival in model.arrivals:
        t_visible = next(t for t, shown in timeline if shown >= end)
        lags.append(t_visible - t_arrival)
    t_first = model.arrivals[0][1]
    return Figures(
        name=name,
        result=result,
        overhead_ms=(min(t for t in sink.calls if t >= t_first) - t_first) * 1000,
        first_visible_ms=(timeline[0][0] - t_first) * 1000,
        max_lag=max(lags[:-1]) if len(lags) > 1 else lags[0],
        p95_lag=statistics.quantiles(lags[:-1], n=20)[-1] if len(lags) > 2 else lags[0],
        over_interval=sum(lag > interval for lag in lags[:-1]),
        final_lag=lags[-1],
        messages=len(result.message_ids),
    )


def print_figures(figs: list[Figures], server: Server, channel: int, interval: float) -> None:
    log = [w for w in server.log if w.channel == channel]
    for f in figs:
        r = f.result
        print(
            f"  {f.name}: {len(r.text)} chars, {r.chunks} chunks → {f.messages} messages "
            f"({r.sends} sends, {r.edits} edits)"
        )
        print(
            f"    first chunk → send called {f.overhead_ms:.2f} ms (overhead + any wait for the"
            f" channel's slot); → first visible {f.first_visible_ms:.1f} ms"
        )
        print(
            f"    lag while streaming: max {f.max_lag:.2f} s, p95 {f.p95_lag:.2f} s, "
            f"{f.over_interval} of {r.chunks - 1} chunks over one edit interval ({interval:.2f} s)"
        )
        print(f"    last chunk → final text visible {f.final_lag:.2f} s")
    for kind in KINDS:
        times = [w.t for w in log if w.kind == kind]
        if not times:
            continue
        span = times[-1] - times[0]
        allowed = server.limit * (math.floor(span / server.per) + 1)
        print(
            f"  channel {kind}s: {len(times)} over {span:.1f} s, bucket allows {allowed} "
            f"({server.limit} per {server.per:g} s), most in any {server.per:g} s: "
            f"{most_in_window(times, server.per)}; 429s: {server.refused.get((channel, kind), 0)}"
        )


def most_in_window(times: list[float], window: float) -> int:
    """The most writes that started in any ``window``-second span."""
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


async def rtt(session: ClientSession, base: str) -> float:
    samples = []
    for _ in range(20):
        t = time.monotonic()
        async with session.get(f"{base}/ping") as resp:
            await resp.read()
        samples.append(time.monotonic() - t)
    return statistics.median(samples)


async def run_reply(
    name: str,
    model: Model,
    session: ClientSession,
    base: str,
    channel: int,
    pacers: PacerRegistry,
    server: Server,
) -> Figures:
    sink = HttpSink(session, base, channel)
    result = await render_stream(model.stream(), sink, pacers.get(channel), CancelToken())
    log = [w for w in server.log if w.channel == channel]
    return measure(name, model, sink, result, log, pacers.get(channel).edits.base_interval)


async def main(args: argparse.Namespace) -> None:
    server = Server()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    pacers = PacerRegistry(server.limit, server.per)
    interval = pacers.get(0).edits.base_interval
    try:
        async with ClientSession() as session:
            round_trip = await rtt(session, base)
            print(f"loopback round trip (median of 20): {round_trip * 1000:.2f} ms")

            print(
                f"\n1. one reply: {args.chars} chars in {args.chunks} chunks over {args.seconds} s"
            )
            model = Model(reply_text(args.chars), args.chunks, args.seconds)
            fig = await run_reply("reply", model, session, base, 1, pacers, server)
            print_figures([fig], server, 1, interval)

            print(
                f"\n2. three replies at once in one channel (same stream each), and next to them"
                f" a slower reply ({args.chars} chars over {SLOW * args.seconds:g} s) in another"
            )
            models = [
                Model(reply_text(args.chars, s), args.chunks, args.seconds) for s in (1, 2, 3)
            ]
            slow = Model(reply_text(args.chars, 4), args.chunks, SLOW * args.seconds)
            figs = await asyncio.gather(
                *(
                    run_reply(f"reply {k + 1}", m, session, base, 2, pacers, server)
                    for k, m in enumerate(models)
                ),
                run_reply("slow reply", slow, session, base, 3, pacers, server),
            )
            print_figures(figs[:3], server, 2, interval)
            print(f"  other channel, {SLOW * args.seconds:g} s stream:")
            print_figures(figs[3:], server, 3, interval)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=6000)
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
