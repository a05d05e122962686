"""Gemini adapter: google-genai async streaming → answer events, errors mapped to our types.

This is the only module of gemcord that imports ``google.genai``. Everything else sees
:class:`ChatTurn` (text, :class:`~storage.models.Media` and :class:`ModelPart` parts) going
in, :data:`Event` items coming out (``str`` answer text, and :class:`Thought`,
:class:`Grounding`, :class:`LinkStatus`, :class:`CodeRun`, :class:`CodeOutput`,
:class:`OutputImage` for what the model thought, searched, read and ran), a
:class:`StreamOutcome` and the model turn's :class:`ModelPart` list at the end, and
:class:`LLMError` subclasses (each with a short ``user_message`` fit for
Discord) when something goes wrong.

How a stream runs: the task that iterates :class:`GeminiStream` reads the SDK's async
generator itself, one chunk per step (no task or queue in between). Stopping (that task is
cancelled, or :meth:`GeminiStream.aclose` is called) makes the cancellation travel down the
SDK's nested generators to the aiohttp read, whose ``finally`` releases the half-read response,
which closes the socket at once, so Gemini stops generating and billing. A stream closed while
it waits between two chunks is resumed and cancelled at its first wait for the same reason
(see :func:`_close_sdk`); the SDK's generator is never ``aclose()``-d from another task while
it runs (python-genai #2425).

Models: :meth:`GeminiClient.list_models` and :meth:`GeminiClient.get_model` ask Google
(``models.list``, every page; ``models.get``); :meth:`GeminiClient.cached_models` keeps the
list for ``model_list_ttl`` seconds (concurrent callers share one fetch) and
:meth:`GeminiClient.check_model` judges a model name against it, which is how ``/model`` and
:func:`warn_if_model_unknown` (the start-up check) validate names without costing a request
each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import functools
import io
import logging
import math
import os
import random
import re
import time
import typing
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import aiohttp
import pydantic
from google import genai
from google.genai import _common as genai_common
from google.genai import errors as genai_errors
from google.genai import types

from storage.models import Media, Upload

__all__ = [
    "BadRequest",
    "Blocked",
    "ChatTurn",
    "CodeOutput",
    "CodeRun",
    "Event",
    "FileRejected",
    "GeminiClient",
    "GeminiStream",
    "Grounding",
    "KeyRejected",
    "LLMError",
    "LinkStatus",
    "ModelCheck",
    "ModelInfo",
    "ModelPart",
    "OutputImage",
    "RateLimited",
    "ServerError",
    "Source",
    "StreamDropped",
    "StreamOutcome",
    "Support",
    "Thinking",
    "Thought",
    "Timeout",
    "Tool",
    "judge_model",
    "warn_if_model_unknown",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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
#: What a model-list call may raise besides APIError: a refused or dropped connection.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (*_CONNECTION_ERRORS, OSError)
_UPLOAD_ERRORS: tuple[type[BaseException], ...] = (*_NETWORK_ERRORS, ValueError, KeyError)
_MODELS_PREFIX = "models/"


# --- what goes in -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPart:
    """One part of a model turn as Gemini sent it: answer text, a thought summary, code the
    model ran, its output, or an image its code drew (``media``, sent back inline as it came);
    ``signature`` (a thought signature) goes back byte for byte."""

    kind: Literal["text", "thought", "code", "output", "image"]
    text: str
    signature: bytes | None = field(default=None, repr=False)
    detail: str | None = None
    """The code's language, or the output's outcome (``OUTCOME_OK``, ``OUTCOME_FAILED``, …)."""
    media: Media | None = None
    """An image part's bytes and MIME type."""


@dataclass
class ChatTurn:
    """One turn of a conversation: the user's or the model's, text and files in order."""

    role: Literal["user", "model"]
    parts: list[str | Media | ModelPart]


@dataclass(frozen=True)
class Thinking:
    """How much the model thinks: a Gemini 3 ``level`` or a 2.5 ``budget`` (never both), and
    whether thought summaries are streamed (``include_thoughts``)."""

    level: str | None = None
    budget: int | None = None
    include_thoughts: bool = True

    def __post_init__(self) -> None:
        if self.level is not None and self.budget is not None:
            raise ValueError("thinking takes a level or a budget, not both")


Tool = Literal["search", "links", "code"]
"""A built-in Gemini tool: Google Search grounding, URL context, code execution."""


# --- what comes out -----------------------------------------------------------------------


@dataclass(frozen=True)
class Thought:
    """A piece of the model's thought summary (streamed before the answer)."""

    text: str


@dataclass(frozen=True)
class Source:
    """A web page the answer is grounded on."""

    uri: str
    title: str


@dataclass(frozen=True)
class Support:
    """A span of the answer text that sources back: it ends ``end`` UTF-8 bytes into the
    answer text and cites ``sources`` (indices into the same :class:`Grounding`'s sources)."""

    end: int
    sources: tuple[int, ...]


@dataclass(frozen=True)
class Grounding:
    """One chunk's Google Search grounding metadata (merge them: see bot/grounding.py)."""

    queries: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    supports: tuple[Support, ...] = ()


@dataclass(frozen=True)
class LinkStatus:
    """How URL context fared with each link: ``status`` is e.g. ``URL_RETRIEVAL_STATUS_SUCCESS``."""

    links: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CodeRun:
    """Code the model runs (code execution tool)."""

    code: str
    language: str


@dataclass(frozen=True)
class CodeOutput:
    """What the code printed; ``outcome`` ``OUTCOME_OK`` or a failure."""

    output: str
    outcome: str

    @property
    def ok(self) -> bool:
        """Whether the code ran to the end without an error."""
        return self.outcome in ("OUTCOME_OK", "OUTCOME_UNSPECIFIED")


