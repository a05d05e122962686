"""`gemcord migrate`: a SQLite database copied into PostgreSQL, verified, safe to re-run, and
the bot answering from the migrated history."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from storage import (
    GuildBudget,
    Media,
    ReplyMetrics,
    StorageError,
    StoredPart,
    StoreLocked,
    TokenUsage,
    Upload,
    open_store,
)
from storage.transfer import migrate_database, sqlite_path
from tests.backends import Backend, drop_database, new_database
from tests.harness import world

ROOT = Path(__file__).resolve().parents[1]


async def fill(path: Path) -> dict[str, Any]:
    """A small database using every table; returns what it holds, as the store shows it."""
    store = await open_store(path)
    try:
        img = Media(b"\x89PNG picture" * 100, "image/png")
        for channel in (1, 2, 3):
            for n in range(4):
                u = await store.add_user_turn(
                    channel_id=channel,
                    guild_id=77 if channel < 3 else None,
                    author_id=10 + n,
                    author_name=f"user {n} \x00 é",
                    text=f"question {channel}.{n} with NUL \x00 and \uffff",
                    message_ids=[channel * 1000 + n],
                    images=[img] if n == 1 else [],
                )
                m = await store.start_model_turn(channel_id=channel, reply_to=u, model="g-1")
                await store.finish_model_turn(
                    m,
                    text=f"answer {channel}.{n}",
                    status="complete" if n != 2 else "stopped",
                    message_ids=[channel * 1000 + 500 + n, channel * 1000 + 600 + n],
                    prompt_tokens=100 + n,
                    output_tokens=20 + n,
                    metrics=ReplyMetrics(0.1 * n or None, 0.2, 1.5 + n, 5, 2, 1, 0, "complete"),
                )
                await store.record_usage(
                    user_id=10 + n,
                    channel_id=channel,
                    guild_id=77,
                    model="g-1",
                    at=1_700_000_000.0 + n,
                    usage=TokenUsage(100, 20, 3, 4, 0, 127),
                    turn_id=m,
                )
        await store.reset_channel(2)
        await store.withdraw_message(3000)
        await store.forget_user(13)  # leaves emptied totals behind in SQLite
        await store.mark_images_unusable([img.sha256], "refused")
        await store.set_persona(1, "a pirate \x00")
        await store.set_model(3, "gemini-x")
        await store.set_guild_budget(GuildBudget(77, 5000, None))
        # 0005-0008: settings, a regenerated reply with its parts, a private exchange, named
        # files, uploads
        await store.set_setting(1, "scope", "user")
        await store.set_setting(3, "answer_mode", "thread")
        pdf = Media(b"%PDF-1.7 report", "application/pdf", name="report \x00 é.pdf")
        q = await store.add_user_turn(
            channel_id=1, author_id=5, author_name="e", text="read this", images=[pdf]
        )
        for n in range(2):
            a = await store.start_model_turn(channel_id=1, reply_to=q, model="g-1")
            await store.finish_model_turn(
                a,
                text=f"take {n}",
                status="complete",
                parts=[StoredPart("thought", "hm \x00"), StoredPart("text", f"take {n}", b"\0s")],
                thoughts_tokens=7 + n,
                searches=["search é"],
            )
        await store.replace_replies(q, a)
        p = await store.add_user_turn(
            channel_id=3, author_id=5, author_name="e", text="just me", hidden="private"
        )
        a = await store.start_model_turn(channel_id=3, reply_to=p, model="g-1")
        await store.finish_model_turn(a, text="private summary", status="complete")
        for n in (1, 2):  # the second upload replaces the first, which is queued to go
            await store.save_upload(
                Upload(pdf.sha256, f"files/pdf{n}", f"uri{n}", pdf.mime_type, 1.8e9 + n)
            )
        u = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="live")
        await store.start_model_turn(channel_id=1, reply_to=u, model="g")  # left streaming
        return await snapshot(store)
    finally:
        await store.close()


async def snapshot(store: Any) -> dict[str, Any]:
    """Everything a user of the store can see (minus export times)."""
    out: dict[str, Any] = {"stats": await store.stats()}
    for channel in (1, 2, 3):
        doc = json.loads(await store.export_channel(channel, "json"))
        doc.pop("exported_at")
        out[f"export {channel}"] = doc
        out[f"history {channel}"] = await store.load_history(channel)
        out[f"stats {channel}"] = await store.stats(channel)
        out[f"settings {channel}"] = await store.get_channel_settings(channel)
    out["uploads"] = await store.get_uploads(
        [hashlib.sha256(b"%PDF-1.7 report").hexdigest(), "0" * 64]
    )
    out["usage"] = await store.usage_by_model(0, 10**6)
    out["budget"] = await store.get_guild_budget(77)
    return out


async def test_everything_is_copied_verified_and_a_rerun_converges(
    tmp_path: Path, pg_backend: Backend
) -> None:
    path = tmp_path / "gemcord.db"
    before = await fill(path)
    assert before["stats"].thoughts_tokens == 7 + 8
    lines: list[str] = []
    reports = await migrate_database(
        f"sqlite:///{path}", pg_backend.location, progress=lines.append
    )
    assert all(r.ok for r in reports)
    counts = {r.name: r.target_rows for r in reports}
    assert counts["turns"] == 25 and counts["images"] == 2 and counts["usage"] == 12
    assert counts["gemini_files"] == 1 and counts["gemini_files_gone"] == 1
    assert {"turn_messages", "turn_images", "answered", "reply_metrics", "unusable_images"} <= set(
        counts
    )
    assert counts["turn_totals"] > 0 and any("turns:" in line for line in lines)

    store = await pg_backend.open(recover_streaming=False)
    try:
        assert await snapshot(store) == before
        assert await store.take_gone_uploads() == ["files/pdf1"]  # the queue came along
    finally:
        await store.close()

    # A re-run converges (and brings back the queued name taken above).
    again = await migrate_database(str(path), pg_backend.location)
    assert [(r.name, r.target_rows, r.target_sum) for r in again] == [
        (r.name, r.target_rows, r.target_sum) for r in reports
    ]

    store = await pg_backend.open()  # the bot's start: the streaming reply is interrupted
    try:
        [cut] = await store.take_interrupted()
        assert cut.channel_id == 1
        new = await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="new")
        assert new > max(t["id"] for t in before["export 1"]["turns"])  # ids continue
        with pytest.raises(StoreLocked, match="stop it first"):
            await migrate_database(str(path), pg_backend.location)
    finally:
        await store.close()

    # The target now holds a turn the source does not: the check says so, and fails.
    with pytest.raises(StorageError, match="differs from the source in turns"):
        await migrate_database(str(path), pg_backend.location)


async def test_a_source_in_use_or_missing_is_refused(tmp_path: Path, pg_backend: Backend) -> None:
    with pytest.raises(StorageError, match="no SQLite database"):
        await migrate_database(str(tmp_path / "nothing.db"), pg_backend.location)
    bot = await open_store(tmp_path / "busy.db")
    try:
        with pytest.raises(StoreLocked):
            await migrate_database(str(tmp_path / "busy.db"), pg_backend.location)
    finally:
        await bot.close()
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("sqlite:///rel/x.db") == "rel/x.db"


def make_big(path: Path, turns: int, channel: int, guild: int) -> None:
    """`turns` turns (question/answer pairs) in one channel, written straight to the file."""
    pairs = turns // 2
    t0 = time.time() - turns
    rows = []
    messages = []
    answered = []
    for n in range(pairs):
        u, m = 2 * n + 1, 2 * n + 2
        rows.append((u, channel, guild, "user", 5, "alice", f"old question {n}", "complete", None))
        rows.append((m, channel, guild, "model", 0, "", f"old answer {n}", "complete", u))
        messages += [(u, 0, 10**12 + u), (m, 0, 10**12 + m)]
        answered.append((10**12 + u, u))
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO turns (id, channel_id, guild_id, role, author_id, author_name, text,"
            " status, reply_to, created_at, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'g')",
            [(*r, t0 + r[0]) for r in rows],
        )
        db.executemany("INSERT INTO turn_messages VALUES (?, ?, ?)", messages)
        db.executemany("INSERT INTO answered VALUES (?, ?)", answered)


@pytest.mark.timeout(300)
async def test_a_100k_turn_database_moves_and_the_bot_answers_from_it(
    tmp_path: Path, postgres: Any
) -> None:
    url = await new_database(postgres)
    try:
        async with world(tmp_path, start=False) as w:
            store = await open_store(w.db_path)  # the schema
            await store.close()
            await asyncio.to_thread(make_big, w.db_path, 100_000, w.general.id, w.guild.id)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            command = ["migrate", "--from", f"sqlite:///{w.db_path}", "--to", url]
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "bot", *command],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=240,
            )
            assert done.returncode == 0, done.stderr
            assert "turns: 100,000 rows" in done.stdout and "migrated and verified" in done.stdout

            w.env["GEMCORD_DATABASE_URL"] = url
            await w.start_bot()
            question = await w.mention(w.general, w.alice, "what did we say last?")
            await w.reply_done(question.id)
            request = w.gemini.requests[-1]
            assert "old answer 49999" in request.texts("model")
            assert any("old question 49999" in t for t in request.texts("user"))
    finally:
        await drop_database(postgres, url)


def test_the_migrate_command_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.__main__ import main

    with pytest.raises(SystemExit):
        main(["migrate", "--from", "sqlite:///x.db"])  # no --to
    assert main(["migrate", "--from", "sqlite:///x.db", "--to", "mysql://x/y"]) == 2
    assert "--to must be a postgresql://" in capsys.readouterr().err
    code = main(
        ["migrate", "--from", f"sqlite:///{tmp_path}/none.db", "--to", "postgresql://u:pw@/d"]
    )
    assert code == 1 and "no SQLite database" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--from", "sqlite:///x.db"])  # --from belongs to migrate


async def test_check_reads_a_postgres_database(pg_backend: Backend) -> None:
    from bot.__main__ import _database_stats
    from bot.config import load_settings

    store = await pg_backend.open()
    await store.add_user_turn(channel_id=1, author_id=1, author_name="a", text="q")
    settings = load_settings({"GEMCORD_DATABASE_URL": pg_backend.location}, env_file=None)
    stats = await _database_stats(settings)  # beside the running owner: reads only
    await store.close()
    assert (stats.turns, stats.channels) == (1, 1)
