"""The fake Gemini server, driven by the real google-genai SDK."""

from __future__ import annotations

import asyncio
import base64
import itertools

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.gemini import FakeGemini, RecordedRequest, Reply, Usage, decode_base64

KEY = "AIza-test-key-0123456789"
MODEL = "gemini-2.5-flash"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's aiohttp session trusts the environment: keep loopback off any proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
async def fake():
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def sdk(fake: FakeGemini):
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=fake.base_url))
    yield client
    await client.aio.aclose()


async def collect(client: genai.Client, contents="Hi", config=None, model=MODEL):
    chunks = []
    stream = await client.aio.models.generate_content_stream(
        model=model, contents=contents, config=config
    )
    async for chunk in stream:
        chunks.append(chunk)
    return chunks


def answer_text(chunks) -> str:
    return "".join(
        part.text
        for chunk in chunks
        if chunk.candidates and chunk.candidates[0].content
        for part in chunk.candidates[0].content.parts or []
        if part.text and not part.thought
    )


async def test_stream_chunks_usage_and_recorded_request(fake, sdk):
    fake.script(Reply(chunks=["Hel", "lo, ", "world"], delay=0.01, model_version="gemini-x-001"))

    chunks = await collect(sdk, "Hi there")

    assert [c.text for c in chunks] == ["Hel", "lo, ", "world"]
    assert all(c.candidates[0].content.role == "model" for c in chunks)
    assert [c.candidates[0].finish_reason for c in chunks] == [None, None, types.FinishReason.STOP]
    last = chunks[-1]
    assert last.model_version == "gemini-x-001"
    usage = last.usage_metadata
    assert usage.prompt_token_count == 2  # "Hi there": 8 characters, 4 per token
    assert usage.candidates_token_count == 1 + 1 + 2  # ceil(len / 4) per chunk
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count

    (req,) = await fake.wait_for_requests(1)
    assert req.model == MODEL
    assert req.action == "streamGenerateContent" and req.streaming
    assert req.path.endswith(f"/models/{MODEL}:streamGenerateContent")
    assert req.query == {"alt": "sse"}
    assert req.texts() == ["Hi there"]
    assert req.roles() == ["user"]
    assert req.outcome == "completed"
    assert req.chunks_sent == 3 and len(req.chunk_times) == 3
    assert req.finished_at is not None and req.finished_at >= req.received_at
    assert req.closed.is_set()


async def test_api_key_is_recorded_only_as_a_digest(fake, sdk):
    await collect(sdk)
    (req,) = fake.requests
    assert req.has_api_key(KEY)
    assert not req.has_api_key(KEY + "x")
    assert req.headers["x-goog-api-key"] == "<redacted>"
    assert KEY not in repr(req)
    assert KEY not in repr(req.headers)
    assert KEY not in repr(vars(req))


async def test_generate_content_returns_the_whole_answer(fake, sdk):
    fake.script(Reply(chunks=["one ", "two ", "three"], usage=Usage(prompt_tokens=11)))

    response = await sdk.aio.models.generate_content(model=MODEL, contents="count")

    assert response.text == "one two three"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata.prompt_token_count == 11
    assert response.usage_metadata.total_token_count == 11 + 1 + 1 + 2
    (req,) = fake.requests
    assert req.action == "generateContent" and not req.streaming
    assert req.texts() == ["count"]


async def test_default_reply_echoes_the_last_user_turn(fake, sdk):
    chunks = await collect(sdk, "what is the answer to everything")
    assert answer_text(chunks) == "Echo: what is the answer to everything"
    assert len(chunks) > 1