@dataclass(frozen=True)
class OutputImage:
    """An image the model's code produced."""

    data: bytes = field(repr=False)
    mime_type: str


Event = str | Thought | Grounding | LinkStatus | CodeRun | CodeOutput | OutputImage
"""What a :class:`GeminiStream` yields: ``str`` is answer text."""


@dataclass
class StreamOutcome:
    """How a stream ended: finish reason (e.g. "STOP", "MAX_TOKENS") and token counts."""

    finish_reason: str | None
    prompt_tokens: int | None
    output_tokens: int | None
    thoughts_tokens: int | None
    cached_tokens: int | None
    total_tokens: int | None
    model_version: str | None
    tool_use_prompt_tokens: int | None = None


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


class KeyRejected(BadRequest):
    """Gemini refused the API key (400 API_KEY_INVALID, 401 or 403)."""

    default_message = "⚠ Gemini rejected the API key — check the GEMINI_API_KEY setting."


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


@dataclass(frozen=True)
class ModelInfo:
    """A model Gemini offers, as ``models.list``/``models.get`` describe it."""

    name: str
    """Without the ``models/`` prefix, e.g. ``gemini-2.5-flash``."""
    display_name: str | None
    input_token_limit: int | None
    output_token_limit: int | None
    supports_generate: bool
    """Whether it answers ``generateContent`` (chat); embedding models do not."""


