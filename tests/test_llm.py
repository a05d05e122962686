"""bot.llm.GeminiClient against the fake Gemini server (real google-genai SDK in between)."""

from __future__ import annotations

import asyncio
import copy
import gc
import importlib.util
import logging
import os
import subprocess
import sys

import pytest

from bot import llm
from bot.llm import (
    BadRequest,
    Blocked,
    ChatTurn,
    CodeOutput,
    CodeRun,
    GeminiClient,
    GeminiStream,
    Grounding,
    KeyRejected,
    LinkStatus,
    LLMError,
    ModelInfo,
    ModelPart,
    OutputImage,
    RateLimited,
    ServerError,
    StreamDropped,
    Thinking,
    Thought,
    Timeout,
    warn_if_model_unknown,
)
from storage import Media
from tests.fakes.gemini import (
    FakeGemini,
    Reply,
    Usage,
    code_part,
    decode_base64,
    grounding_metadata,
    image_part,
    output_part,
    url_context_metadata,
)

KEY = "AIza-unit-test-secret-9876"
MODEL = "gemini-2.5-flash"
HELLO = [ChatTurn("user", ["Hello"])]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
async def fake():
    async with FakeGemini() as server:
        yield server


def make_client(base_url: str, **kw) -> GeminiClient:
    options = {"chunk_timeout": 3.0, "retry_base_delay": 0.01, "max_retry_wait": 1.0}
    options.update(kw)
    return GeminiClient(KEY, base_url=base_url, **options)


@pytest.fixture
async def client(fake: FakeGemini):
    gemini = make_client(fake.base_url)
    yield gemini
    await gemini.aclose()


async def drain(stream: GeminiStream) -> tuple[list[str], LLMError | None]:
    chunks: list[str] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except LLMError as exc:
        return chunks, exc
    return chunks, None


@pytest.fixture
def no_gc():
    """Only our own close may release a connection, never the cyclic garbage collector."""
    gc.disable()
    yield
    gc.enable()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep the bot and the SDK make, in seconds (they still sleep)."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args, **kwargs):
        slept.append(delay)
        return await real_sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    return slept


def no_secret(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text)


# --- the happy path ---------------------------------------------------------------------


async def test_chunks_arrive_in_order_with_outcome(fake, client):
    fake.script(
        Reply(
            chunks=["Hel", "lo, ", "world!"],
            delay=0.01,
            usage=Usage(prompt_tokens=12, output_tokens=3, thoughts_tokens=7, total_tokens=22),
            model_version="gemini-2.5-flash-001",
        )
    )
    stream = client.stream(model=MODEL, contents=HELLO)
    assert stream.outcome is None

    chunks, error = await drain(stream)

    assert error is None
    assert chunks == ["Hel", "lo, ", "world!"]
    outcome = stream.outcome
    assert outcome is not None
    assert outcome.finish_reason == "STOP"
    assert outcome.prompt_tokens == 12
    assert outcome.output_tokens == 3
    assert outcome.thoughts_tokens == 7
    assert outcome.total_tokens == 22
    assert outcome.model_version == "gemini-2.5-flash-001"
    (req,) = fake.requests
    assert req.model == MODEL and req.streaming
    assert req.has_api_key(KEY)
    # Exhausted: iterating again ends at once.
    assert [c async for c in stream] == []


async def test_the_request_goes_out_on_first_iteration(fake, client):
    stream = client.stream(model=MODEL, contents=HELLO)
    await asyncio.sleep(0.05)
    assert fake.requests == []
    assert await anext(stream) == "Echo: Hello"
    await stream.aclose()


async def test_thought_parts_come_as_thoughts_and_the_signature_closes_the_answer(fake, client):
    fake.script(
        Reply(
            thoughts=["**Planning**\n\nThinking about it", " more thinking"],
            chunks=["Ans", "wer."],
            signature=b"\x00sig\xff",
        )
    )
    stream = client.stream(model=MODEL, contents=HELLO)
    chunks, error = await drain(stream)
    assert error is None
    assert chunks == [
        Thought("**Planning**\n\nThinking about it"),
        Thought(" more thinking"),
        "Ans",
        "wer.",
    ]
    assert stream.parts == [
        ModelPart("thought", "**Planning**\n\nThinking about it more thinking"),
        ModelPart("text", "Answer.", b"\x00sig\xff"),
    ]


async def test_thinking_and_tools_are_sent_as_asked(fake, client):
    await drain(
        client.stream(
            model="gemini-3-pro-preview",
            contents=HELLO,
            thinking=Thinking(level="low"),
            tools=["search", "links", "code"],
        )
    )
    await drain(client.stream(model=MODEL, contents=HELLO, thinking=Thinking(budget=1024)))
    await drain(client.stream(model=MODEL, contents=HELLO))
    first, second, third = fake.requests
    assert first.thinking_config() == {"includeThoughts": True, "thinkingLevel": "LOW"}
    assert first.tools() == ["googleSearch", "urlContext", "codeExecution"]
    assert second.thinking_config() == {"includeThoughts": True, "thinkingBudget": 1024}
    assert second.tools() == []
    assert third.thinking_config() is None
    with pytest.raises(ValueError):
        Thinking(level="low", budget=5)


