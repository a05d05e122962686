"""End to end: a mention gets a streamed Gemini reply (real discord.py + real google-genai)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fakes.gemini import Reply
from tests.harness import API_KEY, world

pytestmark = pytest.mark.timeout(60)


async def test_mention_gets_streamed_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        chunks = [f"Word{i} " for i in range(40)] + ["end."]
        w.gemini.script(Reply(chunks=chunks, delay=0.05))
        question = await w.mention(w.general, w.alice, "Tell me something <@&1> long")
        contents = await w.reply_done(question.id)
        assert "".join(contents) == "".join(chunks)
        reply = w.discord.bot_messages(w.general)[0]
        assert reply.reply_to == question.id
        assert len(reply.revisions) >= 3  # created, then edited as the stream went on
        assert reply.mentions_disabled
        request = w.gemini.requests[0]
        assert "Tell me something" in request.question_text()
        assert "<@" not in request.question_text().replace("<@&1>", "")
        assert "Discord" in (request.system_instruction() or "")
        assert not w.discord.rate_limit_hits


async def test_secrets_never_reach_logs_or_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with world(tmp_path) as w:
        w.gemini.script(Reply.error(400, "API key not valid.", reason="API_KEY_INVALID"))
        question = await w.mention(w.general, w.alice, "hello")
        contents = await w.reply_done(question.id)
        assert "GEMINI_API_KEY" in "".join(contents)
        token = w.discord.token
        await w.stop_bot()
    logged = caplog.text
    assert len(logged) > 1000  # DEBUG logging really was captured
    for secret in (token, API_KEY):
        assert secret not in logged
        assert secret not in "".join(contents)
        assert secret.encode() not in w.db_path.read_bytes()
