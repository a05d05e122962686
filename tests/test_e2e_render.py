"""End to end: long streamed replies through the real bot, paced to the channel's bucket.

Timings (how far the visible text trails the model) are printed by bench/bench_e2e_stream.py;
these tests check what must hold exactly: no 429, the fewest messages, text equal to the
model's, and in each of the channel's fixed 5-second windows no more than 5 message creates nor
more than 5 message edits (Discord counts the two routes in separate windows).

Each test runs under the fake's three bucket models (tests/fakes/discord_ratelimit.py):
"discord" (separate windows, one shared ``X-RateLimit-Bucket`` hash, so discord.py merges the
two routes in one client-side limiter), "separate" (separate windows and hashes) and "shared"
(one window for creates and edits together, where the bound is 5 writes in all: the pacer
paces each route, and discord.py, which then reads the shared window's ``Remaining``, holds
the excess; as the pacer keeps at most two writes of a channel in flight, none of the burst
that used to follow each reset reaches Discord).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.splitting import split_message
from tests.harness import world
from tests.scenarios import stream_replies
from tests.test_streaming import max_in_fixed_windows

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.parametrize("bucket_model", ["discord", "separate", "shared"]),
]


def channel_write_times(w, channel_id: int, route: str) -> list[float]:
    """When each accepted request of ``route`` (message_create or message_edit) started."""
    return [
        c.t_start
        for c in w.discord.calls
        if c.channel_id == channel_id and c.route == route and c.status < 300
    ]


def check_buckets(w, channel_id: int) -> None:
    """At most 5 creates, and at most 5 edits, in each of Discord's fixed 5 s windows of the
    channel (a window opens at the first request after the one before ended); both routes used.
    Under the "shared" bucket model, at most 5 writes of either kind in a window."""
    both: list[float] = []
    for route in ("message_create", "message_edit"):
        times = channel_write_times(w, channel_id, route)
        assert times, f"no {route} in the channel"
        assert max_in_fixed_windows(times, 5.0) <= 5, route
        both += times
    if w.discord.bucket_model == "shared":
        assert max_in_fixed_windows(both, 5.0) <= 5, "creates and edits together"


async def test_long_reply_is_paced_split_and_exact(tmp_path: Path, bucket_model: str) -> None:
    async with world(tmp_path, bucket_model=bucket_model) as w:
        [reply] = await stream_replies(w, w.general, [w.alice])
        assert reply.contents == split_message(reply.text)
        assert len(reply.contents) <= 4
        assert all(len(c) <= 2000 for c in reply.contents)
        assert not w.discord.rate_limit_hits
        check_buckets(w, w.general.id)
        for mid in reply.message_ids:
            assert w.discord.message(mid).mentions_disabled


async def test_three_replies_share_one_channel_bucket(tmp_path: Path, bucket_model: str) -> None:
    async with world(tmp_path, bucket_model=bucket_model) as w:
        carol = w.discord.add_user("carol")
        w.discord.add_member(w.guild, carol)
        replies = await stream_replies(w, w.general, [w.alice, w.bob, carol])
        for reply in replies:
            assert reply.contents == split_message(reply.text)
            assert len(reply.contents) <= 4
        assert len({m for r in replies for m in r.message_ids}) == sum(
            len(r.message_ids) for r in replies
        )
        # How soon each first text shows (creates go out in a burst) is a timing: the virtual-
        # time tests in test_streaming.py pin the schedule, bench_e2e_stream.py prints it.
        assert not w.discord.rate_limit_hits
        check_buckets(w, w.general.id)