@dataclass(frozen=True)
class ModelCheck:
    """How a model name fares against Gemini's model list (see :meth:`GeminiClient.check_model`).

    ``status``: ``"ok"`` (listed and able to chat), ``"unknown"`` (not listed),
    ``"unsupported"`` (listed but cannot chat), ``"unchecked"`` (the list could not be fetched;
    ``problem`` says why). ``suggestions``: a few chat models to offer instead, closest first.
    """

    name: str
    status: Literal["ok", "unknown", "unsupported", "unchecked"]
    suggestions: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def refused(self) -> bool:
        """Whether the name is known to be unusable."""
        return self.status in ("unknown", "unsupported")

    def explain(self, *, limit: int = 3) -> str:
        """One sentence for a person: what is wrong with the name (no Markdown)."""
        offer = ", ".join(self.suggestions[:limit])
        tail = f" (try {offer})" if offer else ""
        if self.status == "unknown":
            return f"{self.name} does not exist{tail}"
        if self.status == "unsupported":
            return f"{self.name} cannot chat (it does not support generateContent){tail}"
        if self.status == "unchecked":
            return f"{self.name} could not be checked ({self.problem or 'no model list'})"
        return f"{self.name} is available"


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
        first_chunk_timeout: float | None = None,
        retry_attempts: int = 3,
        max_retry_wait: float = 5.0,
        retry_base_delay: float = 0.5,
        request_timeout: float = 10.0,
        model_list_ttl: float = 600.0,
        model_page_size: int = 100,
        upload_timeout: float = 600.0,
        file_poll_seconds: float = 0.25,
    ) -> None:
        """Create the SDK client (no I/O).

        ``chunk_timeout``: longest wait for the next chunk; ``first_chunk_timeout``: for the
        first one (a thinking model may think a while first; None: ``chunk_timeout``);
        ``total_timeout``: longest answer (None: no limit). ``retry_attempts``: how many times
        a request that failed before any text (429, 5xx, connection) is retried; each wait is
        the server's RetryInfo delay, else ``retry_base_delay * 2**n``, and never more than
        ``max_retry_wait``.
        ``request_timeout``: longest wait for a model call (the whole list, all pages);
        ``model_list_ttl``: how long :meth:`cached_models` keeps a fetched list;
        ``model_page_size``: models asked per page (Google: at most 1000).
        ``upload_timeout``: longest a Files API upload may take, processing included;
        ``file_poll_seconds``: first wait before looking again at an upload being processed
        (doubling up to :data:`FILE_POLL_MAX`).
        """
        if not api_key or not api_key.strip():
            raise ValueError("api_key is empty")
        self._api_key = api_key.strip()
        self.chunk_timeout = chunk_timeout
        self.first_chunk_timeout = first_chunk_timeout or chunk_timeout
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
        _speed_up_sdk()
        _build_stream_models()
        self.request_timeout = request_timeout
        self.model_list_ttl = model_list_ttl
        self.model_page_size = max(1, model_page_size)
        self.upload_timeout = upload_timeout
        self.file_poll_seconds = file_poll_seconds
        self._models: list[ModelInfo] | None = None
        self._models_at = -math.inf
        self._models_fetch: asyncio.Task[list[ModelInfo]] | None = None

    def __repr__(self) -> str:
        return f"GeminiClient(chunk_timeout={self.chunk_timeout}, retries={self.retry_attempts})"

    def stream(
        self,
        *,
        model: str,
        contents: Sequence[ChatTurn],
        system_instruction: str | None = None,
        max_output_tokens: int | None = None,
        thinking: Thinking | None = None,
        tools: Sequence[Tool] = (),
    ) -> GeminiStream:
        """Prepare one streamed answer; the request goes out on the first iteration.

        ``thinking``: the thinking config (None: none sent, the model's default);
        ``tools``: the built-in tools the model may use.
        """
        sdk_contents = _to_contents(contents)
        config = types.GenerateContentConfig(
            system_instruction=system_instruction or None,
            max_output_tokens=max_output_tokens,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            thinking_config=_thinking_config(thinking),
            tools=[_TOOLS[name]() for name in dict.fromkeys(tools)] or None,
        )
        return GeminiStream(self, model, sdk_contents, config)

    async def aclose(self) -> None:
        """Close the HTTP session (and stop a model-list fetch in progress)."""
        fetch = self._models_fetch
        if fetch is not None and not fetch.done():
            fetch.cancel()
            await asyncio.wait({fetch}, timeout=2.0)
        await self._client.aio.aclose()

    # --- models -------------------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """Every model the key can use, all pages followed, in Google's order (no cache).

        Raises an :class:`LLMError`: :class:`BadRequest` for a refused key, :class:`Timeout`
        after ``request_timeout``, :class:`StreamDropped` when Gemini cannot be reached.
        """

        async def fetch() -> list[ModelInfo]:
            pager = await self._client.aio.models.list(
                config=types.ListModelsConfig(page_size=self.model_page_size, query_base=True)
            )
            return [_model_info(model) async for model in pager]

        return await self._model_call("list the models", fetch)

    async def get_model(self, name: str) -> ModelInfo | None:
        """One model, asked by name (``gemini-2.5-flash`` or ``models/…``); None if Gemini
        does not know it. Errors as :meth:`list_models`."""
        name = name.strip()
        if not name or any(c in name for c in "?&#") or ".." in name:
            return None  # could never name a model (and the SDK refuses some of these)

        async def fetch() -> ModelInfo | None:
            try:
                model = await self._client.aio.models.get(model=name)
            except genai_errors.ClientError as exc:
                if exc.code == 404:
                    return None
                raise
            return _model_info(model)

        return await self._model_call(f"look up {name}", fetch)

    async def cached_models(self) -> list[ModelInfo]:
        """The model list, fetched at most every ``model_list_ttl`` seconds.

        Concurrent callers share one fetch, and a caller that gives up (cancelled, or its own
        timeout) does not stop it for the others. When a refresh fails, the previous list is
        returned if there is one; otherwise the fetch's :class:`LLMError` is raised.
        """
        loop = asyncio.get_running_loop()
        if self._models is not None and loop.time() - self._models_at < self.model_list_ttl:
            return self._models
        fetch = self._models_fetch
        if fetch is None or fetch.done():
            fetch = loop.create_task(self._refresh_models(), name="gemini-model-list")
            fetch.add_done_callback(_retrieve_exception)
            self._models_fetch = fetch
        return await asyncio.shield(fetch)

    def forget_models(self) -> None:
        """Drop the cached model list: the next :meth:`cached_models` fetches it again."""
        self._models = None
        self._models_at = -math.inf
        self._models_fetch = None

    async def check_model(self, name: str, *, wait: float | None = None) -> ModelCheck:
        """Judge a model name against the cached list; never raises an :class:`LLMError`.

        ``wait``: give up on a list that is not cached after this many seconds (the fetch
        goes on in the background, so a later call finds it); None: ``request_timeout``.
        """
        name = name.strip().removeprefix(_MODELS_PREFIX)
        try:
            async with asyncio.timeout(wait):
                models = await self.cached_models()
        except TimeoutError:
            return ModelCheck(name, "unchecked", problem="Gemini's model list did not come in time")
        except LLMError as exc:
            return ModelCheck(name, "unchecked", problem=exc.detail or exc.user_message)
        return judge_model(name, models)

    async def _refresh_models(self) -> list[ModelInfo]:
        try:
            models = await self.list_models()
        except LLMError as exc:
            if self._models is not None:
                log.warning(
                    "Could not refresh Gemini's model list (%s); keeping the previous one",
                    exc.detail or exc.user_message,
                )
                return self._models
            raise
        if asyncio.current_task() is self._models_fetch:  # not forgotten meanwhile
            self._models = models
            self._models_at = asyncio.get_running_loop().time()
        log.debug("Gemini offers %d models", len(models))
        return models

    async def _model_call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run a models.* call within ``request_timeout``, errors mapped to LLMError."""
        try:
            async with asyncio.timeout(self.request_timeout):
                return await call()
        except TimeoutError:
            raise Timeout(
                "⚠ Gemini did not answer in time — try again shortly.",
                detail=f"no answer to {what} within {self.request_timeout:g}s",
            ) from None
        except genai_errors.APIError as exc:
            raise _map_api_error(self, exc)[0] from None
        except _NETWORK_ERRORS as exc:
            raise StreamDropped(
                "⚠ Couldn't reach Gemini (connection problem) — try again shortly.",
                detail=self._scrub(f"cannot {what}: {_network_reason(exc)}"),
            ) from None

    def _scrub(self, text: str) -> str:
        """Remove the API key from text that may reach a log or a user."""
        return text.replace(self._api_key, "***") if len(self._api_key) >= 4 else text

    # --- files (the Files API; input side) -----------------------------------------------

    async def upload_file(self, media: Media, sha256: str) -> Upload:
        """Upload a file through the Files API (resumable) and wait until Gemini has
        processed it (``ACTIVE``; a video is ``PROCESSING`` first).

        Raises :class:`FileRejected` when Gemini could not process it, :class:`Timeout` after
        ``upload_timeout``, another :class:`LLMError` when the upload failed.
        """
        what = f"upload {media.name or media.mime_type}"

        async def run() -> Upload:
            files = self._client.aio.files
            config = types.UploadFileConfig(
                mime_type=media.mime_type, display_name=(media.name or "file")[:500]
            )
            found = await files.upload(file=io.BytesIO(media.data), config=config)
            wait = self.file_poll_seconds
            while found.state == types.FileState.PROCESSING and found.name:
                await asyncio.sleep(wait)
                wait = min(FILE_POLL_MAX, wait * 2)
                found = await files.get(name=found.name)
            if found.state != types.FileState.ACTIVE or not found.name or not found.uri:
                reason = found.error.message if found.error and found.error.message else None
                raise FileRejected(
                    detail=self._scrub(
                        f"Gemini could not process {media.name or 'a file'} "
                        f"({_enum_name(found.state)}): {reason or 'no reason given'}"
                    ),
                    code=400,
                )
            return _upload(found, sha256)

        return await self._file_call(what, run, self.upload_timeout)

    async def upload_alive(self, upload: Upload) -> bool:
        """Whether Gemini still holds an earlier upload, processed (``files.get``): False
        when it expired or is gone."""
        if upload.expires_at <= time.time() + UPLOAD_MARGIN:
            return False

        async def run() -> bool:
            try:
                found = await self._client.aio.files.get(name=upload.name)
            except genai_errors.ClientError as exc:
                if exc.code in (403, 404):  # Google answers 403 for a file that is gone
                    return False
                raise
            return found.state == types.FileState.ACTIVE

        return await self._file_call(f"look up {upload.name}", run, self.request_timeout)

    async def delete_file(self, name: str) -> None:
        """Delete an upload from Gemini (``files.delete``); one already gone is fine."""

        async def run() -> None:
            try:
                await self._client.aio.files.delete(name=name)
            except genai_errors.ClientError as exc:
                if exc.code not in (403, 404):
                    raise

        await self._file_call(f"delete {name}", run, self.request_timeout)

    async def _file_call(self, what: str, call: Callable[[], Awaitable[_T]], limit: float) -> _T:
        """Run a files.* call within ``limit`` seconds, errors mapped to LLMError."""
        try:
            async with asyncio.timeout(limit):
                return await call()
        except TimeoutError:
            raise Timeout(
                "⚠ Gemini took too long to take a file — please try again.",
                detail=f"could not {what} within {limit:g}s",
            ) from None
        except genai_errors.APIError as exc:
            raise _map_api_error(self, exc)[0] from None
        except _UPLOAD_ERRORS as exc:  # the network, and the SDK's own upload checks
            raise StreamDropped(
                "⚠ Couldn't send a file to Gemini (connection problem) — try again shortly.",
                detail=self._scrub(f"cannot {what}: {_network_reason(exc)}"),
            ) from None


