"""Gemini adapter: google-genai async streaming → plain text chunks, errors mapped to our types.

This is the only module of gemcord that imports ``google.genai``. Everything else sees
:class:`ChatTurn`/:class:`ImagePart` going in, ``str`` chunks coming out, a
:class:`StreamOutcome` at the end, and :class:`LLMError` subclasses (each with a short
``user_message`` fit for Discord) when something goes wrong.

How a stream runs: the SDK's async generator is driven by a private *pump* task that puts
text chunks on a queue; the consumer iterates :class:`GeminiStream`, which reads that queue.
Stopping (the consumer's task is cancelled, or :meth:`GeminiStream.aclose` is called) cancels
the pump, and the cancellation travels down the SDK's nested generators to the aiohttp read,
whose ``finally`` releases the half-read response, which closes the socket at once. (Merely
``aclose()``-ing the SDK's outer generator does not: with google-genai 3.6.1 its inner
generators are left unclosed and the connection stays open, so Gemini goes on generating and
billing.) The pump
is only ever cancelled, never ``aclose()``-d from another task (python-genai #2425).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

__all__ = [
    "BadRequest",
    "Blocked",
    "ChatTurn",
    "GeminiClient",
    "GeminiStream",
    "ImagePart",
    "LLMError",
    "RateLimited",
    "ServerError",
    "StreamDropped",
    "StreamOutcome",
    "Timeout",
]

log = logging.getLogger(__name__)

_BLOCK_FINISH_NAMES = (
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
)
#: Finish reasons that mean "the answer was blocked", as enum members (older SDKs lack some).
BLOCK_FINISH_REASONS: frozenset[types.FinishReason] = frozenset(
    member
    for name in _BLOCK_FINISH_NAMES
    if (member := getattr(types.FinishReason, name, None)) is not None
)
_REASON_WORDS = {
    "SAFETY": "safety filters",
    "IMAGE_SAFETY": "image safety filters",
    "RECITATION": "it was reciting existing material",
    "IMAGE_RECITATION": "it was reciting an existing image",
    "BLOCKLIST": "blocked terms",
    "PROHIBITED_CONTENT": "prohibited content",
    "IMAGE_PROHIBITED_CONTENT": "prohibited image content",
    "SPII": "sensitive personal information",
    "MODEL_ARMOR": "content filters",
    "JAILBREAK": "a suspected jailbreak",
    "OTHER": "an unspecified reason",
}
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, ConnectionError)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s)\b")


# --- what goes in -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePart:
    """An image sent to Gemini inline (PNG, JPEG, WebP, HEIC or HEIF)."""

    data: bytes = field(repr=False)
    mime_type: str

    def __repr__(self) -> str:
        return f"ImagePart({self.mime_type!r}, {len(self.data)} bytes)"


@dataclass
class ChatTurn:
    """One turn of a conversation: the user's or the model's, text and images in order."""

    role: Literal["user", "model"]
    parts: list[str | ImagePart]


# --- what comes out -----------------------------------------------------------------------


@dataclass
class StreamOutcome:
    """How a stream ended: finish reason (e.g. "STOP", "MAX_TOKENS") and token counts."""

    finish_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    thoughts_tokens: int | None
    total_tokens: int | None
    model_version: str | None


class LLMError(Exception):
    """A Gemini call failed; ``user_message`` is short and safe to show in Discord."""

    status: Literal["failed", "blocked"] = "failed"
    default_message = "⚠ Gemini couldn't answer — please try again."

    def __init__(
        self, user_message: str | None = None, *, detail: str | None = None, code: int | None = None
    ) -> None:
        self.user_message = user_message or self.default_message
        self.detail = detail
        self.code = code
        super().__init__(detail or self.user_message)


class RateLimited(LLMError):
    """Gemini answered 429 (quota or rate limit)."""

    default_message = "⚠ Gemini is rate-limited right now — try again in a minute."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        retry_after: float | None = None,
        detail: str | None = None,
        code: int | None = 429,
    ) -> None:
        self.retry_after = retry_after
        if user_message is None and retry_after is not None:
            user_message = (
                f"⚠ Gemini is rate-limited right now — try again in {_humanize(retry_after)}."
            )
        super().__init__(user_message, detail=detail, code=code)


class ServerError(LLMError):
    """Gemini answered with a 5xx."""

    default_message = "⚠ Gemini is having trouble right now — try again shortly."


class BadRequest(LLMError):
    """Gemini refused the request (400, 401, 403, 404, …); retrying will not help."""

    default_message = "⚠ Gemini refused the request."


class Blocked(LLMError):
    """The prompt or the answer was blocked (safety, recitation, blocklist, …)."""

    status: Literal["failed", "blocked"] = "blocked"
    default_message = "🚫 Gemini declined to answer this."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        reason: str | None = None,
        prompt_blocked: bool = False,
        detail: str | None = None,
    ) -> None:
        self.reason = reason
        self.prompt_blocked = prompt_blocked
        super().__init__(user_message, detail=detail)


class Timeout(LLMError):
    """No chunk arrived for ``chunk_timeout`` seconds, or the whole answer took too long."""

    default_message = "⚠ Gemini took too long to answer — please try again."


class StreamDropped(LLMError):
    """The connection to Gemini failed or dropped mid-stream."""

    default_message = "⚠ The connection to Gemini dropped; the answer is incomplete."


def _humanize(seconds: float) -> str:
    """'45 seconds', '1 second', 'about 3 minutes'."""
    if seconds < 90:
        n = max(1, math.ceil(seconds))
        return f"{n} second{'s' if n != 1 else ''}"
    return f"about {math.ceil(seconds / 60)} minutes"


# --- the client -----------------------------------------------------------------------------


class GeminiClient:
    """One long-lived google-genai client; :meth:`stream` starts one answer."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        chunk_timeout: float = 60.0,
        total_timeout: float | None = None,
        retry_attempts: int = 3,
        max_retry_wait: float = 5.0,
        retry_base_delay: float = 0.5,
    ) -> None:
        """Create the SDK client (no I/O).

        ``chunk_timeout``: longest wait for the next chunk; ``total_timeout``: longest answer
        (None: no limit). ``retry_attempts``: how many times a request that failed before any
        text (429, 5xx, connection) is retried; each wait is the server's RetryInfo delay, else
        ``retry_base_delay * 2**n``, and never more than ``max_retry_wait``.
        """
        if not api_key or not api_key.strip():
            raise ValueError("api_key is empty")
        self._api_key = api_key.strip()
        self.chunk_timeout = chunk_timeout
        self.total_timeout = total_timeout
        self.retry_attempts = max(0, retry_attempts)
        self.max_retry_wait = max_retry_wait
        self.retry_base_delay = retry_base_delay
        # attempts=1 turns off the SDK's own retries, including its hidden 1-10 s sleep
        # before retrying a connection error: retries are ours (they honour RetryInfo).
        http_options = types.HttpOptions(
            base_url=base_url, retry_options=types.HttpRetryOptions(attempts=1)
        )
        self._client = genai.Client(
            api_key=self._api_key, vertexai=False, http_options=http_options
        )

    def __repr__(self) -> str:
        return f"GeminiClient(chunk_timeout={self.chunk_timeout}, retries={self.retry_attempts})"

    def stream(
        self,
        *,
        model: str,
        contents: Sequence[ChatTurn],
        system_instruction: str | None = None,
        max_output_tokens: int | None = None,
    ) -> GeminiStream:
        """Prepare one streamed answer; the request goes out on the first iteration."""
        sdk_contents = _to_contents(contents)
        config = types.GenerateContentConfig(
            system_instruction=system_instruction or None,
            max_output_tokens=max_output_tokens,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        return GeminiStream(self, model, sdk_contents, config)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._client.aio.aclose()

    def _scrub(self, text: str) -> str:
        """Remove the API key from text that may reach a log or a user."""
        return text.replace(self._api_key, "***") if len(self._api_key) >= 4 else text


def _to_contents(turns: Sequence[ChatTurn]) -> list[types.Content]:
    """ChatTurns → SDK Contents (empty text parts and empty turns are dropped)."""
    out: list[types.Content] = []
    for turn in turns:
        if turn.role not in ("user", "model"):
            raise ValueError(f"unknown role {turn.role!r}")
        parts: list[types.Part] = []
        for part in turn.parts:
            if isinstance(part, ImagePart):
                parts.append(types.Part.from_bytes(data=part.data, mime_type=part.mime_type))
            elif isinstance(part, str):
                if part:
                    parts.append(types.Part.from_text(text=part))
            else:
                raise TypeError(f"unsupported part {type(part).__name__}")
        if parts:
            out.append(types.Content(role=turn.role, parts=parts))
    if not out:
        raise ValueError("contents are empty")
    return out


# --- one stream -----------------------------------------------------------------------------

_Item = (
    tuple[Literal["text"], str] | tuple[Literal["end"], None] | tuple[Literal["error"], LLMError]
)


class GeminiStream:
    """An answer being streamed: iterate it for non-empty text chunks.

    Nothing is sent until the first iteration. After the iteration ends (normally, with an
    :class:`LLMError`, or stopped) ``outcome`` is set. Stop early by cancelling the task that
    iterates it, or with :meth:`aclose` (or by leaving ``async with``), from any task: the
    HTTP connection is closed at once, so Gemini stops generating. A consumer task that ends
    without doing either still stops the stream when it finishes.
    """

    def __init__(
        self,
        client: GeminiClient,
        model: str,
        contents: list[types.Content],
        config: types.GenerateContentConfig,
    ) -> None:
        self._client = client
        self._model = model
        self._contents = contents
        self._config = config
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[Any] | None = None
        self._deadline: float | None = None
        self._done = False
        self._closed = False
        self.outcome: StreamOutcome | None = None
        self.attempts = 0
        # what the pump has seen (for the outcome)
        self._finish: types.FinishReason | None = None
        self._block_reason: Any = None
        self._usage: types.GenerateContentResponseUsageMetadata | None = None
        self._model_version: str | None = None
        self._yielded_text = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def __anext__(self) -> str:
        if self._done:
            raise StopAsyncIteration
        if self._pump is None:
            self._start(asyncio.get_running_loop())
        try:
            kind, value = await self._next_item()
        except BaseException:
            # The consumer was cancelled (or worse): stop generating and drop the connection.
            self._stop_pump()
            self._end()
            raise
        if kind == "text" and not self._closed:
            assert isinstance(value, str)
            return value
        self._end()
        if kind == "error" and not self._closed:
            assert isinstance(value, LLMError)
            raise value
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop the answer and release the connection at once (safe from any task).

        A consumer blocked in another task on the next chunk sees the iteration end.
        """
        self._closed = True
        pump = self._pump
        self._stop_pump()
        if pump is not None and not pump.done():
            # Cancellation reaches an aiohttp read, so this is quick; bounded just in case.
            await asyncio.wait({pump}, timeout=2.0)
        if pump is not None and self.outcome is None:
            self._set_outcome()
        self._done = True
        self._forget_consumer()

    # --- consumer side helpers ---------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._client.total_timeout is not None:
            self._deadline = loop.time() + self._client.total_timeout
        self._pump = loop.create_task(self._run(), name=f"gemini-stream:{self._model}")
        # Safety net: if the consuming task ends without aclose(), stop the pump anyway.
        self._consumer = asyncio.current_task()
        if self._consumer is not None:
            self._consumer.add_done_callback(self._on_consumer_done)

    async def _next_item(self) -> _Item:
        """The pump's next item (buffered ones first); a total-timeout error past the deadline."""
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        if self._deadline is None:
            return await self._queue.get()
        try:
            async with asyncio.timeout_at(self._deadline):
                return await self._queue.get()
        except TimeoutError:
            self._stop_pump()
            return ("error", self._timeout_error(total=True))

    def _end(self) -> None:
        """The consumer is done with this stream: record the outcome, drop the safety net."""
        self._done = True
        self._set_outcome()
        self._forget_consumer()

    def _on_consumer_done(self, _task: asyncio.Task[Any]) -> None:
        self._stop_pump()

    def _forget_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.remove_done_callback(self._on_consumer_done)
            self._consumer = None

    def _stop_pump(self) -> None:
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    def _set_outcome(self) -> None:
        usage = self._usage
        finish = self._finish
        self.outcome = StreamOutcome(
            finish_reason=str(finish.value) if finish is not None else None,
            prompt_tokens=usage.prompt_token_count if usage else None,
            output_tokens=usage.candidates_token_count if usage else None,
            thoughts_tokens=usage.thoughts_token_count if usage else None,
            total_tokens=usage.total_token_count if usage else None,
            model_version=self._model_version,
        )

    # --- the pump -----------------------------------------------------------------------

    async def _run(self) -> None:
        """The pump task: feeds the queue until the answer ends, fails or is stopped."""
        try:
            await self._attempts()
        except asyncio.CancelledError:
            # Stopped: whoever still waits on the queue must not wait forever.
            self._queue.put_nowait(("error", StreamDropped(detail="the stream was closed")))
            raise

    async def _attempts(self) -> None:
        """Request, retry before the first text, read chunks, map errors."""
        client = self._client
        attempt = 0
        while True:
            self.attempts = attempt + 1
            try:
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except _ChunkTimeout:
                self._queue.put_nowait(("error", self._timeout_error(total=False)))
                return
            except LLMError as exc:
                self._queue.put_nowait(("error", exc))
                return
            except Exception as exc:
                wait, error = self._classify(exc, attempt)
                if wait is None:
                    log.warning("Gemini request failed: %s", error.detail or error.user_message)
                    self._queue.put_nowait(("error", error))
                    return
                log.info(
                    "Gemini request failed (%s); retry %d/%d in %.2fs",
                    error.detail or type(error).__name__,
                    attempt + 1,
                    client.retry_attempts,
                    wait,
                )
                await asyncio.sleep(wait)
                attempt += 1
                continue
            self._queue.put_nowait(("end", None))
            return

    async def _read_once(self) -> None:
        """One HTTP request: put its text chunks on the queue; raise on block or failure."""
        client = self._client
        self._finish = None
        self._block_reason = None
        sdk_stream = await client._client.aio.models.generate_content_stream(
            model=self._model, contents=self._contents, config=self._config
        )
        try:
            iterator = aiter(sdk_stream)
            while True:
                timeout = asyncio.timeout(client.chunk_timeout)
                try:
                    async with timeout:
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if timeout.expired():
                        raise _ChunkTimeout from None
                    raise
                self._take(chunk)
        finally:
            # Same task that iterated it, and not running: closing here is safe.
            with contextlib.suppress(Exception):
                await sdk_stream.aclose()
        self._check_end()

    def _take(self, chunk: types.GenerateContentResponse) -> None:
        """Record a chunk's metadata and queue its answer text (thought parts are skipped)."""
        if chunk.usage_metadata is not None:
            self._usage = chunk.usage_metadata
        if chunk.model_version:
            self._model_version = chunk.model_version
        feedback = chunk.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            if feedback.block_reason != types.BlockedReason.BLOCKED_REASON_UNSPECIFIED:
                self._block_reason = feedback.block_reason
        if not chunk.candidates:
            return
        candidate = chunk.candidates[0]
        if candidate.finish_reason is not None:
            self._finish = candidate.finish_reason
        if candidate.content is None or not candidate.content.parts:
            return
        for part in candidate.content.parts:
            if part.thought or not part.text:
                continue
            self._yielded_text = True
            self._queue.put_nowait(("text", part.text))

    def _check_end(self) -> None:
        """The stream ended cleanly: raise Blocked for a block, StreamDropped if cut short."""
        if self._block_reason is not None:
            reason = _enum_name(self._block_reason)
            words = _REASON_WORDS.get(reason, reason.lower().replace("_", " "))
            raise Blocked(
                f"🚫 Gemini declined this request ({words}).",
                reason=reason,
                prompt_blocked=True,
                detail=f"prompt blocked: {reason}",
            )
        finish = self._finish
        if finish in BLOCK_FINISH_REASONS:
            assert finish is not None
            reason = _enum_name(finish)
            words = _REASON_WORDS.get(reason, reason.lower().replace("_", " "))
            verb = "stopped the answer" if self._yielded_text else "declined to answer"
            raise Blocked(
                f"🚫 Gemini {verb} ({words}).", reason=reason, detail=f"answer blocked: {reason}"
            )
        if finish is None:
            # Gemini always ends a stream with a finish reason; without one it was cut short.
            raise _EndedEarly("the stream ended without a finish reason")

    def _classify(self, exc: Exception, attempt: int) -> tuple[float | None, LLMError]:
        """Map a failure to our error type, and say how long to wait before a retry (or None)."""
        client = self._client
        can_retry = not self._yielded_text and attempt < client.retry_attempts
        if isinstance(exc, genai_errors.APIError):
            error, server_delay = self._map_api_error(exc)
            code = exc.code or 0
            if not can_retry or code not in _RETRYABLE_STATUS:
                return None, error
            if server_delay is not None:
                if server_delay > client.max_retry_wait:
                    return None, error  # asked to wait longer than we will: give up now
                return server_delay, error
            return self._backoff(attempt), error
        if isinstance(exc, (*_CONNECTION_ERRORS, _EndedEarly)):
            detail = client._scrub(f"{type(exc).__name__}: {exc}")
            if self._yielded_text:
                return None, StreamDropped(detail=detail)
            error = StreamDropped(
                "⚠ Couldn't get an answer from Gemini (connection problem) — try again shortly.",
                detail=detail,
            )
            return (self._backoff(attempt) if can_retry else None), error
        log.exception("Unexpected error from the Gemini SDK")
        return None, LLMError(detail=client._scrub(f"{type(exc).__name__}: {exc}"))

    def _backoff(self, attempt: int) -> float:
        client = self._client
        delay = min(client.max_retry_wait, client.retry_base_delay * (2**attempt))
        return delay * random.uniform(0.8, 1.0)

    def _map_api_error(self, exc: genai_errors.APIError) -> tuple[LLMError, float | None]:
        """An SDK APIError → our error, plus the server's requested retry delay if any."""
        client = self._client
        code = exc.code or 0
        message = _short(client._scrub(exc.message or exc.status or f"HTTP {code}"))
        detail = f"HTTP {code} {exc.status or ''}: {message}".strip()
        server_delay = _retry_delay(exc)
        if code == 429:
            return RateLimited(retry_after=server_delay, detail=detail, code=code), server_delay
        if code >= 500:
            return ServerError(
                f"⚠ Gemini is having trouble right now (HTTP {code}) — try again shortly.",
                detail=detail,
                code=code,
            ), server_delay
        if code in (401, 403) or "API_KEY_INVALID" in _error_reasons(exc):
            return BadRequest(
                "⚠ Gemini rejected the API key — check the GEMINI_API_KEY setting.",
                detail=detail,
                code=code,
            ), None
        if code == 408:
            return Timeout(detail=detail, code=code), server_delay
        refused = f"⚠ Gemini refused the request: {message}"
        return BadRequest(refused, detail=detail, code=code), None

    def _timeout_error(self, *, total: bool) -> Timeout:
        client = self._client
        seconds = client.total_timeout if total else client.chunk_timeout
        what = "the answer took longer than" if total else "no data from Gemini for"
        detail = f"{what} {seconds:g}s"
        if self._yielded_text:
            return Timeout("⚠ Gemini stopped responding; the answer is incomplete.", detail=detail)
        return Timeout(detail=detail)


class _ChunkTimeout(Exception):
    """Internal: no chunk within chunk_timeout."""


class _EndedEarly(Exception):
    """Internal: the HTTP stream ended cleanly but without a finish reason."""


def _enum_name(value: Any) -> str:
    """The upper-case name of an SDK enum (or a plain string)."""
    if hasattr(value, "value"):
        value = value.value
    return str(value).upper()


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_details(exc: genai_errors.APIError) -> list[Mapping[str, Any]]:
    """The ``details`` list of Google's error JSON, wherever the SDK put it."""
    body = exc.details
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, Mapping):
        return []
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, Mapping) else None
    return [d for d in details or [] if isinstance(d, Mapping)]


def _error_reasons(exc: genai_errors.APIError) -> set[str]:
    return {str(d.get("reason")) for d in _error_details(exc) if d.get("reason")}


def _parse_duration(text: str) -> float | None:
    match = _DURATION_RE.search(text)
    if match is None:
        return None
    value = float(match[1])
    return value / 1000 if match[2] == "ms" else value


def _retry_delay(exc: genai_errors.APIError) -> float | None:
    """Seconds the server asked us to wait: RetryInfo, else Retry-After, else the message."""
    for detail in _error_details(exc):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and (seconds := _parse_duration(delay)) is not None:
                return seconds
            if isinstance(delay, Mapping):  # {"seconds": 17, "nanos": ...}
                return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None:
        with contextlib.suppress(TypeError, ValueError):
            value = headers.get("Retry-After")
            if value is not None:
                return max(0.0, float(value))
    if exc.message:
        match = re.search(r"retry in\s+(\d+(?:\.\d+)?\s*(?:ms|s))", exc.message, re.IGNORECASE)
        if match:
            return _parse_duration(match[1])
    return None
