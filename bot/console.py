"""`gemcord console`: talk to Gemini in a terminal through the same renderer (checks a key fast)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TextIO

from bot.answer import length_notice, stored_status
from bot.cancel import CancelToken
from bot.config import Settings
from bot.conversation import Question, build_contents, system_instruction
from bot.llm import GeminiClient
from bot.pacing import PacerRegistry
from bot.streaming import DEFAULT_STYLE, render_stream

CHANNEL_ID = 0  # the console's own "channel" in the store


class ConsoleSink:
    """Prints each message once, growing in place: an edit prints only what it added."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self._shown: dict[int, str] = {}

    def _visible(self, text: str) -> str:
        return text.removesuffix(DEFAULT_STYLE.live_marker)

    async def send(self, text: str) -> int:
        """Start a new message on a new line."""
        message_id = len(self._shown) + 1
        if self._shown:
            self.out.write("\n")
        self._shown[message_id] = ""
        await self.edit(message_id, text)
        return message_id

    async def edit(self, message_id: int, text: str) -> None:
        """Print the new tail of the message (a rewrite of earlier text is printed whole)."""
        old, new = self._shown[message_id], self._visible(text)
        self.out.write(new[len(old) :] if new.startswith(old) else "\n" + new)
        self.out.flush()
        self._shown[message_id] = new

    async def typing(self) -> None:
        """Nothing to show in a terminal."""


async def run_console(settings: Settings, prompt: str | None = None) -> int:
    """Answer `prompt` (or each line typed) with streaming output; Ctrl-C stops a reply."""
    from storage import open_store

    store = await open_store(settings.db_path)
    llm = GeminiClient(settings.gemini_api_key or "", base_url=settings.gemini_base_url)
    pacer = PacerRegistry(50, 1.0).get(CHANNEL_ID)  # a terminal has no rate limit to respect
    loop = asyncio.get_running_loop()
    failed = False
    try:
        while True:
            text = prompt if prompt is not None else await _read_line(loop)
            if text is None:
                return 1 if failed else 0
            if not text.strip():
                continue
            question = Question(CHANNEL_ID, 0, "console", text.strip(), in_dm=True)
            channel = await store.get_channel_settings(CHANNEL_ID)
            model = channel.model or settings.gemini_model
            user_turn = await store.add_user_turn(
                channel_id=CHANNEL_ID, author_id=0, author_name="console", text=question.text
            )
            history = await store.load_history(
                CHANNEL_ID, max_turns=settings.history_turns, before_turn=user_turn
            )
            model_turn = await store.start_model_turn(
                channel_id=CHANNEL_ID, reply_to=user_turn, model=model
            )
            token = CancelToken()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, token.cancel)
            stream = llm.stream(
                model=model,
                contents=build_contents(history, question),
                system_instruction=system_instruction(settings.persona, "gemcord", True),
                max_output_tokens=settings.max_output_tokens,
            )
            result = await render_stream(
                stream,
                ConsoleSink(),
                pacer,
                token,
                end_notice=lambda s=stream: length_notice(s),
            )
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            print()
            status = stored_status(result)
            failed = failed or status in ("failed", "blocked")
            await store.finish_model_turn(model_turn, text=result.text, status=status)  # type: ignore[arg-type]
            if prompt is not None:
                return 1 if failed else 0
    finally:
        await llm.aclose()
        await store.close()


async def _read_line(loop: asyncio.AbstractEventLoop) -> str | None:
    if sys.stdin.isatty():
        sys.stdout.write("you> ")
        sys.stdout.flush()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    return line if line else None
