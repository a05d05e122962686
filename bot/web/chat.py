"""The web chat's routes: the page at ``/``, its static files, and the ``/ws`` WebSocket protocol
(the channels' settings panel has its own routes: :mod:`bot.web.settings`).

Client → server: ``{type: "ask", channel, text, id?, files?}`` (``files``: ``[{name, type,
size}]``, each file's bytes following as one binary message: see :mod:`bot.web.uploads`; the text
may be empty when files go with it), ``{type: "stop", reply}``, ``{type: "history", channel}``.
Server → client: ``hello`` (channels, model, ``max_file``, ``max_voice`` seconds a recording may
last), ``history`` (the channel's stored ``turns``, each model turn with the ``figures`` its
code drew, like the ``files`` event's), ``status`` (``queued``
with the ``reply`` id and the ask's ``id``, then ``thinking``, then ``live`` with the ``line``
saying what the model is doing, until the answer's text comes), ``chunk`` (the reply's text so
far), ``files`` (images the model's code drew: ``[{name, type, data}]``, ``data`` in base64),
``done`` (final text and metrics), ``stopped``, ``error`` (one sentence; for a refused file it
names the file, carries ``file``, ``id`` and ``channel``, and the question still goes with its
other files, unless none is left: then one more error says it was not asked). Every reply event
carries ``reply`` and ``channel``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import itertools
import json
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import WSMessage, WSMsgType, web
from aiohttp.http import WS_CLOSED_MESSAGE

from bot.answer import Engine, answer
from bot.attachments import NOT_ASKED, collect_files, limits_from
from bot.conversation import Question
from bot.streaming import DEFAULT_STYLE, RenderResult
from bot.web.settings import WebSettings
from bot.web.sink import WebSocketSink
from bot.web.uploads import (
    FILE_WAIT,
    largest_file,
    message_cap,
    parse_files,
    receive_files,
)

if TYPE_CHECKING:
    from storage import Turn

log = logging.getLogger(__name__)

MAX_TEXT = 8000
"""Characters one question may have."""
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest text message a client may send (a file's binary message may be as large as the
largest file allowed: see :func:`bot.web.uploads.message_cap`)."""
STOP_WAIT = 5.0
"""Seconds a stop waits for a reply that is still being stored to start."""
AUTHOR_ID = 1
AUTHOR_NAME = "you"


@dataclass(frozen=True)
class Channel:
    """One chat channel of the page, with its own stored history (ids are negative: never
    Discord's)."""

    id: int
    name: str


CHANNELS = (Channel(-1, "general"), Channel(-2, "code"), Channel(-3, "random"))
STATIC = resources.files("bot.web") / "static"


