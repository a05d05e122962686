"""The web chat's settings panel: ``GET /settings?channel=N`` lists a channel's settings,
``POST /settings`` (JSON ``{channel, name, value}``) changes one through
:func:`bot.setting_change.change_setting`, the path Discord's ``/settings set`` takes, so the
values are checked and stored alike and the channel's next answer uses them.

Both answer ``{ok, message, settings: [{name, description, choices, value, own, default}]}``
(``value``: in force; ``own``: the channel's, null when the default applies; ``message``: what
changed, or why not, in Discord Markdown; on a load, a note or null).

Only the settings that mean something outside Discord are offered: persona, model (not with
the demo model, which has no models), thinking, search, links, code. Not ``scope`` (one person
asks in the web chat: its channel and user scopes are the same conversation), ``auto_thread``
(no threads) nor ``answer_mode`` (no mentions: every message is a question). The page's token,
when set, is needed as on the page; a change must come from the page itself (its Origin), as
the WebSocket must.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.answer import channel_settings
from bot.options import OPTIONS
from bot.setting_change import change_setting

if TYPE_CHECKING:
    from bot.web.chat import WebChat

log = logging.getLogger(__name__)

WEB_SETTINGS = ("persona", "model", "thinking", "search", "links", "code")
"""The settings the web chat offers (see the module doc for the others)."""
DEMO_NOTE = "The demo model ignores these: they apply when the chat talks to Gemini."


class WebSettings:
    """The ``/settings`` routes of one :class:`~bot.web.chat.WebChat`."""

    def __init__(self, chat: WebChat, *, models: bool) -> None:
        self.chat = chat
        self.names = WEB_SETTINGS if models else tuple(n for n in WEB_SETTINGS if n != "model")
        self.note = None if models else DEMO_NOTE

    def add_routes(self, app: web.Application) -> None:
        """Add ``GET`` and ``POST /settings`` to ``app``."""
        app.router.add_get("/settings", self.show)
        app.router.add_post("/settings", self.change)

    async def show(self, request: web.Request) -> web.Response:
        """The channel's settings, as the panel shows them."""
        if not self.chat.authorized(request):
            return _answer(401, "This chat needs its token.")
        try:
            channel = int(request.query.get("channel", ""))
        except ValueError:
            channel = 0
        if channel not in self.chat.channels:
            return _answer(400, "There is no such channel.")
        listed = await self._listed(channel)
        return web.json_response({"ok": True, "message": self.note, "settings": listed})

    async def change(self, request: web.Request) -> web.Response:
        """Check and store one setting of a channel; a refusal says why."""
        if not self.chat.same_origin(request):
            return _answer(403, "Settings can only be changed from the chat's own page.")
        if not self.chat.authorized(request):
            return _answer(401, "This chat needs its token.")
        try:
            asked = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, "That request is too large for a setting.")
        except ValueError:
            return _answer(400, "That request was not JSON.")
        if not isinstance(asked, dict):
            return _answer(400, "Send the channel, the setting's name and its value.")
        channel, name, value = asked.get("channel"), asked.get("name"), asked.get("value")
        if not isinstance(channel, int) or channel not in self.chat.channels:
            return _answer(400, "There is no such channel.")
        if name not in self.names:
            offered = ", ".join(f"`{n}`" for n in self.names)
            return _answer(
                400,
                f"The web chat can change {offered}.",
                await self._listed(channel),
            )
        if not isinstance(value, str):
            return _answer(400, f"A value for `{name}` is text.", await self._listed(channel))
        try:
            done = await change_setting(self.chat.engine, channel, None, name, value)
        except Exception:
            log.exception("web chat: changing %s failed", name)
            return _answer(500, f"`{name}` could not be changed just now; try again.")
        log.info("web chat: %s in channel %d: %s", name, channel, done.text)
        return _answer(200 if done.ok else 400, done.text, await self._listed(channel))

    async def _listed(self, channel: int) -> list[dict[str, Any]]:
        settings = await channel_settings(self.chat.engine.store, channel, None)
        listed = []
        for name in self.names:
            own = getattr(settings, name)
            option = OPTIONS[name]
            default = self.chat.engine.settings.gemini_model if name == "model" else option.default
            listed.append(
                {
                    "name": name,
                    "description": option.description,
                    "choices": list(option.choices),
                    "value": own or default,
                    "own": own,
                    "default": default,
                }
            )
        return listed


def _answer(
    status: int, message: str, settings: list[dict[str, Any]] | None = None
) -> web.Response:
    body: dict[str, Any] = {"ok": status == 200, "message": message}
    if settings is not None:
        body["settings"] = settings
    return web.json_response(body, status=status)