async def test_system_instruction_images_and_history_are_recorded(fake, sdk):
    png = bytes(range(256)) * 3  # every byte value: base64 has '+' and '/' (or '-' and '_')
    jpeg = b"\xff\xd8\xff\xe0" + b"\xfb\xef\xbe" * 50
    contents = [
        types.Content(role="user", parts=[types.Part.from_text(text="first question")]),
        types.Content(role="model", parts=[types.Part.from_text(text="first answer")]),
        types.Content(
            role="user",
            parts=[
                types.Part.from_text(text="what is in these?"),
                types.Part.from_bytes(data=png, mime_type="image/png"),
                types.Part.from_bytes(data=jpeg, mime_type="image/jpeg"),
            ],
        ),
    ]
    config = types.GenerateContentConfig(system_instruction="You are terse.", max_output_tokens=64)

    chunks = await collect(sdk, contents, config)

    (req,) = fake.requests
    assert req.system_instruction() == "You are terse."
    assert req.generation_config()["maxOutputTokens"] == 64
    assert req.roles() == ["user", "model", "user"]
    assert req.texts() == ["first question", "first answer", "what is in these?"]
    assert req.texts(role="model") == ["first answer"]
    assert req.last_user_text() == "what is in these?"
    images = req.image_parts()
    assert [(i.mime_type, i.data) for i in images] == [("image/png", png), ("image/jpeg", jpeg)]
    assert all(i.role == "user" for i in images)
    assert answer_text(chunks) == "Echo: what is in these? [+2 images]"


def test_image_parts_accept_both_spellings_and_both_alphabets():
    data = bytes(range(256))
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "image/webp",
                            "data": base64.b64encode(data).decode(),
                        }
                    },
                    {
                        "inline_data": {
                            "mime_type": "image/heic",
                            "data": base64.urlsafe_b64encode(data).decode().rstrip("="),
                        }
                    },
                ],
            }
        ],
        "system_instruction": {"parts": [{"text": "a"}, {"text": "b"}]},
    }
    req = RecordedRequest(
        index=0,
        method="POST",
        path="/v1beta/models/m:generateContent",
        query={},
        model="m",
        action="generateContent",
        received_at=0.0,
        headers={},
        body=body,
    )
    assert [(i.mime_type, i.data) for i in req.image_parts()] == [
        ("image/webp", data),
        ("image/heic", data),
    ]
    assert req.system_instruction() == "a\nb"
    assert decode_base64("-_8") == base64.b64decode("+/8=")
    with pytest.raises(ValueError):
        decode_base64("not base64!")


async def test_rate_limit_error_carries_retry_info(fake, sdk):
    fake.script(Reply.error(429, retry_delay="17s"))

    with pytest.raises(errors.ClientError) as caught:
        await collect(sdk)

    err = caught.value
    assert err.code == 429
    assert err.status == "RESOURCE_EXHAUSTED"
    assert "retry in 17s" in err.message
    details = err.details["error"]["details"]
    retry = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
    assert fake.requests[0].outcome == "error"


async def test_server_and_client_errors_map_to_sdk_exceptions(fake, sdk):
    fake.script(Reply.error(500), Reply.error(400, message="Bad image."), Reply.error(503))

    with pytest.raises(errors.ServerError) as server:
        await collect(sdk)
    assert server.value.code == 500 and server.value.status == "INTERNAL"

    with pytest.raises(errors.ClientError) as client:
        await collect(sdk)
    assert client.value.code == 400
    assert client.value.status == "INVALID_ARGUMENT"
    assert client.value.message == "Bad image."

    with pytest.raises(errors.ServerError) as unavailable:
        await sdk.aio.models.generate_content(model=MODEL, contents="x")
    assert unavailable.value.code == 503 and unavailable.value.status == "UNAVAILABLE"


async def test_wrong_api_key_is_refused_like_google(monkeypatch):
    async with FakeGemini(api_key="the-right-key") as fake:
        client = genai.Client(
            api_key="a-wrong-key", http_options=types.HttpOptions(base_url=fake.base_url)
        )
        try:
            with pytest.raises(errors.ClientError) as caught:
                await collect(client)
            assert caught.value.code == 400
            assert "API key not valid" in caught.value.message
            reasons = [d.get("reason") for d in caught.value.details["error"]["details"]]
            assert "API_KEY_INVALID" in reasons

            good = genai.Client(
                api_key="the-right-key", http_options=types.HttpOptions(base_url=fake.base_url)
            )
            assert answer_text(await collect(good, "ok")) == "Echo: ok"
            await good.aio.aclose()
        finally:
            await client.aio.aclose()


