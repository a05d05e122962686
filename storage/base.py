"""What the two storage engines share: every `Store` method's argument checks, value
preparation, result shaping and documentation, and the SQL both engines run alike.

An engine (storage/sqlite.py, storage/postgres.py) subclasses `BaseStore` and adds only its
connection and transaction handling and the SQL in which the two differ. The shared code talks
to a connection through `Db`, with PostgreSQL's numbered placeholders ($1, $2, …), which
SQLite binds as ?1, ?2, …. Semantics: see the package doc (storage/__init__.py).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import json
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from storage.export import export_json, export_markdown
from storage.models import (
    FINAL_STATUSES,
    SETTING_NAMES,
    AlreadyAnswered,
    ChannelSettings,
    GuildBudget,
    Hidden,
    HistoryBudget,
    Media,
    ReplyMetrics,
    ReplyStart,
    Stats,
    Status,
    StoreClosed,
    StoredImage,
    StoredPart,
    TokenUsage,
    Turn,
    TurnNotFound,
    Upload,
    UsageTotals,
    approx_tokens,
    astuple_usage,
    utc_day,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ID = 2**63 - 1
HASH_OFF_LOOP_BYTES = 256 * 1024  # hash bigger files on a worker thread


class Db(Protocol):
    """A connection as the shared code uses it: placeholders $1, $2, …; a `list` value binds
    as a list (a PostgreSQL array; JSON text on SQLite, read with json_each)."""

    async def fetch(self, sql: str, *args: Any) -> Iterable[Any]:
        """All rows."""
        ...

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        """The first row, or None."""
        ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first row's first value, or None."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; how many rows it changed."""
        ...

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per tuple of values."""
        ...

    async def pipeline(self, *steps: Awaitable[Any]) -> list[Any]:
        """Each step's result, the steps being calls on this connection that need nothing of
        each other, run in order (on SQLite queued back to back on the database thread: one
        trip through the event loop for all). Raises the first failure; the steps after it
        may or may not have run, so only inside a transaction that is then rolled back."""
        ...


Op = Callable[[Db], Awaitable[T]]

# ------------------------------------------------------------------ the SQL both engines run

_INSERT_QUESTION_SQL = (
    "INSERT INTO turns (channel_id, guild_id, thread_id, role, author_id, author_name, text,"
    " status, created_at, hidden)"
    " VALUES ($1, $2, $3, 'user', $4, $5, $6, 'complete', $7, $8) RETURNING id"
)
_CLAIM_SQL = (
    "INSERT INTO answered (message_id, turn_id) VALUES ($1, $2)"
    " ON CONFLICT (message_id) DO NOTHING RETURNING turn_id"
)
_INSERT_FILE_SQL = (
    "INSERT INTO images (sha256, mime_type, size, created_at, data)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING"
)
_LINK_FILE_SQL = (
    "INSERT INTO turn_images (turn_id, position, sha256, name) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (turn_id, position) DO NOTHING"
)
# The reply joins its question's side of a reset and its privacy.
_INSERT_REPLY_SQL = (
    "INSERT INTO turns (channel_id, guild_id, thread_id, role, author_id, author_name, text,"
    " status, reply_to, created_at, model, archived, archived_at, hidden)"
    " SELECT $1, $2, $3, 'model', $4, $5, '', 'streaming', id, $6, $7, archived, archived_at,"
    " hidden FROM turns WHERE id = $8 AND role = 'user' RETURNING id"
)
_FINISH_SQL = (
    "UPDATE turns SET text = $1, status = $2, finished_at = $3,"
    " prompt_tokens = coalesce($4, prompt_tokens), output_tokens = coalesce($5, output_tokens),"
    " parts = coalesce($6, parts), thoughts_tokens = coalesce($7, thoughts_tokens),"
    " searches = coalesce($8, searches)"
    " WHERE id = $9 AND role = 'model'"
)
_BLOCKED_SQL = (
    "UPDATE turns SET withdrawn = 'blocked'"
    " WHERE id = $1 OR id = (SELECT reply_to FROM turns WHERE id = $1)"
)
# An upsert, not INSERT OR REPLACE: the totals' delete trigger would not see a replaced row.
_METRICS_SQL = """
INSERT INTO reply_metrics (turn_id, channel_id, first_chunk_latency, first_visible_latency,
                           total_time, chunk_count, edit_count, send_count, rate_limited,
                           outcome, recorded_at)
SELECT id, channel_id, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM turns WHERE id = $10
    ON CONFLICT (turn_id) DO UPDATE
   SET channel_id = excluded.channel_id,
       first_chunk_latency = excluded.first_chunk_latency,
       first_visible_latency = excluded.first_visible_latency,
       total_time = excluded.total_time,
       chunk_count = excluded.chunk_count,
       edit_count = excluded.edit_count,
       send_count = excluded.send_count,
       rate_limited = excluded.rate_limited,
       outcome = excluded.outcome,
       recorded_at = excluded.recorded_at
"""
_BY_ID = " WHERE t.id = $1"
_BY_MESSAGE = (
    " WHERE t.id = (SELECT turn_id FROM turn_messages WHERE message_id = $1"
    " ORDER BY turn_id DESC LIMIT 1)"
)
_UNUSABLE_SQL = (
    "INSERT INTO unusable_images (sha256, reason, marked_at)"
    " SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM images WHERE sha256 = $1)"
    " ON CONFLICT (sha256) DO NOTHING"
)
_GONE_SQL = (
    "INSERT INTO gemini_files_gone (name, queued_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
)
_SAVE_UPLOAD_SQL = (
    "INSERT INTO gemini_files (sha256, name, uri, mime_type, expires_at, uploaded_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (sha256) DO UPDATE SET name = excluded.name, uri = excluded.uri,"
    " mime_type = excluded.mime_type, expires_at = excluded.expires_at,"
    " uploaded_at = excluded.uploaded_at"
)
_SETTINGS_SQL = f"SELECT {', '.join(SETTING_NAMES)} FROM channel_settings WHERE channel_id = $1"
# A turn deleted while its reply streamed (forget-me) is recorded without it: spending stays.
_LEDGER_INSERT_SQL = """
INSERT INTO usage (turn_id, user_id, channel_id, guild_id, model, at, day, prompt_tokens,
                   output_tokens, thoughts_tokens, cached_tokens, tool_use_prompt_tokens,
                   total_tokens)
