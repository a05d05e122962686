"""End to end: what an operator watches — /healthz, /metrics and the log line per reply."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.retention import tidy
from tests.backends import Backend
from tests.fakes.gemini import Reply, Usage
from tests.harness import World, world
from tests.pg_relay import Relay

pytestmark = pytest.mark.timeout(60)


def test_a_bot_process_collects_garbage_less_often() -> None:
    """A command that runs the bot (or the web chat, or the console) leaves what its imports
    made out of every garbage collection, and collects young objects every GC_YOUNG."""
    code = (
        "import gc\n"
        "from bot.__main__ import GC_YOUNG, _run_owner\n"
        "async def probe():\n"
        "    return [gc.get_threshold()[0] == GC_YOUNG, gc.get_freeze_count() > 10_000]\n"
        "print(gc.get_threshold()[0], _run_owner(probe))\n"
    )
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert run.stdout.split(maxsplit=1) == ["700", "[True, True]\n"], run.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def get(w: World, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{w.env['GEMCORD_HTTP_PORT']}{path}") as resp:
            return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def ops_world(tmp_path: Path):
    env = {"GEMCORD_EDIT_WINDOW_SECONDS": "1", "GEMCORD_HTTP_PORT": str(free_port())}
    return world(tmp_path, env, rate_limit=(5, 1.0))


async def test_healthz_follows_the_gateway(tmp_path: Path) -> None:
    async with ops_world(tmp_path) as w:
        status, body = await get(w, "/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True, "reason": "ok"})
        await w.discord.gateway.go_down()
        await w.discord.wait_for(lambda: w.bot is not None and w.bot.shards[0].is_closed())
        status, body = await get(w, "/healthz")
        assert status == 503 and "gateway" in json.loads(body)["reason"]
        w.discord.gateway.down = False  # Discord is back: the bot reconnects
        await w.discord.wait_for(
            lambda: w.bot is not None and not w.bot.shards[0].is_closed(), timeout=30
        )
        assert (await get(w, "/healthz"))[0] == 200


async def test_metrics_count_a_scripted_run(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bot.answer")
    async with ops_world(tmp_path) as w:
        w.gemini.script(
            Reply(chunks=["one ", "two"], usage=Usage(cached_tokens=40)),
            Reply(chunks=["three"]),
            Reply.blocked_prompt("SAFETY"),
        )
        for text in ("first", "second", "third"):
            await w.reply_done((await w.mention(w.general, w.alice, text)).id)
        status, page = await get(w, "/metrics")
        assert status == 200
        got = samples(page)
        assert got[("gemcord_replies_total", (("outcome", "complete"),))] == 2
        assert got[("gemcord_replies_total", (("outcome", "blocked"),))] == 1
        assert got[("gemcord_gemini_errors_total", (("kind", "Blocked"),))] == 1
        assert got[("gemcord_gemini_tokens_total", (("kind", "prompt"),))] > 0
        assert got[("gemcord_gemini_tokens_total", (("kind", "cached"),))] == 40
        sends = len(w.discord.bot_messages(w.general))
        assert got[("gemcord_discord_writes_total", (("route", "send"),))] == sends
        assert got[("gemcord_first_visible_seconds_count", ())] == 2  # the blocked one had none
        assert got[("gemcord_replies_streaming", ())] == 0
        assert got[("gemcord_replies_queued", ())] == 0
        assert ("gemcord_event_loop_lag_seconds", ()) in got
        # one log line per reply, with the asker, the model, the outcome and the tokens
        lines = [r.getMessage() for r in caplog.records if r.name == "bot.answer"]
        replies = [line for line in lines if line.startswith("reply in channel")]
        assert len(replies) == 3
        assert all(str(w.alice.id) in line and "gemini-2.5-flash" in line for line in replies)
        assert "blocked" in replies[-1] and "tokens in/out" in replies[0]


async def test_deleted_channels_and_threads_lose_their_rows(tmp_path: Path) -> None:
    async with ops_world(tmp_path) as w:
        assert w.bot is not None
        thread = w.discord.add_thread(w.general, "side", owner=w.alice)
        for channel in (w.general, w.random, thread):
            await w.reply_done((await w.mention(channel, w.alice, "remember me")).id)
        await w.bot.store.set_persona(w.random.id, "a persona")
        await w.discord.delete_thread(thread)
        await w.discord.delete_channel(w.random)
        store = w.bot.store
        for channel in (w.random, thread):
            await w.discord.wait_for(
                lambda c=channel: (
                    not (sqlite_count(w, "SELECT count(*) FROM turns WHERE channel_id = ?", c.id))
                ),
            )
        assert (await store.get_channel_settings(w.random.id)).persona is None
        assert len(await store.load_history(w.general.id)) == 2  # the rest is untouched


def sqlite_count(w: World, sql: str, *params: object) -> int:
    with sqlite3.connect(f"file:{w.db_path}?mode=ro", uri=True) as db:
        return int(db.execute(sql, params).fetchone()[0])


async def test_retention_round_deletes_old_exchanges(tmp_path: Path) -> None:
    env = {"GEMCORD_RETENTION_DAYS": "30", "GEMCORD_DB_WARN_MB": "0.001"}
    async with world(tmp_path, env) as w:
        assert w.bot is not None
        old = await w.mention(w.general, w.alice, "an old question")
        await w.reply_done(old.id)
        await w.reply_done((await w.mention(w.general, w.bob, "a new one")).id)
        with sqlite3.connect(w.db_path) as db:
            db.execute(
                "UPDATE turns SET created_at = created_at - 31 * 86400"
                " WHERE id = (SELECT turn_id FROM answered WHERE message_id = ?)",
                (old.id,),
            )
        assert await tidy(w.bot) == 2
        [question, _] = await w.bot.store.load_history(w.general.id)
        assert question.text == "a new one"


async def test_healthz_says_when_the_shard_lock_is_lost(
    tmp_path: Path, pg_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot on PostgreSQL: its lock connection is cut without a word and PostgreSQL ends
    the session, so another process may take shard 0; the bot's check of that connection
    notices, and /healthz says so in one sentence (a restart is what it needs)."""
    monkeypatch.setattr("storage.postgres.LOCK_CHECK_SECONDS", 3600.0)  # checked by hand here
    monkeypatch.setattr("storage.postgres.LOCK_CHECK_TIMEOUT", 0.2)
    async with Relay(pg_backend.location) as relay:
        env = {"GEMCORD_DATABASE_URL": relay.url, "GEMCORD_HTTP_PORT": str(free_port())}
        async with world(tmp_path, env) as w:
            assert w.bot is not None
            store = w.bot.store
            assert (await get(w, "/healthz"))[0] == 200
            [lock] = [link for link in relay.links if link.holds_locks]
            pid = store._lock_conn.get_server_pid()  # type: ignore[attr-defined]
            lock.cut = True
            await pg_backend.fetch("SELECT pg_terminate_backend(?, 60000)", pid)
            other = await pg_backend.open()  # another process for shard 0: nothing stops it
            try:
                await store._check_lock()  # type: ignore[attr-defined]  # what runs every 15 s
                await store._relocking  # type: ignore[attr-defined]
                status, body = await get(w, "/healthz")
                assert (status, json.loads(body)) == (
                    503,
                    {
                        "ok": False,
                        "reason": "this process lost its PostgreSQL lock on shard 0 and another"
                        " process has taken it: two processes run the same shards; restart"
                        " this one",
                    },
                )
            finally:
                await other.close()
