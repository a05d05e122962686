"""Log output: plain or JSON lines on stderr."""

from __future__ import annotations

import json
import logging

import pytest

from bot.logs import setup_logging


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "json")
    try:
        log = logging.getLogger("bot.test")
        log.info("reply in channel %s: %s", 1, "complete")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
        log.debug("not shown at INFO")
    finally:
        setup_logging("WARNING")
    lines = capsys.readouterr().err.strip().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "bot.test"
    assert first["message"] == "reply in channel 1: complete" and first["time"].endswith("Z")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]