class WebChat:
    """Serves the chat page and answers its WebSocket clients through ``engine``."""

    def __init__(
        self, engine: Engine, *, token: str | None, model_label: str, models: bool = True
    ) -> None:
        """``models``: whether the channel's model may be chosen (not with the demo model)."""
        self.engine = engine
        self.token = token
        self.model_label = model_label
        self.channels = {c.id: c for c in CHANNELS}
        self.limits = limits_from(engine.settings)
        self.max_message = message_cap(self.limits, MAX_MESSAGE_BYTES)
        self._ids = itertools.count(time.time_ns() // 1000)
        self._tasks: set[asyncio.Task[None]] = set()
        self.settings = WebSettings(self, models=models)

    def add_routes(self, app: web.Application) -> None:
        """Add ``/``, ``/static/...``, ``/ws`` and ``/settings`` to ``app``."""
        app.router.add_get("/", self.page)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/ws", self.socket)
        self.settings.add_routes(app)
        app.on_shutdown.append(self._shutdown)

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the chat's token (when one is set)."""
        if self.token is None:
            return True
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def page(self, request: web.Request) -> web.Response:
        """The chat page (it needs the token in its address when one is set)."""
        if not self.authorized(request):
            return _refuse(401, "This chat needs its token: open it as /?token=... .")
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers=_NO_STORE)

    async def static(self, request: web.Request) -> web.Response:
        """The page's CSS and JavaScript."""
        name = request.match_info["name"]
        kinds = {".css": "text/css", ".js": "text/javascript"}
        kind = next((v for k, v in kinds.items() if name.endswith(k)), None)
        file = STATIC / name
        if kind is None or "/" in name or not file.is_file():
            raise web.HTTPNotFound()
        return web.Response(text=file.read_text(encoding="utf-8"), content_type=kind)

    def same_origin(self, request: web.Request) -> bool:
        """Whether a browser's request comes from the chat's own page."""
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser: the token (if any) is the check
            return True
        return origin == f"{request.scheme}://{request.host}"

    async def socket(self, request: web.Request) -> web.StreamResponse:
        """One browser tab: questions in, reply events out; closing it stops its replies."""
        if not self.same_origin(request):
            return _refuse(403, "This chat only accepts connections from its own page.")
        if not self.authorized(request):
            return _refuse(401, "This chat needs its token.")
        ws = web.WebSocketResponse(max_msg_size=self.max_message, heartbeat=30)
        await ws.prepare(request)
        session = _Session(self, ws)
        await session.emit(
            {
                "type": "hello",
                "channels": [{"id": c.id, "name": c.name} for c in CHANNELS],
                "model": self.model_label,
                "max_file": largest_file(self.limits),
                "max_voice": self.limits.max_audio_seconds,
            }
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:  # the bytes of a question already refused
                    log.debug("web client sent %d bytes outside a question", len(msg.data))
                    continue
                if msg.type != WSMsgType.TEXT:
                    break
                await session.handle(msg.data)
        finally:
            session.close()
        return ws

    def next_id(self) -> int:
        """A new question id: negative, so never a Discord message id."""
        return -next(self._ids)

    def spawn(self, work: asyncio.Task[None]) -> None:
        """Keep a reply task until it ends (a shutdown waits for it)."""
        self._tasks.add(work)
        work.add_done_callback(self._tasks.discard)

    async def _shutdown(self, _app: web.Application) -> None:
        self.engine.inflight.cancel_all("restart")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)


_NO_STORE = {"Cache-Control": "no-store"}


def _refuse(status: int, sentence: str) -> web.Response:
    return web.Response(status=status, text=sentence + "\n", content_type="text/plain")