FILE_POLL_MAX = 5.0
"""Longest wait between two looks at an upload Gemini is still processing."""
UPLOAD_MARGIN = 600.0
"""An upload that expires within this many seconds is uploaded again rather than reused."""
UPLOAD_LIFETIME = 48 * 3600.0
"""How long Gemini keeps an upload when it does not say (48 hours)."""


class FileRejected(BadRequest):
    """Gemini could not process an uploaded file (its state ended ``FAILED``)."""

    default_message = "⚠ Gemini could not read a file."


def _upload(found: types.File, sha256: str) -> Upload:
    """An SDK File (ACTIVE) → our Upload record."""
    expires = found.expiration_time
    return Upload(
        sha256=sha256,
        name=found.name or "",
        uri=found.uri or "",
        mime_type=found.mime_type or "",
        expires_at=expires.timestamp() if expires else time.time() + UPLOAD_LIFETIME,
    )


def _media_part(media: Media) -> types.PartDict:
    """A file as a part: by its Files API URI once uploaded, else its bytes inline."""
    if media.uri:
        return {"file_data": {"file_uri": media.uri, "mime_type": media.mime_type}}
    return {"inline_data": {"data": media.data, "mime_type": media.mime_type}}


def _model_info(model: types.Model) -> ModelInfo:
    """SDK Model → ModelInfo."""
    name = (model.name or "").removeprefix(_MODELS_PREFIX)
    return ModelInfo(
        name=name,
        display_name=model.display_name,
        input_token_limit=model.input_token_limit,
        output_token_limit=model.output_token_limit,
        supports_generate="generateContent" in (model.supported_actions or ()),
    )


def judge_model(name: str, models: Sequence[ModelInfo]) -> ModelCheck:
    """Whether ``name`` is in ``models`` and can chat, with a few chat models to suggest."""
    name = name.strip().removeprefix(_MODELS_PREFIX)
    chat = [m.name for m in models if m.supports_generate]
    close = [n for n in difflib.get_close_matches(name, chat, n=3, cutoff=0.8) if n != name]
    rest = [n for n in _preferred(chat) if n not in close and n != name]
    suggestions = tuple(close + rest)[:5]
    listed = {m.name: m for m in models}
    if name not in listed:
        return ModelCheck(name, "unknown", suggestions)
    if not listed[name].supports_generate:
        return ModelCheck(name, "unsupported", suggestions)
    return ModelCheck(name, "ok", suggestions)


def _preferred(names: Sequence[str]) -> list[str]:
    """Chat model names to suggest: stable Gemini models first, previews and others after."""

    def rank(name: str) -> int:
        if not name.startswith("gemini-"):
            return 3
        if "preview" in name or "exp" in name or re.search(r"-\d{3}$", name):
            return 2  # previews, experiments, pinned versions (gemini-2.0-flash-001)
        return 1 if "latest" in name else 0

    return sorted(names, key=rank)


def _network_reason(exc: BaseException) -> str:
    """A few words on why a connection failed ("cannot connect to host:port: Connection
    refused"), without aiohttp's SSL-context noise."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        why = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
        return f"cannot connect to {exc.host}:{exc.port}: {why}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's failure as seen (its waiters may all have given up)."""
    if not task.cancelled():
        task.exception()


