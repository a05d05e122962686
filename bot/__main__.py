"""Command line: `gemcord run` (default) starts the bot, `gemcord check` validates the set-up
(`--online`: also asks Discord and Gemini), `gemcord console [PROMPT]` talks to Gemini in the
terminal, `gemcord web [--demo]` serves a chat page in the browser."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import platform
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from bot.config import ConfigError, Settings, load_settings, prepare_db_path
from bot.logs import setup_logging

if TYPE_CHECKING:
    from storage import Stats

log = logging.getLogger("gemcord")

ONLINE_TIMEOUT = 10.0
"""Seconds each `check --online` network call may take."""
GC_YOUNG = 10_000
"""Tracked objects made (net) between two collections of Python's youngest generation, against
its default 700: at 500 replies streaming at once the collector took 1.7-2.0 s of the bot's
10-13 s of CPU, and its full collections held the event loop for up to 0.27 s."""
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19


async def _database_stats(settings: Settings) -> Stats:
    """Open the database as a reader (never touching a running bot's replies); its counts."""
    from storage import open_store

    prepare_db_path(settings)
    store = await open_store(settings.database, recover_streaming=False)
    try:
        return await store.stats()
    finally:
        await store.close()


async def _check(settings: Settings) -> int:
    stats = await _database_stats(settings)
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


@dataclass
class CheckResult:
    """One line of `check --online`: ``ok``, ``FAIL`` or ``skip``, and for a failure the one
    sentence (what is wrong and what to do) that goes to stderr."""

    name: str
    status: Literal["ok", "FAIL", "skip"]
    text: str
    problem: str | None = None

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.text}"


def _ok(name: str, text: str) -> CheckResult:
    return CheckResult(name, "ok", text)


def _fail(name: str, text: str, problem: str) -> CheckResult:
    return CheckResult(name, "FAIL", text, problem)


def _skip(name: str, text: str) -> CheckResult:
    return CheckResult(name, "skip", text)


async def _check_online(settings: Settings) -> int:
    """`gemcord check --online`: one line per check on stdout, one sentence per problem on
    stderr; 0 when every check passed. Secrets are never printed."""
    results = [await _check_database(settings)]
    results += await _check_discord(settings)
    results += await _check_gemini(settings)
    for result in results:
        print(result.line(), flush=True)
    problems = [r.problem for r in results if r.problem]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


async def _check_database(settings: Settings) -> CheckResult:
    from storage import StorageError

    try:
        stats = await _database_stats(settings)
    except ConfigError as exc:
        return _fail("database", settings.database_label, str(exc))
    except (StorageError, OSError) as exc:
        where = settings.database_label
        name = "GEMCORD_DATABASE_URL" if settings.database_url else "GEMCORD_DB"
        return _fail(
            "database",
            f"{where} cannot be opened",
            f"The database {where} cannot be opened ({exc}): check {name}.",
        )
    return _ok(
        "database", f"{settings.database_label} ({stats.turns} turns in {stats.channels} channels)"
    )


class _Unreachable(Exception):
    """A Discord request got no HTTP answer; the message says why, in a few words."""


