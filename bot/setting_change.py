"""Changing one per-channel setting: the one path `/settings set`, `/persona` and `/model` share.

Checks the value (a choice of the option, a model Gemini lists, a persona that fits), stores
it, and says what changed. "default" (or an empty value) clears the setting: the bot's default
then applies, and in a thread its parent channel's value.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from bot.answer import Engine, channel_settings
from bot.llm import LLMError, ModelCheck
from bot.options import OPTIONS, effective

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,63}$")
MODEL_CHECK_WAIT = 2.0
"""Seconds a change waits for Gemini's model list when it is not cached yet (well inside the
3 s an interaction has to be answered)."""
PERSONA_LIMIT = 2000
CHOICES_SHOWN = 25
"""Discord shows at most 25 autocomplete choices."""


@dataclass(frozen=True)
class Change:
    """The result: `ok` (stored, said to everyone) or a refusal (said only to the caller)."""

    ok: bool
    text: str


def model_refusal(check: ModelCheck) -> str:
    """Why a model name was refused, with a few models that would work."""
    if check.status == "unsupported":
        first = f"`{check.name}` can't chat (it doesn't support text generation)."
    else:
        first = f"Gemini has no model called `{check.name}`."
    offer = ", ".join(f"`{n}`" for n in check.suggestions[:4])
    return f"{first} Try {offer}." if offer else first


async def change_setting(
    bot: Engine, channel_id: int, parent_id: int | None, name: str, value: str
) -> Change:
    """Check `value` for setting `name` and store it for the channel (see the module doc);
    `parent_id`: a thread's parent channel, whose values it inherits."""
    option = OPTIONS[name]
    raw = value.strip()
    if raw.lower() == "default" or not raw:
        await bot.store.set_setting(channel_id, name, None)
        if name == "persona":
            return Change(True, "This channel is back to the default persona.")
        if name == "model":
            default = bot.settings.gemini_model
            return Change(True, f"This channel is back to the default model, `{default}`.")
        return Change(True, await _now(bot, channel_id, parent_id, name))
    note = ""
    if name == "persona":
        if len(raw) > PERSONA_LIMIT:
            return Change(False, f"A persona can be at most {PERSONA_LIMIT} characters.")
        stored = raw
    elif name == "model":
        stored = raw.lower().removeprefix("models/")
        if not MODEL_NAME.match(stored):
            return Change(False, "That is not a model name (e.g. `gemini-2.5-flash`).")
        check = await bot.llm.check_model(stored, wait=MODEL_CHECK_WAIT)
        if check.refused:
            return Change(False, model_refusal(check))
        if check.status == "unchecked":
            note = " (I couldn't check it against Gemini's model list just now.)"
    else:
        stored = raw.lower()
        if stored not in option.choices:
            shown = ", ".join(f"`{c}`" for c in option.choices)
            return Change(False, f"`{name}` can be {shown} or `default`.")
    await bot.store.set_setting(channel_id, name, stored)
    if name == "persona":
        return Change(True, "Persona updated for this channel.")
    if name == "model":
        return Change(True, f"This channel now uses `{stored}`.{note}")
    return Change(True, await _now(bot, channel_id, parent_id, name))


async def _now(bot: Engine, channel_id: int, parent_id: int | None, name: str) -> str:
    settings = await channel_settings(bot.store, channel_id, parent_id)
    return f"`{name}` is now `{effective(settings, name)}` in this channel."


async def suggestions(bot: Engine, name: str, typed: str) -> list[str]:
    """Values to offer while someone types a value for setting `name`: the option's choices,
    or for `model` the chat models the key can use (the cached list; none when Gemini does
    not answer in time); "default" last."""
    typed = typed.strip().lower()
    if name == "model":
        try:
            models = await asyncio.wait_for(bot.llm.cached_models(), MODEL_CHECK_WAIT)
        except (LLMError, TimeoutError):
            models = []
        names = [m.name for m in models if m.supports_generate]
    elif name == "persona":
        names = []
    else:
        names = list(OPTIONS[name].choices)
    found = [n for n in names if typed in n.lower()][: CHOICES_SHOWN - 1]
    return [*found, "default"] if typed in "default" else found