async def warn_if_model_unknown(client: GeminiClient, model: str) -> ModelCheck:
    """Start-up check of ``GEMINI_MODEL``: log a warning if Gemini's model list can be fetched
    and does not offer ``model`` for chat. Never raises (a list that cannot be fetched is only
    logged at INFO); it also fills the model cache that ``/model`` uses. Run it as a background
    task: it costs one list request, nothing on the hot path."""
    try:
        check = await client.check_model(model)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # never let a start-up nicety stop the bot
        log.info("Could not check GEMINI_MODEL against Gemini's model list: %s", exc)
        return ModelCheck(model, "unchecked", problem=str(exc))
    if check.refused:
        log.warning("GEMINI_MODEL: %s; answers will fail until it is fixed.", check.explain())
    elif check.status == "unchecked":
        log.info("Could not check GEMINI_MODEL against Gemini's model list: %s", check.problem)
    return check


# The SDK's models a streamed answer goes through. pydantic builds a model's validator on
# its first use: some 50 ms of CPU that would otherwise land on the first question after a
# start (and, in a burst, on every question queued behind it).
_STREAM_MODELS = (
    "GenerateContentConfig",
    "_GenerateContentParameters",
    "Content",
    "UserContent",
    "Part",
    "HttpResponse",
    "GenerateContentResponse",
    "Candidate",
    "GenerateContentResponseUsageMetadata",
    "AutomaticFunctionCallingConfig",
    "ThinkingConfig",
    "Tool",
    "GoogleSearch",
    "UrlContext",
    "ToolCodeExecution",
)


def _build_stream_models() -> None:
    """Have pydantic build the validators of the SDK's streaming models now (once per
    process; a name this SDK version lacks is skipped)."""
    for name in _STREAM_MODELS:
        model = getattr(types, name, None)
        if model is not None and not model.__pydantic_complete__:
            model.model_rebuild()


@functools.cache
def _speed_up_sdk() -> None:
    """Give google-genai quicker versions of three of its internal steps (once per process).

    Each gives the answer the SDK's own gives, without work that costs more than the rest
    of a request or a streamed chunk together (`test_llm` compares requests and parsed
    chunks with and without them). Each is skipped if a future SDK no longer has the step.

    - **Key checks**: the SDK turns each request into JSON by asking `"name" in model` of
      its pydantic models for every field it might send, and pydantic answers `in` by
      listing the model's every (name, value) pair. A name is never such a pair, so the
      answer is False, at once; anything else is checked as before.
    - **Pruning**: before parsing a chunk the SDK drops the keys its models lack, and for
      each key it rebuilt a map of every field's alias and looked up the field's type.
      That map and those types are made once per model here.
    - **Mismatch check**: a validator on every model warns when a field holds another
      model than its own, and it read every field's type on each call. The fields that
      hold a model are listed once per model here. Only models not yet built take it.
    """
    base = genai_common.BaseModel
    if "__contains__" not in vars(base):
        base.__contains__ = _model_contains  # type: ignore[operator]
    steps = ("_remove_extra_fields", "_as_base_model_type")
    if all(callable(getattr(genai_common, step, None)) for step in steps):
        genai_common._remove_extra_fields = _prune_extra_fields
    models: list[type[genai_common.BaseModel]] = [base]
    for model in models:
        models.extend(model.__subclasses__())
        check = model.__pydantic_decorators__.model_validators.get(_MISMATCH_CHECK)
        if check is not None and not model.__pydantic_complete__:
            with contextlib.suppress(AttributeError):  # a pydantic whose decorators are frozen
                check.func = functools.partial(_mismatch_check, model)


def _model_contains(model: genai_common.BaseModel, item: object) -> bool:
    """`item in model` as pydantic answers it (one of its (name, value) pairs), at once for
    a str."""
    return not isinstance(item, str) and any(item == pair for pair in model)


# For each model: each key it takes (a field's name or alias) → the model a dict under that
# key is, and the model each dict of a list under it is (None: left as it is).
_prune_plans: dict[type, dict[str, tuple[type | None, type | None]]] = {}


def _prune_extra_fields(model: type[genai_common.BaseModel], response: dict[str, Any]) -> None:
    """The SDK's `_remove_extra_fields`: drop (in place) the keys of a response that its
    model lacks, at every depth."""
    plan = _prune_plans.get(model)
    if plan is None:
        plan = _prune_plan(model)
    for key, value in list(response.items()):
        entry = plan.get(key)
        if entry is None:
            del response[key]
            continue
        sub, item = entry
        if isinstance(value, dict) and sub is not None:
            _prune_extra_fields(sub, value)
        elif isinstance(value, list) and item is not None:
            for each in value:
                if isinstance(each, dict):
                    _prune_extra_fields(item, each)


def _prune_plan(model: type[genai_common.BaseModel]) -> dict[str, tuple[type | None, type | None]]:
    model.model_rebuild(raise_errors=False)  # resolves the fields' forward references
    fields = model.model_fields
    by_alias = {info.alias: name for name, info in fields.items() if info.alias is not None}
    plan = {}
    for key in [*fields, *by_alias]:
        annotation: Any = fields[by_alias.get(key, key)].annotation
        if typing.get_origin(annotation) is typing.Union:
            annotation = typing.get_args(annotation)[0]
        args = typing.get_args(annotation)  # list[Part] → Part (dict[str, Any] → str: none)
        item = genai_common._as_base_model_type(args[0]) if args else None
        plan[key] = (genai_common._as_base_model_type(annotation), item)
    if model.__pydantic_complete__:  # else the types may be names yet: planned again
        _prune_plans[model] = plan
    return plan


