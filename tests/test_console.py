"""`gemcord console`: the real CLI streams an answer from the fake Gemini and stores the turn."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from tests.fakes.gemini import FakeGemini, Reply

ROOT = Path(__file__).resolve().parents[1]


async def _console(
    fake: FakeGemini, db: Path, *args: str, stdin: bytes = b""
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "console",
        *args,
        "--env-file",
        "/dev/null",
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "GEMINI_API_KEY": "console-test-key-123456",
            "GEMINI_BASE_URL": fake.base_url,
            "GEMCORD_DB": str(db),
            "NO_PROXY": "127.0.0.1",
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_console_answers_one_prompt(tmp_path: Path) -> None:
    async with FakeGemini() as fake:
        fake.script(Reply(chunks=["Hello ", "from ", "the console."], delay=0.02))
        code, out, err = await _console(fake, tmp_path / "c.db", "hi there")
        assert code == 0, out + err
        assert "Hello from the console." in out
        assert "console-test-key" not in out + err
        assert fake.requests[0].question_text().endswith("hi there")
    rows = sqlite3.connect(tmp_path / "c.db").execute("SELECT role, text FROM turns").fetchall()
    assert ("model", "Hello from the console.") in rows


async def test_console_reads_lines_and_reports_failure(tmp_path: Path) -> None:
    async with FakeGemini() as fake:
        fake.script(Reply(chunks=["first"]), Reply.error(400, "Bad model name."))
        code, out, _ = await _console(fake, tmp_path / "c.db", stdin=b"one\n\ntwo\n")
        assert code == 1
        assert "first" in out and "⚠" in out
        assert len(fake.requests) == 2
        assert "[console] one" in fake.requests[1].texts()[0]  # history carried


async def test_the_status_line_goes_to_stderr_and_never_into_the_answer(tmp_path: Path) -> None:
    async with FakeGemini() as fake:
        thought = "**Weighing *both* options**\n\nFirst one, then the other."
        fake.script(Reply(chunks=["The answer."], thoughts=[thought]))
        code, out, err = await _console(fake, tmp_path / "c.db", "which one?")
        assert [r.question_text() for r in fake.requests] == ["[console] which one?"]
    assert code == 0, out + err
    assert out.strip() == "The answer."  # no status line, no Discord markup
    assert "💭 Weighing both options" in err and "-#" not in err
    rows = sqlite3.connect(tmp_path / "c.db").execute("SELECT role, text FROM turns").fetchall()
    assert ("model", "The answer.") in rows