async def test_signatures_go_back_exactly_as_received(fake, client):
    signature = bytes(range(256))
    history = [
        ChatTurn("user", ["Hi"]),
        ChatTurn(
            "model",
            [
                ModelPart("thought", "unsigned summary"),
                ModelPart("text", "Hello!", signature),
                ModelPart("code", "print(1)", None, "PYTHON"),
                ModelPart("output", "1\n", None, "OUTCOME_OK"),
                ModelPart("image", "", b"img-sig", media=Media(b"\x89PNG", "image/png")),
            ],
        ),
        ChatTurn("user", ["Again"]),
    ]
    await drain(client.stream(model=MODEL, contents=history))
    (sent,) = fake.requests[0].model_parts()
    assert decode_base64(sent[4]["thoughtSignature"]) == b"img-sig"
    (image,) = fake.requests[0].image_parts("model")
    assert (image.mime_type, image.data) == ("image/png", b"\x89PNG")
    assert sent[0] == {"text": "unsigned summary", "thought": True}
    assert sent[1]["text"] == "Hello!"
    assert decode_base64(sent[1]["thoughtSignature"]) == signature
    assert sent[2] == {"executableCode": {"code": "print(1)", "language": "PYTHON"}}
    assert sent[3] == {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1\n"}}


async def test_the_quick_key_check_changes_no_request(fake, client, monkeypatch):
    """`_speed_up_sdk`'s key check speeds up the SDK's request building; every request it
    builds is the one the SDK builds without it."""
    base = llm.genai_common.BaseModel
    assert "__contains__" in vars(base)  # installed by GeminiClient
    part = llm.types.Part(text="hi")
    assert "text" not in part and ("text", "hi") in part and ("text", "ho") not in part
    history = [
        ChatTurn("user", ["alice: what's this?", Media(b"\x89PNG-bytes", "image/png")]),
        ChatTurn(
            "model",
            [
                ModelPart("thought", "thinking it over"),
                ModelPart("text", "A chart.", b"sig"),
                ModelPart("code", "print(1)", None, "PYTHON"),
                ModelPart("output", "1\n", None, "OUTCOME_OK"),
            ],
        ),
        ChatTurn("user", ["bob: and this?", ""]),
    ]

    async def ask(model: str, thinking: Thinking | None, tools: list[str]) -> None:
        stream = client.stream(
            model=model,
            contents=history,
            system_instruction="You are Gemcord.",
            max_output_tokens=321,
            thinking=thinking,
            tools=tools,
        )
        await drain(stream)

    asks = [
        ("gemini-3-pro-preview", Thinking(level="low"), ["search", "links", "code"]),
        (MODEL, Thinking(budget=1024), []),
        (MODEL, None, ["code"]),
    ]
    for each in asks:
        await ask(*each)
    monkeypatch.delattr(base, "__contains__")
    for each in asks:
        await ask(*each)
    bodies = [r.body for r in fake.requests]
    assert len(bodies) == 6 and bodies[:3] == bodies[3:]
    assert bodies[0]["generationConfig"]["maxOutputTokens"] == 321


def _pristine_sdk_common():
    """A fresh copy of google-genai's `_common` module: the SDK's own steps, untouched."""
    spec = importlib.util.spec_from_file_location("pristine_common", llm.genai_common.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_unknown_keys(value, depth=0):
    """`value` with a key no model has added to each of its dicts, at every depth."""
    if isinstance(value, list):
        return [_with_unknown_keys(each, depth) for each in value]
    if not isinstance(value, dict):
        return value
    out = {key: _with_unknown_keys(each, depth + 1) for key, each in value.items()}
    out[f"futureField{depth}"] = {"text": "dropped", "parts": [{"text": "dropped"}]}
    return out


async def test_the_quick_pruning_keeps_what_the_sdk_keeps(fake, client, monkeypatch):
    """`_speed_up_sdk`'s pruning drops from each streamed chunk exactly the keys the SDK's
    own `_remove_extra_fields` drops, known and unknown, at every depth."""
    assert llm.genai_common._remove_extra_fields is llm._prune_extra_fields
    seen: list[tuple[type, dict]] = []

    def recording(model, response):
        seen.append((model, copy.deepcopy(response)))
        llm._prune_extra_fields(model, response)

    monkeypatch.setattr(llm.genai_common, "_remove_extra_fields", recording)
    grounding = grounding_metadata(
        "Paris is the capital.",
        queries=["capital of France"],
        sources=[("https://a.example/x", "a.example")],
        cites=[("Paris is the capital.", [0])],
    )
    links = url_context_metadata(("https://ok.example", "URL_RETRIEVAL_STATUS_SUCCESS"))
    fake.script(
        Reply(
            thoughts=["Let me think."],
            chunks=[
                "Paris is the capital.",
                {"text": " Known and unknown.", "futurePartField": {"a": 1}},
                code_part("print(1)"),
                output_part("1\n"),
                image_part(b"\x89PNG-bytes"),
            ],
            metadata={
                0: {"groundingMetadata": grounding, "futureCandidateField": [1, 2]},
                -1: {"urlContextMetadata": links},
            },
            usage=Usage(prompt_tokens=12, output_tokens=34, thoughts_tokens=5, cached_tokens=4),
            model_version="gemini-2.5-flash-001",
            signature=b"sig",
        )
    )
    await drain(client.stream(model=MODEL, contents=HELLO))
    assert len(seen) >= 7
    sdk = _pristine_sdk_common()
    for model, response in seen:
        for each in (response, _with_unknown_keys(response)):
            ours, theirs = copy.deepcopy(each), copy.deepcopy(each)
            llm._prune_extra_fields(model, ours)
            sdk._remove_extra_fields(model, theirs)
            assert ours == theirs
    assert any("futurePartField" in str(r) for _, r in seen)


def test_the_quick_mismatch_check_warns_as_the_sdk_does(caplog):
    """`_speed_up_sdk`'s check on every SDK model warns, as the SDK's own does, when a field
    holds another model than its own, and only then."""
    check = llm.genai_common.BaseModel._check_field_type_mismatches.__func__
    wrong, models = llm.types.Part(text="not this"), [llm.genai_common.BaseModel]
    for model in models:
        models.extend(model.__subclasses__())
        right = {
            n: object.__new__(llm._single_type(i.annotation))
            for n, i in model.model_fields.items()
            if _is_model(i.annotation)
        }
        mixed = {name: wrong for name in model.model_fields}
        for data in (right, mixed, {}, "not a dict"):
            caplog.clear()
            check(model, data)
            theirs = caplog.messages
            caplog.clear()
            llm._mismatch_check(model, data)
            assert caplog.messages == theirs
    caplog.clear()
    llm.types.Candidate.model_validate({"content": wrong})  # through the installed check
    assert caplog.messages == ["Type mismatch in Candidate.content: expected Content, got Part"]


def _is_model(annotation) -> bool:
    kind = llm._single_type(annotation)
    return isinstance(kind, type) and issubclass(kind, llm.pydantic.BaseModel)


async def test_grounding_links_and_code_come_as_events(fake, client):
    answer = "Paris is the capital. It is on the Seine."
    grounding = grounding_metadata(
        answer,
        queries=["capital of France"],
        sources=[("https://a.example/x", "a.example"), ("https://b.example/y", "b.example")],
        cites=[("Paris is the capital.", [0]), ("It is on the Seine.", [0, 1])],
    )
    links = url_context_metadata(
        ("https://ok.example", "URL_RETRIEVAL_STATUS_SUCCESS"),
        ("https://bad.example", "URL_RETRIEVAL_STATUS_ERROR"),
    )
    png = b"\x89PNG\r\n\x1a\nfake"
    fake.script(
        Reply(
            chunks=[
                "Paris is the capital. ",
                code_part("print(6 * 7)"),
                output_part("42\n"),
                image_part(png),
                "It is on the Seine.",
            ],
            metadata={0: links, -1: grounding},
        )
    )
    stream = client.stream(model=MODEL, contents=HELLO, tools=["search"])
    chunks, error = await drain(stream)
    assert error is None
    assert chunks[:6] == [
        "Paris is the capital. ",  # a chunk's parts, then its metadata
        LinkStatus(
            (
                ("https://ok.example", "URL_RETRIEVAL_STATUS_SUCCESS"),
                ("https://bad.example", "URL_RETRIEVAL_STATUS_ERROR"),
            )
        ),
        CodeRun("print(6 * 7)", "PYTHON"),
        CodeOutput("42\n", "OUTCOME_OK"),
        OutputImage(png, "image/png"),
        "It is on the Seine.",
    ]
    assert [(p.kind, p.media) for p in stream.parts][2:4] == [
        ("output", None),
        ("image", Media(png, "image/png")),
    ]
    ground = chunks[6]
    assert isinstance(ground, Grounding)
    assert ground.queries == ("capital of France",)
    assert [s.uri for s in ground.sources] == ["https://a.example/x", "https://b.example/y"]
    assert [(s.end, s.sources) for s in ground.supports] == [(21, (0,)), (41, (0, 1))]


async def test_max_tokens_is_not_an_error(fake, client):
    fake.script(Reply(chunks=["cut ", "off"], finish_reason="MAX_TOKENS"))
    stream = client.stream(model=MODEL, contents=HELLO, max_output_tokens=2)
    chunks, error = await drain(stream)
    assert error is None
    assert chunks == ["cut ", "off"]
    assert stream.outcome is not None and stream.outcome.finish_reason == "MAX_TOKENS"
    assert fake.requests[0].generation_config()["maxOutputTokens"] == 2


async def test_history_images_and_system_instruction_reach_gemini(fake, client):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    jpeg = b"\xff\xd8\xff\xe0" + b"\xfb\xff\xbf" * 100
    contents = [
        ChatTurn("user", ["alice: what's this?", Media(png, "image/png")]),
        ChatTurn("model", ["A chart."]),
        ChatTurn("user", ["bob: and this?", Media(jpeg, "image/jpeg"), ""]),
    ]

    chunks, error = await drain(
        client.stream(
            model="gemini-2.5-pro", contents=contents, system_instruction="You are Gemcord."
        )
    )

    assert error is None
    assert "".join(chunks) == "Echo: bob: and this? [+1 image]"
    (req,) = fake.requests
    assert req.model == "gemini-2.5-pro"
    assert req.system_instruction() == "You are Gemcord."
    assert req.roles() == ["user", "model", "user"]
    assert req.texts() == ["alice: what's this?", "A chart.", "bob: and this?"]
    assert [(i.mime_type, i.data, i.role) for i in req.image_parts()] == [
        ("image/png", png, "user"),
        ("image/jpeg", jpeg, "user"),
    ]


async def test_no_system_instruction_sends_none(fake, client):
    await drain(client.stream(model=MODEL, contents=HELLO))
    assert fake.requests[0].system_instruction() is None


def test_bad_contents_are_refused_before_any_request():
    gemini = GeminiClient(KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError):
        gemini.stream(model=MODEL, contents=[])
    with pytest.raises(ValueError):
        gemini.stream(model=MODEL, contents=[ChatTurn("user", [""])])
    with pytest.raises(ValueError):
        gemini.stream(model=MODEL, contents=[ChatTurn("system", ["x"])])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GeminiClient("  ")
    assert KEY not in repr(gemini)


# --- retries ----------------------------------------------------------------------------


async def test_rate_limit_with_retry_delay_is_retried_then_succeeds(fake, client, sleeps):
    fake.script(Reply.error(429, retry_delay="0.2s"), Reply(chunks=["ok"]))

    stream = client.stream(model=MODEL, contents=HELLO)
    chunks, error = await drain(stream)

    assert error is None and chunks == ["ok"]
    first, second = fake.requests
    assert first.outcome == "error" and second.outcome == "completed"
    assert [s for s in sleeps if s > 0] == [0.2]  # the server's RetryInfo was honoured
    assert stream.attempts == 2


async def test_rate_limit_asking_too_long_gives_up_at_once(fake, client, sleeps):
    fake.script(Reply.error(429, retry_delay="30s"), Reply(chunks=["never"]))

    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))

    assert not [s for s in sleeps if s > 0]  # no wait before giving up
    assert chunks == []
    assert isinstance(error, RateLimited)
    assert error.retry_after == 30
    assert "30 seconds" in error.user_message
    assert error.status == "failed" and error.code == 429
    assert len(fake.requests) == 1


