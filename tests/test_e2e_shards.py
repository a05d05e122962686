"""End to end: two bot processes run shards 0 and 1 of 2 against the fake Discord (which puts a
server on shard (guild_id >> 22) % 2, DMs on shard 0) and share one PostgreSQL database.

Each process has its own fake Gemini, so where a question's request arrives tells which process
answered it. Mentions in a server of each shard and a DM are answered by the right process,
each process sees only its own servers (its /metrics, labelled with its shards), a stop reaction
reaches the process that streams the reply, and a third process for a shard already running is
refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import drop_database, new_database
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_models import snowflake
from tests.fakes.gemini import FakeGemini, Reply
from tests.test_e2e_ops import free_port

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]


def guild_id_on(shard: int, count: int) -> int:
    """A fresh server id that Discord puts on `shard` of `count`."""
    base = snowflake()
    return base + (((shard - (base >> 22)) % count) << 22)


class BotProcess:
    """One `gemcord run` process for some shards."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, gemini: FakeGemini) -> None:
        self.proc = proc
        self.port = port
        self.gemini = gemini

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of its /metrics page by (name, labels)."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.port}/metrics") as resp,
        ):
            text = await resp.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def bot_env(fake: FakeDiscord, gemini: FakeGemini, url: str, shard: int, port: int) -> dict:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "DISCORD_TOKEN": fake.token,
        "GEMINI_API_KEY": "test-gemini-key-0123456789",
        "GEMINI_BASE_URL": gemini.base_url,
        "DISCORD_API_BASE_URL": fake.api_base,
        "GEMCORD_DATABASE_URL": url,
        "GEMCORD_SHARD_COUNT": "2",
        "GEMCORD_SHARD_IDS": str(shard),
        "GEMCORD_HTTP_PORT": str(port),
        "GEMCORD_COOLDOWN_SECONDS": "0",
        "GEMCORD_NOTICE_SECONDS": "0",
        "LOG_LEVEL": "INFO",
    }


async def spawn(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def sharded(tmp_path: Path, postgres: Any) -> AsyncIterator[tuple[Any, ...]]:
    url = await new_database(postgres)
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with (
            FakeDiscord(shard_count=2) as fake,
            FakeGemini() as gemini0,
            FakeGemini() as gemini1,
        ):
            guilds = [fake.add_guild(f"shard {n}", guild_id=guild_id_on(n, 2)) for n in (0, 1)]
            channels = [fake.add_text_channel(g, "general") for g in guilds]
            alice = fake.add_user("alice")
            for guild in guilds:
                fake.add_member(guild, alice)
            bots = []
            for shard, gemini in ((0, gemini0), (1, gemini1)):
                port = free_port()
                proc = await spawn(bot_env(fake, gemini, url, shard, port), tmp_path)
                procs.append(proc)
                bots.append(BotProcess(proc, port, gemini))
                if shard == 0:  # one at a time: both would create the schema at once
                    await fake.wait_for(lambda: fake.gateway.by_shard.get(0), timeout=60)
            await fake.wait_until_ready(timeout=60)
            yield fake, bots, guilds, channels, alice, url
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await drop_database(postgres, url)


async def reply_of(url: str, question_id: int, status: str, timeout: float = 60) -> Any:
    """The stored reply to a Discord message, once it has `status`."""
    conn = await asyncpg.connect(url)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            row = await conn.fetchrow(
                "SELECT r.id, r.status, r.text, r.guild_id FROM answered AS a"
                " JOIN turns AS r ON r.reply_to = a.turn_id WHERE a.message_id = $1",
                question_id,
            )
            if row is not None and row["status"] == status:
                return row
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {status} reply to {question_id}: {row}")
    finally:
        await conn.close()


async def test_two_processes_split_the_servers_by_shard(tmp_path: Path, postgres: Any) -> None:
    async with sharded(tmp_path, postgres) as (fake, bots, guilds, channels, alice, url):
        assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
        me = fake.bot_user

        # a mention in each server is answered by the process of its shard
        for shard, channel in enumerate(channels):
            asked = [len(b.gemini.requests) for b in bots]
            question = await fake.user_message(
                channel, alice, f"{me.mention} hello shard {shard}", mentions=[me]
            )
            reply = await reply_of(url, question.id, "complete")
            assert reply["guild_id"] == guilds[shard].id
            grown = [len(b.gemini.requests) - n for b, n in zip(bots, asked, strict=True)]
            assert grown == [1 if n == shard else 0 for n in range(2)]
            assert f"hello shard {shard}" in (bots[shard].gemini.requests[-1].question_text() or "")
            assert fake.bot_messages(channel)[-1].reply_to == question.id

        # a DM goes to shard 0, as Discord does
        dm = fake.add_dm_channel(alice)
        question = await fake.user_message(dm, alice, "hello in private")
        await reply_of(url, question.id, "complete")
        assert "hello in private" in (bots[0].gemini.requests[-1].question_text() or "")
        assert len(bots[1].gemini.requests) == 1

        # each process sees only its own servers, and says which shards it runs
        for shard, bot in enumerate(bots):
            got = await bot.metrics()
            label = (("shard", str(shard)), ("shards", f"{shard}/2"))
            assert got[("gemcord_guilds", label)] == 1
            assert not any(
                name == "gemcord_guilds" and dict(labels)["shard"] != str(shard)
                for name, labels in got
            )
            replies = ("gemcord_replies_total", (("outcome", "complete"), ("shards", f"{shard}/2")))
            assert got[replies] == (2 if shard == 0 else 1)

        # a stop reaction reaches the process streaming the reply (shard 1's)
        bots[1].gemini.script(Reply(chunks=[f"word{i} " for i in range(400)], delay=0.05))
        question = await fake.user_message(
            channels[1], alice, f"{me.mention} tell me a long story", mentions=[me]
        )
        [request] = (await bots[1].gemini.wait_for_requests(2, timeout=20))[1:]
        await fake.wait_for(
            lambda: any(m.id > question.id for m in fake.bot_messages(channels[1])), timeout=20
        )
        await fake.user_reaction(channels[1], question, alice, "🛑")
        await request.wait_closed(timeout=10)
        stopped = await reply_of(url, question.id, "stopped")
        assert request.chunks_sent < 400 and stopped["text"].startswith("word0 ")

        # a third process for shard 1 is refused: that shard runs already
        third = await spawn(bot_env(fake, FakeGemini(), url, 1, free_port()), tmp_path)
        _, err = await asyncio.wait_for(third.communicate(), 60)
        assert third.returncode == 1 and b"already running shard 1" in err
