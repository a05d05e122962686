"""One answer, end to end: store the question → build the request → stream → render → store."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot import ledger
from bot.admission import Slot
from bot.cancel import CancelToken
from bot.coalesce import coalesced
from bot.conversation import Question, build_contents, system_instruction, with_quote
from bot.files import attach_uploads, needs_upload
from bot.grounding import SOURCES_LIMIT
from bot.inflight import InFlight
from bot.links import readable_links
from bot.llm import BadRequest, ChatTurn, GeminiStream, LLMError, Tool
from bot.model_reply import MAX_FIGURES, ModelReply, figure_name, stored_parts
from bot.options import effective, inherit, is_on
from bot.streaming import Buttons, MessageSink, RenderResult, Status, render_stream
from bot.thinking import thinking_for
from storage import (
    AlreadyAnswered,
    ChannelSettings,
    HistoryBudget,
    ReplyMetrics,
    ReplyStart,
    Store,
    Turn,
    TurnNotFound,
)

if TYPE_CHECKING:
    from bot.breaker import Breaker
    from bot.config import Settings
    from bot.inflight import InFlightRegistry
    from bot.llm import GeminiClient
    from bot.metrics import Metrics
    from bot.pacing import PacerRegistry


class Engine(Protocol):
    """What answering needs. The Discord bot is one; the console builds its own (see
    bot/console.py): every front-end answers through :func:`answer`."""

    settings: Settings
    store: Store
    llm: GeminiClient
    pacers: PacerRegistry
    inflight: InFlightRegistry
    metrics: Metrics
    breaker: Breaker

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds (the ledger's days and budgets); a test may step it."""
        ...

    @property
    def display_name(self) -> str:
        """The bot's name, as the persona says it."""
        ...


log = logging.getLogger(__name__)


class ArrivalOrder:
    """Stores each channel's questions in the order they arrived, whatever each one's intake
    costs (an image download, a database lookup), so history pairs them in the order asked.

    Take a :meth:`ticket` synchronously when the event arrives, before any ``await``; the
    question is stored after :meth:`Ticket.wait` and the ticket released right after (or when
    the question is dropped). A question never waits more than ``max_wait`` seconds for the
    ones before it: ordering is given up rather than the answer.
    """

    def __init__(self, max_wait: float = 10.0) -> None:
        self.max_wait = max_wait
        self._last: dict[int, asyncio.Future[None]] = {}

    def ticket(self, channel_id: int) -> Ticket:
        """A place in the channel's queue, behind every ticket taken before it."""
        previous = self._last.get(channel_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[channel_id] = mine

        def forget(done: asyncio.Future[None]) -> None:
            if self._last.get(channel_id) is done:
                del self._last[channel_id]

        mine.add_done_callback(forget)
        return Ticket(previous, mine, self.max_wait)


class Ticket:
    """One question's place in its channel's arrival order (see :class:`ArrivalOrder`)."""

    __slots__ = ("_max_wait", "_mine", "_previous")

    def __init__(
        self, previous: asyncio.Future[None] | None, mine: asyncio.Future[None], max_wait: float
    ) -> None:
        self._previous = previous
        self._mine = mine
        self._max_wait = max_wait

    async def wait(self) -> None:
        """Return once every earlier question of the channel is stored or dropped."""
        previous = self._previous
        if previous is None or previous.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(previous), self._max_wait)
        except TimeoutError:
            log.warning(
                "an earlier question took over %.0f s to arrive; not waiting", self._max_wait
            )

    def release(self) -> None:
        """Let the next question of the channel be stored (idempotent)."""
        if not self._mine.done():
            self._mine.set_result(None)


CUT_SHORT = "-# ✂ cut short: the answer reached its length limit"
TOO_LONG = (
    "⚠ That is too much for the model, even with less of the conversation: try a shorter "
    "question (a moderator can also `/reset` the channel)."
)

_FILE_PROBLEM = re.compile(r"image|file|document|pdf|audio|video|media|mime", re.IGNORECASE)
_TOO_LONG = re.compile(
    r"token count|too many tokens|maximum number of tokens|context (?:length|window)|too long",
    re.IGNORECASE,
)


def length_notice(stream: object) -> str | None:
    """A note for an answer Gemini ended because it ran out of output tokens."""
    outcome = getattr(stream, "outcome", None)
    return CUT_SHORT if getattr(outcome, "finish_reason", None) == "MAX_TOKENS" else None


