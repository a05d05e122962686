"""Settings from the environment and `.env`, validated; one clear sentence per bad setting."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

from bot.prices import DEFAULT_PRICES, Price, parse_prices
from storage.shards import ShardSet

DEFAULT_MODEL = "gemini-2.5-flash"
DEFAULT_DB = "./data/gemcord.db"
DEFAULT_DISCORD_API = "https://discord.com/api/v10"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one sentence naming it and the fix."""

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        self.setting = setting
        super().__init__(f"{setting} {problem}: {fix}.")


@dataclass(frozen=True)
class Settings:
    """Everything gemcord reads from its environment."""

    discord_token: str | None = field(default=None, repr=False)
    gemini_api_key: str | None = field(default=None, repr=False)
    web_token: str | None = field(default=None, repr=False)
    """GEMCORD_WEB_TOKEN: what the web chat asks for (needed to serve beyond 127.0.0.1)."""
    gemini_model: str = DEFAULT_MODEL
    db_path: Path = Path(DEFAULT_DB)
    database_url: str | None = field(default=None, repr=False)
    """GEMCORD_DATABASE_URL: a postgresql:// URL, used instead of the SQLite file when set."""
    shards: ShardSet | None = None
    """GEMCORD_SHARD_COUNT / GEMCORD_SHARD_IDS: the Discord shards this process runs (None:
    as many as Discord recommends, all in this process)."""
    gemini_base_url: str | None = None
    discord_api_base_url: str = DEFAULT_DISCORD_API
    log_level: str = "INFO"
    log_format: str = "text"
    allowed_channels: frozenset[int] = frozenset()
    allowed_roles: frozenset[int] = frozenset()
    dev_guild_id: int | None = None
    cooldown_seconds: float = 3.0
    edits_per_window: int = 5
    edit_window_seconds: float = 5.0
    requests_per_second: int = 45
    max_image_bytes: int = 10 * 1024 * 1024
    max_request_image_bytes: int = 20 * 1024 * 1024
    max_images: int = 4
    history_turns: int = 40
    history_tokens: int = 24_000
    history_image_turns: int = 6
    max_inline_bytes: int = 60 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_files: int = 10
    max_text_bytes: int = 5 * 1024 * 1024
    max_text_chars: int = 100_000
    max_text_chars_total: int = 200_000
    max_pdf_bytes: int = 50 * 1024 * 1024
    max_audio_bytes: int = 50 * 1024 * 1024
    max_voice_seconds: float = 600.0
    max_video_bytes: int = 100 * 1024 * 1024
    inline_file_bytes: int = 20 * 1024 * 1024
    """A file larger than this (and every video) goes through Gemini's Files API."""
    uploads_at_once: int = 3
    upload_timeout: float = 600.0
    replies_per_user: int = 2
    replies_per_channel: int = 5
    replies_per_process: int = 64
    queue_per_channel: int = 10
    notice_seconds: float = 10.0
    checkpoint_seconds: float = 5.0
    first_chunk_timeout: float = 120.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    retention_days: float = 0.0
    reset_grace_days: float = 30.0
    db_warn_bytes: int = 2048 * 1024 * 1024
    http_port: int | None = None
    http_host: str = "127.0.0.1"
    max_output_tokens: int | None = None
    stop_emoji: str = "🛑"
    persona: str | None = None
    daily_tokens_per_user: int = 0
    daily_tokens_per_server: int = 0
    budget_exempt_moderators: bool = False
    breaker_failures: int = 3
    breaker_seconds: float = 30.0
    prices: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @property
    def database(self) -> str:
        """Where the store lives: the PostgreSQL URL when set, else the SQLite file's path."""
        return self.database_url or str(self.db_path)

    @property
    def database_label(self) -> str:
        """`database` as it may be shown (a URL's password hidden)."""
        return redact_url(self.database_url) if self.database_url else str(self.db_path)

    def require_runtime(self) -> None:
        """Check the settings that only `run` needs."""
        if not self.discord_token:
            raise ConfigError(
                "DISCORD_TOKEN",
                "is not set",
                "put your bot token from the Discord developer portal in .env or the environment",
            )
        self.require_gemini()

    def require_gemini(self) -> None:
        """Check the settings every Gemini call needs."""
        if not self.gemini_api_key:
            raise ConfigError(
                "GEMINI_API_KEY",
                "is not set",
                "put your Gemini API key from Google AI Studio in .env or the environment",
            )

    def redacted(self) -> dict[str, str]:
        """All settings as text, secrets reduced to a hint of their last characters."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("discord_token", "gemini_api_key", "web_token"):
                out[f.name] = redact(value)
            elif f.name == "database_url":
                out[f.name] = redact_url(value) if value else "(unset: the SQLite file)"
            elif f.name == "shards":
                out[f.name] = value.label() if value else "(all, as many as Discord recommends)"
            elif isinstance(value, frozenset):
                out[f.name] = ",".join(str(v) for v in sorted(value)) or "(any)"
            elif f.name == "persona" and value:
                out[f.name] = value[:40] + ("…" if len(value) > 40 else "")
            elif f.name == "prices":
                out[f.name] = ", ".join(
                    f"{m}={p.input:g}/{p.output:g}/{p.cached:g}" for m, p in sorted(value.items())
                )
            else:
                out[f.name] = "(unset)" if value is None else str(value)
        return out


def redact(secret: str | None) -> str:
    """`(unset)`, or the secret as stars with at most its last 4 characters shown."""
    if not secret:
        return "(unset)"
    if len(secret) <= 8:
        return "****"
    return "****" + secret[-4:]


def redact_url(url: str) -> str:
    """A connection URL with its password replaced by stars."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(f":{parsed.password}@", ":****@", 1)


