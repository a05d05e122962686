"""A fake Gemini API on 127.0.0.1 that speaks the REST protocol google-genai uses.

Point the real SDK at it with ``genai.Client(api_key=..., http_options=types.HttpOptions(
base_url=fake.base_url))``. Each request takes the next scripted :class:`Reply` (or the
default reply when none is queued) and is recorded as a :class:`RecordedRequest`, including
how many SSE chunks were sent and when the client went away::

    async with FakeGemini() as fake:
        fake.script(Reply(chunks=["Hel", "lo"], delay=0.05), Reply.error(429, retry_delay="2s"))
        ...
        req = (await fake.wait_for_requests(1))[0]
        assert req.texts() == ["Hi"]

Endpoints: ``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` (server-sent
events, one ``GenerateContentResponse`` JSON per ``data:`` line) and
``POST /{version}/models/{model}:generateContent`` (one JSON body); the model endpoints
``GET /{version}/models?pageSize=&pageToken=`` (``models[]`` and ``nextPageToken``, paged like
Google: 50 a page unless ``pageSize`` says otherwise, never more than ``max_page_size``) and
``GET /{version}/models/{model}`` (one ``Model``, 404 NOT_FOUND for a name not in
:attr:`FakeGemini.models`). The SDK asks ``/v1/...`` (google-genai 3.x) and the REST docs
``/v1beta/...``: both are served. Anything else gets Google's 404 error JSON.

Usage: every event carries ``usageMetadata`` (about four characters a token, unless the reply's
:class:`Usage` says otherwise); :attr:`RecordedRequest.usage` keeps the last one sent. An
implicit cache model reports ``cachedContentTokenCount`` for the longest prompt prefix
(system instruction, then contents part by part) byte-identical to one an earlier request
had, from :attr:`FakeGemini.cache_min_tokens` tokens on.

Thinking and tools, as the REST API streams them: a reply's ``thoughts`` go out as parts with
``thought: true`` before the answer, its ``signature`` as a ``thoughtSignature`` on an empty
text part in the last event (as Gemini 3 does); a chunk may be a raw part (:func:`code_part`,
:func:`output_part`, :func:`image_part`), and ``metadata`` adds candidate fields to chosen
events (:func:`grounding_metadata` → ``groundingMetadata``, :func:`url_context_metadata` →
``urlContextMetadata``), so grounding can arrive early, last, or in pieces.
:meth:`RecordedRequest.tools` and :meth:`RecordedRequest.thinking_config` read what a request
asked for.

Model requests are recorded apart, in :attr:`FakeGemini.model_requests`, so that
:attr:`FakeGemini.requests` keeps holding the generation requests only; scripted
:meth:`FakeGemini.script_models` replies (an error, or a delay) apply to them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

from tests.fakes.gemini_files import FakeFiles

__all__ = [
    "DEFAULT_MODELS",
    "FakeGemini",
    "FakeModel",
    "InlineImage",
    "RecordedRequest",
    "Reply",
    "Usage",
    "code_part",
    "echo_reply",
    "grounding_metadata",
    "image_part",
    "output_part",
    "url_context_metadata",
]

API_KEY_HEADER = "x-goog-api-key"
_SECRET_HEADERS = frozenset({API_KEY_HEADER, "authorization", "x-goog-user-project"})
_PATH_RE = re.compile(r"/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^/:]+):(?P<action>[A-Za-z]+)")
_MODELS_PATH_RE = re.compile(r"/(?P<version>v1[a-z0-9]*)/models(?:/(?P<model>[^/:]+))?")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission.",
    404: "Requested entity was not found.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
#: Finish reasons that the real API sends on the last text chunk; others get a chunk of their own.
_INLINE_FINISH = frozenset({"STOP", "MAX_TOKENS"})

Outcome = Literal["pending", "completed", "error", "disconnected", "dropped", "stalled", "stopped"]


def _tokens(text: str) -> int:
    """A deterministic token estimate: one token per four characters, at least one."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _get(mapping: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    """Read a field the SDK may spell in camelCase or snake_case."""
    if camel in mapping:
        return mapping[camel]
    return mapping.get(snake, default)


def decode_base64(data: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not (the SDK sends URL-safe)."""
    cleaned = "".join(data.split()).translate(str.maketrans("-_", "+/"))
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {data[:40]!r}") from exc


@dataclass(frozen=True)
class Usage:
    """Token counts for a reply's ``usageMetadata`` (None: computed from the text)."""

    prompt_tokens: int | None = None
    output_tokens: int | None = None
    thoughts_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    """Of the prompt tokens, how many came from the implicit cache."""
    tool_use_prompt_tokens: int | None = None
    """Prompt tokens of tool results (search, URL context, code execution)."""


def code_part(code: str, language: str = "PYTHON") -> dict[str, Any]:
    """An ``executableCode`` part (the model runs this code)."""
    return {"executableCode": {"language": language, "code": code}}