async def test_blocked_prompt_has_feedback_and_no_candidates(fake, sdk):
    fake.script(Reply.blocked_prompt("PROHIBITED_CONTENT"))

    chunks = await collect(sdk)

    assert len(chunks) == 1
    assert not chunks[0].candidates
    assert chunks[0].prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert chunks[0].text is None


async def test_safety_finish_without_text(fake, sdk):
    fake.script(Reply(chunks=[], finish_reason="SAFETY"))

    chunks = await collect(sdk)

    assert len(chunks) == 1
    assert chunks[0].text is None
    assert chunks[0].candidates[0].finish_reason == types.FinishReason.SAFETY
    assert chunks[0].candidates[0].safety_ratings


async def test_partial_text_then_safety_finish(fake, sdk):
    fake.script(Reply(chunks=["Once upon ", "a time"], finish_reason="SAFETY"))

    chunks = await collect(sdk)

    assert [c.text for c in chunks] == ["Once upon ", "a time", None]
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.SAFETY
    assert chunks[1].candidates[0].finish_reason is None


async def test_max_tokens_finish_rides_on_the_last_chunk(fake, sdk):
    fake.script(Reply(chunks=["a", "b"], finish_reason="MAX_TOKENS"))
    chunks = await collect(sdk)
    assert [c.text for c in chunks] == ["a", "b"]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_thought_parts_are_marked(fake, sdk):
    fake.script(Reply(thoughts=["Let me think."], chunks=["42"]))
    chunks = await collect(sdk)
    first = chunks[0].candidates[0].content.parts[0]
    assert first.thought is True and first.text == "Let me think."
    assert answer_text(chunks) == "42"
    assert chunks[-1].usage_metadata.thoughts_token_count == 4


async def test_dropped_connection_raises_payload_error_after_the_chunks(fake, sdk):
    fake.script(Reply(chunks=["a", "b", "c", "d", "e"], drop_after=3))
    seen = []

    stream = await sdk.aio.models.generate_content_stream(model=MODEL, contents="x")
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in stream:
            seen.append(chunk.text)

    assert seen == ["a", "b", "c"]
    (req,) = fake.requests
    assert req.outcome == "dropped"
    assert req.chunks_sent == 3


async def test_client_disconnect_is_recorded_before_the_next_chunk(fake, sdk):
    # the second chunk is due an hour after the first: only the client's close ends this stream
    fake.script(Reply(chunks=[f"w{i} " for i in range(5)], delays=[0.0, 3600.0]))
    first = asyncio.Event()

    async def consume() -> None:
        stream = await sdk.aio.models.generate_content_stream(model=MODEL, contents="x")
        async for _ in stream:
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (req,) = fake.requests
    await req.wait_closed()
    # the SDK released the half-read response, and aiohttp closed its socket: the fake saw the
    # connection go while it waited for the next chunk, and sent nothing after the first
    assert req.outcome == "disconnected" and req.client_closed and req.handler_cancelled
    assert req.chunks_sent == 1 and len(req.chunk_times) == 1
    assert req.next_due is not None and req.disconnected_at is not None
    assert req.disconnected_at < req.next_due


async def test_stall_is_released_by_stop():
    fake = FakeGemini()
    await fake.start()
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=fake.base_url))
    fake.script(Reply(chunks=["a", "b", "c"], stall_after=1))
    seen: list[str | None] = []
    got = asyncio.Event()

    async def consume() -> None:
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents="x")
        async for chunk in stream:
            seen.append(chunk.text)
            got.set()

    task = asyncio.create_task(consume())
    (req,) = await fake.wait_for_requests(1)
    await fake.wait_for(lambda: req.outcome == "stalled")
    await asyncio.wait_for(got.wait(), 5)
    assert seen == ["a"]
    assert req.next_due is None and not task.done()  # nothing more is coming

    await fake.stop()
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(task, 2)
    # the stall ended on the fake's own stop, not by aiohttp cancelling a handler that would
    # not end (which it does only after the shutdown timeout)
    assert req.outcome == "stopped" and not req.handler_cancelled and not req.client_closed
    assert req.chunks_sent == 1
    await client.aio.aclose()