_MISMATCH_CHECK = "_check_field_type_mismatches"
_sdk_log = logging.getLogger("google_genai._common")
_model_fields: dict[type, list[tuple[str, type]]] = {}


def _mismatch_check(model: type[genai_common.BaseModel], data: Any) -> Any:
    """The SDK's `_check_field_type_mismatches`: warn when a field holds another model than
    its own."""
    if not isinstance(data, dict | pydantic.BaseModel):
        return data
    fields = _model_fields.get(model)
    if fields is None:
        fields = _model_fields[model] = [
            (name, kind)
            for name, info in model.model_fields.items()
            if isinstance(kind := _single_type(info.annotation), type)
            and typing.get_origin(kind) is None
            and issubclass(kind, pydantic.BaseModel)
        ]
    for name, kind in fields:
        value = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
        if isinstance(value, pydantic.BaseModel) and not isinstance(value, kind):
            _sdk_log.warning(
                "Type mismatch in %s.%s: expected %s, got %s",
                model.__name__,
                name,
                kind.__name__,
                type(value).__name__,
            )
    return data


def _single_type(annotation: Any) -> Any:
    """`X` for `Optional[X]`, else the annotation."""
    if typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation


_TOOLS: dict[str, Callable[[], types.Tool]] = {
    "search": lambda: types.Tool(google_search=types.GoogleSearch()),
    "links": lambda: types.Tool(url_context=types.UrlContext()),
    "code": lambda: types.Tool(code_execution=types.ToolCodeExecution()),
}


def _thinking_config(thinking: Thinking | None) -> types.ThinkingConfig | None:
    if thinking is None:
        return None
    return types.ThinkingConfig(
        include_thoughts=thinking.include_thoughts or None,
        thinking_budget=thinking.budget,
        thinking_level=types.ThinkingLevel(thinking.level.upper()) if thinking.level else None,
    )


def _model_part(part: ModelPart) -> types.PartDict:
    """A stored model part → the part it came from (signature as received)."""
    out: types.PartDict = {}
    if part.media is not None:
        out = _media_part(part.media)
    elif part.kind == "code":
        language = types.Language(part.detail or "PYTHON")
        out["executable_code"] = {"code": part.text, "language": language}
    elif part.kind == "output":
        outcome = types.Outcome(part.detail or "OUTCOME_OK")
        out["code_execution_result"] = {"outcome": outcome, "output": part.text}
    else:
        out["text"] = part.text
        if part.kind == "thought":
            out["thought"] = True
    if part.signature is not None:
        out["thought_signature"] = part.signature
    return out


def _to_contents(turns: Sequence[ChatTurn]) -> list[types.ContentDict]:
    """ChatTurns → contents for the SDK (empty text parts and empty turns are dropped).

    Plain dicts, which the SDK validates into its models: about four times cheaper than
    handing it the models themselves, which it validates again field by field (milliseconds
    per request with a long history)."""
    out: list[types.ContentDict] = []
    for turn in turns:
        if turn.role not in ("user", "model"):
            raise ValueError(f"unknown role {turn.role!r}")
        parts: list[types.PartDict] = []
        for part in turn.parts:
            if isinstance(part, Media):
                parts.append(_media_part(part))
            elif isinstance(part, str):
                if part:
                    parts.append({"text": part})
            elif isinstance(part, ModelPart):
                if part.text or part.signature or part.media:
                    parts.append(_model_part(part))
            else:
                raise TypeError(f"unsupported part {type(part).__name__}")
        if parts:
            out.append({"role": turn.role, "parts": parts})
    if not out:
        raise ValueError("contents are empty")
    return out


# --- one stream -----------------------------------------------------------------------------