def output_part(output: str, outcome: str = "OUTCOME_OK") -> dict[str, Any]:
    """A ``codeExecutionResult`` part (what the code printed, or its error)."""
    return {"codeExecutionResult": {"outcome": outcome, "output": output}}


def image_part(data: bytes, mime_type: str = "image/png") -> dict[str, Any]:
    """An ``inlineData`` part (an image the model's code produced), standard base64 like Google."""
    return {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(data).decode()}}


def grounding_metadata(
    answer: str,
    *,
    queries: Sequence[str] = (),
    sources: Sequence[tuple[str, str]] = (),
    cites: Sequence[tuple[str, Sequence[int]]] = (),
) -> dict[str, Any]:
    """Google Search ``groundingMetadata`` (a candidate field) for ``answer``: each of
    ``cites`` is a segment of the answer (found by its text) and the indices of ``sources``
    (uri, title) it rests on. Segment indices are UTF-8 byte offsets into the answer text,
    as the API documents."""
    supports = []
    for segment, indices in cites:
        start = answer.index(segment)
        byte_start = len(answer[:start].encode())
        byte_end = byte_start + len(segment.encode())
        supports.append(
            {
                "segment": {"startIndex": byte_start, "endIndex": byte_end, "text": segment},
                "groundingChunkIndices": list(indices),
            }
        )
    out: dict[str, Any] = {
        "webSearchQueries": list(queries),
        "groundingChunks": [{"web": {"uri": uri, "title": title}} for uri, title in sources],
        "groundingSupports": supports,
    }
    if queries:
        chips = "".join(f'<a class="chip">{q}</a>' for q in queries)
        out["searchEntryPoint"] = {"renderedContent": f"<style>.chip{{}}</style>{chips}"}
    return {"groundingMetadata": out}


def url_context_metadata(*links: tuple[str, str]) -> dict[str, Any]:
    """``urlContextMetadata`` (a candidate field) for (url, status) pairs, the status such as
    ``URL_RETRIEVAL_STATUS_SUCCESS`` or ``URL_RETRIEVAL_STATUS_ERROR``."""
    found = [{"retrievedUrl": url, "urlRetrievalStatus": status} for url, status in links]
    return {"urlContextMetadata": {"urlMetadata": found}}


