"""Crash safety: a process writing turns is killed with SIGKILL again and again.

Afterwards the database is sound (SQLite's `PRAGMA integrity_check`), every write that had
returned is there (with the exact text), no reply is half-written, and the store opens and
appends as usual. On SQLite and on PostgreSQL (where the owner's lock is its connection's,
released when the killed process's connection drops).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tests.backends import Backend

ROOT = Path(__file__).resolve().parent.parent
KILLS = 24

# The writer: several tasks append question/answer pairs as fast as they can and print each
# id only after the call that wrote it has returned.
CHILD = r"""
import asyncio, random, sys
from storage import Media, ReplyMetrics, open_store

def answer(user_id):
    return f"answer to {user_id} ✓ " * (user_id % 40 + 1)

async def worker(store, rng, tag):
    n = 0
    while True:
        n += 1
        channel = rng.randrange(1, 6)
        images = []
        if n % 4 == 0:
            images = [Media(f"image {tag} {n} ".encode() * rng.randrange(1, 3000), "image/png")]
        u = await store.add_user_turn(
            channel_id=channel, author_id=channel, author_name=f"user {channel}",
            text=f"question {tag}.{n}", message_ids=[tag * 10**9 + n], images=images,
        )
        print(f"U {u} {channel} question {tag}.{n}", flush=True)
        m = await store.start_model_turn(channel_id=channel, reply_to=u, model="crash-test")
        print(f"S {m} {u}", flush=True)
        await store.add_message_ids(m, [tag * 10**9 + 500_000_000 + n])
        await store.finish_model_turn(
            m, text=answer(u), status="complete", output_tokens=n,
            metrics=ReplyMetrics(0.1, 0.2, 1.0, n, 1, 1, 0, "complete"),
        )
        print(f"F {m} {u}", flush=True)
        if n % 25 == 0:
            await store.reset_channel(channel)

async def main():
    store = await open_store(sys.argv[1])
    print("ready", flush=True)
    seed = int(sys.argv[2])
    await asyncio.gather(*(worker(store, random.Random(seed * 10 + t), seed * 10 + t)
                           for t in range(4)))

asyncio.run(main())
"""


def answer(user_id: int) -> str:
    return f"answer to {user_id} ✓ " * (user_id % 40 + 1)


class Log:
    """What the killed writers reported as written."""

    def __init__(self) -> None:
        self.user: dict[int, tuple[int, str]] = {}  # id -> (channel, text)
        self.started: dict[int, int] = {}  # model id -> user id
        self.finished: dict[int, int] = {}

    def read(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "U":
            turn, channel, text = rest.split(" ", 2)
            self.user[int(turn)] = (int(channel), text)
        elif kind in ("S", "F"):
            model, user = (int(x) for x in rest.split())
            (self.started if kind == "S" else self.finished)[model] = user


async def run_and_kill(path: str, run: int, rng: random.Random, log: Log) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        path,
        str(run),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    ready = asyncio.Event()
    lines: list[str] = []

    async def reader() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cut off by the kill: the write it reports may not have returned
            line = raw.decode().rstrip("\n")
            if line == "ready":
                ready.set()
            else:
                lines.append(line)

    reading = asyncio.create_task(reader())
    if run % 4 == 0:
        # Anywhere from start-up on: opening, migrating, recovering, first writes.
        await asyncio.sleep(rng.uniform(0.0, 0.4))
    else:
        await asyncio.wait_for(ready.wait(), timeout=30)
        await asyncio.sleep(rng.uniform(0.0, 0.25))
    proc.send_signal(signal.SIGKILL)
    await reading
    assert proc.stderr is not None
    errors = (await proc.stderr.read()).decode(errors="replace")
    assert await proc.wait() == -signal.SIGKILL, f"the writer died on its own:\n{errors}"
    for line in lines:
        log.read(line)


async def check_file(backend: Backend, log: Log) -> None:
    """The database is sound and holds every write that returned; no reply is half-written."""
    if backend.name == "sqlite":
        if not await asyncio.to_thread(os.path.exists, backend.location):
            return  # killed before the file was made
        with sqlite3.connect(backend.location) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            db.execute("PRAGMA foreign_keys = ON")
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
            made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'turns'").fetchall()
    else:
        made = await backend.fetch("SELECT to_regclass('turns')") != [(None,)]
    if not made:  # killed before the first migration committed: nothing there, nothing torn
        assert not log.user and not log.started, "a write returned before the schema existed"
        return
    turns = {
        r[0]: r[1:]
        for r in await backend.fetch(
            "SELECT id, channel_id, role, text, status, reply_to FROM turns"
        )
    }
    messages = {
        r[0]: r[1]
        for r in await backend.fetch("SELECT turn_id, count(*) FROM turn_messages GROUP BY 1")
    }
    for turn_id, (channel, text) in log.user.items():
        assert turns[turn_id][:4] == (channel, "user", text, "complete"), turn_id
        assert messages.get(turn_id) == 1
    for model_id, user_id in log.started.items():
        assert turns[model_id][1] == "model" and turns[model_id][4] == user_id
    for model_id in log.finished:
        assert turns[model_id][2:4] == (answer(turns[model_id][4]), "complete")
    for turn_id, (_, role, text, status, reply_to) in turns.items():
        if role == "model":
            # Either finished whole, or never finished (streaming, or interrupted after a restart).
            assert (status, text) in {
                ("complete", answer(reply_to)),
                ("streaming", ""),
                ("interrupted", ""),
            }, turn_id
            if status == "complete":
                assert messages.get(turn_id) == 1, turn_id


@pytest.mark.timeout(90)
async def test_sigkill_at_random_points(backend: Backend) -> None:
    path = backend.location
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    log = Log()
    for kill in range(KILLS):
        await run_and_kill(path, kill, rng, log)
        await check_file(backend, log)
    assert len(log.user) > 100 and len(log.finished) > 50, f"too few writes (seed {seed})"

    store = await backend.open()
    try:
        streaming = "SELECT count(*) FROM turns WHERE status = 'streaming'"
        assert await backend.fetch(streaming) == [(0,)]
        u = await store.add_user_turn(
            channel_id=9, author_id=1, author_name="a", text="after", message_ids=[10**15]
        )
        m = await store.start_model_turn(channel_id=9, reply_to=u, model="g")
        await store.finish_model_turn(m, text=answer(u), status="complete", message_ids=[2])
        assert [t.text for t in await store.load_history(9)] == ["after", answer(u)]
        for channel in range(1, 6):
            history = await store.load_history(channel)
            assert all(t.status != "streaming" for t in history)
            assert not history or history[0].role == "user"
    finally:
        await store.close()
    await check_file(backend, log)
