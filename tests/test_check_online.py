"""`gemcord check --online` as an admin runs it: a subprocess against the fake Discord and the
fake Gemini (real aiohttp for Discord, real google-genai SDK for Gemini)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_models import Intent
from tests.fakes.gemini import FakeGemini

pytestmark = pytest.mark.timeout(60)

KEY = "AIza-check-online-secret-4242"
REPO = Path(__file__).resolve().parent.parent
CHECKS = ["database", "discord token", "message content intent", "gemini key", "gemini model"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def line(self, check: str) -> str:
        """The stdout line of one check."""
        [line] = [x for x in self.lines if x.split(None, 1)[1].startswith(check + ":")]
        return line


@dataclass
class Fakes:
    discord: FakeDiscord
    gemini: FakeGemini
    env: dict[str, str]

    async def check(self, *extra: str, **env: str) -> Run:
        """Run `python -m bot check [extra…]` with the fakes' settings (``env`` overrides)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "check",
            *extra,
            "--env-file",
            os.devnull,
            cwd=REPO,
            env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 45)
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def fakes(tmp_path: Path, discord: FakeDiscord | None = None) -> AsyncIterator[Fakes]:
    async with discord or FakeDiscord() as fake_discord, FakeGemini(api_key=KEY) as fake_gemini:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL")
        }
        env.update(
            DISCORD_TOKEN=fake_discord.token,
            GEMINI_API_KEY=KEY,
            GEMINI_BASE_URL=fake_gemini.base_url,
            DISCORD_API_BASE_URL=fake_discord.api_base,
            GEMCORD_DB=str(tmp_path / "gemcord.db"),
            LOG_LEVEL="DEBUG",  # secrets stay out even of debug logs
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        yield Fakes(fake_discord, fake_gemini, env)


def no_secrets(run: Run, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in run.out and secret not in run.err
    assert "Traceback" not in run.err


def problems(run: Run) -> list[str]:
    """The stderr lines that are not log lines (the one-sentence problems)."""
    return [
        line
        for line in run.err.splitlines()
        if line.strip() and not line[:4].isdigit()  # log lines start with the date
    ]


async def test_good_setup_every_check_ok(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        f.gemini.max_page_size = 2  # the key check must follow nextPageToken
        run = await f.check("--online")
        assert run.code == 0, run.err
        assert [line.split(None, 1)[1].split(":")[0] for line in run.lines] == CHECKS
        assert all(line.startswith("ok   ") for line in run.lines), run.out
        assert run.line("discord token").endswith(
            f"bot {f.discord.bot_user.username} (id {f.discord.bot_user.id})"
        )
        assert run.line("message content intent").endswith("enabled")
        assert "6 models" in run.line("gemini key")
        assert "gemini-2.5-flash (Gemini 2.5 Flash" in run.line("gemini model")
        assert problems(run) == []
        no_secrets(run, f.discord.token, KEY)
        # one page at a time (3 pages), then models.get for the configured model
        paths = [(r.path, r.query.get("pageToken")) for r in f.gemini.model_requests]
        assert [p for p, _ in paths] == ["/v1/models"] * 3 + ["/v1/models/gemini-2.5-flash"]
        assert paths[0][1] is None and paths[1][1] and paths[2][1]
        assert all(r.has_api_key(KEY) for r in f.gemini.model_requests)
        assert f.gemini.requests == []  # nothing generated, nothing billed
        assert [c.path for c in f.discord.calls] == ["/users/@me", "/applications/@me"]


async def test_bad_discord_token(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        wrong = "MTIz" + "x" * 20 + ".abcd.wrongwrongwrongwrong"
        run = await f.check("--online", DISCORD_TOKEN=wrong)
        assert run.code == 1
        assert run.line("discord token").startswith("FAIL discord token: Discord refused")
        assert run.line("message content intent").startswith("skip")
        assert run.line("gemini key").startswith("ok") and run.line("gemini model").startswith("ok")
        [problem] = problems(run)
        assert "DISCORD_TOKEN" in problem and problem.endswith(".")
        no_secrets(run, wrong, f.discord.token, KEY)


async def test_bad_gemini_key(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        wrong = "AIza-not-the-right-key-000000"
        run = await f.check("--online", GEMINI_API_KEY=wrong)
        assert run.code == 1
        assert run.line("gemini key").startswith("FAIL gemini key: rejected by Gemini")
        assert "API key not valid" in run.line("gemini key")
        assert run.line("gemini model").startswith("skip")
        assert run.line("discord token").startswith("ok")
        [problem] = problems(run)
        assert "GEMINI_API_KEY" in problem
        no_secrets(run, wrong, KEY, f.discord.token)


async def test_unknown_model(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        run = await f.check("--online", GEMINI_MODEL="gemini-x")
        assert run.code == 1
        line = run.line("gemini model")
        assert line.startswith("FAIL gemini model: gemini-x does not exist (try gemini-2.5-flash")
        assert "gemini-embedding" not in line
        assert all(run.line(c).startswith("ok") for c in CHECKS[:-1])
        [problem] = problems(run)
        assert problem.startswith("GEMINI_MODEL is gemini-x") and "gemini-2.5-flash" in problem
        assert f.gemini.model_requests[-1].path == "/v1/models/gemini-x"


async def test_model_that_cannot_chat(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        run = await f.check("--online", GEMINI_MODEL="gemini-embedding-001")
        assert run.code == 1
        assert "cannot chat" in run.line("gemini model")


async def test_no_message_content_intent(tmp_path: Path) -> None:
    without = FakeDiscord(privileged_intents=Intent.privileged() & ~Intent.MESSAGE_CONTENT)
    async with fakes(tmp_path, without) as f:
        run = await f.check("--online")
        assert run.code == 1
        assert run.line("discord token").startswith("ok")
        assert run.line("message content intent").startswith("FAIL message content intent: off")
        [problem] = problems(run)
        assert "Message Content intent" in problem and "Privileged Gateway Intents" in problem


class LimitedIntentDiscord(FakeDiscord):
    """An unverified app in fewer than 100 servers: GATEWAY_MESSAGE_CONTENT_LIMITED only."""

    def _application_flags(self) -> int:
        return (1 << 23) | (1 << 19)


async def test_limited_message_content_intent_is_enough(tmp_path: Path) -> None:
    async with fakes(tmp_path, LimitedIntentDiscord()) as f:
        run = await f.check("--online")
        assert run.code == 0, run.err
        assert "enabled (limited" in run.line("message content intent")


async def test_unreachable_hosts_are_fail_lines(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        dead = "http://127.0.0.1:9"  # discard port: nothing listens there
        run = await f.check(
            "--online", DISCORD_API_BASE_URL=dead + "/api/v10", GEMINI_BASE_URL=dead
        )
        assert run.code == 1
        assert run.line("discord token").startswith("FAIL discord token: cannot reach Discord")
        assert run.line("message content intent").startswith("skip")
        assert run.line("gemini key").startswith("FAIL gemini key: could not be checked")
        assert len(problems(run)) == 2
        no_secrets(run, f.discord.token, KEY)


async def test_missing_secrets(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        run = await f.check("--online", DISCORD_TOKEN="", GEMINI_API_KEY="")
        assert run.code == 1
        assert "DISCORD_TOKEN is not set" in run.line("discord token")
        assert "GEMINI_API_KEY is not set" in run.line("gemini key")
        assert len(problems(run)) == 2
        assert f.discord.calls == [] and f.gemini.model_requests == []


async def test_without_online_nothing_goes_out(tmp_path: Path) -> None:
    async with fakes(tmp_path) as f:
        run = await f.check()
        assert run.code == 0, run.err
        assert run.lines[-1] == "ready to run"
        assert not any(line.startswith(("ok ", "FAIL")) for line in run.lines)
        assert f.discord.calls == [] and f.gemini.model_requests == []
        no_secrets(run, f.discord.token, KEY)
