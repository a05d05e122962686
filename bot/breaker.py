"""The circuit breaker for Gemini (one per process): after a run of failures that will repeat
(429 quota, a refused key, 5xx), questions get a clear message at once for a cool-down instead
of calling the API; then one trial call decides whether to close it again.

States: *closed* (calls go through; consecutive repeating failures are counted), *open* (no
call until the cool-down ends: the longer of the setting and the server's retry hint), then
*half-open* (the next call is the trial; others are refused while it runs). A trial that
succeeds closes the breaker; one that fails opens it again; one that ends otherwise (stopped,
timed out, a bad request) lets the next call be the trial.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Literal

from bot.llm import Blocked, KeyRejected, LLMError, RateLimited, ServerError

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half-open"]
Why = Literal["quota", "key", "server"]

MESSAGES: dict[str, str] = {
    "quota": "⏸ Gemini is over its quota right now, so I'm not asking it for {wait} — try "
    "again then.",
    "key": "⏸ Gemini is refusing the bot's API key, so I'm not asking it for {wait} "
    "(an admin needs to check GEMINI_API_KEY).",
    "server": "⏸ Gemini is having trouble right now, so I'm not asking it for {wait} — try again "
    "then.",
    "trial": "⏸ I'm checking whether Gemini is back — try again in a moment.",
}


def why(error: BaseException) -> Why | None:
    """Which repeating failure an error is (None: one that says nothing about the next call)."""
    if isinstance(error, RateLimited):
        return "quota"
    if isinstance(error, KeyRejected):
        return "key"
    if isinstance(error, ServerError):
        return "server"
    return None


def wait_words(seconds: float) -> str:
    """'30 seconds', '1 second', 'about 3 minutes'."""
    if seconds < 90:
        n = max(1, math.ceil(seconds))
        return f"{n} second{'s' if n != 1 else ''}"
    return f"about {math.ceil(seconds / 60)} minutes"


class CircuitOpen(LLMError):
    """The breaker is open: Gemini was not called. ``retry_in`` is in seconds."""

    def __init__(self, retry_in: float, reason: Why | None) -> None:
        self.retry_in = retry_in
        self.reason = reason
        text = MESSAGES[reason or "trial"].format(wait=wait_words(retry_in))
        super().__init__(text, detail=f"circuit open ({reason or 'trial running'})")


class Breaker:
    """Counts repeating Gemini failures and refuses calls while open (see the module doc)."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        """Consecutive repeating failures that open the breaker (0: never open)."""
        self.cooldown = cooldown
        self.clock = clock
        self.state: State = "closed"
        self.reason: Why | None = None
        self._run = 0
        self._hint = 0.0
        self._until = 0.0
        self._trial = False

    def blocked(self) -> CircuitOpen | None:
        """The refusal a call would get now (None: it may go ahead); changes nothing."""
        if self.state == "closed":
            return None
        now = self.clock()
        if self.state == "open" and now < self._until:
            return CircuitOpen(self._until - now, self.reason)
        if self._trial:
            return CircuitOpen(0.0, None)
        return None

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Around one Gemini call: raises CircuitOpen instead when it may not go ahead, and
        learns from how the call ends."""
        refusal = self.blocked()
        if refusal is not None:
            raise refusal
        trial = self.state != "closed"
        if trial:
            self.state, self._trial = "half-open", True
            log.info("circuit breaker: trial call to Gemini")
        try:
            yield
        except LLMError as exc:
            kind = why(exc)
            if kind is not None:
                self._failed(kind, getattr(exc, "retry_after", None), trial)
            elif isinstance(exc, Blocked):
                self._succeeded(trial)
            else:
                self._neutral(trial)
            raise
        except BaseException:
            self._neutral(trial)
            raise
        else:
            self._succeeded(trial)

    def _succeeded(self, trial: bool) -> None:
        if trial or self.state != "closed":
            log.info("circuit breaker closed: Gemini answered")
        self.state, self.reason, self._trial = "closed", None, False
        self._run, self._hint = 0, 0.0

    def _neutral(self, trial: bool) -> None:
        if trial:
            self._trial = False  # the next call is the trial

    def _failed(self, kind: Why, retry_after: float | None, trial: bool) -> None:
        self._run += 1
        self._hint = max(self._hint, retry_after or 0.0)
        if self.failures <= 0 or (not trial and self._run < self.failures):
            return
        if not trial and self.state != "closed":
            return  # a call that started before the breaker opened
        hint = (retry_after or 0.0) if trial else self._hint
        wait = max(self.cooldown, hint)
        self.state, self.reason, self._trial = "open", kind, False
        self._until = self.clock() + wait
        log.warning(
            "circuit breaker open for %.0f s after %d %s failure(s) in a row",
            wait,
            self._run,
            kind,
        )
