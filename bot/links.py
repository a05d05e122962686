"""Links in a question: which ones Gemini's URL context tool may read, Discord message links
(quoted as context instead, see bot/quoting.py), and the line naming links Gemini could not open.

Discord's own file links (cdn.discordapp.com, media.discordapp.net) are signed and expire,
and files go to Gemini as parts: they are never handed to the URL tool, and in the text sent
to Gemini they become a short placeholder naming the file.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MAX_LINKS = 20
"""Gemini's URL context tool reads at most this many links a request."""

_URL = re.compile(r"https?://[^\s<>\"'`|]+", re.IGNORECASE)
_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net", "cdn.discordapp.net")
MESSAGE_LINK = re.compile(
    r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(\d+|@me)/(\d+)/(\d+)",
    re.IGNORECASE,
)
OK_STATUSES = frozenset(
    {"URL_RETRIEVAL_STATUS_SUCCESS", "URL_RETRIEVAL_STATUS_UNSPECIFIED", "UNSPECIFIED"}
)
"""Statuses that do not mean a failure (an unspecified one says nothing either way)."""
FAILED_LIMIT = 5


def _trim(url: str) -> str:
    """A URL without the punctuation that ends the sentence around it."""
    url = url.rstrip(".,;:!?")
    while url.endswith(")") and url.count("(") < url.count(")"):
        url = url[:-1].rstrip(".,;:!?")
    return url


def urls(text: str) -> list[str]:
    """Every http(s) URL in ``text``, in order, once each (a ``<url>`` counts too)."""
    return list(dict.fromkeys(_trim(m[0]) for m in _URL.finditer(text)))


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def is_discord_file(url: str) -> bool:
    """Whether the URL is a Discord attachment or media-proxy link."""
    host = _host(url)
    return host in _CDN_HOSTS or host.endswith(".discordapp.net")


def readable_links(text: str) -> list[str]:
    """The links the URL context tool may read: not Discord files or messages, at most 20."""
    found = [u for u in urls(text) if not is_discord_file(u) and not MESSAGE_LINK.match(u)]
    return found[:MAX_LINKS]


def without_discord_files(text: str) -> str:
    """``text`` with each Discord file link replaced by ``[Discord file: name]``."""

    def placeholder(match: re.Match[str]) -> str:
        url = _trim(match[0])
        if not is_discord_file(url):
            return match[0]
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        return f"[Discord file: {name or 'file'}]" + match[0][len(url) :]

    return _URL.sub(placeholder, text)


def failed_line(statuses: Iterable[tuple[str, str]]) -> str | None:
    """One line naming the links Gemini could not open (None when it opened them all)."""
    failed = list(
        dict.fromkeys(url for url, status in statuses if status not in OK_STATUSES and url)
    )
    if not failed:
        return None
    shown = ", ".join(f"<{url}>" for url in failed[:FAILED_LIMIT])
    more = f" and {len(failed) - FAILED_LIMIT} more" if len(failed) > FAILED_LIMIT else ""
    return f"-# ⚠ Couldn't open {shown}{more}"
