"""The plain data the store takes and returns, and the errors it raises."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Final, Literal, get_args

Status = Literal["streaming", "complete", "stopped", "interrupted", "failed", "blocked"]
"""A turn's state; "streaming" means a model turn was started and not finished yet."""

Role = Literal["user", "model"]

Withdrawn = Literal["deleted", "blocked"]
"""Why a turn left the history the model sees: its message was deleted, or the exchange was
blocked by the safety filter."""

Hidden = Literal["replaced", "private"]
"""Why a turn kept in the store is never shown to the model again (see `Turn.hidden`)."""

STATUSES: Final[frozenset[str]] = frozenset(get_args(Status))
FINAL_STATUSES: Final[frozenset[str]] = STATUSES - {"streaming"}

CHARS_PER_TOKEN: Final = 4
"""The history budget's estimate: about four characters per token."""

IMAGE_TOKENS: Final = 1_032
"""The history budget's estimate for an image sent with its bytes (258 tokens a tile, ~4 tiles)."""


def approx_tokens(text: str, images: int = 0) -> int:
    """Approximate token cost of a turn: ~4 characters per token plus a fixed cost per image."""
    return -(-len(text) // CHARS_PER_TOKEN) + images * IMAGE_TOKENS


@dataclass(frozen=True)
class Media:
    """A file sent with a question, to the store and to Gemini: an image, text, a PDF, audio
    or video (`name`: the file name it was sent as; `uri`: set when it goes to Gemini as an
    upload of the Files API rather than inline)."""

    data: bytes = field(repr=False)
    mime_type: str
    name: str = field(default="", compare=False)
    uri: str | None = field(default=None, compare=False)

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the bytes: the file's key in the store."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def is_text(self) -> bool:
        """Whether it is a text or code file (sent to Gemini as a text part)."""
        return self.mime_type.startswith("text/")

    def __repr__(self) -> str:
        return f"Media({self.mime_type!r}, {len(self.data)} bytes, name={self.name!r})"


@dataclass(frozen=True)
class StoredImage:
    """A file (of any kind) carried by a stored turn; `data` is None when outside the
    history's file budget. `name` and `size` let the bot name a file it leaves out."""

    sha256: str
    mime_type: str
    data: bytes | None
    name: str = ""
    size: int = 0


@dataclass(frozen=True)
class Upload:
    """A file uploaded to Gemini's Files API, reusable until `expires_at` (Unix time)."""

    sha256: str
    name: str
    uri: str
    mime_type: str
    expires_at: float


@dataclass(frozen=True)
class StoredPart:
    """One part of a model turn as Gemini sent it: ``kind`` is "text", "thought" (a thought
    summary), "code" (code the model ran), "output" (what it printed) or "image" (an image its
    code drew); ``signature`` is the thought signature, kept byte for byte; ``detail`` the
    code's language, the outcome, or an image's SHA-256 (its bytes are among the turn's files:
    see `Store.finish_model_turn`)."""

    kind: Literal["text", "thought", "code", "output", "image"]
    text: str
    signature: bytes | None = field(default=None, repr=False)
    detail: str | None = None


@dataclass
class Turn:
    """One stored user question or model reply."""

    id: int
    channel_id: int
    guild_id: int | None
    thread_id: int | None
    role: Role
    author_id: int
    author_name: str
    text: str
    status: Status
    message_ids: list[int]
    images: list[StoredImage]
    created_at: float
    reply_to: int | None
    prompt_tokens: int | None
    output_tokens: int | None
    model: str | None
    withdrawn: Withdrawn | None = None
    """Why the turn is no longer sent to the model (None: it is)."""
    hidden: Hidden | None = None
    """A reply regenerated since ("replaced"), or an exchange only its asker saw ("private")."""
    parts: list[StoredPart] = field(default_factory=list)
    """A model turn's parts as Gemini sent them (empty for user turns and older replies)."""
    thoughts_tokens: int | None = None
    searches: list[str] = field(default_factory=list)
    """The Google searches a model turn made (its Search Suggestions)."""


@dataclass
class ChannelSettings:
    """Per-channel settings; None means "use the bot's default" (see bot/options.py)."""

    channel_id: int
    persona: str | None = None
    model: str | None = None
    thinking: str | None = None
    search: str | None = None
    links: str | None = None
    code: str | None = None
    scope: str | None = None
    auto_thread: str | None = None
    answer_mode: str | None = None


SETTING_NAMES: Final = tuple(f.name for f in fields(ChannelSettings) if f.name != "channel_id")
"""The settable columns of `channel_settings`, in `ChannelSettings` order."""


@dataclass
class ReplyMetrics:
    """How one reply streamed: latencies in seconds, counts of chunks and Discord writes."""

    first_chunk_latency: float | None
    first_visible_latency: float | None
    total_time: float
    chunk_count: int
    edit_count: int
    send_count: int
    rate_limited: int
    outcome: str


SECONDS_PER_DAY: Final = 86_400


def utc_day(at: float) -> int:
    """The UTC day number of a Unix time (days since 1970-01-01): the ledger's day key."""
    return int(at // SECONDS_PER_DAY)


@dataclass(frozen=True)
class TokenUsage:
    """Gemini's token counts for one reply, or summed over many (cached tokens are part of
    the prompt tokens; total = prompt + output + thoughts + tool-use prompt)."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            *(a + b for a, b in zip(astuple_usage(self), astuple_usage(other), strict=True))
        )


def astuple_usage(usage: TokenUsage) -> tuple[int, int, int, int, int, int]:
    """The six counts in field order."""
    return (
        usage.prompt_tokens,
        usage.output_tokens,
        usage.thoughts_tokens,
        usage.cached_tokens,
        usage.tool_use_prompt_tokens,
        usage.total_tokens,
    )


@dataclass(frozen=True)
class UsageTotals:
    """What the ledger holds for one model over some days: replies and tokens."""

    model: str
    replies: int
    usage: TokenUsage


@dataclass(frozen=True)
class GuildBudget:
    """A server's own daily token budgets (None: the bot's setting applies; 0: unlimited)."""

    guild_id: int
    server_tokens: int | None = None
    user_tokens: int | None = None


@dataclass
class Stats:
    """Counts over every stored turn (archived ones included) of one channel or of all."""

    turns: int
    user_turns: int
    model_turns: int
    channels: int
    images: int
    by_status: dict[str, int]
    prompt_tokens: int
    output_tokens: int
    replies_measured: int
    avg_first_chunk_latency: float | None
    avg_total_time: float | None
    thoughts_tokens: int = 0


class StorageError(Exception):
    """The store cannot do what was asked (bad file, closed store)."""


class SchemaError(StorageError):
    """The database's schema cannot be brought to this version (newer file, bad migration)."""


class StoreClosed(StorageError):
    """The store was used after `close()`."""


class AlreadyAnswered(StorageError):
    """A question from this Discord message was stored before: it is answered only once."""


class StoreLocked(StorageError):
    """Another process holds the database (a second bot on the same file)."""


class TurnNotFound(StorageError, LookupError):
    """The turn asked for does not exist (or is not of the kind the operation needs)."""


@dataclass(frozen=True)
class HistoryBudget:
    """How much history a request carries (see `Store.load_history`)."""

    max_turns: int = 40
    max_tokens: int = 24_000
    image_turns: int = 6


@dataclass
class ReplyStart:
    """A reply begun in one store operation (`Store.ask`, `Store.start_reply`)."""

    user_turn: int
    """The question's turn."""
    model_turn: int
    """The reply's turn, "streaming"."""
    history: list[Turn]
    """The channel's history before the question, as `load_history(before_turn=user_turn)`."""