async def test_rate_limit_without_delay_backs_off_then_gives_up(fake, sleeps):
    gemini = make_client(fake.base_url, retry_base_delay=0.05)
    fake.script(*[Reply.error(429) for _ in range(4)], Reply(chunks=["never"]))
    try:
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
    finally:
        await gemini.aclose()

    assert isinstance(error, RateLimited)
    assert error.retry_after is None
    assert error.user_message == "⚠ Gemini is rate-limited right now — try again in a minute."
    assert len(fake.requests) == 4  # the request and retry_attempts=3 retries
    assert chunks == []
    waits = [s for s in sleeps if s > 0]
    assert len(waits) == 3
    for n, wait in enumerate(waits):
        assert 0.05 * 2**n * 0.8 <= wait <= 0.05 * 2**n  # 0.05 · 2ⁿ, -20% jitter


async def test_server_error_is_retried_then_reported(fake, caplog):
    caplog.set_level(logging.DEBUG)
    gemini = make_client(fake.base_url, retry_attempts=2)
    fake.script(Reply.error(500), Reply.error(500), Reply.error(500), Reply(chunks=["never"]))
    try:
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
    finally:
        await gemini.aclose()

    assert chunks == []
    assert isinstance(error, ServerError)
    assert error.code == 500
    assert "HTTP 500" in error.user_message
    assert len(fake.requests) == 3
    no_secret(error, error.user_message, error.detail, caplog.text)


