"""Storage figures: appends per second, and how long loading a channel's context takes in a
large database (by default 1,000,000 turns across 10,000 channels; goal: under 2 ms a load),
for SQLite and, from the same run, PostgreSQL.

    python bench/bench_storage.py [--turns 1000000] [--channels 10000] [--db PATH] [--loads 2000]
                                  [--postgres URL | --no-postgres]

The database is built in a temporary folder (removed afterwards) unless --db names a file; an
existing --db file that already holds at least --turns turns is reused as it is. The build
writes rows directly with sqlite3 (executemany in large transactions) into the schema that
`open_store` creates; every figure after that goes through the public async API. The same data
is then copied into PostgreSQL with `gemcord migrate` (timed) and measured the same way: into
--postgres URL (an empty database), or else a throw-away local server (tests/pg_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import Store, open_store
from storage.transfer import migrate_database

MESSAGE_IDS = itertools.count(2 * 10**15)  # Discord ids of the questions the bench asks

WORDS = (
    "the a discord bot gemini stream reply message channel edit rate limit token history "
    "python sqlite index query budget image code block paragraph answer question why how"
).split()


def sentence(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def build(path: Path, turns: int, channels: int, seed: int = 1) -> float:
    """Fill `path` (already migrated) with `turns` turns in question/answer pairs."""
    rng = random.Random(seed)
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")
    now = time.time() - turns  # one turn a second, ending now
    batch = 50_000
    next_id = 1
    while next_id <= turns:
        turn_rows = []
        message_rows = []
        for _ in range(batch // 2):
            if next_id > turns:
                break
            channel = 1_000_000 + rng.randrange(channels)
            user_id, model_id = next_id, next_id + 1
            author = rng.randrange(1, 50_000)
            turn_rows.append(
                (
                    user_id,
                    channel,
                    42,
                    "user",
                    author,
                    f"user{author}",
                    sentence(rng, rng.randrange(20, 300)),
                    "complete",
                    None,
                    now + user_id,
                    None,
                    None,
                    None,
                )
            )
            message_rows.append((user_id, 0, 10**15 + user_id))
            if model_id <= turns:
                turn_rows.append(
                    (
                        model_id,
                        channel,
                        42,
                        "model",
                        0,
                        "gemcord",
                        sentence(rng, rng.randrange(100, 1200)),
                        "complete",
                        user_id,
                        now + model_id,
                        rng.randrange(100, 5000),
                        rng.randrange(20, 400),
                        "gemini-2.5-flash",
                    )
                )
                message_rows.append((model_id, 0, 10**15 + model_id))
            next_id += 2
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO turns (id, channel_id, guild_id, role, author_id, author_name, text,"
            " status, reply_to, created_at, prompt_tokens, output_tokens, model)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            turn_rows,
        )
        db.executemany(
            "INSERT INTO turn_messages (turn_id, position, message_id) VALUES (?, ?, ?)",
            message_rows,
        )
        db.execute("COMMIT")
        print(f"\r  built {min(next_id - 1, turns):,} / {turns:,} turns", end="", flush=True)
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print()
    return time.perf_counter() - started


def count_turns(path: Path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM turns").fetchone()[0])
    except sqlite3.Error:
        return 0


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    p99 = ms[int(len(ms) * 0.99) - 1]
    return (
        f"median {statistics.median(ms):.3f} ms · p95 {p95:.3f} ms · p99 {p99:.3f} ms · "
        f"max {ms[-1]:.3f} ms  (n={len(ms)})"
    )


async def appends(store: Store, n: int, concurrency: int) -> float:
    """Questions stored per second, `concurrency` tasks at a time, each in its own channel."""

    async def writer(task: int) -> None:
        for i in range(n // concurrency):
            await store.add_user_turn(
                channel_id=9_000_000 + task,
                author_id=task,
                author_name="bench",
                text=f"bench question {i} " * 5,
                message_ids=[next(MESSAGE_IDS)],
            )

    started = time.perf_counter()
    await asyncio.gather(*(writer(t) for t in range(concurrency)))
    return (n // concurrency * concurrency) / (time.perf_counter() - started)


async def exchanges(store: Store, n: int) -> float:
    """Full question → start → finish exchanges per second, one after another."""
    started = time.perf_counter()
    for i in range(n):
        u = await store.add_user_turn(
            channel_id=9_500_000,
            author_id=1,
            author_name="bench",
            text=f"q{i}",
            message_ids=[next(MESSAGE_IDS)],
        )
        m = await store.start_model_turn(channel_id=9_500_000, reply_to=u, model="g")
        await store.finish_model_turn(
            m, text=f"answer {i} " * 50, status="complete", message_ids=[next(MESSAGE_IDS)]
        )
    return n / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--db", type=Path, help="database file to build or reuse")
    parser.add_argument("--loads", type=int, default=2_000, help="load_history calls to time")
    parser.add_argument("--appends", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", help="an empty PostgreSQL database to measure too")
    parser.add_argument(
        "--no-postgres", action="store_true", help="SQLite only (no throw-away server)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gemcord-bench-") as tmp:
        path = args.db or Path(tmp) / "bench.db"
        existing = count_turns(path) if path.exists() else 0
        if existing >= args.turns:
            print(f"reusing {path} ({existing:,} turns)")
        else:
            if path.exists():
                sys.exit(f"{path} holds {existing:,} turns, fewer than --turns; pick another --db")
            store = await open_store(path)  # creates the schema
            await store.close()
            print(f"building {args.turns:,} turns across {args.channels:,} channels in {path}")
            seconds = build(path, args.turns, args.channels)
            print(f"  build: {seconds:.1f} s ({args.turns / seconds:,.0f} turns/s, bulk)")
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        print(f"  file: {size / 2**20:,.0f} MiB")

        with sqlite3.connect(path) as db:
            channels = [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT channel_id FROM turns WHERE channel_id < 9000000"
                )
            ]
            max_id = db.execute("SELECT max(id) FROM turns WHERE channel_id < 9000000").fetchone()[
                0
            ]

        results = {}
        server = None
        url = args.postgres
        try:
            if url is None and not args.no_postgres:
                from tests import pg_server

                server = pg_server.start()
                url = server.url()
            if url is not None:  # copy first, so both engines hold the same data
                print(f"copying into PostgreSQL with gemcord migrate ({_redact(url)})")
                t0 = time.perf_counter()
                await migrate_database(str(path), url)
                print(f"  migrate (copy + verify): {time.perf_counter() - t0:.1f} s")
            print("\n== SQLite ==")
            results["SQLite"] = await figures(await open_store(path), channels, max_id, args)
            if url is not None:
                print("\n== PostgreSQL ==")
                results["PostgreSQL"] = await figures(await open_store(url), channels, max_id, args)
        finally:
            if server is not None:
                server.stop()
        names = list(results)
        print("\n" + " " * 44 + "".join(f"{n:>14}" for n in names))
        for key in next(iter(results.values())):
            print(f"{key:<44}" + "".join(f"{results[n][key]:>14,.3f}" for n in names))


def _redact(url: str) -> str:
    from storage.postgres import _redact as redact

    return redact(url)


async def figures(
    store: Store, channels: list[int], max_id: int, args: argparse.Namespace
) -> dict[str, float]:
    """Time history loads, lookups, appends and stats on an open store (closed at the end)."""
    rng = random.Random(args.seed)
    out: dict[str, float] = {}
    try:
        print("history query plan:")
        for line in await store.history_plan():  # type: ignore[attr-defined]
            print(f"  {line}")
        for _ in range(50):  # warm-up
            await store.load_history(rng.choice(channels))

        timings: list[float] = []
        loaded = 0
        for _ in range(args.loads):
            channel = rng.choice(channels)
            t0 = time.perf_counter()
            history = await store.load_history(channel)
            timings.append(time.perf_counter() - t0)
            loaded += len(history)
        print(f"load_history (40 turns / 24k tokens, random channel): {summary(timings)}")
        print(f"  turns returned per load: {loaded / args.loads:.1f}")
        out["context load median (ms)"] = statistics.median(timings) * 1000
        out["context load p95 (ms)"] = sorted(timings)[int(len(timings) * 0.95) - 1] * 1000

        timings = []
        for _ in range(args.loads):
            channel = rng.choice(channels)
            t0 = time.perf_counter()
            await store.load_history(channel, before_turn=rng.randrange(max_id // 2, max_id))
            timings.append(time.perf_counter() - t0)
        print(f"load_history with before_turn:                       {summary(timings)}")

        timings = []
        found = 0
        for _ in range(args.loads):
            t0 = time.perf_counter()
            turn = await store.find_turn_by_message(10**15 + rng.randrange(1, max_id))
            timings.append(time.perf_counter() - t0)
            found += turn is not None
        print(f"find_turn_by_message:                                {summary(timings)}")
        print(f"  found {found} of {args.loads}")

        rate = await appends(store, args.appends, 1)
        print(f"appends (add_user_turn), one task:        {rate:,.0f} /s")
        out["appends/s, one task"] = rate
        rate = await appends(store, args.appends, 50)
        print(f"appends (add_user_turn), 50 tasks at once: {rate:,.0f} /s")
        out["appends/s, 50 tasks"] = rate
        rate = await exchanges(store, args.appends // 5)
        print(f"full exchanges (question + start + finish): {rate:,.0f} /s")
        out["exchanges/s"] = rate

        t0 = time.perf_counter()
        stats = await store.stats()
        print(
            f"stats() over everything: {(time.perf_counter() - t0) * 1000:.0f} ms"
            f" ({stats.turns:,} turns, {stats.channels:,} channels)"
        )
        t0 = time.perf_counter()
        await store.stats(rng.choice(channels))
        print(f"stats(channel): {(time.perf_counter() - t0) * 1000:.2f} ms")
    finally:
        await store.close()
    return out


if __name__ == "__main__":
    asyncio.run(main())
