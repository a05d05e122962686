"""A channel's history exported as Markdown or JSON (`Store.export_channel`), from fetched rows."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from storage.models import ChannelSettings

if TYPE_CHECKING:
    from storage.base import TurnRow


def _turn_json(row: TurnRow) -> dict[str, Any]:
    t = row.turn

    def snowflake(value: int | None) -> str | None:
        return None if value is None else str(value)

    return {
        "id": t.id,
        "role": t.role,
        "author_id": snowflake(t.author_id),
        "author_name": t.author_name,
        "text": t.text,
        "status": t.status,
        "created_at": _iso(t.created_at),
        "reply_to": t.reply_to,
        "message_ids": [str(m) for m in t.message_ids],
        "images": [
            {"sha256": sha, "mime_type": mime, "size": size} for sha, mime, size in row.image_refs
        ],
        "model": t.model,
        "prompt_tokens": t.prompt_tokens,
        "output_tokens": t.output_tokens,
        "guild_id": snowflake(t.guild_id),
        "thread_id": snowflake(t.thread_id),
        "archived": row.archived,
        "archived_at": _iso(row.archived_at),
        "withdrawn": t.withdrawn,
        "replaced": t.hidden == "replaced",
    }


def export_json(channel_id: int, rows: list[TurnRow], settings: ChannelSettings) -> str:
    """The turns as a JSON document (snowflakes as strings, files without their bytes)."""
    doc = {
        "format": "gemcord-history",
        "version": 1,
        "channel_id": str(channel_id),
        "exported_at": _iso(time.time()),
        "settings": {"persona": settings.persona, "model": settings.model},
        "turns": [_turn_json(r) for r in rows],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


def export_markdown(channel_id: int, rows: list[TurnRow], settings: ChannelSettings) -> str:
    """The turns as a Markdown document, archived ones under their own heading."""
    archived = sum(r.archived for r in rows)
    out = [
        f"# Conversation history — channel {channel_id}",
        "",
        f"Exported {_iso(time.time())} · {len(rows)} turn(s)"
        + (f", {archived} archived by a reset" if archived else ""),
    ]
    if settings.model:
        out.append(f"Model: `{settings.model}`")
    if settings.persona:
        out += ["", "Persona:", "", *(f"> {line}" for line in settings.persona.splitlines())]
    section: bool | None = None
    for row in rows:
        if row.archived != section:
            section = row.archived
            out += ["", "## Archived (before a reset)" if section else "## Current", ""]
        t = row.turn
        who = t.author_name or (t.model if t.role == "model" else None) or t.role
        label = "model" if t.role == "model" else "user"
        head = f"### {who} ({label}) · {_iso(t.created_at)} · turn {t.id}"
        if t.status != "complete":
            head += f" · {t.status}"
        if t.withdrawn == "deleted":
            head += " · deleted on Discord"
        if t.hidden == "replaced":
            head += " · replaced by a regenerated answer"
        out += [head, ""]
        out.append(t.text.replace("\x00", "\ufffd") if t.text else "*(no text)*")
        for sha, mime, size in row.image_refs:
            kind = "image" if mime.startswith("image/") else "file"
            out.append(f"- {kind} `{sha[:16]}` ({mime}, {size:,} bytes)")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
