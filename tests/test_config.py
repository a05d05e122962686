"""Settings: defaults, every malformed setting named in one sentence, secrets never shown."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings, prepare_db_path, redact

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz012345"
ROOT = Path(__file__).resolve().parents[1]
KEY = "AIzaSyFAKE-key-0123456789abcdefghijkl"


def test_defaults_and_required(tmp_path: Path) -> None:
    s = load_settings({}, env_file=None)
    assert s.gemini_model == "gemini-2.5-flash"
    assert s.db_path == Path("./data/gemcord.db")
    assert s.discord_api_base_url == "https://discord.com/api/v10"
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        s.require_runtime()
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        load_settings({"DISCORD_TOKEN": TOKEN}, env_file=None).require_runtime()


def test_env_file_and_environment_precedence(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"DISCORD_TOKEN={TOKEN}\nGEMINI_MODEL=gemini-2.5-pro\nLOG_LEVEL=debug\n")
    s = load_settings({"GEMINI_MODEL": "gemini-2.0-flash", "GEMINI_API_KEY": KEY}, env_file)
    assert s.discord_token == TOKEN
    assert s.gemini_model == "gemini-2.0-flash"
    assert s.log_level == "DEBUG"
    s.require_runtime()


def test_google_api_key_wins() -> None:
    s = load_settings({"GEMINI_API_KEY": "a" * 20, "GOOGLE_API_KEY": "b" * 20}, env_file=None)
    assert s.gemini_api_key == "b" * 20


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GEMINI_BASE_URL", "localhost:8080"),
        ("DISCORD_API_BASE_URL", "ftp://x"),
        ("LOG_LEVEL", "loud"),
        ("GEMCORD_ALLOWED_CHANNELS", "12,general"),
        ("GEMCORD_COOLDOWN_SECONDS", "-1"),
        ("GEMCORD_EDITS_PER_WINDOW", "0"),
        ("GEMCORD_MAX_IMAGE_MB", "ten"),
        ("GEMCORD_REPLIES_PER_CHANNEL", "0"),
        ("GEMINI_MODEL", "gemini 2.5"),
        ("DISCORD_TOKEN", "Bot abc.def"),
    ],
)
def test_malformed_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: value}, env_file=None)
    message = str(err.value)
    assert message.startswith(name)
    assert message.endswith(".") and message.count(". ") == 0  # one sentence
    assert err.value.setting == name


def test_parsed_values() -> None:
    s = load_settings(
        {
            "GEMCORD_ALLOWED_CHANNELS": "1, 2,3",
            "GEMCORD_MAX_IMAGE_MB": "2.5",
            "DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10/",
            "GEMCORD_MAX_IMAGE_MEGAPIXELS": "12.5",
            "GEMCORD_REPLIES_PER_USER": "1",
            "GEMCORD_MAX_INLINE_MB": "30",
        },
        env_file=None,
    )
    assert (s.max_image_pixels, s.replies_per_user) == (12_500_000, 1)
    assert s.max_inline_bytes == 30 * 1024 * 1024
    assert s.allowed_channels == {1, 2, 3}
    assert s.max_image_bytes == int(2.5 * 1024 * 1024)
    assert s.discord_api_base_url == "http://127.0.0.1:9/api/v10"


def test_redaction_never_shows_secrets() -> None:
    s = load_settings({"DISCORD_TOKEN": TOKEN, "GEMINI_API_KEY": KEY}, env_file=None)
    shown = repr(s) + str(s.redacted())
    assert TOKEN not in shown and KEY not in shown
    assert s.redacted()["gemini_api_key"] == "****" + KEY[-4:]
    assert redact(None) == "(unset)" and redact("short") == "****"


def test_db_folder_created_and_bad_path(tmp_path: Path) -> None:
    s = load_settings({"GEMCORD_DB": str(tmp_path / "a" / "b" / "x.db")}, env_file=None)
    assert prepare_db_path(s).parent.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = load_settings({"GEMCORD_DB": str(blocker / "x.db")}, env_file=None)
    with pytest.raises(ConfigError, match="GEMCORD_DB"):
        prepare_db_path(bad)


def _gemcord(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_without_token_exits_2_with_one_sentence(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    done = _gemcord(["run"], {"PYTHONPATH": str(root)}, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN" in lines[0]
    assert "Traceback" not in done.stderr


def test_check_prints_key_redacted(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {
        "PYTHONPATH": str(root),
        "GEMINI_API_KEY": KEY,
        "DISCORD_TOKEN": TOKEN,
        "GEMCORD_DB": str(tmp_path / "data" / "g.db"),
    }
    done = _gemcord(["check"], env, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert KEY not in out and TOKEN not in out
    assert "****" + KEY[-4:] in out
    assert "ready to run" in out
    assert (tmp_path / "data" / "g.db").exists()


async def test_refused_token_exits_2_with_one_sentence(tmp_path: Path) -> None:
    from tests.fakes.discord import FakeDiscord

    root = ROOT
    async with FakeDiscord() as fake:
        env = {
            "PYTHONPATH": str(root),
            "DISCORD_TOKEN": "not.the.token",
            "GEMINI_API_KEY": KEY,
            "DISCORD_API_BASE_URL": fake.api_base,
            "GEMCORD_DB": str(tmp_path / "g.db"),
            "NO_PROXY": "127.0.0.1",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err.decode()
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("gemcord: DISCORD_TOKEN was refused by Discord")
    assert "Traceback" not in err.decode() and "not.the.token" not in err.decode()


def test_unreachable_discord_exits_1(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {
        "PYTHONPATH": str(root),
        "DISCORD_TOKEN": TOKEN,
        "GEMINI_API_KEY": KEY,
        "DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10",
        "GEMCORD_DB": str(tmp_path / "g.db"),
        "NO_PROXY": "127.0.0.1",
    }
    done = _gemcord(["run"], env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "cannot reach Discord" in done.stderr and "Traceback" not in done.stderr
    assert TOKEN not in done.stderr


def test_every_setting_is_in_env_example_and_the_readme() -> None:
    """Each environment variable the bot reads is documented in both places."""
    root = ROOT
    source = "\n".join(p.read_text() for p in (root / "bot").rglob("*.py"))
    names = set(re.findall(r"\"((?:GEMCORD|GEMINI|DISCORD)_[A-Z_]+)\"", source))
    assert {"DISCORD_TOKEN", "GEMINI_API_KEY", "GEMCORD_DB"} <= names
    example, readme = (root / ".env.example").read_text(), (root / "README.md").read_text()
    assert not sorted(n for n in names if n not in example), "missing in .env.example"
    assert not sorted(n for n in names if n not in readme), "missing in README.md"