class GeminiStream:
    """An answer being streamed: iterate it for :data:`Event` items (``str``: answer text).

    Nothing is sent until the first iteration, and the SDK's stream is read by the task that
    iterates (no task of its own). After the iteration ends (normally, with an
    :class:`LLMError`, or stopped) ``outcome`` is set, and ``parts`` holds the model turn's
    parts as received (consecutive text of one kind joined; a thought signature kept on the
    part it closes). Stop early by cancelling the task that iterates it, or with
    :meth:`aclose` (or by leaving ``async with``), from any task: the HTTP connection is closed
    at once, so Gemini stops generating. A consumer task that ends without doing either still
    stops the stream when it finishes.
    """

    def __init__(
        self,
        client: GeminiClient,
        model: str,
        contents: list[types.ContentDict],
        config: types.GenerateContentConfig,
    ) -> None:
        self._client = client
        self._model = model
        self._contents = contents
        self._config = config
        self._sdk: AsyncIterator[types.GenerateContentResponse] | None = None  # this attempt's
        self._events: deque[Event] = deque()  # the last chunk's events not yet yielded
        self._consumer: asyncio.Task[Any] | None = None
        self._reading = False  # the consumer waits in __anext__ (on Gemini, or before a retry)
        self._closing: asyncio.Future[None] | None = None  # aclose() from another task waits
        self._deadline: float | None = None
        self._wait = client.first_chunk_timeout  # for the next chunk
        self._started = False
        self._done = False
        self.outcome: StreamOutcome | None = None
        self.attempts = 0
        # what the chunks said (for the outcome)
        self._finish: types.FinishReason | None = None
        self._block_reason: Any = None
        self._usage: types.GenerateContentResponseUsageMetadata | None = None
        self._model_version: str | None = None
        self._yielded_text = False
        self._yielded_any = False
        self._parts: list[tuple[ModelPart, list[str]]] = []  # each part and its text pieces

    @property
    def parts(self) -> list[ModelPart]:
        """The model turn's parts so far, as Gemini sent them (see the class docstring)."""
        return [
            dataclasses.replace(part, text="".join(pieces)) if len(pieces) > 1 else part
            for part, pieces in self._parts
        ]

    def __aiter__(self) -> AsyncIterator[Event]:
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

    async def __anext__(self) -> Event:
        events = self._events
        while not events:
            if self._done:
                raise StopAsyncIteration
            if not self._started:
                self._start()
            self._reading = True
            try:
                chunk = await self._next_chunk()
            except asyncio.CancelledError:
                self._reading = False
                self._end()
                if self._closing is None:
                    raise  # the consumer was stopped: the cancellation closed the connection
                # aclose() from another task cancelled our wait: end the iteration quietly
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self._closing.set_result(None)
                raise StopAsyncIteration from None
            except BaseException:
                self._reading = False
                self._end()
                raise
            self._reading = False
            if chunk is None:
                self._end()
                raise StopAsyncIteration
            self._take(chunk)
        return events.popleft()

    async def aclose(self) -> None:
        """Stop the answer and release the connection at once (safe from any task).

        A consumer blocked in another task on the next chunk sees the iteration end.
        """
        consumer = self._consumer
        if self._reading and consumer is not None and consumer is not asyncio.current_task():
            self._closing = asyncio.get_running_loop().create_future()
            consumer.cancel()  # its wait ends, and the cancellation closes the connection
            # bounded just in case (cancellation reaches an aiohttp read, so this is quick)
            await asyncio.wait({self._closing}, timeout=2.0)
        self._done = True  # before the await below: the consumer may ask for more meanwhile
        self._events.clear()
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            await _close_sdk(sdk)
        if self._started and self.outcome is None:
            self._set_outcome()
        self._forget_consumer()

    # --- reading ------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        if self._client.total_timeout is not None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + self._client.total_timeout
        # Safety net: if the consuming task ends without aclose(), close the stream anyway.
        self._consumer = asyncio.current_task()
        if self._consumer is not None:
            self._consumer.add_done_callback(self._on_consumer_done)

    async def _next_chunk(self) -> types.GenerateContentResponse | None:
        """The next chunk (None: the answer ended well): requests, retries before the first
        event, timeouts, errors mapped to :class:`LLMError`."""
        client = self._client
        while True:
            try:
                return await self._read_chunk()
            except LLMError:
                raise
            except Exception as exc:
                wait, error = self._classify(exc, self.attempts - 1)
                if wait is None:
                    log.warning("Gemini request failed: %s", error.detail or error.user_message)
                    raise error from None
                log.info(
                    "Gemini request failed (%s); retry %d/%d in %.2fs",
                    error.detail or type(error).__name__,
                    self.attempts,
                    client.retry_attempts,
                    wait,
                )
                if self._deadline is not None:
                    left = self._deadline - asyncio.get_running_loop().time()
                    if left < wait:
                        await asyncio.sleep(max(0.0, left))
                        raise self._timeout_error() from None
                await asyncio.sleep(wait)

    async def _read_chunk(self) -> types.GenerateContentResponse | None:
        """One chunk of the current request (sent first if there is none); raises its failure."""
        client = self._client
        if self._sdk is None:
            self.attempts += 1
            self._finish = None
            self._block_reason = None
            self._wait = client.first_chunk_timeout
            self._sdk = await client._client.aio.models.generate_content_stream(
                model=self._model, contents=self._contents, config=self._config
            )
        # One timer per chunk: the wait for the next chunk, or the total deadline if sooner.
        wait = self._wait
        until = asyncio.get_running_loop().time() + wait
        total = self._deadline is not None and self._deadline <= until
        timeout = asyncio.timeout_at(self._deadline if total else until)
        try:
            async with timeout:
                chunk = await anext(self._sdk)
        except StopAsyncIteration:
            self._sdk = None
            self._check_end()
            return None
        except TimeoutError:
            self._sdk = None  # the cancellation went through the SDK's stream: it is closed
            if timeout.expired():
                raise self._timeout_error(None if total else wait) from None
            raise
        except BaseException:
            self._sdk = None  # an error (or a stop) came out of the SDK's stream: it is over
            raise
        self._wait = client.chunk_timeout
        return chunk

    def _end(self) -> None:
        """The iteration is over: record the outcome, drop the safety net."""
        self._done = True
        self._set_outcome()
        self._forget_consumer()

    def _on_consumer_done(self, _task: asyncio.Task[Any]) -> None:
        """The consumer ended without closing the stream: close it (from a task of its own)."""
        self._consumer = None
        if self._sdk is not None and not self._done:
            task = asyncio.get_running_loop().create_task(self.aclose())
            _closing_tasks.add(task)
            task.add_done_callback(_closing_tasks.discard)

    def _forget_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.remove_done_callback(self._on_consumer_done)
            self._consumer = None

    def _set_outcome(self) -> None:
        usage = self._usage
        finish = self._finish
        self.outcome = StreamOutcome(
            finish_reason=str(finish.value) if finish is not None else None,
            prompt_tokens=usage.prompt_token_count if usage else None,
            output_tokens=usage.candidates_token_count if usage else None,
            thoughts_tokens=usage.thoughts_token_count if usage else None,
            cached_tokens=usage.cached_content_token_count if usage else None,
            total_tokens=usage.total_token_count if usage else None,
            model_version=self._model_version,
            tool_use_prompt_tokens=usage.tool_use_prompt_token_count if usage else None,
        )

    def _take(self, chunk: types.GenerateContentResponse) -> None:
        """Record a chunk's metadata and parts, and queue its events."""
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
        if candidate.content is not None:
            for part in candidate.content.parts or ():
                self._take_part(part)
        if candidate.grounding_metadata is not None:
            grounding = _grounding(candidate.grounding_metadata)
            if grounding.queries or grounding.sources or grounding.supports:
                self._put(grounding)
        url_meta = candidate.url_context_metadata
        if url_meta is not None and url_meta.url_metadata:
            links = tuple(
                (m.retrieved_url or "", _enum_name(m.url_retrieval_status or "UNSPECIFIED"))
                for m in url_meta.url_metadata
            )
            self._put(LinkStatus(links))

    def _put(self, event: Event) -> None:
        self._yielded_any = True
        if isinstance(event, str):
            self._yielded_text = True
        self._events.append(event)

    def _take_part(self, part: types.Part) -> None:
        """Queue one part's event and add it to :attr:`parts`."""
        signature = part.thought_signature
        if part.executable_code is not None:
            code = part.executable_code
            language = _enum_name(code.language or "PYTHON")
            self._parts.append((ModelPart("code", code.code or "", signature, language), []))
            self._put(CodeRun(code.code or "", language))
        elif part.code_execution_result is not None:
            result = part.code_execution_result
            outcome = _enum_name(result.outcome or "OUTCOME_UNSPECIFIED")
            self._parts.append((ModelPart("output", result.output or "", signature, outcome), []))
            self._put(CodeOutput(result.output or "", outcome))
        elif part.inline_data is not None and part.inline_data.data:
            blob = part.inline_data
            media = Media(blob.data or b"", blob.mime_type or "image/png")
            self._parts.append((ModelPart("image", "", signature, media=media), []))
            self._put(OutputImage(media.data, media.mime_type))
        elif part.text is not None or signature is not None:
            kind: Literal["text", "thought"] = "thought" if part.thought else "text"
            self._join(kind, part.text or "", signature)
            if part.text:
                self._put(Thought(part.text) if part.thought else part.text)

    def _join(self, kind: Literal["text", "thought"], text: str, signature: bytes | None) -> None:
        """Add text to the open part of its kind (a signature closes it) or start one."""
        last, pieces = self._parts[-1] if self._parts else (None, [])
        if last is not None and last.kind == kind and last.signature is None:
            pieces.append(text)
            if signature is not None:
                self._parts[-1] = (dataclasses.replace(last, signature=signature), pieces)
        elif text or signature is not None:
            self._parts.append((ModelPart(kind, text, signature), [text]))

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
        can_retry = not self._yielded_any and attempt < client.retry_attempts
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
            if self._yielded_any:
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
        return _map_api_error(self._client, exc)

    def _timeout_error(self, chunk_wait: float | None = None) -> Timeout:
        """No chunk for `chunk_wait` seconds, or (None) the whole answer took too long."""
        total = chunk_wait is None
        seconds = self._client.total_timeout if total else chunk_wait
        what = "the answer took longer than" if total else "no data from Gemini for"
        detail = f"{what} {seconds:g}s"
        if self._yielded_text:
            return Timeout("⚠ Gemini stopped responding; the answer is incomplete.", detail=detail)
        return Timeout(detail=detail)


