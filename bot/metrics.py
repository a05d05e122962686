"""What operators watch: Prometheus metrics (prometheus-client) in one registry per bot."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from bot.llm import LLMError, StreamOutcome
from bot.streaming import RenderResult

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
_RATE_LIMITED = re.compile(r"(GET|POST|PATCH|PUT|DELETE) (\S+) responded with 429")


def route_name(method: str, url: str) -> str:
    """A Discord REST call as a small label: message send, message edit, reaction, other."""
    if "/reactions/" in url:
        return "reaction"
    if re.search(r"/channels/\d+/messages/?$", url) and method == "POST":
        return "send"
    if re.search(r"/messages/\d+/?$", url) and method == "PATCH":
        return "edit"
    if "/webhooks/" in url or "/interactions/" in url:
        return "interaction"
    return "other"


class Metrics:
    """Counters, gauges and histograms of one bot; `render()` is the /metrics page."""

    def __init__(
        self,
        streaming: Callable[[], int],
        queued: Callable[[], int],
        *,
        shards: str | None = None,
        guilds: Callable[[], dict[int, int]] | None = None,
    ) -> None:
        """`shards` (when the bot is split across processes) labels every sample with the
        shards this process runs, e.g. "0,1/4", so its processes can be told apart; `guilds`:
        servers per shard."""
        self.shards = shards
        self.registry = r = CollectorRegistry()
        if guilds is not None:
            r.register(_GuildsCollector(guilds))
        self.replies = Counter("gemcord_replies", "Replies by outcome.", ["outcome"], registry=r)
        self.first_chunk = Histogram(
            "gemcord_first_chunk_seconds",
            "From the Gemini request to its first chunk.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_visible = Histogram(
            "gemcord_first_visible_seconds",
            "From the Gemini request to the reply's first text in Discord.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "gemcord_gemini_tokens", "Gemini tokens by kind.", ["kind"], registry=r
        )
        self.gemini_errors = Counter(
            "gemcord_gemini_errors", "Failed Gemini answers by kind.", ["kind"], registry=r
        )
        self.discord_writes = Counter(
            "gemcord_discord_writes", "Discord message writes by route.", ["route"], registry=r
        )
        self.discord_429 = Counter(
            "gemcord_discord_rate_limited", "429s from Discord, by route.", ["route"], registry=r
        )
        Gauge("gemcord_replies_streaming", "Replies streaming now.", registry=r).set_function(
            streaming
        )
        Gauge("gemcord_replies_queued", "Questions waiting for a slot.", registry=r).set_function(
            queued
        )
        self.loop_lag = Gauge(
            "gemcord_event_loop_lag_seconds", "How late the event loop ran a timer.", registry=r
        )

    def reply(self, result: RenderResult, status: str, outcome: StreamOutcome | None) -> None:
        """Count one finished reply: its outcome, latencies, writes, tokens and error."""
        self.replies.labels(status).inc()
        if result.first_chunk_latency is not None:
            self.first_chunk.observe(result.first_chunk_latency)
        if result.first_visible_latency is not None:
            self.first_visible.observe(result.first_visible_latency)
        self.discord_writes.labels("send").inc(result.sends)
        self.discord_writes.labels("edit").inc(result.edits)
        if isinstance(result.error, LLMError):
            self.gemini_errors.labels(type(result.error).__name__).inc()
        if outcome is not None:
            for kind, count in (
                ("prompt", outcome.prompt_tokens),
                ("output", outcome.output_tokens),
                ("thoughts", outcome.thoughts_tokens),
                ("cached", outcome.cached_tokens),
            ):
                if count:
                    self.tokens.labels(kind).inc(count)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format (each sample labelled with the shards)."""
        if self.shards is None:
            return generate_latest(self.registry)
        return generate_latest(_Labelled(self.registry, {"shards": self.shards}))

    async def watch_loop_lag(self, interval: float = 1.0) -> None:
        """Measure, forever, how late a timer of `interval` seconds fires."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_lag.set(max(0.0, time.monotonic() - start - interval))


class _GuildsCollector:
    """gemcord_guilds{shard=…}: how many servers each shard of this process has."""

    def __init__(self, guilds: Callable[[], dict[int, int]]) -> None:
        self.guilds = guilds

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("gemcord_guilds", "Servers per shard.", labels=["shard"])
        for shard, count in sorted(self.guilds().items()):
            family.add_metric([str(shard)], count)
        yield family


class _Labelled:
    """A registry's metrics with constant labels added to every sample."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        self.registry = registry
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            metric.samples = [
                Sample(s.name, {**s.labels, **self.labels}, s.value, s.timestamp, s.exemplar)
                for s in metric.samples
            ]
            yield metric


class RateLimitCounter(logging.Handler):
    """Counts the 429s discord.py meets (it retries them itself and logs each one)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        """Count a "responded with 429" line of discord.http by its route."""
        if match := _RATE_LIMITED.search(record.getMessage()):
            self.metrics.discord_429.labels(route_name(match[1], match[2])).inc()