@dataclass
class Reply:
    """What the fake answers to one request.

    Streaming replies send one SSE event per entry of ``thoughts`` (as thought parts), then
    one per entry of ``chunks`` (text, or a raw part such as :func:`code_part`); a
    STOP/MAX_TOKENS finish rides on the last chunk, any other finish reason (SAFETY, ...)
    comes in a final event of its own without content. With a ``signature``, the last event
    carries it on an empty text part (with the finish). ``metadata[i]`` adds candidate fields
    (``groundingMetadata``, ``urlContextMetadata``) to event ``i`` (negative: from the end).
    ``delays[i]`` (else ``delay``) is slept before event ``i``; ``first_delay`` overrides the
    wait before the first event. ``drop_after=n`` aborts the connection after ``n`` events
    without ending the chunked body; ``stall_after=n`` sends ``n`` events and then nothing
    until the client disconnects or the fake stops; ``error_after=n`` sends ``n`` events,
    then ``error_body`` as an event of its own, and ends the stream (see
    :meth:`mid_stream_error`).
    """

    chunks: Sequence[str | Mapping[str, Any]] = ()
    delay: float = 0.0
    delays: Sequence[float] | None = None
    first_delay: float | None = None
    finish_reason: str | None = "STOP"
    usage: Usage | Mapping[str, int] | None = None
    model_version: str | None = None
    thoughts: Sequence[str] = ()
    signature: bytes | None = field(default=None, repr=False)
    metadata: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    drop_after: int | None = None
    stall_after: int | None = None
    status: int = 200
    error_body: Mapping[str, Any] | None = None
    block_reason: str | None = None
    error_after: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: asyncio.Event | None = field(default=None, repr=False, compare=False)
    """Test control: the last event (the finish) waits until this is set, so the reply stays
    streaming for as long as a test needs it to."""

    @classmethod
    def error(
        cls,
        code: int,
        message: str | None = None,
        *,
        status: str | None = None,
        retry_delay: str | None = None,
        reason: str | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An HTTP error with Google's error JSON (RetryInfo when ``retry_delay`` is given)."""
        if message is None:
            message = _DEFAULT_MESSAGES.get(code, f"HTTP {code}")
            if retry_delay is not None:
                message += f" Please retry in {retry_delay}."
        details: list[dict[str, Any]] = []
        if code == 429:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaValue": "10",
                        }
                    ],
                }
            )
        if reason is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            )
        if retry_delay is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            )
        error: dict[str, Any] = {
            "code": code,
            "message": message,
            "status": status or _STATUS_NAMES.get(code, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return cls(
            status=code,
            error_body={"error": error},
            first_delay=delay,
            finish_reason=None,
            headers=dict(headers or {}),
        )

    @classmethod
    def mid_stream_error(
        cls,
        chunks: Sequence[str],
        *,
        after: int,
        code: int = 503,
        message: str | None = None,
        delay: float = 0.0,
    ) -> Reply:
        """HTTP 200, ``after`` chunks, then an SSE event carrying Google's error JSON."""
        error = cls.error(code, message)
        return cls(chunks=chunks, delay=delay, error_after=after, error_body=error.error_body)

    @classmethod
    def blocked_prompt(cls, reason: str = "SAFETY", *, delay: float = 0.0) -> Reply:
        """The prompt itself is blocked: ``promptFeedback.blockReason`` and no candidates."""
        return cls(block_reason=reason, finish_reason=None, first_delay=delay)

    def wait_before(self, index: int) -> float:
        """Seconds to sleep before event ``index``."""
        if index == 0 and self.first_delay is not None:
            return self.first_delay
        if self.delays is not None and index < len(self.delays):
            return self.delays[index]
        return self.delay


@dataclass(frozen=True)
class FakeModel:
    """One entry of the model list, served as Google's ``Model`` resource."""

    name: str
    """Without the ``models/`` prefix, e.g. ``gemini-2.5-flash``."""
    display_name: str
    input_token_limit: int = 1_048_576
    output_token_limit: int = 65_536
    methods: tuple[str, ...] = (
        "generateContent",
        "countTokens",
        "createCachedContent",
        "batchGenerateContent",
    )
    description: str = ""
    version: str = "001"
    thinking: bool = True

    def resource(self) -> dict[str, Any]:
        """The REST ``Model`` object, camelCase like Google's."""
        out: dict[str, Any] = {
            "name": f"models/{self.name}",
            "version": self.version,
            "displayName": self.display_name,
            "description": self.description or f"{self.display_name} (fake).",
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": list(self.methods),
        }
        if "generateContent" in self.methods:
            out.update(temperature=1, topP=0.95, topK=64, maxTemperature=2)
            if self.thinking:
                out["thinking"] = True
        return out


#: What the fake lists by default: a few current Gemini models and one that cannot chat.
DEFAULT_MODELS: tuple[FakeModel, ...] = (
    FakeModel("gemini-2.5-flash", "Gemini 2.5 Flash"),
    FakeModel("gemini-2.5-pro", "Gemini 2.5 Pro"),
    FakeModel("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
    FakeModel("gemini-3-pro-preview", "Gemini 3 Pro Preview"),
    FakeModel("gemini-flash-latest", "Gemini Flash Latest"),
    FakeModel(
        "gemini-embedding-001",
        "Gemini Embedding 001",
        input_token_limit=2048,
        output_token_limit=1,
        methods=("embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"),
        thinking=False,
    ),
)


def echo_reply(request: RecordedRequest) -> Reply:
    """The default reply: a deterministic echo of the last user turn's first text part (the
    question itself; context a client adds after it, such as today's date, is not echoed), in
    a few chunks."""
    text = request.question_text() or "(no text)"
    answer = f"Echo: {text}"
    images = request.image_parts(role="user", last_turn_only=True)
    if images:
        answer += f" [+{len(images)} image{'s' if len(images) != 1 else ''}]"
    words = answer.split(" ")
    chunks = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
    chunks = [c + " " if i < len(chunks) - 1 else c for i, c in enumerate(chunks)]
    return Reply(chunks=chunks)


@dataclass(frozen=True)
class InlineImage:
    """An inline image part of a request, decoded."""

    mime_type: str
    data: bytes
    role: str | None = None

    def __repr__(self) -> str:
        return f"InlineImage({self.mime_type!r}, {len(self.data)} bytes, role={self.role!r})"


@dataclass(eq=False)
class RecordedRequest:
    """One request the fake received, and what it did with it."""

    index: int
    method: str
    path: str
    query: dict[str, str]
    model: str | None
    action: str | None
    received_at: float
    headers: dict[str, str] = field(repr=False)
    body: Any = field(repr=False)
    api_key_digest: str | None = field(default=None, repr=False)
    reply: Reply | None = field(default=None, repr=False)
    outcome: Outcome = "pending"
    chunks_sent: int = 0
    chunk_times: list[float] = field(default_factory=list, repr=False)
    disconnected_at: float | None = None
    client_closed: bool = False
    """The fake saw the client close the connection (aiohttp's ``connection_lost`` on the
    server side: how a client that gives up on a half-read stream shows, since aiohttp's
    ``ClientResponse.release()``/``close()`` of an unfinished body closes the socket rather
    than pooling it, and google-genai releases the response when its stream is closed)."""
    handler_cancelled: bool = False
    """aiohttp cancelled the fake's handler (the client's connection was lost, or the fake
    stopped while the handler had not ended by itself) instead of it returning."""
    next_due: float | None = None
    """When the fake sends its next event (``time.monotonic()``) while it waits out the
    event's delay; None while nothing is due (sending, stalled, held, done). Left as it was
    when the client went away, so a test can see whether a chunk was still to come."""
    finished_at: float | None = None
    usage: dict[str, int] | None = None
    """The ``usageMetadata`` of the last event sent (what the client was told it used)."""
    implicit_cached: int = 0
    """Prompt tokens the fake's implicit cache model found in an earlier request's prefix."""
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def streaming(self) -> bool:
        """Whether this was a streamGenerateContent call."""
        return self.action == "streamGenerateContent"

    def has_api_key(self, key: str) -> bool:
        """Whether the request carried exactly this API key (only a digest is kept)."""
        return self.api_key_digest == hashlib.sha256(key.encode()).hexdigest()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the fake is done with this request (finished, failed or disconnected)."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    # --- reading the body ----------------------------------------------------------------

    def contents(self) -> list[dict[str, Any]]:
        """The request's ``contents`` list."""
        if not isinstance(self.body, dict):
            return []
        return list(self.body.get("contents") or [])

    def roles(self) -> list[str | None]:
        """The role of each content, in order."""
        return [c.get("role") for c in self.contents()]

    def texts(self, role: str | None = None) -> list[str]:
        """Every text part of the contents, in order (optionally of one role)."""
        return [
            part["text"]
            for content in self.contents()
            if role is None or content.get("role") == role
            for part in content.get("parts") or []
            if isinstance(part.get("text"), str)
        ]

    def last_user_text(self) -> str | None:
        """The text parts of the last user content, joined with newlines (None if no text)."""
        users = [c for c in self.contents() if c.get("role", "user") == "user"]
        if not users:
            return None
        texts = [p["text"] for p in users[-1].get("parts") or [] if isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None

    def question_text(self) -> str | None:
        """The first text part of the last user content (None if it has no text)."""
        users = [c for c in self.contents() if c.get("role", "user") == "user"]
        texts = (
            [p["text"] for p in (users[-1].get("parts") or []) if isinstance(p.get("text"), str)]
            if users
            else []
        )
        return texts[0] if texts else None

    def system_instruction(self) -> str | None:
        """The system instruction's text (parts joined with newlines), or None."""
        if not isinstance(self.body, dict):
            return None
        si = _get(self.body, "systemInstruction", "system_instruction")
        if si is None:
            return None
        if isinstance(si, str):
            return si
        texts = [p["text"] for p in si.get("parts") or [] if isinstance(p.get("text"), str)]
        return "\n".join(texts)

    def generation_config(self) -> dict[str, Any]:
        """The ``generationConfig`` object ({} when absent)."""
        if not isinstance(self.body, dict):
            return {}
        return dict(_get(self.body, "generationConfig", "generation_config") or {})

    def tools(self) -> list[str]:
        """The tools asked for, by name (``googleSearch``, ``urlContext``, ``codeExecution``)."""
        if not isinstance(self.body, dict):
            return []
        return [name for tool in self.body.get("tools") or [] for name in tool]

    def thinking_config(self) -> dict[str, Any] | None:
        """``generationConfig.thinkingConfig`` with camelCase keys (google-genai 3.x sends
        them snake_case inside, ``include_thoughts``; Google accepts both), None if absent."""
        config = _get(self.generation_config(), "thinkingConfig", "thinking_config")
        if not isinstance(config, dict):
            return None
        return {re.sub(r"_([a-z])", lambda m: m[1].upper(), k): v for k, v in config.items()}

    def model_parts(self) -> list[list[dict[str, Any]]]:
        """The parts of each model turn of the contents, as sent."""
        return [list(c.get("parts") or []) for c in self.contents() if c.get("role") == "model"]

    def image_parts(
        self, role: str | None = None, *, last_turn_only: bool = False
    ) -> list[InlineImage]:
        """Every inline-data part, decoded (either spelling, either base64 alphabet)."""
        contents = self.contents()
        if last_turn_only:
            contents = [c for c in contents if role is None or c.get("role") == role][-1:]
        out: list[InlineImage] = []
        for content in contents:
            if role is not None and content.get("role") != role:
                continue
            for part in content.get("parts") or []:
                inline = _get(part, "inlineData", "inline_data")
                if not isinstance(inline, dict):
                    continue
                out.append(
                    InlineImage(
                        mime_type=_get(inline, "mimeType", "mime_type", ""),
                        data=decode_base64(inline.get("data", "")),
                        role=content.get("role"),
                    )
                )
        return out


class FakeGemini:
    """A scriptable fake of the Gemini REST API (see the module docstring)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default_reply: Reply | Callable[[RecordedRequest], Reply] | None = echo_reply,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[FakeModel] = DEFAULT_MODELS,
        max_page_size: int = 1000,
    ) -> None:
        """``api_key``: when set, requests without exactly this key are refused like Google.

        ``models``: what ``GET /models`` lists and ``GET /models/{name}`` finds (change
        :attr:`models` at any time); ``max_page_size``: the most a page holds whatever
        ``pageSize`` asks (Google: 1000), lower it to make a client follow ``nextPageToken``.
        """
        self._required_key_digest = (
            hashlib.sha256(api_key.encode()).hexdigest() if api_key is not None else None
        )
        self.default_reply = default_reply
        self.requests: list[RecordedRequest] = []
        """Generation requests (and unknown paths), in arrival order."""
        self.model_requests: list[RecordedRequest] = []
        """``GET /models`` and ``GET /models/{name}`` requests, in arrival order."""
        self.models: list[FakeModel] = list(models)
        self.max_page_size = max_page_size
        self.cache_min_tokens = 1024
        """Implicit caching: a prompt prefix (system instruction, then contents part by part)
        byte-identical to one seen before is reported as ``cachedContentTokenCount`` when it
        is at least this many tokens (Gemini: 1,024 to 4,096 depending on the model)."""
        self._prefixes: set[str] = set()
        self._queue: deque[Reply] = deque()
        self._model_queue: deque[Reply] = deque()
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tick = asyncio.Event()
        self.base_url = ""
        self.files = FakeFiles(self)
        """The Files API (uploads, files.get/delete) and its checks of the files a request names."""

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> str:
        """Start listening; returns (and sets) ``base_url``, e.g. ``http://127.0.0.1:PORT``."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler at once, which
        # is how the fake notices a disconnect even while it is sending nothing.
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None and server.sockets
        port = server.sockets[0].getsockname()[1]
        self.base_url = f"http://{self._host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop the server; stalled or sleeping streams are aborted (the client sees a drop)."""
        if self._runner is None:
            return
        self._stopping.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- scripting -------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one (the default reply when empty)."""
        self._queue.extend(replies)

    def script_models(self, *replies: Reply) -> None:
        """Queue replies for the model endpoints: each model request takes the next one. An
        error reply is answered as is; any reply's ``first_delay``/``delay`` is waited first."""
        self._model_queue.extend(replies)

    def set_models(self, *names: str) -> None:
        """Make the list hold exactly these chat models (display names made up)."""
        self.models = [FakeModel(n, n.replace("-", " ").title()) for n in names]

    @property
    def pending_replies(self) -> int:
        """How many scripted replies are still queued."""
        return len(self._queue)

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests have arrived; returns the first ``n``."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.requests) >= n)
        return self.requests[:n]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy and return it; it is checked again whenever a
        request arrives, a chunk goes out, a stream stalls or a request is done with."""
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await self._tick.wait()
        return value

    def _touched(self) -> None:
        """Wake :meth:`wait_for` callers: something they may wait for changed."""
        self._tick.set()
        self._tick = asyncio.Event()

    # --- serving ---------------------------------------------------------------------

    async def _record(self, request: web.Request) -> RecordedRequest:
        models_match = _MODELS_PATH_RE.fullmatch(request.path) if request.method == "GET" else None
        into = self.model_requests if models_match else self.requests
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = "<redacted>" if name.lower() in _SECRET_HEADERS else value
        key = request.headers.get(API_KEY_HEADER)
        match = _PATH_RE.fullmatch(request.path)
        rec = RecordedRequest(
            index=len(into),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            model=(match or models_match)["model"] if (match or models_match) else None,
            action=match["action"] if match else None,
            received_at=time.monotonic(),
            headers=headers,
            body=body,
            api_key_digest=hashlib.sha256(key.encode()).hexdigest() if key is not None else None,
        )
        async with self._changed:
            into.append(rec)
            self._changed.notify_all()
        self._touched()
        return rec

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.files.handles(request):
            return await self.files.serve(request)
        rec = await self._record(request)
        try:
            return await self._serve(request, rec)
        except asyncio.CancelledError:
            now = time.monotonic()
            # handler_cancellation: aiohttp cancels the handler from connection_lost, which
            # first drops the protocol's transport; a transport still there means the handler
            # was cancelled for another reason (the fake stopping).
            rec.handler_cancelled = True
            rec.client_closed = request.transport is None and not self._stopping.is_set()
            if rec.outcome in ("pending", "stalled"):
                if self._stopping.is_set():
                    rec.outcome = "stopped"
                else:
                    rec.outcome = "disconnected"
                    rec.disconnected_at = now
            raise
        except ConnectionError:  # the client went away while we wrote: a disconnect, as Google
            rec.outcome = "disconnected"  # sees it (aiohttp would log it as a server error)
            rec.disconnected_at = time.monotonic()
            rec.client_closed = True
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)
        finally:
            if rec.finished_at is None:
                rec.finished_at = time.monotonic()
            rec.closed.set()
            self._touched()

    def _key_refusal(self, rec: RecordedRequest) -> Reply | None:
        """Google's answer to a missing (403) or wrong (400 API_KEY_INVALID) key, if any."""
        if self._required_key_digest is None:
            return None
        if rec.api_key_digest is None:
            return Reply.error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to "
                "call this API.",
            )
        if rec.api_key_digest != self._required_key_digest:
            return Reply.error(
                400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
            )
        return None

    async def _serve(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        if request.method == "GET" and (match := _MODELS_PATH_RE.fullmatch(request.path)):
            return await self._serve_models(request, rec, match["version"], match["model"])
        if rec.action is None or rec.method != "POST":
            return self._error_response(rec, Reply.error(404, f"Unknown path {request.path}."))
        if rec.action not in ("streamGenerateContent", "generateContent"):
            return self._error_response(
                rec, Reply.error(404, f"Method {rec.action} is not supported by the fake.")
            )
        if (refusal := self._key_refusal(rec)) is not None:
            return self._error_response(rec, refusal)
        if not isinstance(rec.body, dict):
            return self._error_response(rec, Reply.error(400, "Invalid JSON payload received."))
        if (refusal := self.files.refusal(rec)) is not None:
            return self._error_response(rec, refusal)

        reply = self._next_reply(rec)
        rec.reply = reply
        rec.implicit_cached = self._cache_lookup(rec)
        if reply.status != 200:
            if not await self._pause(reply.wait_before(0)):
                return self._abort(request, rec, "stopped")
            return self._error_response(rec, reply)
        if rec.streaming:
            return await self._stream(request, rec, reply)
        return await self._unary(request, rec, reply)

    async def _serve_models(
        self, request: web.Request, rec: RecordedRequest, version: str, name: str | None
    ) -> web.StreamResponse:
        """``GET /models`` (one page) or ``GET /models/{name}``, like Google."""
        if (refusal := self._key_refusal(rec)) is not None:
            return self._error_response(rec, refusal)
        if self._model_queue:
            scripted = rec.reply = self._model_queue.popleft()
            if not await self._pause(scripted.wait_before(0)):
                return self._abort(request, rec, "stopped")
            if scripted.status != 200:
                return self._error_response(rec, scripted)
        if name is not None:
            found = next((m for m in self.models if m.name == name), None)
            if found is None:
                return self._error_response(
                    rec,
                    Reply.error(
                        404,
                        f"models/{name} is not found for API version {version}, or is not "
                        "supported for GetModel. Call ListModels to see the list of available "
                        "models and their supported methods.",
                    ),
                )
            return self._ok_json(rec, found.resource())
        try:
            size = int(rec.query.get("pageSize") or 50)
        except ValueError:
            return self._error_response(rec, Reply.error(400, "Invalid value for pageSize."))
        token = rec.query.get("pageToken") or ""
        start = _page_offset(token) if token else 0
        if start is None:
            return self._error_response(rec, Reply.error(400, "Invalid page token."))
        if size <= 0:
            size = 50
        size = min(size, self.max_page_size)
        page = self.models[start : start + size]
        body: dict[str, Any] = {"models": [m.resource() for m in page]}
        if start + size < len(self.models):
            body["nextPageToken"] = _page_token(start + size)
        return self._ok_json(rec, body)

    def _ok_json(self, rec: RecordedRequest, body: Any) -> web.Response:
        rec.outcome = "completed"
        rec.finished_at = time.monotonic()
        return web.Response(
            status=200,
            body=json.dumps(body, indent=2).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8"},
        )

    def _next_reply(self, rec: RecordedRequest) -> Reply:
        if self._queue:
            return self._queue.popleft()
        default = self.default_reply
        if default is None:
            return Reply.error(500, "FakeGemini: no reply scripted for this request.")
        return default(rec) if callable(default) else default

    def _error_response(self, rec: RecordedRequest, reply: Reply) -> web.Response:
        rec.outcome = "error"
        rec.finished_at = time.monotonic()
        body = reply.error_body or {
            "error": {
                "code": reply.status,
                "message": f"HTTP {reply.status}",
                "status": _STATUS_NAMES.get(reply.status, "UNKNOWN"),
            }
        }
        return web.Response(
            status=reply.status,
            body=json.dumps(body, indent=2).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8", **reply.headers},
        )

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless the fake is stopping; returns False when it is."""
        if self._stopping.is_set():
            return False
        if seconds <= 0:
            await asyncio.sleep(0)
            return not self._stopping.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def _held(self, hold: asyncio.Event) -> bool:
        """Wait until `hold` is set, unless the fake is stopping; returns False when it is."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        released = asyncio.ensure_future(hold.wait())
        await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        released.cancel()
        return not self._stopping.is_set()

    def _abort(
        self, request: web.Request, rec: RecordedRequest, outcome: Outcome
    ) -> web.StreamResponse:
        """Cut the connection without finishing the response."""
        rec.outcome = outcome
        rec.finished_at = time.monotonic()
        if request.transport is not None:
            request.transport.abort()
        return web.Response()  # never written: the transport is gone

    def _events(self, rec: RecordedRequest, reply: Reply) -> list[dict[str, Any]]:
        """The GenerateContentResponse chunks of a streaming reply, in order."""
        model_version = reply.model_version or rec.model or "gemini-fake"
        prompt_tokens = self._prompt_tokens(rec)
        response_id = f"fake-{rec.index}"
        events: list[dict[str, Any]] = []
        thoughts_so_far = 0
        output_so_far = 0

        def usage(final: bool) -> dict[str, int]:
            return self._usage(
                reply, prompt_tokens, output_so_far, thoughts_so_far, final, rec.implicit_cached
            )

        if reply.block_reason is not None:
            events.append(
                {
                    "promptFeedback": {
                        "blockReason": reply.block_reason,
                        "safetyRatings": _safety_ratings(reply.block_reason),
                    },
                    "usageMetadata": usage(True),
                    "modelVersion": model_version,
                    "responseId": response_id,
                }
            )
            return events

        if reply.error_after is not None:
            normal = Reply(
                chunks=reply.chunks,
                thoughts=reply.thoughts,
                usage=reply.usage,
                model_version=reply.model_version,
                finish_reason=None,
                metadata=reply.metadata,
            )
            error = reply.error_body or Reply.error(500).error_body
            return [*self._events(rec, normal)[: reply.error_after], dict(error or {})]

        texts = list(reply.chunks)
        signed = reply.signature is not None
        inline_finish = reply.finish_reason in _INLINE_FINISH and bool(texts) and not signed
        for thought in reply.thoughts:
            thoughts_so_far += _tokens(thought)
            events.append(
                {
                    "candidates": [
                        {
                            "content": {
                                "parts": [{"text": thought, "thought": True}],
                                "role": "model",
                            },
                            "index": 0,
                        }
                    ],
                    "usageMetadata": usage(False),
                    "modelVersion": model_version,
                    "responseId": response_id,
                }
            )
        for i, text in enumerate(texts):
            part = {"text": text} if isinstance(text, str) else dict(text)
            output_so_far += _tokens(text if isinstance(text, str) else json.dumps(part))
            last = i == len(texts) - 1
            candidate: dict[str, Any] = {
                "content": {"parts": [part], "role": "model"},
                "index": 0,
            }
            if last and inline_finish:
                candidate["finishReason"] = reply.finish_reason
            events.append(
                {
                    "candidates": [candidate],
                    "usageMetadata": usage(last and (inline_finish or reply.finish_reason is None)),
                    "modelVersion": model_version,
                    "responseId": response_id,
                }
            )
        if reply.finish_reason is not None and not inline_finish:
            final: dict[str, Any] = {"finishReason": reply.finish_reason, "index": 0}
            if signed:
                signature = base64.b64encode(reply.signature or b"").decode()
                final["content"] = {
                    "parts": [{"text": "", "thoughtSignature": signature}],
                    "role": "model",
                }
            if reply.finish_reason not in _INLINE_FINISH:
                final["safetyRatings"] = _safety_ratings(reply.finish_reason)
            events.append(
                {
                    "candidates": [final],
                    "usageMetadata": usage(True),
                    "modelVersion": model_version,
                    "responseId": response_id,
                }
            )
        for index, extra in reply.metadata.items():
            if -len(events) <= index < len(events):
                events[index]["candidates"][0].update(extra)
        return events

    def _cache_lookup(self, rec: RecordedRequest) -> int:
        """Tokens of the longest prefix of this prompt seen in an earlier request (0 below
        :attr:`cache_min_tokens`); the prompt's prefixes are remembered for later requests."""
        units: list[tuple[str, int]] = []
        if (system := rec.system_instruction()) is not None:
            units.append((json.dumps({"systemInstruction": system}), _tokens(system)))
        for content in rec.contents():
            for part in content.get("parts") or []:
                key = json.dumps({"role": content.get("role"), "part": part}, sort_keys=True)
                if isinstance(part.get("text"), str):
                    units.append((key, _tokens(part["text"])))
                elif _get(part, "inlineData", "inline_data") is not None:
                    units.append((key, 258))
                else:
                    units.append((key, _tokens(key)))
        digest, tokens, hit = hashlib.sha256(), 0, 0
        for key, cost in units:
            digest.update(hashlib.sha256(key.encode()).digest())
            tokens += cost
            prefix = digest.hexdigest()
            if prefix in self._prefixes:
                hit = tokens
            self._prefixes.add(prefix)
        return hit if hit >= self.cache_min_tokens else 0

    def _prompt_tokens(self, rec: RecordedRequest) -> int:
        texts = rec.texts()
        system = rec.system_instruction()
        if system:
            texts.append(system)
        images = len(rec.image_parts())
        return max(1, sum(_tokens(t) for t in texts) + 258 * images)

    @staticmethod
    def _usage(
        reply: Reply, prompt: int, output: int, thoughts: int, final: bool, cached: int = 0
    ) -> dict[str, int]:
        if final and isinstance(reply.usage, Mapping):
            return dict(reply.usage)
        override = reply.usage if final and isinstance(reply.usage, Usage) else Usage()
        prompt = override.prompt_tokens if override.prompt_tokens is not None else prompt
        output = override.output_tokens if override.output_tokens is not None else output
        thoughts = override.thoughts_tokens if override.thoughts_tokens is not None else thoughts
        total = override.total_tokens
        if total is None:
            total = prompt + output + thoughts + (override.tool_use_prompt_tokens or 0)
        usage = {"promptTokenCount": prompt, "totalTokenCount": total}
        if output:
            usage["candidatesTokenCount"] = output
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        cached = override.cached_tokens if override.cached_tokens is not None else cached
        if cached:
            usage["cachedContentTokenCount"] = min(cached, prompt)
        if override.tool_use_prompt_tokens:
            usage["toolUsePromptTokenCount"] = override.tool_use_prompt_tokens
        return usage

    async def _stream(
        self, request: web.Request, rec: RecordedRequest, reply: Reply
    ) -> web.StreamResponse:
        events = self._events(rec, reply)
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                **reply.headers,
            },
        )
        resp.enable_chunked_encoding()
        for i, event in enumerate(events):
            if reply.drop_after is not None and i >= reply.drop_after:
                return self._abort(request, rec, "dropped")
            if reply.stall_after is not None and i >= reply.stall_after:
                return await self._stall(request, rec)
            wait = reply.wait_before(i)
            rec.next_due = time.monotonic() + wait
            if not await self._pause(wait):
                return self._abort(request, rec, "stopped")
            if reply.hold is not None and i == len(events) - 1:
                rec.next_due = None
                if not await self._held(reply.hold):
                    return self._abort(request, rec, "stopped")
            rec.next_due = None
            if not resp.prepared:
                await resp.prepare(request)
            await resp.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
            rec.chunks_sent += 1
            rec.usage = event.get("usageMetadata", rec.usage)
            rec.chunk_times.append(time.monotonic())
            self._touched()
        if reply.drop_after is not None and reply.drop_after <= len(events):
            return self._abort(request, rec, "dropped")
        if reply.stall_after is not None and reply.stall_after <= len(events):
            return await self._stall(request, rec)
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof()
        rec.outcome = "completed" if reply.error_after is None else "error"
        rec.finished_at = time.monotonic()
        return resp

    async def _stall(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        """Send nothing more until the client goes away (handler cancelled) or the fake stops."""
        rec.outcome = "stalled"
        self._touched()
        await self._stopping.wait()
        return self._abort(request, rec, "stopped")

    async def _unary(
        self, request: web.Request, rec: RecordedRequest, reply: Reply
    ) -> web.StreamResponse:
        total_wait = sum(reply.wait_before(i) for i in range(max(1, len(reply.chunks))))
        if not await self._pause(total_wait):
            return self._abort(request, rec, "stopped")
        if reply.drop_after is not None:
            return self._abort(request, rec, "dropped")
        if reply.stall_after is not None:
            return await self._stall(request, rec)
        events = self._events(rec, reply)
        body = _merge_events(events)
        rec.chunks_sent = 1
        rec.chunk_times.append(time.monotonic())
        rec.outcome = "completed"
        rec.finished_at = time.monotonic()
        return web.Response(
            status=200,
            body=json.dumps(body, indent=2).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8", **reply.headers},
        )


def _page_token(offset: int) -> str:
    """An opaque page token (it encodes the next page's offset)."""
    return base64.urlsafe_b64encode(f"fake-models:{offset}".encode()).decode().rstrip("=")


def _page_offset(token: str) -> int | None:
    """The offset a page token stands for; None for a token this fake never gave out."""
    try:
        text = decode_base64(token).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    prefix, _, offset = text.partition(":")
    if prefix != "fake-models" or not offset.isdigit():
        return None
    return int(offset)


def _safety_ratings(reason: str) -> list[dict[str, Any]]:
    """Plausible safetyRatings for a block (HIGH on harassment when it is a safety block)."""
    blocked = reason in ("SAFETY", "IMAGE_SAFETY")
    return [
        {
            "category": "HARM_CATEGORY_HARASSMENT",
            "probability": "HIGH" if blocked else "NEGLIGIBLE",
            **({"blocked": True} if blocked else {}),
        },
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
    ]


def _merge_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold streaming chunks into the one response generateContent returns."""
    if not events:
        return {}
    merged: dict[str, Any] = {
        k: v for k, v in events[-1].items() if k in ("usageMetadata", "modelVersion", "responseId")
    }
    if "promptFeedback" in events[0]:
        merged["promptFeedback"] = events[0]["promptFeedback"]
        return merged
    parts: list[dict[str, Any]] = []
    candidate: dict[str, Any] = {"index": 0}
    for event in events:
        for key in ("groundingMetadata", "urlContextMetadata"):
            if key in event["candidates"][0]:
                candidate[key] = event["candidates"][0][key]
        for part in event["candidates"][0].get("content", {}).get("parts", []):
            last_part = parts[-1] if parts else None
            same = last_part is not None and "text" in part and "text" in last_part
            if same and bool(part.get("thought")) == bool(last_part.get("thought")):
                last_part["text"] += part["text"]
                if "thoughtSignature" in part:
                    last_part["thoughtSignature"] = part["thoughtSignature"]
            else:
                parts.append(dict(part))
    if parts:
        candidate["content"] = {"parts": parts, "role": "model"}
    last = events[-1]["candidates"][0]
    for key in ("finishReason", "safetyRatings"):
        if key in last:
            candidate[key] = last[key]
    merged["candidates"] = [candidate]
    return merged