async def test_chunk_delays_are_honoured(fake, sdk):
    fake.script(Reply(chunks=["a", "b", "c"], first_delay=0.15, delays=[0.0, 0.1, 0.0]))
    await collect(sdk)
    (req,) = fake.requests
    assert req.reply is not None
    # the schedule: first_delay before the first event, then delays[i] (over delay)
    assert [req.reply.wait_before(i) for i in range(3)] == [0.15, 0.1, 0.0]
    gaps = [req.chunk_times[0] - req.received_at] + [
        b - a for a, b in itertools.pairwise(req.chunk_times)
    ]
    assert gaps[0] >= 0.14  # and it waits them out (never less; more on a busy machine)
    assert gaps[1] >= 0.09


async def test_requests_wait_and_queue(fake, sdk):
    with pytest.raises(TimeoutError):
        await fake.wait_for_requests(1, timeout=0.05)
    fake.script(Reply(chunks=["first"]), Reply(chunks=["second"]))
    assert fake.pending_replies == 2
    assert answer_text(await collect(sdk)) == "first"
    assert answer_text(await collect(sdk)) == "second"
    assert answer_text(await collect(sdk, "third")) == "Echo: third"
    assert [r.index for r in await fake.wait_for_requests(3)] == [0, 1, 2]


async def test_no_default_reply_is_a_server_error(sdk, fake):
    fake.default_reply = None
    with pytest.raises(errors.ServerError):
        await collect(sdk)


async def test_unknown_path_is_a_google_404(fake):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.base_url}/v1beta/files", json={}) as resp:
            assert resp.status == 404
            body = await resp.json()
    assert body["error"]["status"] == "NOT_FOUND"
    assert fake.requests[0].model is None


async def test_mid_stream_error_event_raises_after_the_chunks(fake, sdk):
    fake.script(Reply.mid_stream_error(["a", "b", "c"], after=2, code=503))
    seen = []

    with pytest.raises(errors.ServerError) as caught:
        async for chunk in await sdk.aio.models.generate_content_stream(model=MODEL, contents="x"):
            seen.append(chunk.text)

    assert seen == ["a", "b"]
    assert caught.value.code == 503 and caught.value.status == "UNAVAILABLE"
    (req,) = fake.requests
    assert req.chunks_sent == 3 and req.outcome == "error"


# --- the model endpoints (models.list, models.get) ----------------------------------------


async def test_models_list_pages_like_google(fake, sdk):
    fake.max_page_size = 2  # whatever pageSize asks, like Google's cap of 1000
    pager = await sdk.aio.models.list(config={"page_size": 50})
    assert len(pager.page) == 2  # the SDK holds one page at a time
    names = [m.name async for m in pager]
    assert names == [f"models/{m.name}" for m in fake.models]
    assert "models/gemini-2.5-flash" in names and "models/gemini-3-pro-preview" in names
    pages = fake.model_requests
    assert [r.path for r in pages] == ["/v1/models"] * 3
    assert [r.query.get("pageSize") for r in pages] == ["50"] * 3
    tokens = [r.query.get("pageToken") for r in pages]
    assert tokens[0] is None and tokens[1] and tokens[2] and tokens[1] != tokens[2]
    assert fake.requests == []  # generation requests are recorded apart


async def test_models_list_honours_page_size(fake, sdk):
    names = [m.name async for m in await sdk.aio.models.list(config={"page_size": 4})]
    assert len(names) == len(fake.models) == 6
    assert len(fake.model_requests) == 2


async def test_models_list_rest_shape(fake):
    """The raw JSON, as the REST docs show it for GET /v1beta/models."""
    async with aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/v1beta/models?pageSize=3"
        async with session.get(url, headers={"x-goog-api-key": KEY}) as resp:
            assert resp.status == 200
            body = await resp.json()
        first = body["models"][0]
        assert first["name"] == "models/gemini-2.5-flash"
        assert first["displayName"] == "Gemini 2.5 Flash"
        assert first["inputTokenLimit"] == 1_048_576 and first["outputTokenLimit"] == 65_536
        assert "generateContent" in first["supportedGenerationMethods"]
        assert len(body["models"]) == 3 and body["nextPageToken"]
        url = f"{fake.base_url}/v1beta/models?pageSize=3&pageToken={body['nextPageToken']}"
        async with session.get(url) as resp:
            last = await resp.json()
        assert len(last["models"]) == 3 and "nextPageToken" not in last
        async with session.get(f"{fake.base_url}/v1beta/models?pageToken=bogus") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"


