"""The per-channel settings `/settings` shows and changes: their choices and defaults.

A setting is one column of `channel_settings` (storage/migrations) and one `Option` here;
NULL in the store means the default below, and a thread inherits what it does not set.
Persona and model are free text with defaults from the bot's configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from storage import SETTING_NAMES, ChannelSettings


@dataclass(frozen=True)
class Option:
    """One per-channel setting: what it does, its choices (empty: free text) and default."""

    name: str
    description: str
    choices: tuple[str, ...] = ()
    default: str = ""


OPTIONS: Final[dict[str, Option]] = {
    option.name: option
    for option in (
        Option("persona", "How the bot behaves here (the system instruction)"),
        Option("model", "The Gemini model"),
        Option(
            "thinking",
            "How much the model thinks before answering",
            ("auto", "off", "low", "medium", "high"),
            "auto",
        ),
        Option("search", "Google Search grounding (uses search quota)", ("off", "on"), "off"),
        Option("links", "Read the links in questions", ("on", "off"), "on"),
        Option("code", "Let the model run code", ("off", "on"), "off"),
        Option(
            "scope",
            "Whose conversation the model sees: everyone's here, or only the asker's",
            ("channel", "user"),
            "channel",
        ),
        Option("auto_thread", "Answer a mention in a new thread", ("off", "on"), "off"),
        Option(
            "answer_mode",
            "When the bot answers: when mentioned, or every message here",
            ("mention", "all"),
            "mention",
        ),
    )
}
assert tuple(OPTIONS) == SETTING_NAMES, "bot/options.py and ChannelSettings disagree"


def effective(settings: ChannelSettings, name: str) -> str:
    """The value in force: the channel's own, else the option's default."""
    return getattr(settings, name) or OPTIONS[name].default


def is_on(settings: ChannelSettings, name: str) -> bool:
    """Whether an on/off setting is on in this channel."""
    return effective(settings, name) == "on"


def inherit(own: ChannelSettings, parent: ChannelSettings) -> ChannelSettings:
    """A thread's settings: its own where set, its parent channel's elsewhere."""
    unset = {name: getattr(parent, name) for name in SETTING_NAMES if getattr(own, name) is None}
    return dataclasses.replace(own, **unset)