_closing_tasks: set[asyncio.Task[None]] = set()
"""Streams being closed after their consumer ended without closing them (kept referenced)."""


async def _close_sdk(sdk: AsyncIterator[Any]) -> None:
    """Close an SDK stream that waits between two chunks, and its HTTP response at once.

    Its ``aclose()`` alone does not: google-genai 3.6's innermost generators sit in a reference
    cycle (an HttpResponse and its segment iterator), so the half-read response would be
    released only by the cyclic garbage collector, and Gemini would go on generating. Instead
    the stream is resumed and cancelled at its first wait, so the cancellation travels down the
    SDK's nested generators to the aiohttp read, whose ``finally`` releases the response (which
    closes the socket). Chunks already received on the way are dropped.
    """
    with contextlib.suppress(Exception):  # TimeoutError (the usual end), StopAsyncIteration, …
        while True:
            async with asyncio.timeout(0):  # expires at the stream's first wait
                await anext(sdk)


class _EndedEarly(Exception):
    """Internal: the HTTP stream ended cleanly but without a finish reason."""


def _map_api_error(
    client: GeminiClient, exc: genai_errors.APIError
) -> tuple[LLMError, float | None]:
    """An SDK APIError → our error, plus the server's requested retry delay if any."""
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
        return KeyRejected(detail=detail, code=code), None
    if code == 408:
        return Timeout(detail=detail, code=code), server_delay
    refused = f"⚠ Gemini refused the request: {message}"
    return BadRequest(refused, detail=detail, code=code), None


def _grounding(meta: types.GroundingMetadata) -> Grounding:
    """SDK grounding metadata → :class:`Grounding` (web sources only; indices kept)."""
    sources = tuple(
        Source((c.web.uri or "") if c.web else "", (c.web.title or "") if c.web else "")
        for c in meta.grounding_chunks or ()
    )
    supports = tuple(
        Support(s.segment.end_index or 0, tuple(s.grounding_chunk_indices or ()))
        for s in meta.grounding_supports or ()
        if s.segment is not None and s.grounding_chunk_indices
    )
    return Grounding(tuple(q for q in meta.web_search_queries or () if q), sources, supports)


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
