"""Command line: `gemcord run` (default) starts the bot, `gemcord check` validates the set-up,
`gemcord console [PROMPT]` talks to Gemini in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from bot.config import ConfigError, Settings, load_settings, prepare_db_path

log = logging.getLogger("gemcord")


def setup_logging(level: str) -> None:
    """Log to stderr in one plain format; discord.py's own logs join at WARNING and above."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("discord").setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)


async def _check(settings: Settings) -> int:
    from storage import open_store

    prepare_db_path(settings)
    store = await open_store(settings.db_path, recover_streaming=False)
    try:
        stats = await store.stats()
    finally:
        await store.close()
    width = max(len(k) for k in settings.redacted())
    for key, value in settings.redacted().items():
        print(f"{key:<{width}}  {value}")
    print(f"{'database':<{width}}  ok ({stats.turns} turns in {stats.channels} channels)")
    missing = [
        name
        for name, value in (
            ("DISCORD_TOKEN", settings.discord_token),
            ("GEMINI_API_KEY", settings.gemini_api_key),
        )
        if not value
    ]
    if missing:
        print(f"not ready to run: set {' and '.join(missing)}", file=sys.stderr)
        return 1
    print("ready to run")
    return 0


def _run_owner(start: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command that owns the database; exit 1 with one sentence if another process does."""
    from storage import StoreLocked

    try:
        return asyncio.run(start())
    except StoreLocked as exc:
        print(f"gemcord: {exc}; stop it first (one database, one bot).", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gemcord` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="gemcord", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "check", "console"),
        help="default: run",
    )
    parser.add_argument("prompt", nargs="?", help="console: answer this one prompt and exit")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(env_file=args.env_file)
        setup_logging(settings.log_level)
        if args.command == "check":
            return asyncio.run(_check(settings))
        if args.command == "console":
            settings.require_gemini()
            prepare_db_path(settings)
            from bot.console import run_console

            return _run_owner(lambda: run_console(settings, args.prompt))
        settings.require_runtime()
        prepare_db_path(settings)
    except ConfigError as exc:
        print(f"gemcord: {exc}", file=sys.stderr)
        return 2

    from bot.app import run_bot

    try:
        return _run_owner(lambda: run_bot(settings))
    except ConfigError as exc:
        print(f"gemcord: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except (OSError, aiohttp.ClientError) as exc:
        print(
            f"gemcord: cannot reach Discord at {settings.discord_api_base_url} ({exc}): "
            "check the network, or DISCORD_API_BASE_URL if you set it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