class _Session:
    """One WebSocket client and the replies it asked for."""

    def __init__(self, chat: WebChat, ws: web.WebSocketResponse) -> None:
        self.chat = chat
        self.ws = ws
        self.replies: dict[str, int] = {}  # reply id → question id, while it runs

    async def emit(self, event: dict[str, Any]) -> None:
        """Send one event; nothing once the socket is closed."""
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(event))

    async def error(self, message: str, **about: Any) -> None:
        """Tell the client, in one sentence, what went wrong."""
        await self.emit({"type": "error", "message": message, **about})

    async def handle(self, data: str) -> None:
        """One client message."""
        if len(data) > MAX_MESSAGE_BYTES:
            await self.error("That message is too large: files go as binary messages.")
            return
        try:
            event = json.loads(data)
        except ValueError:
            await self.error("That message was not JSON.")
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "ask":
            await self.ask(event)
        elif kind == "stop":
            await self.stop(str(event.get("reply", "")))
        elif kind == "history":
            await self.history(event.get("channel"))
        else:
            await self.error(f"Unknown message type {kind!r}: use ask, stop or history.")

    def _channel(self, value: object) -> int | None:
        return value if isinstance(value, int) and value in self.chat.channels else None

    async def ask(self, event: dict[str, Any]) -> None:
        """Answer a question in a channel, streaming its reply to this client."""
        channel, text, ask_id = (
            self._channel(event.get("channel")),
            event.get("text"),
            event.get("id"),
        )
        files = parse_files(event.get("files"))
        if isinstance(files, str):
            await self.error(files, id=ask_id, channel=channel)
            return
        if files and (problem := await receive_files(self._file, files, self.chat.limits)):
            await self.error(problem, id=ask_id, channel=channel)
            return
        if channel is None:
            await self.error("There is no such channel.", id=ask_id)
            return
        text = text.strip() if isinstance(text, str) else ""
        if not text and not files:
            await self.error("Type a question first.", id=ask_id, channel=channel)
            return
        if len(text) > MAX_TEXT:
            await self.error(
                f"That question is too long: at most {MAX_TEXT:,} characters.",
                id=ask_id,
                channel=channel,
            )
            return
        collected = await collect_files(files, self.chat.limits)
        for name, sentence in collected.refused:  # the question goes on without it
            await self.error(sentence, id=ask_id, channel=channel, file=name)
        if files and not collected.files:  # as on Discord: not asked without its files
            await self.error(NOT_ASKED, id=ask_id, channel=channel)
            return
        question_id = self.chat.next_id()
        reply = str(question_id)
        self.replies[reply] = question_id
        await self.emit(
            {"type": "status", "reply": reply, "channel": channel, "state": "queued", "id": ask_id}
        )
        question = Question(
            channel,
            AUTHOR_ID,
            AUTHOR_NAME,
            text,
            message_id=question_id,
            in_dm=True,
            images=collected.files,
            notes=collected.notes,
        )
        sink = WebSocketSink(self.emit, reply, channel)
        self.chat.spawn(asyncio.create_task(self._answer(question, sink)))

    async def _file(self) -> WSMessage:
        """The next message, which should be a file's bytes (a CLOSED one when it never comes)."""
        try:
            return await self.ws.receive(timeout=FILE_WAIT)
        except TimeoutError:
            log.info("web question: a file's bytes did not come within %.0f s", FILE_WAIT)
            return WS_CLOSED_MESSAGE

    async def _answer(self, question: Question, sink: WebSocketSink) -> None:
        try:
            result = await answer(self.chat.engine, question, sink)
            await self.emit(_final_event(sink, result))
        except Exception:
            log.exception("web reply %s failed", sink.reply)
            await self.error(
                "Something went wrong while answering.", reply=sink.reply, channel=sink.channel
            )
        finally:
            self.replies.pop(sink.reply, None)

    async def stop(self, reply: str) -> None:
        """Stop one of this client's replies (its text so far stays)."""
        question_id = self.replies.get(reply)
        if question_id is None:
            return  # already over, or not this client's
        running = await self.chat.engine.inflight.wait_for_message(question_id, STOP_WAIT)
        if running is not None:
            running.token.cancel("stopped", AUTHOR_ID)

    async def history(self, value: object) -> None:
        """The channel's stored conversation."""
        channel = self._channel(value)
        if channel is None:
            await self.error("There is no such channel.")
            return
        store = self.chat.engine.store
        turns = await store.load_history(
            channel, max_turns=200, max_tokens=1_000_000, image_turns=0
        )
        for i, turn in enumerate(turns):  # the images a reply's code drew, with their bytes
            if turn.role == "model" and turn.images:
                turns[i] = await store.get_turn(turn.id) or turn
        await self.emit({"type": "history", "channel": channel, "turns": [_turn(t) for t in turns]})

    def close(self) -> None:
        """The socket closed: stop every reply it was streaming."""
        inflight = self.chat.engine.inflight
        for question_id in self.replies.values():
            running = inflight.by_message(question_id)
            if running is not None:
                running.token.cancel("stopped")


def _turn(turn: Turn) -> dict[str, Any]:
    """A stored turn for the page: a question's files by name, a reply's images whole."""
    asked = turn.role == "user"
    return {
        "role": turn.role,
        "text": turn.text,
        "status": turn.status,
        "id": turn.id,
        "files": [f.name or f.mime_type for f in turn.images] if asked else [],
        "figures": []
        if asked
        else [
            {"name": f.name, "type": f.mime_type, "data": base64.b64encode(f.data).decode()}
            for f in turn.images
            if f.data is not None
        ],
    }


def _final_event(sink: WebSocketSink, result: RenderResult | None) -> dict[str, Any]:
    about = {"reply": sink.reply, "channel": sink.channel}
    if result is None:  # stopped before it began
        return {"type": "stopped", "text": "", **about}
    if result.state == "complete":
        metrics = {
            "first_chunk": result.first_chunk_latency,
            "first_visible": result.first_visible_latency,
            "total": result.total_time,
            "chunks": result.chunks,
            "edits": result.edits,
            "sends": result.sends,
        }
        return {"type": "done", "text": sink.text(), "metrics": metrics, **about}
    if result.state == "stopped":  # the model's text so far, as stored; the page marks it
        return {"type": "stopped", "text": result.text, **about}
    if result.state == "empty":
        message = DEFAULT_STYLE.empty
    else:
        message = DEFAULT_STYLE.failure(result.error)
    return {"type": "error", "message": message.lstrip("⚠ "), "text": sink.text(), **about}