async def test_server_error_then_success(fake, client):
    fake.script(Reply.error(503), Reply(chunks=["fine"]))
    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert error is None and chunks == ["fine"]
    assert len(fake.requests) == 2


async def test_bad_request_is_not_retried(fake, client):
    fake.script(Reply.error(400, message="Unable to process input image."), Reply(chunks=["x"]))

    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))

    assert chunks == []
    assert isinstance(error, BadRequest)
    assert error.user_message == "⚠ Gemini refused the request: Unable to process input image."
    assert error.code == 400 and error.status == "failed"
    assert len(fake.requests) == 1


async def test_unknown_model_is_a_bad_request(fake, client):
    fake.script(Reply.error(404, message="models/nope is not found for API version v1beta."))
    _, error = await drain(client.stream(model="nope", contents=HELLO))
    assert isinstance(error, BadRequest) and error.code == 404
    assert "models/nope is not found" in error.user_message


@pytest.mark.parametrize("code", [401, 403])
async def test_auth_errors_point_at_the_key_setting(fake, client, code):
    fake.script(Reply.error(code, message=f"Denied for key {KEY}."))
    _, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert isinstance(error, BadRequest)
    assert "GEMINI_API_KEY" in error.user_message
    no_secret(error, error.user_message, error.detail, repr(error))
    assert len(fake.requests) == 1


