"""Print how the real bot streams long replies through the fake Discord (with Discord's
rate-limit headers, so bad pacing shows up as lag) from the fake Gemini.

    .venv/bin/python bench/bench_e2e_stream.py [--length 6000] [--chunks 300] [--seconds 5]

Scenarios: one reply in a channel, then three replies at once in one channel. Goals (issue 4):
zero 429s, at most 3-4 messages per 6,000-character reply, the final text visible within 1.5 s
of the model's last chunk for one reply (3 s each for three), max lag ≤ one edit interval.
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
from tests.harness import world
from tests.scenarios import stream_replies


async def main(length: int, chunks: int, seconds: float) -> None:
    """Run both scenarios and print one line per reply."""
    logging.disable(logging.WARNING)
    print(f"reply: {length} characters in {chunks} chunks over {seconds:g} s; bucket 5 per 5 s")
    print(
        f"{'scenario':<18}{'msgs':>5}{'writes':>7}{'first text':>12}{'max lag':>10}"
        f"{'final lag':>11}{'exact':>7}"
    )
    for name, people in (("one reply", 1), ("three at once", 3)):
        with tempfile.TemporaryDirectory() as tmp:
            async with world(Path(tmp), env={"LOG_LEVEL": "WARNING"}) as w:
                askers = [w.alice, w.bob]
                while len(askers) < people:
                    extra = w.discord.add_user(f"user{len(askers)}")
                    w.discord.add_member(w.guild, extra)
                    askers.append(extra)
                replies = await stream_replies(
                    w, w.general, askers[:people], length=length, chunks=chunks, seconds=seconds
                )
                for r in replies:
                    print(
                        f"{name:<18}{len(r.contents):>5}{r.writes:>7}"
                        f"{r.first_chunk_to_visible * 1000:>9.1f} ms"
                        f"{r.max_lag:>8.2f} s{r.final_lag:>9.2f} s"
                        f"{'yes' if r.contents == split_message(r.text) else 'NO':>7}"
                    )
                print(f"{name:<18}429 responses: {len(w.discord.rate_limit_hits)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=6000)
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.length, args.chunks, args.seconds))
