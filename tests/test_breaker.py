"""The circuit breaker on its own, on an injected clock."""

from __future__ import annotations

import pytest

from bot.breaker import Breaker, CircuitOpen
from bot.llm import BadRequest, Blocked, KeyRejected, RateLimited, ServerError, Timeout


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fail(breaker: Breaker, error: Exception) -> None:
    with pytest.raises(type(error)), breaker.call():
        raise error


def succeed(breaker: Breaker) -> None:
    with breaker.call():
        pass


def test_opens_after_a_run_of_repeating_failures_only() -> None:
    clock = Clock()
    breaker = Breaker(3, 30.0, clock)
    fail(breaker, RateLimited())
    fail(breaker, Timeout())  # says nothing about the next call
    fail(breaker, BadRequest())
    fail(breaker, ServerError())
    succeed(breaker)  # the run is broken
    fail(breaker, RateLimited())
    fail(breaker, KeyRejected())
    assert breaker.state == "closed" and breaker.blocked() is None
    fail(breaker, ServerError())
    assert breaker.state == "open" and breaker.reason == "server"
    refusal = breaker.blocked()
    assert isinstance(refusal, CircuitOpen) and refusal.retry_in == 30.0
    assert "30 seconds" in refusal.user_message
    with pytest.raises(CircuitOpen), breaker.call():
        raise AssertionError("Gemini must not be called while the breaker is open")


def test_the_cool_down_honours_the_retry_hint_and_one_trial_decides() -> None:
    clock = Clock()
    breaker = Breaker(2, 10.0, clock)
    fail(breaker, RateLimited(retry_after=45.0))
    fail(breaker, RateLimited(retry_after=5.0))
    assert breaker.blocked() is not None and breaker.blocked().retry_in == 45.0  # type: ignore[union-attr]
    clock.now += 44
    assert breaker.blocked() is not None
    clock.now += 1
    assert breaker.blocked() is None
    # the trial: while it runs, everyone else is refused
    with breaker.call():
        assert breaker.state == "half-open"
        other = breaker.blocked()
        assert other is not None and "checking whether Gemini is back" in other.user_message
    assert breaker.state == "closed"


def test_a_failed_trial_opens_again_and_an_inconclusive_one_frees_the_next() -> None:
    clock = Clock()
    breaker = Breaker(1, 10.0, clock)
    fail(breaker, KeyRejected())
    assert "GEMINI_API_KEY" in breaker.blocked().user_message  # type: ignore[union-attr]
    clock.now += 10
    fail(breaker, Timeout())  # the trial ended without telling: the next call is the trial
    assert breaker.blocked() is None
    fail(breaker, RateLimited(retry_after=20.0))  # the trial failed: open again
    assert breaker.state == "open" and breaker.blocked().retry_in == 20.0  # type: ignore[union-attr]
    clock.now += 20
    fail(breaker, Blocked())  # Gemini answered (with a refusal): it is back
    assert breaker.state == "closed"


def test_zero_failures_never_opens() -> None:
    breaker = Breaker(0, 10.0, Clock())
    for _ in range(10):
        fail(breaker, RateLimited())
    assert breaker.state == "closed"