def _database_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            name,
            f"is not a PostgreSQL URL ({redact_url(raw)!r})",
            "give postgresql://user:password@host:5432/database, or unset it to use GEMCORD_DB",
        )
    return raw


def _shards(env: Mapping[str, str]) -> ShardSet | None:
    raw = env.get("GEMCORD_SHARD_IDS", "").strip()
    if not env.get("GEMCORD_SHARD_COUNT", "").strip():
        if raw:
            raise ConfigError(
                "GEMCORD_SHARD_IDS",
                "is set without GEMCORD_SHARD_COUNT",
                "set GEMCORD_SHARD_COUNT to the total number of shards too",
            )
        return None
    count = _int(env, "GEMCORD_SHARD_COUNT", 1, minimum=1)
    if not raw:
        return ShardSet(count, tuple(range(count)))
    try:
        ids = tuple(int(part) for part in raw.replace(" ", "").split(",") if part)
        return ShardSet(count, ids)
    except ValueError:
        raise ConfigError(
            "GEMCORD_SHARD_IDS",
            f"is {raw!r}",
            f"give distinct shard numbers from 0 to {count - 1} separated by commas"
            " (GEMCORD_SHARD_COUNT is the total)",
        ) from None


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(name, f"is not a URL ({raw!r})", "give a full http:// or https:// URL")
    return raw.rstrip("/")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(name, f"is {raw!r}", f"set it to a whole number of at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = minimum - 1
    if not value >= minimum:
        raise ConfigError(name, f"is {raw!r}", f"set it to a number of at least {minimum:g}")
    return value


def _ids(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = env.get(name, "").strip()
    if not raw:
        return frozenset()
    try:
        return frozenset(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(
            name, f"is {raw!r}", "give Discord ids (numbers) separated by commas"
        ) from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when the setting is empty)."""
    raw = env.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ConfigError(name, f"is {raw!r}", "use " + " or ".join(choices))
    return raw


def _port(env: Mapping[str, str], name: str) -> int | None:
    """A TCP port, or None when the setting is empty (the server is off)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(name, f"is {raw!r}", "set it to a port number from 1 to 65535")
    return int(raw)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting (1/0, true/false, yes/no, on/off)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"is {raw!r}", "use true or false")


def _prices(env: Mapping[str, str], name: str) -> dict[str, Price]:
    """The price table: the defaults, corrected by `model=input/output[/cached],...`."""
    try:
        return parse_prices(env.get(name, ""))
    except ValueError as exc:
        raise ConfigError(
            name,
            f"has a malformed entry {str(exc)!r}",
            "write model=input/output[/cached] in USD per million tokens, separated by commas",
        ) from None


def _megabytes(env: Mapping[str, str], name: str, default_mb: float) -> int:
    return int(_float(env, name, default_mb, minimum=0.001) * 1024 * 1024)


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Read settings from `environ` (default: os.environ) over the values in `env_file`."""
    env: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    token = env.get("DISCORD_TOKEN", "").strip() or None
    if token and (any(c.isspace() for c in token) or token.lower().startswith("bot ")):
        raise ConfigError(
            "DISCORD_TOKEN", "is malformed", "paste the bare bot token, without 'Bot ' or spaces"
        )
    key = (env.get("GOOGLE_API_KEY", "").strip() or env.get("GEMINI_API_KEY", "").strip()) or None

    model = env.get("GEMINI_MODEL", "").strip() or DEFAULT_MODEL
    if any(c.isspace() for c in model) or model.startswith("/"):
        raise ConfigError(
            "GEMINI_MODEL", f"is {model!r}", "give a model name such as gemini-2.5-flash"
        )

    level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"is {level!r}", "use one of " + ", ".join(LOG_LEVELS))

    dev_guild = _int(env, "GEMCORD_DEV_GUILD", 0)
    max_out = _int(env, "GEMINI_MAX_OUTPUT_TOKENS", 0)
    stop_emoji = env.get("GEMCORD_STOP_EMOJI", "").strip() or "🛑"
    persona = env.get("GEMCORD_PERSONA", "").strip() or None

    return Settings(
        discord_token=token,
        gemini_api_key=key,
        web_token=env.get("GEMCORD_WEB_TOKEN", "").strip() or None,
        gemini_model=model,
        db_path=Path(env.get("GEMCORD_DB", "").strip() or DEFAULT_DB),
        database_url=_database_url(env, "GEMCORD_DATABASE_URL"),
        shards=_shards(env),
        gemini_base_url=_url(env, "GEMINI_BASE_URL"),
        discord_api_base_url=_url(env, "DISCORD_API_BASE_URL") or DEFAULT_DISCORD_API,
        log_level=level,
        log_format=_choice(env, "GEMCORD_LOG_FORMAT", ("text", "json")),
        allowed_channels=_ids(env, "GEMCORD_ALLOWED_CHANNELS"),
        allowed_roles=_ids(env, "GEMCORD_ALLOWED_ROLES"),
        dev_guild_id=dev_guild or None,
        cooldown_seconds=_float(env, "GEMCORD_COOLDOWN_SECONDS", 3.0),
        edits_per_window=_int(env, "GEMCORD_EDITS_PER_WINDOW", 5, minimum=1),
        edit_window_seconds=_float(env, "GEMCORD_EDIT_WINDOW_SECONDS", 5.0, minimum=0.1),
        requests_per_second=_int(env, "GEMCORD_REQUESTS_PER_SECOND", 45, minimum=1),
        max_image_bytes=_megabytes(env, "GEMCORD_MAX_IMAGE_MB", 10),
        max_request_image_bytes=_megabytes(env, "GEMCORD_MAX_REQUEST_MB", 20),
        max_images=_int(env, "GEMCORD_MAX_IMAGES", 4),
        history_turns=_int(env, "GEMCORD_HISTORY_TURNS", 40, minimum=0),
        history_tokens=_int(env, "GEMCORD_HISTORY_TOKENS", 24_000, minimum=100),
        history_image_turns=_int(env, "GEMCORD_HISTORY_IMAGE_TURNS", 6),
        max_inline_bytes=_megabytes(env, "GEMCORD_MAX_INLINE_MB", 60),
        max_image_pixels=int(_float(env, "GEMCORD_MAX_IMAGE_MEGAPIXELS", 40, minimum=0.01) * 1e6),
        max_files=_int(env, "GEMCORD_MAX_FILES", 10),
        max_text_bytes=_megabytes(env, "GEMCORD_MAX_TEXT_MB", 5),
        max_text_chars=_int(env, "GEMCORD_MAX_TEXT_CHARS", 100_000, minimum=1),
        max_text_chars_total=_int(env, "GEMCORD_MAX_TEXT_CHARS_PER_MESSAGE", 200_000, minimum=1),
        max_pdf_bytes=_megabytes(env, "GEMCORD_MAX_PDF_MB", 50),
        max_audio_bytes=_megabytes(env, "GEMCORD_MAX_AUDIO_MB", 50),
        max_voice_seconds=_float(env, "GEMCORD_MAX_VOICE_SECONDS", 600.0, minimum=1),
        max_video_bytes=_megabytes(env, "GEMCORD_MAX_VIDEO_MB", 100),
        inline_file_bytes=_megabytes(env, "GEMCORD_INLINE_FILE_MB", 20),
        uploads_at_once=_int(env, "GEMCORD_UPLOADS_AT_ONCE", 3, minimum=1),
        upload_timeout=_float(env, "GEMCORD_UPLOAD_TIMEOUT", 600.0, minimum=1),
        replies_per_user=_int(env, "GEMCORD_REPLIES_PER_USER", 2, minimum=1),
        replies_per_channel=_int(env, "GEMCORD_REPLIES_PER_CHANNEL", 5, minimum=1),
        replies_per_process=_int(env, "GEMCORD_REPLIES_MAX", 64, minimum=1),
        queue_per_channel=_int(env, "GEMCORD_QUEUE_PER_CHANNEL", 10),
        notice_seconds=_float(env, "GEMCORD_NOTICE_SECONDS", 10.0),
        checkpoint_seconds=_float(env, "GEMCORD_CHECKPOINT_SECONDS", 5.0, minimum=0.1),
        first_chunk_timeout=_float(env, "GEMCORD_FIRST_CHUNK_TIMEOUT", 120.0, minimum=1),
        idle_timeout=_float(env, "GEMCORD_IDLE_TIMEOUT", 60.0, minimum=1),
        total_timeout=_float(env, "GEMCORD_TOTAL_TIMEOUT", 600.0, minimum=1),
        retention_days=_float(env, "GEMCORD_RETENTION_DAYS", 0.0),
        reset_grace_days=_float(env, "GEMCORD_RESET_GRACE_DAYS", 30.0),
        db_warn_bytes=_megabytes(env, "GEMCORD_DB_WARN_MB", 2048),
        http_port=_port(env, "GEMCORD_HTTP_PORT"),
        http_host=env.get("GEMCORD_HTTP_HOST", "").strip() or "127.0.0.1",
        max_output_tokens=max_out or None,
        stop_emoji=stop_emoji,
        persona=persona,
        daily_tokens_per_user=_int(env, "GEMCORD_DAILY_TOKENS_PER_USER", 0),
        daily_tokens_per_server=_int(env, "GEMCORD_DAILY_TOKENS_PER_SERVER", 0),
        budget_exempt_moderators=_flag(env, "GEMCORD_BUDGET_EXEMPT_MODERATORS", False),
        breaker_failures=_int(env, "GEMCORD_BREAKER_FAILURES", 3),
        breaker_seconds=_float(env, "GEMCORD_BREAKER_SECONDS", 30.0),
        prices=_prices(env, "GEMCORD_PRICES"),
    )


def prepare_db_path(settings: Settings) -> Path:
    """Create the SQLite database's folder (nothing to do on PostgreSQL); a path that cannot
    be used is a ConfigError."""
    path = settings.db_path
    if settings.database_url:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "GEMCORD_DB",
            f"points to {str(path)!r}, whose folder cannot be created ({exc.strerror})",
            "choose a writable path",
        ) from None
    if path.exists() and path.is_dir():
        raise ConfigError(
            "GEMCORD_DB", f"is a folder ({path})", "give a file path such as ./data/gemcord.db"
        )
    return path