async def test_invalid_key_is_reported_without_echoing_it(caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeGemini(api_key="the-real-key") as fake:
        gemini = make_client(fake.base_url)
        try:
            chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
        finally:
            await gemini.aclose()
    assert chunks == []
    assert isinstance(error, BadRequest)
    assert error.user_message == "⚠ Gemini rejected the API key — check the GEMINI_API_KEY setting."
    assert len(fake.requests) == 1
    no_secret(error, error.user_message, error.detail, caplog.text)


async def test_connection_refused_is_retried_then_reported(sleeps):
    dead = FakeGemini()
    await dead.start()
    url = dead.base_url
    await dead.stop()
    gemini = make_client(url, retry_attempts=2)
    try:
        stream = gemini.stream(model=MODEL, contents=HELLO)
        chunks, error = await drain(stream)
    finally:
        await gemini.aclose()
    assert chunks == []
    assert isinstance(error, StreamDropped)
    assert "connection" in error.user_message
    assert stream.attempts == 3
    waits = [s for s in sleeps if s > 0]
    assert len(waits) == 2 and max(waits) <= 1.0  # our two backoffs; no hidden 1-10 s SDK sleep


# --- blocks ---------------------------------------------------------------------------


async def test_safety_finish_without_text_is_blocked(fake, client):
    fake.script(Reply(chunks=[], finish_reason="SAFETY"))
    stream = client.stream(model=MODEL, contents=HELLO)

    chunks, error = await drain(stream)

    assert chunks == []
    assert isinstance(error, Blocked)
    assert error.status == "blocked"
    assert error.reason == "SAFETY" and not error.prompt_blocked
    assert error.user_message.startswith("🚫")
    assert stream.outcome is not None and stream.outcome.finish_reason == "SAFETY"
    assert len(fake.requests) == 1


async def test_partial_text_then_safety_yields_text_then_blocks(fake, client):
    fake.script(Reply(chunks=["Once upon ", "a time"], finish_reason="SAFETY", delay=0.01))

    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))

    assert chunks == ["Once upon ", "a time"]
    assert isinstance(error, Blocked)
    assert "stopped the answer" in error.user_message


@pytest.mark.parametrize(
    "reason", ["RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"]
)
async def test_every_block_finish_reason_is_blocked(fake, client, reason):
    fake.script(Reply(chunks=["x"], finish_reason=reason))
    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert chunks == ["x"]
    assert isinstance(error, Blocked) and error.reason == reason


async def test_other_finish_reason_is_not_blocked(fake, client):
    fake.script(Reply(chunks=["x"], finish_reason="OTHER"))
    stream = client.stream(model=MODEL, contents=HELLO)
    chunks, error = await drain(stream)
    assert chunks == ["x"] and error is None
    assert stream.outcome is not None and stream.outcome.finish_reason == "OTHER"


async def test_blocked_prompt(fake, client):
    fake.script(Reply.blocked_prompt("SAFETY"), Reply(chunks=["never"]))
    stream = client.stream(model=MODEL, contents=HELLO)

    chunks, error = await drain(stream)

    assert chunks == []
    assert isinstance(error, Blocked)
    assert error.prompt_blocked and error.reason == "SAFETY"
    assert error.status == "blocked"
    assert "declined this request" in error.user_message
    assert len(fake.requests) == 1
    assert stream.outcome is not None and stream.outcome.prompt_tokens is not None


# --- broken streams ---------------------------------------------------------------------


async def test_drop_mid_stream_yields_chunks_then_stream_dropped(fake, client):
    fake.script(Reply(chunks=["a", "b", "c", "d", "e"], drop_after=3), Reply(chunks=["x"]))

    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))

    assert chunks == ["a", "b", "c"]
    assert isinstance(error, StreamDropped)
    assert error.user_message == "⚠ The connection to Gemini dropped; the answer is incomplete."
    assert len(fake.requests) == 1  # text was already shown: never retried


async def test_drop_before_any_text_is_retried(fake, client):
    fake.script(Reply(chunks=["a", "b"], drop_after=0), Reply(chunks=["whole answer"]))
    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert error is None and chunks == ["whole answer"]
    assert [r.outcome for r in fake.requests] == ["dropped", "completed"]


async def test_stream_ending_without_finish_reason_is_incomplete(fake, client):
    fake.script(Reply(chunks=["half an "], finish_reason=None))
    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert chunks == ["half an "]
    assert isinstance(error, StreamDropped)


async def test_stall_mid_stream_times_out_and_closes_the_connection(fake, no_gc):
    gemini = make_client(fake.base_url, chunk_timeout=0.3)
    fake.script(Reply(chunks=["a", "b", "c"], stall_after=2))
    try:
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
        (req,) = fake.requests
        await req.wait_closed()  # a stalled reply ends only when the client goes away
    finally:
        await gemini.aclose()

    assert chunks == ["a", "b"]
    assert isinstance(error, Timeout)
    assert "incomplete" in error.user_message
    assert error.detail == "no data from Gemini for 0.3s"
    assert req.outcome == "disconnected"


async def test_no_first_chunk_times_out(fake):
    gemini = make_client(fake.base_url, chunk_timeout=0.3)
    fake.script(Reply(chunks=["late"], first_delay=5.0))
    try:
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
    finally:
        await gemini.aclose()
    assert chunks == []
    assert isinstance(error, Timeout)
    assert error.user_message == "⚠ Gemini took too long to answer — please try again."
    assert len(fake.requests) == 1
    await fake.requests[0].wait_closed(1)
    assert fake.requests[0].outcome == "disconnected"


