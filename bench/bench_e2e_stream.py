"""Print how the real bot streams long replies through the fake Discord (with Discord's
rate-limit headers, so bad pacing shows up as lag) from the fake Gemini.

    .venv/bin/python bench/bench_e2e_stream.py [--length 6000] [--chunks 300] [--seconds 5]

Scenarios: one reply in a channel; three replies at once in one channel; ten replies at once
across three channels (4, 3 and 3). Goals (issue 4): zero 429s, at most 3-4 messages per
6,000-character reply, the final text visible within 1.5 s of the model's last chunk for one
reply, max lag ≤ one edit interval. Several replies in one channel share its bucket of 5 message
creates per 5 s: three 6,000-character replies need 12 creates, so the last of them cannot go
out before the third window opens, 10 s after the first (the worst final lag is at least about
5 s whatever the pacing); the figures show how close the renderer gets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.splitting import split_message
from tests.fakes.discord_models import FakeUser
from tests.harness import World, world
from tests.scenarios import Measured, stream_replies_in_channels


def askers(w: World, n: int) -> list[FakeUser]:
    """`n` members of the guild (alice, bob, then new ones)."""
    out = [w.alice, w.bob]
    while len(out) < n:
        extra = w.discord.add_user(f"user{len(out)}")
        w.discord.add_member(w.guild, extra)
        out.append(extra)
    return out[:n]


def line(name: str, channel: str, r: Measured) -> str:
    """One reply's figures."""
    return (
        f"{name:<15}{channel:>8}{len(r.contents):>5}{r.writes:>7}"
        f"{r.first_chunk_to_visible * 1000:>9.1f} ms"
        f"{r.max_lag:>8.2f} s{r.final_lag:>9.2f} s"
        f"{'yes' if r.contents == split_message(r.text) else 'NO':>7}"
    )


async def main(length: int, chunks: int, seconds: float) -> None:
    """Run the scenarios and print one line per reply, then the worst figures of each."""
    logging.disable(logging.WARNING)
    print(f"reply: {length} characters in {chunks} chunks over {seconds:g} s; bucket 5 per 5 s")
    print(
        f"{'scenario':<15}{'channel':>8}{'msgs':>5}{'writes':>7}{'first text':>12}"
        f"{'max lag':>10}{'final lag':>11}{'exact':>7}"
    )
    for name, split in (("one reply", (1,)), ("three at once", (3,)), ("ten, 3 chans", (4, 3, 3))):
        with tempfile.TemporaryDirectory() as tmp:
            async with world(Path(tmp), env={"LOG_LEVEL": "WARNING"}) as w:
                channels = [w.general, w.random]
                while len(channels) < len(split):
                    channels.append(w.discord.add_text_channel(w.guild, f"extra{len(channels)}"))
                people = askers(w, sum(split))
                groups, k = [], 0
                for channel, n in zip(channels, split, strict=False):
                    groups.append((channel, people[k : k + n]))
                    k += n
                results = await stream_replies_in_channels(
                    w, groups, length=length, chunks=chunks, seconds=seconds
                )
                every = []
                for (channel, _), replies in zip(groups, results, strict=True):
                    for r in replies:
                        print(line(name, f"#{channel.name[:6]}", r))
                        every.append(r)
                print(
                    f"{name:<15}worst: first text "
                    f"{max(r.first_chunk_to_visible for r in every) * 1000:.1f} ms, max lag "
                    f"{max(r.max_lag for r in every):.2f} s, final lag "
                    f"{max(r.final_lag for r in every):.2f} s; "
                    f"429 responses: {len(w.discord.rate_limit_hits)}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=6000)
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.length, args.chunks, args.seconds))