async def test_models_get(fake, sdk):
    model = await sdk.aio.models.get(model="gemini-2.5-pro")
    assert model.name == "models/gemini-2.5-pro"
    assert model.display_name == "Gemini 2.5 Pro"
    assert model.input_token_limit == 1_048_576 and model.output_token_limit == 65_536
    assert "generateContent" in (model.supported_actions or [])
    embed = await sdk.aio.models.get(model="models/gemini-embedding-001")
    assert "generateContent" not in (embed.supported_actions or [])
    assert [r.path for r in fake.model_requests] == [
        "/v1/models/gemini-2.5-pro",
        "/v1/models/gemini-embedding-001",
    ]
    assert fake.model_requests[0].model == "gemini-2.5-pro"


async def test_models_get_unknown_is_a_google_404(fake, sdk):
    with pytest.raises(errors.ClientError) as caught:
        await sdk.aio.models.get(model="gemini-x")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
    assert "models/gemini-x is not found" in (caught.value.message or "")


async def test_models_list_is_configurable(fake, sdk):
    fake.set_models("gemini-9-ultra", "gemini-9-flash")
    names = [m.name async for m in await sdk.aio.models.list()]
    assert names == ["models/gemini-9-ultra", "models/gemini-9-flash"]
    assert (await sdk.aio.models.get(model="gemini-9-flash")).display_name == "Gemini 9 Flash"


async def test_model_endpoints_refuse_a_bad_key():
    async with FakeGemini(api_key=KEY) as fake:
        wrong = genai.Client(
            api_key="AIza-wrong", http_options=types.HttpOptions(base_url=fake.base_url)
        )
        try:
            with pytest.raises(errors.ClientError) as listed:
                await wrong.aio.models.list()
            with pytest.raises(errors.ClientError) as got:
                await wrong.aio.models.get(model=MODEL)
        finally:
            await wrong.aio.aclose()
        for caught in (listed, got):
            assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
            assert "API_KEY_INVALID" in str(caught.value.details)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{fake.base_url}/v1/models") as resp:  # no key at all
                assert resp.status == 403
                assert (await resp.json())["error"]["status"] == "PERMISSION_DENIED"
        assert len(fake.model_requests) == 3 and fake.requests == []


async def test_model_endpoints_can_be_scripted(fake, sdk):
    fake.script_models(Reply.error(503), Reply(first_delay=0.05))
    with pytest.raises(errors.ServerError):
        await sdk.aio.models.list()
    model = await sdk.aio.models.get(model=MODEL)  # after the scripted delay
    assert model.name == f"models/{MODEL}"
    assert [r.outcome for r in fake.model_requests] == ["error", "completed"]


async def test_unary_answer_merges_parts_like_google(fake: FakeGemini, sdk: genai.Client) -> None:
    from tests.fakes.gemini import code_part, grounding_metadata, output_part

    answer = "Six times seven is 42."
    fake.script(
        Reply(
            thoughts=["**Plan**", " it"],
            chunks=["Six times ", code_part("print(6*7)"), output_part("42\n"), "seven is 42."],
            signature=b"sig",
            metadata={-1: grounding_metadata(answer, queries=["6*7"], sources=[("u", "t")])},
        )
    )
    response = await sdk.aio.models.generate_content(model=MODEL, contents="x")
    candidate = response.candidates[0]  # type: ignore[index]
    parts = candidate.content.parts  # type: ignore[union-attr]
    assert [(p.thought, p.text) for p in parts][:2] == [(True, "**Plan** it"), (None, "Six times ")]
    assert parts[2].executable_code.code == "print(6*7)"  # type: ignore[union-attr]
    assert parts[3].code_execution_result.output == "42\n"  # type: ignore[union-attr]
    assert parts[4].text == "seven is 42." and parts[4].thought_signature == b"sig"
    assert candidate.grounding_metadata.web_search_queries == ["6*7"]  # type: ignore[union-attr]
    assert candidate.finish_reason == types.FinishReason.STOP