async def test_the_first_chunk_may_take_longer_than_the_gaps_after_it(fake):
    gemini = make_client(fake.base_url, first_chunk_timeout=5.0, chunk_timeout=0.3)
    fake.script(
        Reply(chunks=["thought ", "through"], delays=[1.0, 0.0]),  # a thinking model's pause
        Reply(chunks=["a", "b"], delays=[1.0, 2.0]),  # then a gap it may not have
    )
    try:
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
        assert (chunks, error) == (["thought ", "through"], None)
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
    finally:
        await gemini.aclose()
    assert chunks == ["a"] and isinstance(error, Timeout)
    assert error.detail == "no data from Gemini for 0.3s"


async def test_total_timeout(fake):
    gemini = make_client(fake.base_url, total_timeout=0.35)
    fake.script(Reply(chunks=[f"{i} " for i in range(30)], delay=0.1))
    try:
        chunks, error = await drain(gemini.stream(model=MODEL, contents=HELLO))
    finally:
        await gemini.aclose()
    assert 1 <= len(chunks) < 30
    assert isinstance(error, Timeout)
    await fake.requests[0].wait_closed(1)
    assert fake.requests[0].outcome == "disconnected"


# --- stopping ----------------------------------------------------------------------------
# A stalled reply sends its first chunks and then nothing until the client goes away, so the
# request ends only when the stream closes its connection; with the garbage collector off, only
# the stream's own close can do that (a half-read SDK response sits in a reference cycle).


def stalled_reply(sent: int) -> Reply:
    return Reply(chunks=[f"word{i} " for i in range(50)], stall_after=sent)


async def test_cancelling_the_consumer_closes_the_connection(fake, client, no_gc):
    fake.script(stalled_reply(2))
    received: list[str] = []
    got_two = asyncio.Event()

    async def consume() -> None:
        async for chunk in client.stream(model=MODEL, contents=HELLO):
            received.append(chunk)
            if len(received) == 2:
                got_two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_two.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected"
    assert req.chunks_sent == len(received) == 2


async def test_aclose_from_the_consuming_task_closes_the_connection(fake, client, no_gc):
    fake.script(stalled_reply(1))
    stream = client.stream(model=MODEL, contents=HELLO)
    async for _ in stream:
        break  # the SDK's stream now waits between two chunks
    await stream.aclose()

    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected"
    assert stream.outcome is not None and stream.outcome.finish_reason is None
    assert req.chunks_sent == 1
    assert [c async for c in stream] == []


async def test_stopping_while_the_consumer_is_busy_elsewhere_closes_the_connection(
    fake, client, no_gc
):
    """The reply is stopped while its reader is not waiting on Gemini (say, saving a
    checkpoint): the stream is closed on the way out, from the reader's own task."""
    fake.script(stalled_reply(1))
    busy = asyncio.Event()

    async def consume() -> None:
        stream = client.stream(model=MODEL, contents=HELLO)
        try:
            async for _ in stream:
                busy.set()
                await asyncio.Event().wait()  # busy with something else until cancelled
        finally:
            await stream.aclose()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(busy.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected" and req.chunks_sent == 1


async def test_leaving_async_with_closes_the_connection(fake, client, no_gc):
    fake.script(stalled_reply(1))
    async with client.stream(model=MODEL, contents=HELLO) as stream:
        assert await anext(stream) == "word0 "
    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected"


async def test_consumer_that_forgets_to_close_still_releases_the_connection(fake, client, no_gc):
    fake.script(stalled_reply(1))

    async def careless() -> str:
        stream = client.stream(model=MODEL, contents=HELLO)
        async for chunk in stream:
            return chunk
        return ""

    assert await asyncio.create_task(careless()) == "word0 "
    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected"
    assert req.chunks_sent == 1


async def test_streams_run_concurrently(fake, client):
    hold = asyncio.Event()  # each reply's last chunk waits until all three requests are in
    fake.script(*[Reply(chunks=[f"{n}-a ", f"{n}-b"], hold=hold) for n in range(3)])
    results = asyncio.gather(*[drain(client.stream(model=MODEL, contents=HELLO)) for _ in range(3)])
    await fake.wait_for_requests(3)  # never, if the streams were read one after another
    hold.set()
    assert sorted("".join(chunks) for chunks, _ in await results) == [
        "0-a 0-b",
        "1-a 1-b",
        "2-a 2-b",
    ]


async def test_aclose_from_another_task_ends_the_iteration_quietly(fake, client, no_gc):
    fake.script(stalled_reply(1))
    stream = client.stream(model=MODEL, contents=HELLO)
    received: list[str] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    await stream.aclose()
    await asyncio.wait_for(task, 5)  # ends without an error, and is not left cancelled
    assert not task.cancelled()

    assert received == ["word0 "]
    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected"


async def test_aclose_from_another_task_between_chunks_ends_the_iteration(fake, client, no_gc):
    """The consumer is busy with a chunk when another task closes the stream: the connection
    closes, and the consumer's next step ends the iteration (no second request)."""
    fake.script(stalled_reply(1))
    stream = client.stream(model=MODEL, contents=HELLO)
    busy, closed = asyncio.Event(), asyncio.Event()
    received: list[str] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)
            busy.set()
            await closed.wait()  # busy elsewhere while the stream is closed

    task = asyncio.create_task(consume())
    await asyncio.wait_for(busy.wait(), 5)
    closing = asyncio.create_task(stream.aclose())
    await asyncio.sleep(0)  # the close is under way when the consumer asks for more
    closed.set()
    await asyncio.wait_for(asyncio.gather(task, closing), 5)
    assert received == ["word0 "]
    (req,) = fake.requests
    await req.wait_closed()
    assert req.outcome == "disconnected"
    assert stream.attempts == 1


