"""Estimated costs: the price table, its setting, and what a reply costs."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from bot.prices import DEFAULT_PRICES, Price, cost, parse_prices, price_for
from storage import TokenUsage


def test_defaults_cover_the_current_models_and_prefixes_find_their_family() -> None:
    for model in ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"):
        assert price_for(model, DEFAULT_PRICES) is DEFAULT_PRICES[model]
    assert price_for("gemini-3-pro-preview", DEFAULT_PRICES) == Price(2.0, 12.0, 0.2)
    flash = DEFAULT_PRICES["gemini-2.5-flash"]
    assert price_for("gemini-2.5-flash-preview-09-2025", DEFAULT_PRICES) is flash
    assert (
        price_for("models/gemini-2.5-flash-lite-001", DEFAULT_PRICES)
        is (DEFAULT_PRICES["gemini-2.5-flash-lite"])
    )
    assert price_for("gemma-3-27b-it", DEFAULT_PRICES) is None


def test_cost_bills_cached_prompt_tokens_at_the_cached_price() -> None:
    usage = TokenUsage(
        prompt_tokens=1_000_000,
        output_tokens=100_000,
        thoughts_tokens=100_000,
        cached_tokens=400_000,
        tool_use_prompt_tokens=200_000,
    )
    # (600k + 200k) × 1.00 + 400k × 0.10 + 200k × 4.00, per million
    assert cost(usage, Price(1.0, 4.0, 0.1)) == pytest.approx(0.8 + 0.04 + 0.8)


def test_the_setting_corrects_and_extends_the_table() -> None:
    table = parse_prices("gemini-2.5-flash=0.5/3, my-model=1/2/0.25")
    assert table["gemini-2.5-flash"] == Price(0.5, 3.0, 0.05)
    assert table["my-model"] == Price(1.0, 2.0, 0.25)
    assert table["gemini-2.5-pro"] == DEFAULT_PRICES["gemini-2.5-pro"]
    settings = load_settings({"GEMCORD_PRICES": "x=1/2"}, env_file=None)
    assert settings.prices["x"] == Price(1.0, 2.0, 0.1)
    for bad in ("gemini-2.5-flash=cheap", "=1/2", "x=1", "x=1/-2"):
        with pytest.raises(ConfigError, match=r"^GEMCORD_PRICES has a malformed entry"):
            load_settings({"GEMCORD_PRICES": bad}, env_file=None)


def test_budget_and_breaker_settings() -> None:
    s = load_settings({}, env_file=None)
    assert (s.daily_tokens_per_user, s.daily_tokens_per_server) == (0, 0)
    assert not s.budget_exempt_moderators and (s.breaker_failures, s.breaker_seconds) == (3, 30)
    s = load_settings(
        {
            "GEMCORD_DAILY_TOKENS_PER_USER": "50000",
            "GEMCORD_DAILY_TOKENS_PER_SERVER": "1000000",
            "GEMCORD_BUDGET_EXEMPT_MODERATORS": "yes",
            "GEMCORD_BREAKER_FAILURES": "0",
        },
        env_file=None,
    )
    assert (s.daily_tokens_per_user, s.daily_tokens_per_server) == (50_000, 1_000_000)
    assert s.budget_exempt_moderators and s.breaker_failures == 0
    with pytest.raises(ConfigError, match=r"^GEMCORD_BUDGET_EXEMPT_MODERATORS is 'maybe'"):
        load_settings({"GEMCORD_BUDGET_EXEMPT_MODERATORS": "maybe"}, env_file=None)
    with pytest.raises(ConfigError, match=r"^GEMCORD_DAILY_TOKENS_PER_USER"):
        load_settings({"GEMCORD_DAILY_TOKENS_PER_USER": "-1"}, env_file=None)
