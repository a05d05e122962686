"""Estimated Gemini prices: a per-model table in USD per million tokens, and a reply's cost.

The defaults are Google's list prices for prompts up to 200k tokens (paid tier) when this was
written; they are an estimate, and ``GEMCORD_PRICES`` corrects or extends them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from storage import TokenUsage


@dataclass(frozen=True)
class Price:
    """USD per million tokens: prompt (input), output (thinking included), cached prompt."""

    input: float
    output: float
    cached: float


DEFAULT_PRICES: Mapping[str, Price] = {
    "gemini-2.5-pro": Price(1.25, 10.00, 0.125),
    "gemini-2.5-flash": Price(0.30, 2.50, 0.03),
    "gemini-2.5-flash-lite": Price(0.10, 0.40, 0.01),
    "gemini-3-pro-preview": Price(2.00, 12.00, 0.20),
}


def parse_prices(raw: str) -> dict[str, Price]:
    """The default table updated by ``model=input/output[/cached],...`` (USD per 1M tokens;
    cached defaults to a tenth of input); ValueError naming the entry that is wrong."""
    table = dict(DEFAULT_PRICES)
    for entry in raw.replace(";", ",").split(","):
        if not entry.strip():
            continue
        model, _, numbers = entry.partition("=")
        model = model.strip().lower().removeprefix("models/")
        try:
            values = [float(n) for n in numbers.split("/")]
        except ValueError:
            values = []
        if not model or len(values) not in (2, 3) or any(not v >= 0 for v in values):
            raise ValueError(entry.strip())
        table[model] = Price(
            values[0], values[1], values[2] if len(values) == 3 else values[0] / 10
        )
    return table


def price_for(model: str, table: Mapping[str, Price]) -> Price | None:
    """The model's price: its own entry, else the longest entry its name starts with
    (``gemini-2.5-flash-preview-09-2025`` → ``gemini-2.5-flash``)."""
    name = model.lower().removeprefix("models/")
    if name in table:
        return table[name]
    matches = [key for key in table if name.startswith(key)]
    return table[max(matches, key=len)] if matches else None


def cost(usage: TokenUsage, price: Price) -> float:
    """Estimated USD: uncached and tool-use prompt tokens at the input price, cached ones at
    the cached price, output and thinking at the output price."""
    uncached = max(0, usage.prompt_tokens - usage.cached_tokens) + usage.tool_use_prompt_tokens
    return (
        uncached * price.input
        + usage.cached_tokens * price.cached
        + (usage.output_tokens + usage.thoughts_tokens) * price.output
    ) / 1_000_000