async def test_error_event_after_text_is_mapped_not_retried(fake, client):
    fake.script(Reply.mid_stream_error(["partial ", "answer"], after=2, code=503), Reply())
    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert chunks == ["partial ", "answer"]
    assert isinstance(error, ServerError) and error.code == 503
    assert len(fake.requests) == 1


async def test_error_event_before_text_is_retried(fake, client):
    fake.script(Reply.mid_stream_error(["never"], after=0, code=500), Reply(chunks=["second try"]))
    chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
    assert error is None and chunks == ["second try"]
    assert len(fake.requests) == 2


# --- models: list, get, the cached list, name checks -------------------------------------


def list_fetches(fake: FakeGemini) -> int:
    """How many model lists were fetched (first pages)."""
    return sum(
        1 for r in fake.model_requests if r.path.endswith("/models") and "pageToken" not in r.query
    )


async def test_list_models_follows_every_page(fake):
    fake.max_page_size = 2
    client = make_client(fake.base_url, model_page_size=100)
    try:
        models = await client.list_models()
    finally:
        await client.aclose()
    assert [m.name for m in models] == [m.name for m in fake.models]
    assert len(fake.model_requests) == 3  # three pages of two
    flash = models[0]
    assert flash == ModelInfo(
        name="gemini-2.5-flash",
        display_name="Gemini 2.5 Flash",
        input_token_limit=1_048_576,
        output_token_limit=65_536,
        supports_generate=True,
    )
    assert [m.name for m in models if not m.supports_generate] == ["gemini-embedding-001"]


async def test_list_models_asks_its_page_size(fake):
    client = make_client(fake.base_url, model_page_size=4)
    try:
        assert len(await client.list_models()) == 6
    finally:
        await client.aclose()
    assert [r.query.get("pageSize") for r in fake.model_requests] == ["4", "4"]


async def test_get_model(fake, client):
    info = await client.get_model("gemini-2.5-pro")
    assert info is not None and info.name == "gemini-2.5-pro" and info.supports_generate
    assert (await client.get_model("models/gemini-2.5-flash-lite")) is not None
    assert await client.get_model("gemini-x") is None  # 404
    assert await client.get_model("a?b") is None and await client.get_model(" ") is None
    assert [r.path for r in fake.model_requests] == [
        "/v1/models/gemini-2.5-pro",
        "/v1/models/gemini-2.5-flash-lite",
        "/v1/models/gemini-x",
    ]


async def test_model_calls_with_a_bad_key_are_key_rejected():
    async with FakeGemini(api_key="AIza-the-right-key-123456") as fake:
        client = make_client(fake.base_url)
        try:
            with pytest.raises(KeyRejected) as listed:
                await client.list_models()
            with pytest.raises(BadRequest) as got:
                await client.get_model(MODEL)
        finally:
            await client.aclose()
    for caught in (listed, got):
        error = caught.value
        assert isinstance(error, KeyRejected) and error.code == 400
        assert error.user_message == (
            "⚠ Gemini rejected the API key — check the GEMINI_API_KEY setting."
        )
        assert "API key not valid" in (error.detail or "")
        no_secret(error, error.detail, error.user_message, repr(error))


async def test_stream_with_a_bad_key_keeps_its_message():
    async with FakeGemini(api_key="AIza-the-right-key-123456") as fake:
        client = make_client(fake.base_url)
        try:
            chunks, error = await drain(client.stream(model=MODEL, contents=HELLO))
        finally:
            await client.aclose()
    assert chunks == [] and isinstance(error, KeyRejected) and isinstance(error, BadRequest)
    assert "GEMINI_API_KEY" in error.user_message


async def test_model_call_errors_are_mapped(fake):
    client = make_client(fake.base_url, request_timeout=0.3)
    try:
        fake.script_models(Reply.error(503))
        with pytest.raises(ServerError):
            await client.list_models()
        fake.script_models(Reply.error(429, retry_delay="7s"))
        with pytest.raises(RateLimited) as limited:
            await client.get_model(MODEL)
        assert limited.value.retry_after == 7
        fake.script_models(Reply(first_delay=5.0))  # answers after our timeout
        with pytest.raises(Timeout):
            await client.list_models()
    finally:
        await client.aclose()
    dead = make_client("http://127.0.0.1:9")
    try:
        with pytest.raises(StreamDropped) as dropped:
            await dead.list_models()
    finally:
        await dead.aclose()
    assert "Connection refused" in (dropped.value.detail or "")
    no_secret(dropped.value, dropped.value.detail)