def stored_status(result: RenderResult, token: CancelToken | None = None) -> str:
    """The status a reply is stored with (a stop for a restart is "interrupted")."""
    if result.state == "complete":
        return "complete"
    if result.state == "stopped":
        return "interrupted" if token is not None and token.reason == "restart" else "stopped"
    if isinstance(result.error, LLMError) and result.error.status == "blocked":
        return "blocked"
    return "failed"


async def channel_settings(store: Store, channel_id: int, parent_id: int | None) -> ChannelSettings:
    """The channel's settings; a thread inherits what it does not set from its parent."""
    own = await _settings_of(store, channel_id)
    if parent_id is None:
        return own
    return inherit(own, await _settings_of(store, parent_id))


async def _settings_of(store: Store, channel_id: int) -> ChannelSettings:
    """One channel's own settings (a read in progress for it is shared; each gets a copy)."""
    key = ("settings", id(store), channel_id)
    found = await coalesced(key, functools.partial(store.get_channel_settings, channel_id))
    return dataclasses.replace(found)


class Request:
    """One question's Gemini request, sent again once without the files Gemini refused and
    once with half the history when the conversation is too long for the model.

    The channel's settings choose the thinking config and the tools: Google Search when
    ``search`` is on, code execution when ``code`` is on, URL context when ``links`` is on
    and the question has links Gemini may read."""

    def __init__(
        self,
        bot: Engine,
        question: Question,
        history: list[Turn],
        model: str,
        persona: str | None,
        settings: ChannelSettings | None = None,
    ) -> None:
        self.bot = bot
        self.question = question
        self.history = history
        self.model = model
        self.persona = persona
        self.settings = settings if settings is not None else ChannelSettings(question.channel_id)
        self.stream: GeminiStream | None = None
        self.notices: list[str] = list(question.notes)
        self.reply = ModelReply()
        """What the model sent besides the text: thoughts, sources, links, images."""
        self.turn_id: int | None = None
        """The reply's stored turn, which takes a checkpoint of the text every few seconds."""
        self.on_begun: Callable[[], object] | None = None
        """Called once Gemini has answered the first request (its first event) or it failed."""

    def tools(self) -> list[Tool]:
        """The built-in tools this channel lets the model use for this question."""
        tools: list[Tool] = []
        if is_on(self.settings, "search"):
            tools.append("search")
        if is_on(self.settings, "links") and readable_links(self.question.text):
            tools.append("links")
        if is_on(self.settings, "code"):
            tools.append("code")
        return tools

    def end_notice(self) -> str | None:
        """Lines to add to a complete answer: files left out, an answer cut short, links
        Gemini could not open, the sources of a grounded answer."""
        lines = [*self.notices, length_notice(self.stream)]
        lines += self.reply.notices(SOURCES_LIMIT - sum(len(line) + 1 for line in lines if line))
        return "\n".join(line for line in lines if line) or None

    async def chunks(self) -> AsyncIterator[str | Status]:
        """The answer's text chunks and status lines (see the class docstring for the
        retries)."""
        bot = self.bot
        bot_name = bot.display_name
        retried: set[str] = set()
        text: list[str] = []  # what has streamed, for the checkpoints
        saved_at = time.monotonic()
        thinking = thinking_for(self.model, effective(self.settings, "thinking"))
        while True:
            contents = await self._contents()
            self.stream = stream = bot.llm.stream(
                model=self.model,
                contents=contents,
                system_instruction=system_instruction(self.persona, bot_name, self.question.in_dm),
                max_output_tokens=bot.settings.max_output_tokens,
                thinking=thinking,
                tools=self.tools(),
            )
            answered = False
            try:
                with bot.breaker.call():  # refused at once while Gemini keeps failing
                    async for event in stream:
                        if not answered:
                            self._begun()
                        answered = True
                        for item in self.reply.take(event):
                            yield item
                            if isinstance(item, str):
                                text.append(item)
                        due = time.monotonic() - saved_at >= bot.settings.checkpoint_seconds
                        if self.turn_id is not None and due and text:
                            saved_at = time.monotonic()
                            await bot.store.checkpoint(self.turn_id, "".join(text))
                return
            except BadRequest as exc:
                problem = None if answered else self._problem(exc)
                if problem == "long" and problem in retried:
                    raise TooLong(TOO_LONG, detail=exc.detail, code=exc.code) from exc
                if problem is None or problem in retried:
                    raise
                retried.add(problem)
                log.warning("Gemini refused a request (%s); retrying %s", exc.detail, problem)
                if problem == "file":
                    await self._drop_files(exc)
                else:
                    self._halve_history()
            finally:
                self._begun()
                await stream.aclose()  # at once, also when the reply is stopped mid-stream

    async def _contents(self) -> list[ChatTurn]:
        """The request's contents, with the files that go through the Files API uploaded (a
        file Gemini cannot take is left out with a notice, and never sent again)."""
        s = self.bot.settings
        contents = build_contents(
            self.history,
            self.question,
            max_inline_bytes=s.max_inline_bytes,
            model=self.model,
            uploaded=lambda media: needs_upload(media, s),
        )
        refused = await attach_uploads(contents, self.bot.llm, self.bot.store, s)
        for item in {item.sha256: item for item in refused}.values():
            name = f"`{item.media.name}`" if item.media.name else "a file"
            if item.rejected:
                self.notices.append(f"-# ⚠ Gemini could not read {name}, so I answered without it.")
            else:
                self.notices.append(
                    f"-# ⚠ I could not send {name} to Gemini just now, so I answered without it."
                )
        if gone := {item.sha256: item.media.name for item in refused if item.rejected}:
            await self.bot.store.mark_images_unusable(gone, "Gemini could not process it")
            self.question = dataclasses.replace(
                self.question, images=[m for m in self.question.images if m.sha256 not in gone]
            )
        return contents

    def _begun(self) -> None:
        call, self.on_begun = self.on_begun, None
        if call is not None:
            call()

    def _problem(self, exc: BadRequest) -> str | None:
        """What a 400 was about: "file" (a refused file), "long" (too many tokens), or None."""
        detail = exc.detail or ""
        if exc.code != 400:
            return None
        if _TOO_LONG.search(detail):
            return "long"
        sent_files = self.question.images or any(
            i.data is not None for t in self.history for i in t.images
        )
        return "file" if sent_files and _FILE_PROBLEM.search(detail) else None

    async def _drop_files(self, exc: BadRequest) -> None:
        """Mark the files of the question (else those of history) unusable and leave them out."""
        question = self.question
        if question.images:
            refused = {image.sha256: image.name for image in question.images}
            names = ", ".join(f"`{n}`" if n else "a file" for n in refused.values())
            self.question = dataclasses.replace(question, images=[])
            self.notices.append(f"-# ⚠ Gemini could not read {names}, so I answered without it.")
        else:
            refused = {i.sha256: "" for t in self.history for i in t.images if i.data is not None}
            for turn in self.history:
                turn.images = [dataclasses.replace(i, data=None) for i in turn.images]
            self.notices.append("-# ⚠ Gemini could not read an earlier file here; I left it out.")
        await self.bot.store.mark_images_unusable(refused, exc.detail or "refused by Gemini")

    def _halve_history(self) -> None:
        """Keep the newer half of the history, starting with a question."""
        rest = self.history[len(self.history) // 2 :]
        while rest and rest[0].role != "user":
            rest.pop(0)
        self.history = rest


class TooLong(BadRequest):
    """The question and its history stay too long for the model even with half the history."""


async def answer(
    bot: Engine,
    question: Question,
    sink: MessageSink,
    ticket: Ticket | None = None,
    slot: Slot | None = None,
    on_admitted: Callable[[], object] | None = None,
    buttons: Callable[[Request, bool], Buttons] | None = None,
) -> RenderResult | None:
    """Answer one question into `sink`; every outcome is shown in Discord and stored.

    With a `ticket`, the question is stored in its channel's arrival order (and the ticket
    released once it is, or once the store has fixed its place in that order). With an
    admission `slot`, the reply waits for it after the question is stored (`on_admitted` is
    called when it no longer waits). `buttons(request, live)` gives the buttons under the
    reply (see `render_stream`). A question from a Discord message that was asked before (a
    duplicate delivery) is not answered again: None.
    A question already stored (`asked_as`) is answered again: its earlier replies are marked
    replaced once the new one starts.
    """
    store = bot.store
    request: Request | None = None
    # admitted already, and a new question: it is stored, its reply started and its history
    # read in one store operation
    at_once = (slot is None or not slot.waiting) and question.asked_as is None
    try:
        if ticket is not None:
            await ticket.wait()
        if question.quote is not None:
            settings = await channel_settings(store, question.channel_id, question.parent_id)
            before = await _history(bot, question, settings)
            question = dataclasses.replace(question, text=with_quote(question, before), quote=None)
        asked: dict[str, Any] = {
            "channel_id": question.channel_id,
            "guild_id": question.guild_id,
            "thread_id": question.thread_id,
            "author_id": question.author_id,
            "author_name": question.author_name,
            "text": question.text,
            "message_ids": [question.message_id] if question.message_id else [],
            "images": question.images,
            "hidden": "private" if question.private else None,
        }
        if at_once:
            settings = await channel_settings(store, question.channel_id, question.parent_id)
            model = settings.model or bot.settings.gemini_model
            start = await store.ask(
                **asked,
                model=model,
                queued=None if ticket is None else ticket.release,
                **_history_of(bot, question, settings),
            )
            user_turn = start.user_turn
            request = _request(bot, question, start, model, settings)
        else:
            user_turn = question.asked_as or await store.add_user_turn(**asked)
    except AlreadyAnswered:
        log.info("message %s was asked before: not answering it again", question.message_id)
        return None
    finally:
        if ticket is not None:
            ticket.release()
    reply = bot.inflight.start(
        question.channel_id, question.author_id, question.message_id, user_turn
    )
    result: RenderResult | None = None
    try:
        if request is None:
            if slot is not None and slot.waiting:
                try:
                    await _until_admitted(slot, reply.token)
                finally:
                    if on_admitted is not None:
                        on_admitted()
            if reply.token.cancelled:
                return None  # stopped (or its question deleted) while it waited
            settings = await channel_settings(store, question.channel_id, question.parent_id)
            model = settings.model or bot.settings.gemini_model
            try:
                start = await store.start_reply(
                    channel_id=question.channel_id,
                    guild_id=question.guild_id,
                    thread_id=question.thread_id,
                    reply_to=user_turn,
                    model=model,
                    **_history_of(bot, question, settings),
                )
            except TurnNotFound:  # the asker ran /forget while the question waited
                log.info("question %s was forgotten before its reply began", question.message_id)
                return None
            request = _request(bot, question, start, model, settings)
            if question.asked_as is not None:
                await store.replace_replies(user_turn, start.model_turn)
        model_turn = request.turn_id
        if slot is not None:
            request.on_begun = slot.begun
        result = await render_stream(
            request.chunks(),
            sink,
            bot.pacers.get(question.channel_id),
            reply.token,
            on_message=lambda mid: _on_message(bot, reply, model_turn, mid, slot),
            end_notice=request.end_notice,
            decorate=request.reply.decorate,
            buttons=None
            if buttons is None
            else functools.partial(_buttons, buttons, request, reply.token),
        )
        if reply.token.reason != "deleted":
            await _attach_images(bot, question.channel_id, sink, result, request)
        return result
    finally:
        try:
            if request is not None and request.turn_id is not None:
                await asyncio.shield(
                    _finish(bot, question, request.turn_id, result, request, reply.token)
                )
        finally:
            # Only now: a shutdown waits for running replies, and so for this store write too.
            bot.inflight.finish(reply)


def _buttons(
    buttons: Callable[[Request, bool], Buttons], request: Request, token: CancelToken, live: bool
) -> Buttons:
    """The reply's buttons; none once it was stopped because its question was deleted (in
    Discord, or by /forget): there is nothing left to regenerate or to look into."""
    return () if token.reason == "deleted" else buttons(request, live)


def _request(
    bot: Engine, question: Question, start: ReplyStart, model: str, settings: ChannelSettings
) -> Request:
    persona = settings.persona or bot.settings.persona
    request = Request(bot, question, start.history, model, persona, settings)
    request.turn_id = start.model_turn
    return request


@runtime_checkable
class FileSink(Protocol):
    """A sink that can add files to a message it wrote (Discord's can)."""

    async def attach(self, message_id: int, files: list[tuple[str, bytes]]) -> None:
        """Add these (name, bytes) files to the message."""
        ...


async def _attach_images(
    bot: Engine, channel_id: int, sink: MessageSink, result: RenderResult, request: Request
) -> None:
    """Attach the images the model's code made to the reply's last message (one paced edit)."""
    images = request.reply.images[:MAX_FIGURES]
    if not images or not result.message_ids or result.state == "gone":
        return
    if not isinstance(sink, FileSink):
        log.info("this front-end cannot show the %d image(s) the code made", len(images))
        return
    files = [(figure_name(n, image.mime_type), image.data) for n, image in enumerate(images, 1)]
    try:
        async with bot.pacers.get(channel_id).budget("edit").write(final=True):
            await sink.attach(result.message_ids[-1], files)
    except Exception as exc:  # the answer stands; only its figures are missing
        log.warning("could not attach the code's images to the reply: %r", exc)


def _history_of(bot: Engine, question: Question, settings: ChannelSettings) -> dict[str, Any]:
    """What history a question's request carries (the store's `history` and
    `history_author`): the channel's conversation, or with `scope` "user" only the asker's
    own exchanges there, or none for a private question."""
    s = bot.settings
    if question.private:  # a one-off only its asker sees (a summary): it carries what it needs
        return {"history": HistoryBudget(max_turns=0)}
    private = effective(settings, "scope") == "user"
    return {
        "history": HistoryBudget(s.history_turns, s.history_tokens, s.history_image_turns),
        "history_author": question.author_id if private else None,
    }


async def _history(bot: Engine, question: Question, settings: ChannelSettings) -> list[Turn]:
    """The conversation the question continues (see :func:`_history_of`)."""
    of = _history_of(bot, question, settings)
    budget: HistoryBudget = of["history"]
    return await bot.store.load_history(
        question.channel_id,
        max_turns=budget.max_turns,
        max_tokens=budget.max_tokens,
        image_turns=budget.image_turns,
        author_id=of.get("history_author"),
    )


async def _until_admitted(slot: Slot, token: CancelToken) -> None:
    """Wait for the admission slot, or until the reply is stopped while it waits."""
    admitted = asyncio.ensure_future(slot.admitted())
    stopped = asyncio.ensure_future(token.wait())
    try:
        await asyncio.wait({admitted, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not admitted.done():
            admitted.cancel()
            slot.release()


def _on_message(
    bot: Engine, reply: InFlight, model_turn: int | None, message_id: int, slot: Slot | None
) -> None:
    bot.inflight.add_message(reply, message_id)
    if slot is not None:
        slot.shown()
    if model_turn is not None:
        task = asyncio.create_task(bot.store.add_message_ids(model_turn, [message_id]))
        task.add_done_callback(_log_task_error)


def _log_task_error(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background store write failed: %s", task.exception())


async def _finish(
    bot: Engine,
    question: Question,
    turn: int,
    result: RenderResult | None,
    request: Request,
    token: CancelToken,
) -> None:
    """Store the reply, count it and log one line about it."""
    stream = request.stream
    outcome = stream.outcome if stream is not None else None
    await ledger.record(bot, question, turn, request.model, outcome)
    if result is None:  # the reply crashed or was cancelled from outside the renderer
        await bot.store.finish_model_turn(turn, text="", status="failed")
        return
    status = stored_status(result, token)
    parts, figures = stored_parts(
        stream.parts if stream is not None else (), bot.settings.max_image_bytes
    )
    await bot.store.finish_model_turn(
        turn,
        text=result.text,
        status=status,  # type: ignore[arg-type]
        message_ids=result.message_ids,
        prompt_tokens=outcome.prompt_tokens if outcome else None,
        output_tokens=outcome.output_tokens if outcome else None,
        parts=parts,
        thoughts_tokens=outcome.thoughts_tokens if outcome else None,
        searches=request.reply.citations.queries,
        images=figures,
        metrics=ReplyMetrics(
            first_chunk_latency=result.first_chunk_latency,
            first_visible_latency=result.first_visible_latency,
            total_time=result.total_time,
            chunk_count=result.chunks,
            edit_count=result.edits,
            send_count=result.sends,
            rate_limited=result.rate_limited,
            outcome=result.state,
        ),
    )
    bot.metrics.reply(result, status, outcome)
    level = logging.INFO if status in ("complete", "stopped", "interrupted") else logging.WARNING
    log.log(
        level,
        "reply in channel %s to %s with %s: %s, %d chars, %d chunks, %d sends, %d edits, "
        "first chunk %s, first text %s, total %.0f ms, tokens in/out %s/%s%s",
        question.channel_id,
        question.author_id,
        request.model,
        status,
        len(result.text),
        result.chunks,
        result.sends,
        result.edits,
        _ms(result.first_chunk_latency),
        _ms(result.first_visible_latency),
        result.total_time * 1000,
        outcome.prompt_tokens if outcome else "–",
        outcome.output_tokens if outcome else "–",
        f" ({result.error})" if result.error else "",
    )


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"