async def _discord_get(http: aiohttp.ClientSession, base: str, path: str) -> tuple[int, Any]:
    """GET a Discord route: (status, JSON body or None); _Unreachable when no answer came."""
    try:
        async with asyncio.timeout(ONLINE_TIMEOUT):
            async with http.get(base + path) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                return response.status, body
    except TimeoutError:
        raise _Unreachable(f"no answer within {ONLINE_TIMEOUT:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        err = exc.os_error
        why = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
        raise _Unreachable(f"cannot connect to {exc.host}:{exc.port}: {why}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise _Unreachable(str(exc) or type(exc).__name__) from None


async def _check_discord(settings: Settings) -> list[CheckResult]:
    """The token (`GET /users/@me`) and the Message Content intent (`GET /applications/@me`)."""
    token_check, intent_check = "discord token", "message content intent"
    token = settings.discord_token
    if not token:
        return [
            _fail(
                token_check,
                "DISCORD_TOKEN is not set",
                "DISCORD_TOKEN is not set: put your bot token from the Discord developer "
                "portal in .env or the environment.",
            ),
            _skip(intent_check, "not checked without a token"),
        ]
    base = settings.discord_api_base_url.rstrip("/")
    headers = {
        "Authorization": f"Bot {token}",
        "User-Agent": f"DiscordBot (https://github.com/gemcord, 0.1) Python/"
        f"{platform.python_version()} gemcord-check",
    }
    # Like discord.py, which the bot uses: no proxy from the environment.
    async with aiohttp.ClientSession(headers=headers, trust_env=False) as http:
        try:
            status, me = await _discord_get(http, base, "/users/@me")
        except _Unreachable as exc:
            return [
                _fail(
                    token_check,
                    f"cannot reach Discord at {base} ({exc})",
                    f"Discord could not be reached at {base} ({exc}): check the network, "
                    "or DISCORD_API_BASE_URL if you set it.",
                ),
                _skip(intent_check, "not checked: Discord cannot be reached"),
            ]
        if status == 401:
            return [
                _fail(
                    token_check,
                    "Discord refused the token (401 Unauthorized)",
                    "Discord refused DISCORD_TOKEN: copy the bot token again from the Discord "
                    "developer portal (your application → Bot → Reset Token).",
                ),
                _skip(intent_check, "not checked without a valid token"),
            ]
        if status != 200 or not isinstance(me, dict):
            return [
                _fail(
                    token_check,
                    f"Discord answered HTTP {status}",
                    f"Discord answered HTTP {status} to GET /users/@me: try again in a minute.",
                ),
                _skip(intent_check, "not checked"),
            ]
        who = "bot" if me.get("bot") else "user"
        results = [_ok(token_check, f"{who} {me.get('username')} (id {me.get('id')})")]
        results.append(await _check_intent(http, base))
    return results


async def _check_intent(http: aiohttp.ClientSession, base: str) -> CheckResult:
    name = "message content intent"
    try:
        status, app = await _discord_get(http, base, "/applications/@me")
    except _Unreachable as exc:
        return _fail(
            name,
            f"cannot reach Discord ({exc})",
            f"Discord stopped answering ({exc}), so the Message Content intent was not checked.",
        )
    if status != 200 or not isinstance(app, dict):
        return _fail(
            name,
            f"Discord answered HTTP {status}",
            f"Discord answered HTTP {status} to GET /applications/@me: try again in a minute.",
        )
    flags = int(app.get("flags") or 0)
    if flags & GATEWAY_MESSAGE_CONTENT:
        return _ok(name, "enabled")
    if flags & GATEWAY_MESSAGE_CONTENT_LIMITED:
        return _ok(name, "enabled (limited: enough below 100 servers)")
    return _fail(
        name,
        "off for this application",
        "The Message Content intent is off, so the bot cannot read questions: turn it on in "
        "the Discord developer portal (your application → Bot → Privileged Gateway Intents).",
    )


async def _check_gemini(settings: Settings) -> list[CheckResult]:
    """The key (`models.list`, every page) and the configured model (`models.get`)."""
    from bot.llm import GeminiClient, KeyRejected, LLMError, ModelCheck, judge_model

    key_check, model_check = "gemini key", "gemini model"
    model = settings.gemini_model
    if not settings.gemini_api_key:
        return [
            _fail(
                key_check,
                "GEMINI_API_KEY is not set",
                "GEMINI_API_KEY is not set: put your Gemini API key from Google AI Studio in "
                ".env or the environment.",
            ),
            _skip(model_check, f"{model} not checked without a key"),
        ]
    where = settings.gemini_base_url or "Google"
    client = GeminiClient(
        settings.gemini_api_key, base_url=settings.gemini_base_url, request_timeout=ONLINE_TIMEOUT
    )
    try:
        try:
            models = await client.list_models()
        except KeyRejected as exc:
            return [
                _fail(
                    key_check,
                    f"rejected by Gemini ({exc.detail})",
                    "Gemini rejected GEMINI_API_KEY: create a key in Google AI Studio "
                    "(https://aistudio.google.com/apikey) and set it.",
                ),
                _skip(model_check, f"{model} not checked without a valid key"),
            ]
        except LLMError as exc:
            reason = exc.detail or exc.user_message
            return [
                _fail(
                    key_check,
                    f"could not be checked at {where} ({reason})",
                    f"Gemini could not be asked at {where} ({reason}): check the network, "
                    "or GEMINI_BASE_URL if you set it.",
                ),
                _skip(model_check, f"{model} not checked"),
            ]
        chat = sum(1 for m in models if m.supports_generate)
        results = [_ok(key_check, f"accepted ({len(models)} models, {chat} can chat)")]
        try:
            info = await client.get_model(model)
        except LLMError as exc:
            reason = exc.detail or exc.user_message
            results.append(
                _fail(
                    model_check,
                    f"{model} could not be checked ({reason})",
                    f"Gemini did not say whether {model} exists ({reason}): try again.",
                )
            )
            return results
        if info is None or not info.supports_generate:
            # models.get decides; the list only supplies the names to suggest
            offer = judge_model(model, models).suggestions
            verdict = ModelCheck(model, "unknown" if info is None else "unsupported", offer)
            results.append(
                _fail(
                    model_check,
                    verdict.explain(),
                    f"GEMINI_MODEL is {model}, which "
                    + ("Gemini does not have" if info is None else "cannot chat")
                    + ": set it to a model from Gemini's list"
                    + (f" such as {verdict.suggestions[0]}." if verdict.suggestions else "."),
                )
            )
            return results
        limits = ""
        if info.input_token_limit and info.output_token_limit:
            limits = f"; {info.input_token_limit:,} tokens in, {info.output_token_limit:,} out"
        label = f" ({info.display_name}{limits})" if info.display_name else ""
        results.append(_ok(model_check, f"{info.name}{label}"))
        return results
    finally:
        await client.aclose()


def _run_owner(start: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command that owns the database; exit 1 with one sentence if another process does."""
    from storage import StoreLocked

    # What the imports made stays for good: never scanned again, and young objects less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    try:
        return asyncio.run(start())
    except StoreLocked as exc:
        print(f"gemcord: {exc}; stop it first (one database, one bot).", file=sys.stderr)
        return 1


def _web(settings: Settings, demo: bool, host: str, port: int | None) -> int:
    """`gemcord web`: the chat page, with Gemini or (``--demo`` or no key) the demo model."""
    from bot.web.app import check_host, run_web

    check_host(host, settings.web_token)
    prepare_db_path(settings)
    if not demo and not settings.gemini_api_key:
        print("gemcord web: GEMINI_API_KEY is not set, so the demo model answers.", file=sys.stderr)
    try:
        return _run_owner(
            lambda: run_web(
                settings,
                demo=demo,
                host=host,
                port=8080 if port is None else port,
                token=settings.web_token,
            )
        )
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"gemcord web: cannot serve on {host}:{port} ({exc}).", file=sys.stderr)
        return 1


def _migrate(source: str, target: str) -> int:
    """`gemcord migrate`: copy a SQLite database into PostgreSQL and verify the copy."""
    from storage import StorageError, is_postgres_url
    from storage.transfer import migrate_database

    if not is_postgres_url(target):
        print("gemcord migrate: --to must be a postgresql:// URL.", file=sys.stderr)
        return 2
    try:
        reports = asyncio.run(
            migrate_database(source, target, progress=lambda line: print(line, flush=True))
        )
    except (StorageError, ValueError, OSError) as exc:
        print(f"gemcord migrate: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        print(f"{report.name}: {report.target_rows:,} rows, sha256 {report.target_sum[:16]} ok")
    print("migrated and verified: set GEMCORD_DATABASE_URL to the new database to use it")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gemcord` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="gemcord", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "check", "console", "web", "migrate"),
        help="default: run",
    )
    parser.add_argument("prompt", nargs="?", help="console: answer this one prompt and exit")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    parser.add_argument(
        "--online",
        action="store_true",
        help="check: also ask Discord (token, Message Content intent) and Gemini (key, model)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="web: answer with the built-in scripted demo model instead of Gemini",
    )
    parser.add_argument("--host", help="web: address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="web: port to serve on (default: 8080; 0: any)")
    parser.add_argument(
        "--from", dest="source", help="migrate: the SQLite database (sqlite:///path/gemcord.db)"
    )
    parser.add_argument(
        "--to", dest="target", help="migrate: the PostgreSQL database (postgresql://…)"
    )
    args = parser.parse_args(argv)
    if args.command == "migrate":
        if not args.source or not args.target:
            parser.error("migrate needs --from sqlite:///path and --to postgresql://…")
        setup_logging("INFO", "text")
        return _migrate(args.source, args.target)
    if args.source or args.target:
        parser.error("--from and --to go with the migrate command")
    if args.online and args.command != "check":
        parser.error("--online goes with the check command")
    if args.command != "web" and (args.demo or args.host or args.port is not None):
        parser.error("--demo, --host and --port go with the web command")
    try:
        settings = load_settings(env_file=args.env_file)
        setup_logging(settings.log_level, settings.log_format)
        if args.command == "check":
            return asyncio.run(_check_online(settings) if args.online else _check(settings))
        if args.command == "console":
            settings.require_gemini()
            prepare_db_path(settings)
            from bot.console import run_console

            return _run_owner(lambda: run_console(settings, args.prompt))
        if args.command == "web":
            return _web(settings, args.demo, args.host or "127.0.0.1", args.port)
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
