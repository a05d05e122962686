"""`gemcord console`: talk to Gemini in a terminal through the same reply engine as Discord (a
fast check of the key and the model)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from bot.answer import answer, stored_status
from bot.breaker import Breaker
from bot.config import Settings
from bot.conversation import Question
from bot.inflight import InFlightRegistry
from bot.llm import GeminiClient
from bot.metrics import Metrics
from bot.pacing import PacerRegistry
from bot.streaming import DEFAULT_STYLE, Buttons, plain_status
from storage import Store

CHANNEL_ID = 0  # the console's own "channel" in the store


class ConsoleSink:
    """Prints each message once, growing in place: an edit prints only what it added. The live
    status line (thinking, searching) goes to ``err``, never into the answer."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out = out
        self.err = err
        self._shown: dict[int, str] = {}

    def show_status(self, line: str) -> None:
        """Print what the model is doing (``💭 Planning…``) on its own line of ``err``."""
        self.err.write(plain_status(line) + "\n")
        self.err.flush()

    def _visible(self, text: str) -> str:
        return text.removesuffix(DEFAULT_STYLE.live_marker)

    async def send(self, text: str, buttons: Buttons = ()) -> int:
        """Start a new message on a new line."""
        message_id = len(self._shown) + 1
        if self._shown:
            self.out.write("\n")
        self._shown[message_id] = ""
        await self.edit(message_id, text)
        return message_id

    async def edit(self, message_id: int, text: str, buttons: Buttons = ()) -> None:
        """Print the new tail of the message (a rewrite of earlier text is printed whole)."""
        old, new = self._shown[message_id], self._visible(text)
        self.out.write(new[len(old) :] if new.startswith(old) else "\n" + new)
        self.out.flush()
        self._shown[message_id] = new

    async def typing(self) -> None:
        """Nothing to show in a terminal."""


@dataclass
class ConsoleEngine:
    """The services :func:`bot.answer.answer` needs, without Discord."""

    settings: Settings
    store: Store
    llm: GeminiClient
    pacers: PacerRegistry = field(default_factory=lambda: PacerRegistry(50, 1.0))
    """A terminal has no rate limit to respect."""
    inflight: InFlightRegistry = field(default_factory=InFlightRegistry)
    metrics: Metrics = field(default_factory=lambda: Metrics(lambda: 0, lambda: 0))
    breaker: Breaker = field(default_factory=lambda: Breaker(0, 0.0))
    """Never open: one person at a terminal sees each failure anyway."""
    clock: Callable[[], float] = time.time
    display_name: str = "gemcord"


async def run_console(settings: Settings, prompt: str | None = None) -> int:
    """Answer `prompt` (or each line typed) with streaming output; Ctrl-C stops a reply."""
    from storage import open_store

    engine = ConsoleEngine(
        settings,
        await open_store(settings.database),
        GeminiClient(
            settings.gemini_api_key or "",
            base_url=settings.gemini_base_url,
            first_chunk_timeout=settings.first_chunk_timeout,
            chunk_timeout=settings.idle_timeout,
            total_timeout=settings.total_timeout,
        ),
    )
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
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Ctrl-C: stop the reply
                loop.add_signal_handler(signal.SIGINT, engine.inflight.cancel_all, "stopped")
            try:
                result = await answer(engine, question, ConsoleSink())
            finally:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signal.SIGINT)
            print()
            failed = failed or result is None or stored_status(result) in ("failed", "blocked")
            if prompt is not None:
                return 1 if failed else 0
    finally:
        await engine.llm.aclose()
        await engine.store.close()


async def _read_line(loop: asyncio.AbstractEventLoop) -> str | None:
    if sys.stdin.isatty():
        sys.stdout.write("you> ")
        sys.stdout.flush()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    return line if line else None
