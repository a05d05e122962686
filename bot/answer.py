"""One answer, end to end: store the question → build the request → stream → render → store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from bot.conversation import Question, build_contents, system_instruction, with_quote
from bot.inflight import InFlight
from bot.llm import LLMError
from bot.streaming import MessageSink, RenderResult, render_stream
from storage import ReplyMetrics

if TYPE_CHECKING:
    from bot.app import Gemcord

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

    def __len__(self) -> int:
        return len(self._last)

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


def length_notice(stream: object) -> str | None:
    """A note for an answer Gemini ended because it ran out of output tokens."""
    outcome = getattr(stream, "outcome", None)
    return CUT_SHORT if getattr(outcome, "finish_reason", None) == "MAX_TOKENS" else None


def stored_status(result: RenderResult) -> str:
    """The status a reply is stored with."""
    if result.state == "complete":
        return "complete"
    if result.state == "stopped":
        return "stopped"
    if isinstance(result.error, LLMError) and result.error.status == "blocked":
        return "blocked"
    return "failed"


async def answer(
    bot: Gemcord, question: Question, sink: MessageSink, ticket: Ticket | None = None
) -> RenderResult:
    """Answer one question into `sink`; every outcome is shown in Discord and stored.

    With a `ticket`, the question is stored in its channel's arrival order (and the ticket
    released once it is).
    """
    store = bot.store
    settings = await store.get_channel_settings(question.channel_id)
    model = settings.model or bot.settings.gemini_model
    persona = settings.persona or bot.settings.persona
    try:
        if ticket is not None:
            await ticket.wait()
        # Loaded before the question is stored: exactly the turns that came before it.
        history = await store.load_history(
            question.channel_id,
            max_turns=bot.settings.history_turns,
            max_tokens=bot.settings.history_tokens,
            image_turns=bot.settings.history_image_turns,
        )
        question = dataclasses.replace(question, text=with_quote(question, history), quote=None)
        user_turn = await store.add_user_turn(
            channel_id=question.channel_id,
            guild_id=question.guild_id,
            thread_id=question.thread_id,
            author_id=question.author_id,
            author_name=question.author_name,
            text=question.text,
            message_ids=[question.message_id] if question.message_id else [],
            images=question.images,
        )
    finally:
        if ticket is not None:
            ticket.release()
    reply = bot.inflight.start(question.channel_id, question.author_id, question.message_id)
    model_turn: int | None = None
    result: RenderResult | None = None
    stream = None
    try:
        contents = build_contents(history, question)
        model_turn = await store.start_model_turn(
            channel_id=question.channel_id,
            guild_id=question.guild_id,
            thread_id=question.thread_id,
            reply_to=user_turn,
            model=model,
        )
        bot_name = bot.user.display_name if bot.user else "Gemcord"
        stream = bot.llm.stream(
            model=model,
            contents=contents,
            system_instruction=system_instruction(persona, bot_name, question.in_dm),
            max_output_tokens=bot.settings.max_output_tokens,
        )
        result = await render_stream(
            stream,
            sink,
            bot.pacers.get(question.channel_id),
            reply.token,
            on_message=lambda mid: _on_message(bot, reply, model_turn, mid),
            end_notice=lambda: length_notice(stream),
        )
        _log_result(question, result)
        return result
    finally:
        bot.inflight.finish(reply)
        if model_turn is not None:
            await asyncio.shield(_finish(bot, model_turn, result, stream))


def _on_message(bot: Gemcord, reply: InFlight, model_turn: int | None, message_id: int) -> None:
    bot.inflight.add_message(reply, message_id)
    if model_turn is not None:
        task = asyncio.create_task(bot.store.add_message_ids(model_turn, [message_id]))
        task.add_done_callback(_log_task_error)


def _log_task_error(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background store write failed: %s", task.exception())


async def _finish(bot: Gemcord, turn: int, result: RenderResult | None, stream: object) -> None:
    outcome = getattr(stream, "outcome", None)
    if result is None:  # the reply crashed or was cancelled from outside the renderer
        await bot.store.finish_model_turn(turn, text="", status="failed")
        return
    await bot.store.finish_model_turn(
        turn,
        text=result.text,
        status=stored_status(result),  # type: ignore[arg-type]
        message_ids=result.message_ids,
        prompt_tokens=getattr(outcome, "prompt_tokens", None),
        output_tokens=getattr(outcome, "output_tokens", None),
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


def _log_result(question: Question, result: RenderResult) -> None:
    level = logging.INFO if result.state in ("complete", "stopped") else logging.WARNING
    log.log(
        level,
        "reply in channel %s: %s, %d chars, %d chunks, %d sends, %d edits, first text %.0f ms%s",
        question.channel_id,
        result.state,
        len(result.text),
        result.chunks,
        result.sends,
        result.edits,
        (result.first_visible_latency or 0) * 1000,
        f" ({result.error})" if result.error else "",
    )
