"""Conversation storage: the `Store` protocol the bot talks to, and `open_store`.

Two engines keep the same semantics (one storage test suite runs against both): SQLite
(storage/sqlite.py, the default: one file, one bot process) and PostgreSQL (storage/postgres.py,
chosen by a postgresql:// URL: one database shared by the processes of a sharded bot).

What is kept: turns (a user's question or the model's reply) per channel, with author,
Discord message ids, status, token counts and time; images once each by SHA-256, linked to
the turns that carried them (a question's files, the images a reply's code drew); per-channel
settings (persona, model); per-reply metrics.

Semantics the bot relies on:

- **Pairs.** A model turn answers one user turn (`reply_to`). History is ordered by pair key
  (the user turn's id for both), the question before its answers, so two replies streaming at
  once in one channel stay next to their questions whatever order they finish in.
- **Start / finish.** `start_model_turn` writes a "streaming" row (`ask` stores a question, starts
  its reply and loads the history before it in one transaction; `start_reply` starts the reply
  of a question stored earlier and loads its history); `finish_model_turn` writes the
  final text, status, message ids and metrics in one transaction; `checkpoint` saves the text
  so far while it streams. A crash in between leaves the "streaming" row, which `open_store`
  marks "interrupted" (keeping the last checkpoint) and hands to the bot once through
  `take_interrupted`, so it can finish those messages in Discord. "streaming" turns never
  appear in history.
- **History.** `load_history(channel, before_turn=X)` returns live (not archived) turns of
  pairs whose key is < X, oldest first. It takes the newest `max_turns` turns, then keeps whole
  pairs, newest first, while the approximate token budget holds (`approx_tokens`: ~4 characters
  per token, `IMAGE_TOKENS` per image sent with its bytes), stopping at the first pair that does
  not fit (so history has no gaps; if the newest pair alone is over budget, it is empty). A model
  turn whose question is not in the result is dropped, so the result never starts with one.
  Failed, stopped and blocked replies are included with their status. Images carry their bytes
  only in the last `image_turns` turns of the result; older ones keep their hash and MIME type
  with `data=None`, so the bot can mention them.
- **At most once.** A question's first message id is unique across the store:
  `add_user_turn` raises AlreadyAnswered for a message asked before. The bot process that
  owns the file (`recover_streaming=True`) holds `<file>.lock`; a second owner gets StoreLocked.
  On PostgreSQL each Discord shard has one owner (see storage/postgres.py), which recovers
  only its own shards' replies.
- **Withdrawn** turns stay in the file and in exports but leave history: a turn whose Discord
  message was deleted (`withdraw_message`; a question's text is erased), and both turns of an
  exchange whose reply was finished as "blocked". Images marked unusable (Gemini refused
  them) are never returned with their bytes again.
- **Reset** is soft: `reset_channel` archives the channel's turns. They leave history for good
  but stay in the file: `export_channel(include_archived=True)` (the default) shows them, and so
  does `find_turn_by_message`. A reply still streaming when the channel is reset is archived with
  its question. Settings (persona, model) survive a reset. `purge_channel` is the hard delete.
- **Forget me.** `forget_user(author_id)` deletes every user turn that person wrote, archived or
  not, in every channel, and the model's replies to them (a reply is built from the question and
  may quote it); images no longer carried by any turn are deleted too, and deleted content is
  overwritten in the file (SQLite; PostgreSQL leaves dead rows to vacuum). It returns how many
  turns were deleted, replies included.
  `forget_question(turn_id)` does the same for one exchange; `last_question(author_id,
  channel_id)` names that person's newest one still in the channel's history.
- **Hidden** turns stay in the file but leave history for good: a reply whose answer was
  regenerated (`replace_replies`: "replaced", still in exports, marked) and a "private" exchange
  (`add_user_turn(hidden="private")`, its replies too), which exports leave out as well.
- **Scope.** `load_history(..., author_id=X)` keeps only X's questions and the replies to them
  (a channel where each person has a conversation of their own).
- **Ledger.** `record_usage` adds one reply's token counts (Gemini's usage metadata) with who
  asked, where, the model and the time; triggers keep per-day totals by (UTC day, channel,
  user, model), which `usage_by_model` and `tokens_used` read, so they cost the same at any
  size. The ledger holds no text and outlives the turns it counts (retention, `/forget`,
  deleted channels only clear its turn id), so spending cannot be undone by deleting
  messages. `get_guild_budget`/`set_guild_budget` keep a server's own daily budgets.
- **Stats** count every stored turn, archived ones included (usage, not context). They read
  running totals that triggers keep per channel, so they cost the same at any size.
- **Ids.** `channel_id` is the history key (for a thread, the thread's id); `guild_id` and
  `thread_id` are kept for reference. Turn ids only grow and are never reused.
- **Export JSON** writes Discord snowflakes (channel, guild, thread, author, message ids) as
  strings, as Discord does, because they do not fit a JavaScript number; turn ids are numbers.
  Images are listed by hash, MIME type and size, without their bytes.
- Operations are safe to call from many tasks at once (SQLite: each runs alone on the store's
  single connection, off the event loop; PostgreSQL: on a pool, with row locks and upserts);
  writes are atomic and complete even if the caller is cancelled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, Protocol, runtime_checkable

from storage.models import (
    CHARS_PER_TOKEN,
    IMAGE_TOKENS,
    SETTING_NAMES,
    AlreadyAnswered,
    ChannelSettings,
    GuildBudget,
    Hidden,
    HistoryBudget,
    Media,
    ReplyMetrics,
    ReplyStart,
    SchemaError,
    Stats,
    Status,
    StorageError,
    StoreClosed,
    StoredImage,
    StoredPart,
    StoreLocked,
    TokenUsage,
    Turn,
    TurnNotFound,
    Upload,
    UsageTotals,
    Withdrawn,
    approx_tokens,
    utc_day,
)
from storage.shards import ShardSet
from storage.sqlite import SQLiteStore

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_TOKENS",
    "SETTING_NAMES",
    "AlreadyAnswered",
    "ChannelSettings",
    "GuildBudget",
    "Hidden",
    "HistoryBudget",
    "Media",
    "ReplyMetrics",
    "ReplyStart",
    "SQLiteStore",
    "SchemaError",
    "ShardSet",
    "Stats",
    "Status",
    "StorageError",
    "Store",
    "StoreClosed",
    "StoreLocked",
    "StoredImage",
    "StoredPart",
    "TokenUsage",
    "Turn",
    "TurnNotFound",
    "Upload",
    "UsageTotals",
    "Withdrawn",
    "approx_tokens",
    "is_postgres_url",
    "open_store",
    "utc_day",
]


@runtime_checkable
class Store(Protocol):
    """What the bot needs from storage; every method is safe to call concurrently."""

    async def close(self) -> None:
        """Finish writes in flight and release the database."""
        ...

    async def health(self) -> str | None:
        """Why this process cannot rely on the store now (one sentence, e.g. a shard lock it
        lost), or None; raises when the database does not answer."""
        ...

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
        """Store a question ("private": only its asker sees the exchange); returns its id."""
        ...

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
        """Open a "streaming" reply to user turn `reply_to`; returns its turn id."""
        ...

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
        """A question answered at once: `add_user_turn`, `start_model_turn` and `load_history`
        (before the question; `history_author` as its `author_id`) in one transaction;
        AlreadyAnswered stores nothing. `queued` may be called before it is stored, once the
        channel's later questions are sure to be stored after it (and to see it)."""
        ...

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
        """A stored question's reply begins: `start_model_turn` and `load_history(before_turn=
        reply_to, author_id=history_author)` in one operation."""
        ...

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
        """Record a reply's final text, status, message ids, token counts and metrics, the
        parts Gemini sent (thought signatures byte for byte), the searches it made and the
        images its code drew (kept as the turn's files, like a question's)."""
        ...

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
        """The channel's recent live turns within the budget, oldest first (with `author_id`:
        only that person's exchanges, for a channel whose conversations are per person)."""
        ...

    async def find_turn_by_message(self, message_id: int) -> Turn | None:
        """The turn one of whose Discord message ids is `message_id`."""
        ...

    async def get_turn(self, turn_id: int) -> Turn | None:
        """One turn by id, with its image bytes."""
        ...

    async def replace_replies(self, question_id: int, new_reply: int) -> int:
        """Mark the question's replies other than `new_reply` "replaced"; returns how many."""
        ...

    async def add_message_ids(self, turn_id: int, message_ids: Sequence[int]) -> None:
        """Attach Discord message ids to a turn as its reply streams."""
        ...

    async def checkpoint(self, turn_id: int, text: str) -> None:
        """Save the text a streaming reply has so far."""
        ...

    async def take_interrupted(self) -> list[Turn]:
        """Replies a crash left streaming (now "interrupted"), each returned once."""
        ...

    async def withdraw_message(self, message_id: int) -> Turn | None:
        """The Discord message was deleted: take its turn out of history; the turn, if any."""
        ...

    async def mark_images_unusable(self, sha256s: Iterable[str], reason: str) -> None:
        """Never send these images to Gemini again."""
        ...

    async def get_uploads(self, sha256s: Iterable[str]) -> dict[str, Upload]:
        """The Files API uploads recorded for these files, by hash (expired ones too)."""
        ...

    async def save_upload(self, upload: Upload) -> None:
        """Record (or replace) the upload of a stored file; a replaced one is queued to go."""
        ...

    async def take_gone_uploads(self) -> list[str]:
        """Names of uploads whose file left the store (or that were replaced): each returned
        once, for the bot to delete them from Gemini."""
        ...

    async def prune(self, *, older_than: float | None, archived_before: float) -> int:
        """Retention: delete old exchanges and long-archived ones; returns turns deleted."""
        ...

    async def size_bytes(self) -> int:
        """How large the database is."""
        ...

    async def purge_channel(self, channel_id: int) -> int:
        """Hard delete of a channel's turns and settings (the channel itself was deleted)."""
        ...

    async def reset_channel(self, channel_id: int) -> int:
        """Archive the channel's live turns (soft reset); returns how many."""
        ...

    async def export_channel(
        self,
        channel_id: int,
        fmt: Literal["markdown", "json"] = "markdown",
        *,
        include_archived: bool = True,
    ) -> str:
        """The channel's history as Markdown or JSON."""
        ...

    async def get_channel_settings(self, channel_id: int) -> ChannelSettings:
        """The channel's own settings (None where unset)."""
        ...

    async def set_setting(self, channel_id: int, name: str, value: str | None) -> None:
        """Set (or clear, with None) one of `SETTING_NAMES` for the channel."""
        ...

    async def set_persona(self, channel_id: int, persona: str | None) -> None:
        """Set (or clear, with None) the channel's persona."""
        ...

    async def set_model(self, channel_id: int, model: str | None) -> None:
        """Set (or clear, with None) the channel's model."""
        ...

    async def stats(self, channel_id: int | None = None) -> Stats:
        """Counts for one channel, or for everything when `channel_id` is None."""
        ...

    async def forget_user(self, author_id: int) -> int:
        """Delete everything the user wrote (and the replies to it); returns turns deleted."""
        ...

    async def last_question(self, author_id: int, channel_id: int) -> int | None:
        """The user's newest question (turn id) still in the channel's history, or None."""
        ...

    async def forget_question(self, turn_id: int) -> int:
        """Delete one question and the replies to it; returns turns deleted."""
        ...

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
        """Add one reply's token counts to the ledger."""
        ...

    async def usage_by_model(
        self,
        first_day: int,
        last_day: int,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> list[UsageTotals]:
        """Ledger totals per model over UTC days first_day..last_day, for one scope or all."""
        ...

    async def tokens_used(
        self, day: int, *, user_id: int | None = None, guild_id: int | None = None
    ) -> int:
        """Total tokens of one UTC day, for one user or one server."""
        ...

    async def get_guild_budget(self, guild_id: int) -> GuildBudget:
        """The server's own daily budgets."""
        ...

    async def set_guild_budget(self, budget: GuildBudget) -> None:
        """Store a server's own daily budgets."""
        ...


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | os.PathLike[str]) -> bool:
    """Whether `location` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


async def open_store(
    location: str | os.PathLike[str],
    *,
    recover_streaming: bool = True,
    shards: ShardSet | None = None,
) -> Store:
    """Open the store at `location` and migrate it to this version: a `postgresql://` URL
    (storage/postgres.py), or a SQLite file path (created with its folder).

    Replies left "streaming" by a crash are marked interrupted, unless `recover_streaming=False`
    (for a second process, such as a health check, opening the database of a running bot). On
    PostgreSQL, `shards` says which Discord shards this process runs: only their servers'
    replies are its to recover, and only one process may run each shard.
    """
    if is_postgres_url(location):
        from storage.postgres import PostgresStore

        return await PostgresStore.open(
            str(location), recover_streaming=recover_streaming, shards=shards
        )
    return await SQLiteStore.open(location, recover_streaming=recover_streaming)