async def test_cached_models_share_one_fetch_and_expire(fake):
    fake.script_models(Reply(first_delay=0.1))  # slow enough for the callers to overlap
    client = make_client(fake.base_url, model_list_ttl=600)
    try:
        lists = await asyncio.gather(*(client.cached_models() for _ in range(5)))
        assert all(x is lists[0] for x in lists) and len(lists[0]) == 6
        assert list_fetches(fake) == 1
        assert await client.cached_models() is lists[0]  # fresh: no request
        assert list_fetches(fake) == 1
        client.model_list_ttl = 0  # stale: fetched again
        await client.cached_models()
        assert list_fetches(fake) == 2
        # a refresh that fails keeps the previous list
        fake.script_models(Reply.error(500))
        assert [m.name for m in await client.cached_models()] == [m.name for m in fake.models]
        assert list_fetches(fake) == 3
        client.forget_models()
        fake.script_models(Reply.error(500))
        with pytest.raises(ServerError):
            await client.cached_models()
    finally:
        await client.aclose()


async def test_a_caller_giving_up_does_not_stop_the_shared_fetch(fake):
    fake.script_models(Reply(first_delay=0.3))
    client = make_client(fake.base_url)
    try:
        check = await client.check_model("gemini-2.5-pro", wait=0.05)
        assert check.status == "unchecked" and not check.refused
        # the fetch went on: the next caller gets its result, with no second request
        assert len(await client.cached_models()) == 6
        assert list_fetches(fake) == 1
    finally:
        await client.aclose()


async def test_check_model(fake, client):
    ok = await client.check_model("gemini-2.5-pro")
    assert ok.status == "ok" and not ok.refused
    assert (await client.check_model("models/gemini-2.5-flash")).status == "ok"
    unknown = await client.check_model("gemini-2.5-flahs")
    assert unknown.refused and unknown.status == "unknown"
    assert unknown.suggestions[0] == "gemini-2.5-flash"  # the closest first
    assert "gemini-embedding-001" not in unknown.suggestions
    assert unknown.explain().startswith("gemini-2.5-flahs does not exist (try gemini-2.5-flash")
    embed = await client.check_model("gemini-embedding-001")
    assert embed.refused and embed.status == "unsupported" and "cannot chat" in embed.explain()
    far = await client.check_model("gpt-4o")
    assert far.status == "unknown" and far.suggestions[:2] == ("gemini-2.5-flash", "gemini-2.5-pro")
    assert list_fetches(fake) == 1  # all from one cached list


async def test_check_model_when_the_list_cannot_be_fetched(fake, client):
    fake.script_models(Reply.error(503))
    check = await client.check_model("gemini-9-ultra")
    assert check.status == "unchecked" and not check.refused and "503" in (check.problem or "")


async def test_startup_check_warns_only_for_an_unknown_model(fake, client, caplog):
    caplog.set_level(logging.INFO, logger="bot.llm")
    assert (await warn_if_model_unknown(client, "gemini-2.5-flash")).status == "ok"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    check = await warn_if_model_unknown(client, "gemini-x")
    assert check.status == "unknown"
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "GEMINI_MODEL" in warning.getMessage() and "gemini-x" in warning.getMessage()
    assert KEY not in caplog.text


async def test_startup_check_never_fails(caplog):
    caplog.set_level(logging.INFO, logger="bot.llm")
    dead = make_client("http://127.0.0.1:9")
    try:
        check = await warn_if_model_unknown(dead, "gemini-2.5-flash")
    finally:
        await dead.aclose()
    assert check.status == "unchecked"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Could not check GEMINI_MODEL" in caplog.text and KEY not in caplog.text


_FIRST_STREAM = """
import asyncio
import pydantic
from google.genai import types
from bot.llm import ChatTurn, GeminiClient, Thinking
from tests.fakes.gemini import FakeGemini, Reply

def unbuilt():
    return {
        name for name, model in vars(types).items()
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel)
        and not model.__pydantic_complete__
    }

async def main():
    async with FakeGemini() as fake:
        fake.default_reply = Reply(chunks=["Hello", " there"])
        client = GeminiClient("AIza-unit-test-secret-9876", base_url=fake.base_url)
        before = unbuilt()
        stream = client.stream(
            model="gemini-2.5-flash", contents=[ChatTurn("user", ["Hi"])],
            system_instruction="Be brief.", max_output_tokens=100,
            thinking=Thinking(budget=0), tools=["search", "links", "code"],
        )
        text = "".join([e async for e in stream if isinstance(e, str)])
        await client.aclose()
        assert text == "Hello there", text
        print(" ".join(sorted(before - unbuilt())))

asyncio.run(main())
"""


def test_the_first_answer_after_a_start_builds_no_sdk_model() -> None:
    """The SDK's models on a streamed answer's path are built when the client is made, so the
    first question after a start does not pay for it (pydantic builds a model's validator on
    first use). A fresh interpreter: this one has long built them."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_STREAM], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []  # models built during the first stream, if any