VALUES ((SELECT id FROM turns WHERE id = $1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (turn_id) DO NOTHING
"""
_LEDGER_FILTERS = {
    "user": "user_id = $1",
    "channel": "channel_id = $1",
    "guild": "guild_id = $1",
}


class BaseStore(ABC):
    """The `Store` methods over an engine's `_read` and `_write` (see the module doc)."""

    # The SQL in which the engines differ, set by each.
    _TURN_SELECT: ClassVar[str]
    """One turn (see `TurnRow`), its message ids and files as JSON; ends with FROM turns AS t."""
    _TURNS_SQL: ClassVar[str]
    """The turns whose ids are in the list $1, by id."""
    _EXPORT_SQL: ClassVar[str]
    """A page of a channel's turns: channel $1, archived $2, after (pair key, id) ($3, $4),
    at most $5, in (pair key, id) order, private ones left out."""
    _FILE_DATA_SQL: ClassVar[str]
    """(sha256, bytes) of the files with hashes in the list $1 not marked unusable."""
    _UPLOADS_SQL: ClassVar[str]
    """(sha256, name, uri, mime_type, expires_at) of the uploads of the hashes in the list $1."""
    _ORPHANS_SQL: ClassVar[str]
    """Delete the files with hashes in the list $1 that no turn carries."""
    _FILE_KEPT_SQL: ClassVar[str]
    """A row when file $1 is stored, which a concurrent delete then waits for."""

    def __init__(self) -> None:
        self._interrupted: list[int] = []
        # Settings and budgets change only through the process that owns them, and every
        # question reads them: kept in memory after the first read, dropped on each write.
        self._settings: dict[int, ChannelSettings] = {}
        self._budgets: dict[int, GuildBudget] = {}
        self._generation = 0  # bumped by each of those writes: a read it overtook is not kept
        self._closing: asyncio.Future[None] | None = None
        self._writes: set[asyncio.Task[Any]] = set()

    # ----------------------------------------------------------------- engine

    @abstractmethod
    async def _read(self, op: Op[T], urgent: bool = False) -> T:
        """Run `op` on a connection; an `urgent` one (what a question needs before it can be
        admitted and stored) goes before the other operations waiting, where they queue."""

    @abstractmethod
    async def _run_write(
        self,
        op: Op[T],
        transaction: bool,
        consistent: bool,
        urgent: bool,
        batch: Hashable,
        queued: Callable[[], object] | None,
    ) -> T:
        """Run `op` as `_write` says."""

    @abstractmethod
    async def _close(self) -> None:
        """Wait for the writes in flight, then release the database."""

    @abstractmethod
    async def _history_rows(
        self, db: Db, channel_id: int, before: int, author_id: int | None, limit: int
    ) -> Iterable[Any]:
        """The history query's rows (see `load_history`): newest first, at most `limit`."""

    @abstractmethod
    async def _insert_message_ids(self, db: Db, turn_id: int, message_ids: Sequence[int]) -> None:
        """Append message ids to a turn, skipping those it has (nothing if it is gone)."""

    @property
    @abstractmethod
    def _export_chunk(self) -> int:
        """How many turns an export reads at a time."""

    @staticmethod
    def _put(text: str) -> str:
        """Text as the engine stores it (lone surrogates become U+FFFD, all else is kept)."""
        return clean(text)

    @staticmethod
    def _get(text: str | None) -> Any:
        """Stored text as it was given (undoes `_put`)."""
        return text

    @staticmethod
    def _row(record: Any) -> TurnRow:
        """A fetched turn row (`_TURN_SELECT`)."""
        return TurnRow(record)

    async def _delete(self, op: Op[int]) -> int:
        """Run a delete of turns (see `_delete_turns`); how many went."""
        return await self._write(op)

    async def _reclaim(self) -> None:
        """Give the space retention freed back to the file system (where the engine can)."""
        return None

    # ----------------------------------------------------------------- plumbing

    async def close(self) -> None:
        """Finish the writes in flight, then release the database; later calls are refused."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    def _check_open(self) -> None:
        if self._closing is not None:
            raise StoreClosed("the store is closed")

    async def health(self) -> str | None:
        """Why this process cannot rely on the store now (one sentence), or None; a database
        that does not answer raises (a real round trip, never a cached answer)."""

        async def op(db: Db) -> None:
            await db.fetchval("SELECT 1")

        await self._read(op)
        return None

    async def _write(
        self,
        op: Op[T],
        *,
        transaction: bool = True,
        consistent: bool = False,
        urgent: bool = False,
        batch: Hashable = None,
        queued: Callable[[], object] | None = None,
    ) -> T:
        """Run `op` as a write that completes even if the caller is cancelled (`close` waits
        for it). `transaction`: its writes commit together or not at all. `consistent`: no
        other operation may change what it reads between its statements (SQLite runs one
        operation at a time anyway; PostgreSQL holds a transaction for it). `urgent`: it goes
        before the operations waiting (SQLite: a question waiting for its reply to begin).
        `batch` (a transaction's): SQLite may run it in one transaction with the others
        waiting with it, after those of its key that came before it; it must then be one that
        can run again if that transaction fails. `queued` is called once every later write of
        its key is sure to run after it (SQLite: it joined a batch; PostgreSQL never calls it:
        there each write has a connection of its own)."""
        self._check_open()
        task = asyncio.create_task(
            self._run_write(op, transaction, consistent, urgent, batch, queued)
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(log_abandoned_failure)
            raise

    async def _execute(self, sql: str, *args: Any) -> int:
        """One statement as a write; how many rows it changed."""

        async def op(db: Db) -> int:
            return await db.execute(sql, *args)

        return await self._write(op, transaction=False)

    # ----------------------------------------------------------------- turns

    async def add_user_turn(
        self,
        *,
        channel_id: int,
        author_id: int,
        author_name: str,
        text: str,
        message_ids: Sequence[int] = (),
        guild_id: int | None = None,
        thread_id: int | None = None,
        images: Sequence[Media] = (),
        hidden: Hidden | None = None,
    ) -> int:
        """Store a user's question (with its files); returns the new turn's id.

        The first of `message_ids` is the Discord message the question came from: a second
        question from the same message raises AlreadyAnswered and stores nothing. A "private"
        question (and so its replies) stays out of history and exports.
        """
        question = await self._question(
            channel_id, guild_id, thread_id, author_id, author_name, text, message_ids, images
        )
        return await self._write(
            functools.partial(self._insert_question, question=question, hidden=hidden),
            transaction=question.needs_transaction,
        )

    async def ask(
        self,
        *,
        channel_id: int,
        author_id: int,
        author_name: str,
        text: str,
        model: str,
        message_ids: Sequence[int] = (),
        guild_id: int | None = None,
        thread_id: int | None = None,
        images: Sequence[Media] = (),
        hidden: Hidden | None = None,
        history: HistoryBudget | None = None,
        history_author: int | None = None,
        queued: Callable[[], object] | None = None,
    ) -> ReplyStart:
        """`add_user_turn`, `start_model_turn` and `load_history(before_turn=` the question`)`
        in one transaction of two pipelines (see `Db.pipeline`); `history_author` as
        `load_history`'s `author_id`; `queued` as `_write`'s, for the channel."""
        question = await self._question(
            channel_id, guild_id, thread_id, author_id, author_name, text, message_ids, images
        )

        budget = history or HistoryBudget()

        async def op(db: Db) -> ReplyStart:
            # Two pipelines: the history (the question is not in it yet) with the question's
            # insert, then every statement that needs the question's id.
            rows, user_turn = await db.pipeline(
                self._history_rows(db, channel_id, MAX_ID, history_author, budget.max_turns)
                if _wanted(budget)
                else _no_rows(),
                db.fetchval(_INSERT_QUESTION_SQL, *question.values, hidden),
            )
            turns, with_bytes = _chosen([self._row(r).turn for r in rows], budget)
            reply = self._reply(channel_id, guild_id, thread_id, 0, "", model, user_turn)
            *after, model_turn, _ = await db.pipeline(
                *self._after_question(db, question, user_turn),
                _insert_reply(db, reply),
                self._with_files(db, with_bytes),
            )
            _check_claim(question, after)
            return ReplyStart(user_turn, model_turn, turns)

        return await self._write(op, urgent=True, batch=channel_id, queued=queued)

    async def start_reply(
        self,
        *,
        channel_id: int,
        reply_to: int,
        model: str,
        guild_id: int | None = None,
        thread_id: int | None = None,
        history: HistoryBudget | None = None,
        history_author: int | None = None,
    ) -> ReplyStart:
        """`start_model_turn` and `load_history(before_turn=reply_to)` in one operation
        (`history_author` as `load_history`'s `author_id`)."""
        reply = self._reply(channel_id, guild_id, thread_id, 0, "", model, reply_to)

        async def op(db: Db) -> ReplyStart:
            model_turn = await _insert_reply(db, reply)
            turns = await self._history(db, channel_id, reply_to, history, history_author)
            return ReplyStart(reply_to, model_turn, turns)

        return await self._write(op, transaction=False, consistent=True, urgent=True)

    async def start_model_turn(
        self,
        *,
        channel_id: int,
        reply_to: int,
        model: str,
        guild_id: int | None = None,
        thread_id: int | None = None,
        author_id: int = 0,
        author_name: str = "",
    ) -> int:
        """Open a model turn ("streaming") answering user turn `reply_to`; returns its id.

        The reply joins its question's side of a reset (answering an archived question gives
        an archived reply), and a private question's reply is private too.
        """
        reply = self._reply(
            channel_id, guild_id, thread_id, author_id, author_name, model, reply_to
        )
        return await self._write(functools.partial(_insert_reply, values=reply), transaction=False)

    async def finish_model_turn(
        self,
        turn_id: int,
        *,
        text: str,
        status: Status,
        message_ids: Sequence[int] = (),
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
        metrics: ReplyMetrics | None = None,
        parts: Sequence[StoredPart] = (),
        thoughts_tokens: int | None = None,
        searches: Sequence[str] = (),
        images: Sequence[Media] = (),
    ) -> None:
        """Record a model turn's final text, status, parts (signatures byte for byte), thinking
        tokens and Google searches (and its metrics), all at once.

        `images` (those its code drew) are stored once by content hash and become the turn's
        files, as a question's do: history gives them their bytes within its file budget, and
        an "image" part names its image by hash (`StoredPart.detail`).

        A "blocked" reply withdraws its exchange (question and reply) from history.

        A turn deleted meanwhile (forget_user, purge_channel) is ignored; finishing a user
        turn is a programming error (ValueError).
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"a finished turn's status must be one of {sorted(FINAL_STATUSES)}")
        put = self._put
        # The JSON is ASCII (json.dumps escapes the rest), so `_put` leaves it as it is.
        parts_json = _parts_to_json(parts)
        values = (
            put(text),
            status,
            time.time(),
            prompt_tokens,
            output_tokens,
            None if parts_json is None else put(parts_json),
            thoughts_tokens,
            put(json.dumps([clean(q) for q in searches])) if searches else None,
            turn_id,
        )
        ids = [int(m) for m in message_ids]
        files = await _prepare_files(images)
        names = [put(image.name) for image in images]
        measured = None
        if metrics is not None:
            measured = (
                metrics.first_chunk_latency,
                metrics.first_visible_latency,
                metrics.total_time,
                metrics.chunk_count,
                metrics.edit_count,
                metrics.send_count,
                metrics.rate_limited,
                put(metrics.outcome),
            )

        async def op(db: Db) -> None:
            if not await db.execute(_FINISH_SQL, *values):
                if await db.fetchval("SELECT role FROM turns WHERE id = $1", turn_id):
                    raise ValueError(f"turn {turn_id} is a user turn, not a model turn")
                log.debug("model turn %d is gone (deleted while streaming)", turn_id)
                return
            await self._insert_message_ids(db, turn_id, ids)
            await _insert_files(db, turn_id, files, names)
            if status == "blocked":
                await db.execute(_BLOCKED_SQL, turn_id)
            if measured is not None:
                await db.execute(_METRICS_SQL, *measured, time.time(), turn_id)

        several = bool(ids or files or metrics is not None or status == "blocked")
        await self._write(op, transaction=several, consistent=True)

    async def replace_replies(self, question_id: int, new_reply: int) -> int:
        """A question's answer was regenerated as `new_reply`: its other replies are marked
        "replaced" (out of history, kept for exports); returns how many."""
        return await self._execute(
            "UPDATE turns SET hidden = 'replaced'"
            " WHERE reply_to = $1 AND id <> $2 AND role = 'model' AND hidden IS NULL",
            question_id,
            new_reply,
        )

    async def add_message_ids(self, turn_id: int, message_ids: Sequence[int]) -> None:
        """Attach Discord message ids to a turn (in order; ids it already has are skipped)."""
        ids = [int(m) for m in message_ids]
        if ids:
            await self._write(
                functools.partial(self._insert_message_ids, turn_id=turn_id, message_ids=ids),
                transaction=len(ids) > 1,
                consistent=True,
            )

    async def checkpoint(self, turn_id: int, text: str) -> None:
        """Save the text a reply has streamed so far (kept if the process dies before the end)."""
        await self._execute(
            "UPDATE turns SET text = $1 WHERE id = $2 AND status = 'streaming'",
            self._put(text),
            turn_id,
        )

    async def take_interrupted(self) -> list[Turn]:
        """The replies a crash left streaming (in this process's shards), marked "interrupted"
        when the store was opened (with their checkpointed text and message ids); each is
        returned once."""
        ids, self._interrupted = self._interrupted, []

        async def op(db: Db) -> list[Turn]:
            return [self._row(r).turn for r in await db.fetch(self._TURNS_SQL, ids)]

        return await self._read(op) if ids else []

    async def withdraw_message(self, message_id: int) -> Turn | None:
        """A Discord message was deleted: its turn leaves history (a question's text is erased
        too); returns the turn as it was, or None when no turn carries that message."""

        async def op(db: Db) -> Turn | None:
            turn = await self._turn(_BY_MESSAGE, int(message_id), db, files=False)
            if turn is not None:
                await db.execute(
                    "UPDATE turns SET withdrawn = 'deleted',"
                    " text = CASE role WHEN 'user' THEN '' ELSE text END WHERE id = $1",
                    turn.id,
                )
            return turn

        return await self._write(op, transaction=False, consistent=True)

    async def mark_images_unusable(self, sha256s: Iterable[str], reason: str) -> None:
        """Gemini refused these images: they are never sent to it again."""
        rows = [(sha, self._put(reason), time.time()) for sha in sorted(set(sha256s))]
        if rows:
            await self._write(functools.partial(_executemany, _UNUSABLE_SQL, rows))

    async def get_uploads(self, sha256s: Iterable[str]) -> dict[str, Upload]:
        """The Files API uploads recorded for these files, by hash (expired ones too)."""
        wanted = sorted(set(sha256s))
        if not wanted:
            return {}
        get = self._get

        async def op(db: Db) -> dict[str, Upload]:
            rows = await db.fetch(self._UPLOADS_SQL, wanted)
            return {r[0]: Upload(r[0], get(r[1]), get(r[2]), get(r[3]), float(r[4])) for r in rows}

        return await self._read(op)

    async def save_upload(self, upload: Upload) -> None:
        """Record (or replace) a stored file's upload; when the file is gone (deleted
        meanwhile), the upload is queued to be deleted from Gemini instead."""
        put = self._put
        name = put(upload.name)
        values = (upload.sha256, name, put(upload.uri), put(upload.mime_type), upload.expires_at)

        async def op(db: Db) -> None:
            # The file is held against a concurrent delete until this commits; a delete after
            # that takes the upload with it (by cascade, queued by trigger).
            if await db.fetchval(self._FILE_KEPT_SQL, upload.sha256) is None:
                await db.execute(_GONE_SQL, name, time.time())
            else:
                await db.execute(_SAVE_UPLOAD_SQL, *values, time.time())

        await self._write(op)

    async def take_gone_uploads(self) -> list[str]:
        """Names of uploads whose file left the store (or that were replaced): each returned
        once, for the bot to delete them from Gemini."""

        async def op(db: Db) -> list[str]:
            rows = await db.fetch("DELETE FROM gemini_files_gone RETURNING name")
            return sorted(self._get(r[0]) for r in rows)

        return await self._write(op, transaction=False)

    # ----------------------------------------------------------------- reading

    async def load_history(
        self,
        channel_id: int,
        *,
        max_turns: int = 40,
        max_tokens: int = 24_000,
        image_turns: int = 6,
        before_turn: int | None = None,
        author_id: int | None = None,
    ) -> list[Turn]:
        """The channel's recent live turns, oldest first, within budget (see the package doc);
        with `author_id`, only that person's questions and the replies to them."""
        budget = HistoryBudget(max_turns, max_tokens, image_turns)
        return await self._read(
            functools.partial(
                self._history,
                channel_id=channel_id,
                before_turn=before_turn,
                budget=budget,
                author_id=author_id,
            )
        )

    async def find_turn_by_message(self, message_id: int) -> Turn | None:
        """The turn (user or model, archived or not) carried by this Discord message, if any
        (the newest, if several are), with its files' bytes."""
        return await self._read(functools.partial(self._turn, _BY_MESSAGE, int(message_id)))

    async def get_turn(self, turn_id: int) -> Turn | None:
        """One turn by id, with its files' bytes."""
        return await self._read(functools.partial(self._turn, _BY_ID, turn_id))

    # ----------------------------------------------------------------- reset, export, forget

    async def reset_channel(self, channel_id: int) -> int:
        """Soft reset: archive the channel's live turns (hidden from history, kept for export)."""
        return await self._execute(
            "UPDATE turns SET archived = 1, archived_at = $1"
            " WHERE channel_id = $2 AND archived = 0",
            time.time(),
            channel_id,
        )

    async def export_channel(
        self,
        channel_id: int,
        fmt: Literal["markdown", "json"] = "markdown",
        *,
        include_archived: bool = True,
    ) -> str:
        """The channel's history (archived turns too, unless told not) as Markdown or JSON."""
        if fmt not in ("markdown", "json"):
            raise ValueError(f"unknown export format {fmt!r}")
        rows: list[TurnRow] = []
        # In chunks, so a long channel does not hold a connection for long; archived turns
        # first: every archived pair is older than every live one.
        for archived in (1, 0) if include_archived else (0,):
            after = (-1, -1)
            while True:
                chunk = await self._read(
                    functools.partial(self._export_page, channel_id, archived, after)
                )
                rows += chunk
                if len(chunk) < self._export_chunk:
                    break
                last = chunk[-1].turn
                after = (_pair_key(last) or 0, last.id)
        settings = await self.get_channel_settings(channel_id)
        if fmt == "json":
            return export_json(channel_id, rows, settings)
        return export_markdown(channel_id, rows, settings)

    async def forget_user(self, author_id: int) -> int:
        """Delete every turn the user wrote and the model's replies to them; returns how many.

        Files no longer carried by any turn go too. SQLite overwrites deleted content in the
        file (secure_delete) and checkpoints the WAL, so it does not linger on disk;
        PostgreSQL reclaims the space of deleted rows by (auto)vacuum.
        """
        return await self._delete_turns("t.role = 'user' AND t.author_id = $1", (author_id,))

    async def last_question(self, author_id: int, channel_id: int) -> int | None:
        """The id of the user's newest question still in the channel's history (the one
        `/forget last` deletes), or None."""

        async def op(db: Db) -> int | None:
            found = await db.fetchval(
                "SELECT max(id) FROM turns WHERE role = 'user' AND author_id = $1"
                " AND channel_id = $2 AND archived = 0 AND withdrawn IS NULL",
                author_id,
                channel_id,
            )
            return None if found is None else int(found)

        return await self._read(op)

    async def forget_question(self, turn_id: int) -> int:
        """Delete one question (a user turn) and the replies to it, like :meth:`forget_user`
        for one exchange; returns how many turns went (0 if it was gone already)."""
        return await self._delete_turns("t.id = $1 AND t.role = 'user'", (turn_id,))

    async def prune(self, *, older_than: float | None, archived_before: float) -> int:
        """Retention: delete the exchanges asked before `older_than` (None: keep them all) and
        those a reset archived before `archived_before` (Unix times), with their files, and
        give the freed space back (SQLite); returns how many turns went."""
        deleted = await self._delete_turns(
            "t.role = 'user' AND (t.created_at < $1 OR (t.archived = 1 AND t.archived_at < $2))",
            (-math.inf if older_than is None else older_than, archived_before),
        )
        if deleted:
            await self._reclaim()
        return deleted

    async def purge_channel(self, channel_id: int) -> int:
        """Hard delete: every turn of the channel (archived too), replies to them, its settings."""
        deleted = await self._delete_turns(
            "t.channel_id = $1",
            (channel_id,),
            also="DELETE FROM channel_settings WHERE channel_id = $1",
        )
        self._generation += 1
        self._settings.pop(channel_id, None)
        return deleted

    async def _delete_turns(
        self, where: str, params: tuple[Any, ...], also: str | None = None
    ) -> int:
        """Delete the turns matching `where` (and, by cascade, the replies to them), their
        files no other turn carries, and run `also` (same parameters), in one transaction."""

        # `where` is one of this module's constant conditions; values are bound.
        async def op(db: Db) -> int:
            count = await db.fetchval(
                f"WITH doomed AS (SELECT t.id FROM turns AS t WHERE {where})"
                " SELECT (SELECT count(*) FROM doomed)"
                " + (SELECT count(*) FROM turns WHERE reply_to IN (SELECT id FROM doomed)"
                "    AND id NOT IN (SELECT id FROM doomed))",
                *params,
            )
            hashes = [  # the files of those turns and of the replies to them
                r[0]
                for r in await db.fetch(
                    f"WITH doomed AS (SELECT t.id FROM turns AS t WHERE {where})"
                    " SELECT DISTINCT ti.sha256 FROM turn_images AS ti"
                    " JOIN turns AS t ON t.id = ti.turn_id"
                    " WHERE t.id IN (SELECT id FROM doomed)"
                    " OR t.reply_to IN (SELECT id FROM doomed)",
                    *params,
                )
            ]
            await db.execute(
                f"DELETE FROM turns WHERE id IN (SELECT t.id FROM turns AS t WHERE {where})",
                *params,
            )
            if hashes:
                await db.execute(self._ORPHANS_SQL, hashes)
            if also is not None:
                await db.execute(also, *params)
            return int(count)

        return await self._delete(op)

    # ----------------------------------------------------------------- settings

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's persona and model (None where unset)."""
        if (cached := self._settings.get(channel_id)) is None:
            generation = self._generation
            cached = await self._read(
                functools.partial(self._read_settings, channel_id), urgent=True
            )
            if generation == self._generation:
                _remember(self._settings, channel_id, cached)
        return dataclasses.replace(cached)

    async def set_persona(self, channel_id: int, persona: str | None) -> None:
        """Set the channel's system instruction (None: back to the default)."""
        await self.set_setting(channel_id, "persona", persona)

    async def set_model(self, channel_id: int, model: str | None) -> None:
        """Set the channel's Gemini model (None: back to the default)."""
        await self.set_setting(channel_id, "model", model)

    async def set_setting(self, channel_id: int, name: str, value: str | None) -> None:
        """Set one of `SETTING_NAMES` for the channel (None or blank: back to the default)."""
        if name not in SETTING_NAMES:
            raise ValueError(f"unknown channel setting {name!r}")
        # `name` is one of the fixed column names checked above, never user text.
        sql = (
            f"INSERT INTO channel_settings (channel_id, {name}, updated_at) VALUES ($1, $2, $3)"
            f" ON CONFLICT (channel_id) DO UPDATE SET {name} = excluded.{name},"
            " updated_at = excluded.updated_at"
        )
        stored = self._put(value) if value and value.strip() else None
        self._generation += 1
        self._settings.pop(channel_id, None)
        await self._execute(sql, channel_id, stored, time.time())

    # ----------------------------------------------------------------- ledger

    async def record_usage(
        self,
        *,
        user_id: int,
        channel_id: int,
        model: str,
        at: float,
        usage: TokenUsage,
        guild_id: int | None = None,
        turn_id: int | None = None,
    ) -> None:
        """Add one reply's token counts to the ledger (a turn is counted once: a second
        record for the same `turn_id` is ignored)."""
        await self._execute(
            _LEDGER_INSERT_SQL,
            turn_id,
            user_id,
            channel_id,
            guild_id,
            self._put(model),
            at,
            utc_day(at),
            *astuple_usage(usage),
        )

    async def usage_by_model(
        self,
        first_day: int,
        last_day: int,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> list[UsageTotals]:
        """Ledger totals per model over UTC days `first_day`..`last_day` (see `utc_day`), for
        one user, channel or server (at most one of them), or for everything."""
        where, param = _ledger_filter(user_id, channel_id, guild_id)

        async def op(db: Db) -> list[UsageTotals]:
            # `where` is one of _LEDGER_FILTERS' constant conditions; values are bound.
            rows = await db.fetch(
                "SELECT model, sum(replies), sum(prompt_tokens), sum(output_tokens),"
                " sum(thoughts_tokens), sum(cached_tokens), sum(tool_use_prompt_tokens),"
                f" sum(total_tokens) FROM usage_daily WHERE {where} AND day BETWEEN $2 AND $3"
                " GROUP BY model HAVING sum(replies) > 0 ORDER BY model",
                param,
                first_day,
                last_day,
            )
            return [
                UsageTotals(self._get(r[0]), int(r[1]), TokenUsage(*map(int, list(r)[2:])))
                for r in rows
            ]

        return await self._read(op)

    async def tokens_used(
        self, day: int, *, user_id: int | None = None, guild_id: int | None = None
    ) -> int:
        """Total tokens the ledger holds for one UTC day, for one user or one server."""
        where, param = _ledger_filter(user_id, None, guild_id)

        async def op(db: Db) -> int:
            return int(
                await db.fetchval(
                    "SELECT coalesce(sum(total_tokens), 0) FROM usage_daily"
                    f" WHERE {where} AND day = $2",
                    param,
                    day,
                )
            )

        return await self._read(op)

    async def get_guild_budget(self, guild_id: int) -> GuildBudget:
        """The server's own daily budgets (None where it follows the bot's settings)."""
        if (cached := self._budgets.get(guild_id)) is not None:
            return dataclasses.replace(cached)

        async def op(db: Db) -> GuildBudget:
            row = await db.fetchrow(
                "SELECT server_tokens, user_tokens FROM guild_budgets WHERE guild_id = $1",
                guild_id,
            )
            return GuildBudget(guild_id) if row is None else GuildBudget(guild_id, row[0], row[1])

        generation = self._generation
        budget = await self._read(op, urgent=True)
        if generation == self._generation:
            _remember(self._budgets, guild_id, budget)
        return dataclasses.replace(budget)

    async def set_guild_budget(self, budget: GuildBudget) -> None:
        """Store a server's own daily budgets (both None: back to the bot's settings)."""
        await self._execute(
            "INSERT INTO guild_budgets (guild_id, server_tokens, user_tokens, updated_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (guild_id) DO UPDATE"
            " SET server_tokens = excluded.server_tokens,"
            " user_tokens = excluded.user_tokens, updated_at = excluded.updated_at",
            budget.guild_id,
            budget.server_tokens,
            budget.user_tokens,
            time.time(),
        )
        self._generation += 1
        self._budgets.pop(budget.guild_id, None)

    # ----------------------------------------------------------------- stats

    async def stats(self, channel_id: int | None = None) -> Stats:
        """Counts over all stored turns (archived included), for one channel or everywhere.

        Reads the running totals that triggers keep, so it costs the same at any size.
        """
        where, params = ("", ()) if channel_id is None else (" AND channel_id = $1", (channel_id,))

        async def op(db: Db) -> Stats:
            # `where` is one of the two constant filters above; the value is bound.
            groups = await db.fetch(
                "SELECT role, status, sum(turns), sum(prompt_tokens), sum(output_tokens),"
                " sum(thoughts_tokens)"
                f" FROM turn_totals WHERE turns > 0{where} GROUP BY role, status",
                *params,
            )
            channels = await db.fetchval(
                f"SELECT count(DISTINCT channel_id) FROM turn_totals WHERE turns > 0{where}",
                *params,
            )
            if channel_id is None:
                images = await db.fetchval("SELECT count(*) FROM images")
            else:
                images = await db.fetchval(
                    "SELECT count(DISTINCT ti.sha256) FROM turn_images AS ti"
                    " JOIN turns AS t ON t.id = ti.turn_id WHERE t.channel_id = $1",
                    channel_id,
                )
            replies, first_n, first_sum, total_sum = await db.fetchrow(
                "SELECT CAST(coalesce(sum(replies), 0) AS bigint),"
                " CAST(coalesce(sum(first_chunk_n), 0) AS bigint),"
                " coalesce(sum(first_chunk_sum), 0.0), coalesce(sum(total_time_sum), 0.0)"
                f" FROM reply_totals WHERE replies > 0{where}",
                *params,
            )
            by_status: dict[str, int] = {}
            counts = {"user": 0, "model": 0}
            prompt = output = thoughts = 0
            for role, status, n, p, o, th in groups:
                by_status[status] = by_status.get(status, 0) + int(n)
                counts[role] += int(n)
                prompt += int(p)
                output += int(o)
                thoughts += int(th)
            return Stats(
                turns=counts["user"] + counts["model"],
                user_turns=counts["user"],
                model_turns=counts["model"],
                channels=int(channels),
                images=int(images),
                by_status=by_status,
                prompt_tokens=prompt,
                output_tokens=output,
                replies_measured=int(replies),
                avg_first_chunk_latency=first_sum / first_n if first_n else None,
                avg_total_time=total_sum / replies if replies else None,
                thoughts_tokens=thoughts,
            )

        return await self._read(op)

    # ----------------------------------------------------------------- shared steps

    async def _question(
        self,
        channel_id: int,
        guild_id: int | None,
        thread_id: int | None,
        author_id: int,
        author_name: str,
        text: str,
        message_ids: Sequence[int],
        images: Sequence[Media],
    ) -> _Question:
        """A question ready to insert (its files read and hashed off the event loop)."""
        files = await _prepare_files(images)
        values = (
            channel_id,
            guild_id,
            thread_id,
            author_id,
            self._put(author_name),
            self._put(text),
            time.time(),
        )
        names = [self._put(image.name) for image in images]
        return _Question(values, [int(m) for m in message_ids], files, names)

    async def _insert_question(self, db: Db, question: _Question, hidden: Hidden | None) -> int:
        """Insert the turn, claim its message, link its files; its turn id."""
        turn_id = int(await db.fetchval(_INSERT_QUESTION_SQL, *question.values, hidden))
        _check_claim(question, await db.pipeline(*self._after_question(db, question, turn_id)))
        return turn_id

    def _after_question(self, db: Db, question: _Question, turn_id: int) -> list[Awaitable[Any]]:
        """The statements that follow a question's insert, none needing another's result: the
        claim on its message (first, see `_check_claim`), its message ids, its files."""
        steps: list[Awaitable[Any]] = []
        if question.ids:
            steps.append(db.fetchval(_CLAIM_SQL, question.ids[0], turn_id))
        steps.append(self._insert_message_ids(db, turn_id, question.ids))
        return steps + _file_steps(db, turn_id, question.files, question.names)

    def _reply(
        self,
        channel_id: int,
        guild_id: int | None,
        thread_id: int | None,
        author_id: int,
        author_name: str,
        model: str,
        reply_to: int,
    ) -> tuple[Any, ...]:
        """The values of a reply to insert (`_INSERT_REPLY_SQL`)."""
        put = self._put
        return (
            channel_id,
            guild_id,
            thread_id,
            author_id,
            put(author_name),
            time.time(),
            put(model),
            reply_to,
        )

    async def _history(
        self,
        db: Db,
        channel_id: int,
        before_turn: int | None,
        budget: HistoryBudget | None,
        author_id: int | None = None,
    ) -> list[Turn]:
        """See `load_history` (``budget`` None: the default one)."""
        budget = budget or HistoryBudget()
        if not _wanted(budget):
            return []
        before = MAX_ID if before_turn is None else before_turn
        rows = await self._history_rows(db, channel_id, before, author_id, budget.max_turns)
        chosen, with_bytes = _chosen([self._row(r).turn for r in rows], budget)
        await self._with_files(db, with_bytes)
        return chosen

    async def _turn(self, where: str, key: int, db: Db, *, files: bool = True) -> Turn | None:
        """The turn `where` (on $1 = `key`) selects, if any (`files`: with their bytes)."""
        row = await db.fetchrow(self._TURN_SELECT + where, key)
        if row is None:
            return None
        turn = self._row(row).turn
        if files:
            await self._with_files(db, [turn])
        return turn

    async def _with_files(self, db: Db, turns: Sequence[Turn]) -> None:
        """Give the turns' files their bytes (None for those marked unusable)."""
        wanted = sorted({i.sha256 for t in turns for i in t.images})
        if not wanted:
            return
        data = {r[0]: bytes(r[1]) for r in await db.fetch(self._FILE_DATA_SQL, wanted)}
        for turn in turns:
            turn.images = [dataclasses.replace(i, data=data.get(i.sha256)) for i in turn.images]

    async def _export_page(
        self, channel_id: int, archived: int, after: tuple[int, int], db: Db
    ) -> list[TurnRow]:
        rows = await db.fetch(self._EXPORT_SQL, channel_id, archived, *after, self._export_chunk)
        return [self._row(r) for r in rows]

    async def _read_settings(self, channel_id: int, db: Db) -> ChannelSettings:
        row = await db.fetchrow(_SETTINGS_SQL, channel_id)
        if row is None:
            return ChannelSettings(channel_id)
        return ChannelSettings(channel_id, *(self._get(v) for v in row))


# --------------------------------------------------------------------- helpers


@dataclasses.dataclass
class _Question:
    """A question ready to insert: its turn's values (but `hidden`), message ids, files
    (sha256, MIME type, bytes) and their names."""

    values: tuple[Any, ...]
    ids: list[int]
    files: list[tuple[str, str, bytes]]
    names: list[str]

    @property
    def needs_transaction(self) -> bool:
        """Whether inserting it takes more than one statement."""
        return bool(self.ids or self.files)


async def _insert_reply(db: Db, values: tuple[Any, ...]) -> int:
    """Insert a "streaming" model turn (see `start_model_turn`); its turn id."""
    turn_id = await db.fetchval(_INSERT_REPLY_SQL, *values)
    if turn_id is None:
        raise TurnNotFound(f"no user turn {values[-1]} to reply to")
    return int(turn_id)


async def _insert_files(
    db: Db, turn_id: int, files: list[tuple[str, str, bytes]], names: list[str]
) -> None:
    """Store files (sha256, MIME type, bytes) once each and link them to the turn, in order."""
    await db.pipeline(*_file_steps(db, turn_id, files, names))


def _file_steps(
    db: Db, turn_id: int, files: list[tuple[str, str, bytes]], names: list[str]
) -> list[Awaitable[None]]:
    """The statements of `_insert_files` (none without files)."""
    if not files:
        return []
    now = time.time()
    stored = [(sha, mime, len(data), now, data) for sha, mime, data in files]
    named = zip(files, names, strict=True)
    linked = [(turn_id, position, sha, name) for position, ((sha, _, _), name) in enumerate(named)]
    return [db.executemany(_INSERT_FILE_SQL, stored), db.executemany(_LINK_FILE_SQL, linked)]


def _check_claim(question: _Question, after: Sequence[Any]) -> None:
    """Raise AlreadyAnswered if the question's message was claimed before (`after`: the
    results of `BaseStore._after_question`, the claim's first)."""
    if question.ids and after[0] is None:
        raise AlreadyAnswered(f"message {question.ids[0]} was asked before")


def _wanted(budget: HistoryBudget) -> bool:
    """Whether a history budget lets any turn in."""
    return budget.max_turns > 0 and budget.max_tokens > 0


async def _no_rows() -> list[Any]:
    return []


def _chosen(newest_first: list[Turn], budget: HistoryBudget) -> tuple[list[Turn], list[Turn]]:
    """The history's turns within `budget` (see `_trim`), and those sent with their files'
    bytes (the last `image_turns`)."""
    if not _wanted(budget):
        return [], []
    image_turns = max(0, budget.image_turns)
    chosen = _trim(newest_first, budget.max_tokens, image_turns)
    return chosen, chosen[max(0, len(chosen) - image_turns) :] if image_turns else []


async def _executemany(sql: str, rows: list[tuple[Any, ...]], db: Db) -> None:
    await db.executemany(sql, rows)


def _ledger_filter(
    user_id: int | None, channel_id: int | None, guild_id: int | None
) -> tuple[str, int | None]:
    """The constant WHERE condition (on $1) and its value for a ledger query's scope."""
    given = {
        k: v
        for k, v in (("user", user_id), ("channel", channel_id), ("guild", guild_id))
        if v is not None
    }
    if len(given) > 1:
        raise ValueError("give at most one of user_id, channel_id, guild_id")
    if not given:
        return "CAST($1 AS bigint) IS NULL", None  # everything: the condition always holds
    ((kind, value),) = given.items()
    return _LEDGER_FILTERS[kind], int(value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """The text as a database can store it: lone surrogates become U+FFFD, all else is kept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


class TurnRow:
    """A fetched turn row (`BaseStore._TURN_SELECT`), before its files' bytes are attached."""

    __slots__ = ("archived", "archived_at", "image_refs", "turn")

    def __init__(self, row: Sequence[Any]) -> None:
        messages = sorted(json.loads(row[14]))
        refs = sorted(json.loads(row[15]))
        self.image_refs: list[tuple[str, str, int]] = [(r[1], r[2], r[3]) for r in refs]
        names = [r[4] if len(r) > 4 else "" for r in refs]
        self.archived = bool(row[16])
        self.archived_at: float | None = row[17]
        self.turn = Turn(
            id=row[0],
            channel_id=row[1],
            guild_id=row[2],
            thread_id=row[3],
            role=row[4],
            author_id=row[5],
            author_name=row[6],
            text=row[7],
            status=row[8],
            created_at=row[9],
            reply_to=row[10],
            prompt_tokens=row[11],
            output_tokens=row[12],
            model=row[13],
            message_ids=[m[1] for m in messages],
            images=[
                StoredImage(sha, mime, None, name, size)
                for (sha, mime, size), name in zip(self.image_refs, names, strict=True)
            ],
            withdrawn=row[18],
            hidden=row[19],
            parts=_parts_from_json(row[20]),
            thoughts_tokens=row[21],
            searches=json.loads(row[22]) if row[22] else [],
        )


def _parts_to_json(parts: Sequence[StoredPart]) -> str | None:
    """A model turn's parts as JSON (signatures in base64), None when there are none."""
    if not parts:
        return None
    return json.dumps(
        [
            {
                "kind": p.kind,
                "text": clean(p.text),
                "signature": base64.b64encode(p.signature).decode() if p.signature else None,
                "detail": p.detail,
            }
            for p in parts
        ]
    )


def _parts_from_json(raw: str | None) -> list[StoredPart]:
    if not raw:
        return []
    return [
        StoredPart(
            p["kind"],
            p["text"],
            base64.b64decode(p["signature"]) if p.get("signature") else None,
            p.get("detail"),
        )
        for p in json.loads(raw)
    ]


async def _prepare_files(files: Sequence[Media]) -> list[tuple[str, str, bytes]]:
    """(sha256 hex, MIME type, bytes) per file; large ones are hashed off the event loop."""
    if not files:
        return []
    blobs = [bytes(file.data) for file in files]

    def digest_all() -> list[str]:
        return [hashlib.sha256(blob).hexdigest() for blob in blobs]

    if sum(len(b) for b in blobs) > HASH_OFF_LOOP_BYTES:
        digests = await asyncio.to_thread(digest_all)
    else:
        digests = digest_all()
    return [
        (sha, clean(file.mime_type), blob)
        for sha, file, blob in zip(digests, files, blobs, strict=True)
    ]


def _pair_key(turn: Turn) -> int | None:
    return turn.id if turn.role == "user" else turn.reply_to


def _trim(newest_first: list[Turn], max_tokens: int, image_turns: int) -> list[Turn]:
    """Whole question/answer pairs, newest first, while they fit; returned oldest first.

    A pair is its user turn and the model turns answering it; a model turn whose question is
    not in `newest_first` (cut off by the row limit, or asked elsewhere) is dropped. Images
    cost tokens only within the last `image_turns` turns, the ones sent with their bytes.
    """
    pairs: list[list[Turn]] = []  # each newest first: model turns, then the user turn
    for turn in newest_first:
        if pairs and _pair_key(pairs[-1][0]) == _pair_key(turn):
            pairs[-1].append(turn)
        else:
            pairs.append([turn])
    chosen: list[Turn] = []
    used = 0
    for pair in pairs:
        if pair[-1].role != "user":
            continue  # an orphan: its question is not here
        cost = 0
        for offset, turn in enumerate(pair):
            with_images = len(chosen) + offset < image_turns
            cost += approx_tokens(turn.text, len(turn.images) if with_images else 0)
        if used + cost > max_tokens:
            break
        used += cost
        chosen.extend(pair)
    chosen.reverse()
    return chosen


def _remember(cache: dict[int, T], key: int, value: T) -> None:
    """Keep `value` in a bounded in-memory cache (emptied when it grows past 50,000 keys)."""
    if len(cache) >= 50_000:
        cache.clear()
    cache[key] = value


def log_abandoned_failure(task: asyncio.Task[Any]) -> None:
    """Log the failure of a write whose caller was cancelled (no one else will see it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a store write whose caller was cancelled failed", exc_info=task.exception())
