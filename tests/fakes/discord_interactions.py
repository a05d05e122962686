"""Interactions for the fake Discord: slash commands in, callbacks, webhooks and command sync out.

:class:`InteractionRoutes` holds the HTTP handlers of ``/interactions/…``, ``/webhooks/…`` and
``/applications/…/commands``, and builds the INTERACTION_CREATE a test injects with
``FakeDiscord.slash_command``. State (interactions, commands) stays on the :class:`FakeDiscord`.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord_models import (
    AttachmentSpec,
    Call,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMessage,
    FakeRole,
    FakeUser,
    Upload,
    snowflake,
)
from tests.fakes.discord_rules import (
    ALREADY_ACKNOWLEDGED,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INVALID_WEBHOOK_TOKEN,
    TYPE_CHAT_INPUT_COMMAND,
    UNKNOWN_COMMAND,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    ApiError,
    api_error,
    as_id,
    check_command_usable,
    form_error,
    invalid_form,
    opt_int,
    validate_choices,
    validate_command,
    validate_message_body,
    validate_modal,
)

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

__all__ = ["InteractionRoutes"]


class InteractionRoutes:
    """The interaction and application-command side of a :class:`FakeDiscord`."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    async def slash_command(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        permissions: int | None = None,
        locale: str = "en-US",
        focused: str | None = None,
    ) -> FakeInteraction:
        """A user runs a registered slash command: INTERACTION_CREATE (type 2).

        ``name`` may include subcommands (``"config set"``). Option values are converted by
        the registered option type: strings/numbers/booleans as given, a :class:`FakeUser`,
        :class:`FakeRole` or :class:`FakeChannel` (or an id) for those types, and an
        :class:`AttachmentSpec` for attachment options (stored and served like any upload).
        ``permissions`` overrides the member's computed channel permissions.

        With ``focused`` (an option with autocomplete), the user is still typing that option:
        an autocomplete interaction (type 4) whose focused option carries ``"focused": true``
        and the text typed so far (always a string); required options may be missing.
        """
        chan = self.fake._channel(channel)
        author = self.fake._user(user)
        guild = self.fake._guild_of(chan)
        self.fake._check_participant(chan, guild, author)
        parts = name.split()
        command = self._find_command(parts[0], guild)
        if command is None:
            raise LookupError(
                f"/{parts[0]} is not registered "
                f"({'in guild ' + str(guild.id) + ' or ' if guild else ''}globally)"
            )
        user_perms = chan.permissions_for(guild, author.id) if permissions is None else permissions
        check_command_usable(command, guild, int(user_perms), name)
        defs: list[dict[str, Any]] = command.get("options") or []
        path: list[dict[str, Any]] = []
        for sub in parts[1:]:
            match = next((o for o in defs if o["name"] == sub and o["type"] in (1, 2)), None)
            if match is None:
                raise LookupError(f"/{name}: no subcommand {sub!r}")
            path.append({"type": match["type"], "name": sub, "options": []})
            defs = match.get("options") or []
        resolved: dict[str, dict[str, Any]] = {}
        values = dict(options or {})
        typed = str(values.pop(focused, "")) if focused is not None else ""
        built = self._build_options(
            chan, guild, defs, values, resolved, name, partial=focused is not None
        )
        if focused is not None:
            match = next((d for d in defs if d["name"] == focused), None)
            if match is None or not match.get("autocomplete"):
                raise ValueError(f"/{name}: option {focused!r} has no autocomplete")
            built.append({"name": focused, "type": match["type"], "value": typed, "focused": True})
        if path:
            path[-1]["options"] = built
            for outer, inner in itertools.pairwise(path):
                outer["options"] = [inner]
            top_options = [path[0]]
        else:
            top_options = built
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": command.get("type", 1),
            "options": top_options,
        }
        if resolved:
            data["resolved"] = resolved
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        kind = 4 if focused is not None else 2
        return await self._inject(chan, guild, author, name, kind, data, int(user_perms), locale)

    async def click(
        self, message: FakeMessage, user: FakeUser | int, custom_id: str
    ) -> FakeInteraction:
        """A user clicks a button of a message: INTERACTION_CREATE (type 3, component type 2).

        Like Discord's client, only a button the message shows now can be clicked (LookupError
        otherwise); the interaction carries the message as it is.
        """
        chan = self.fake._channel(message.channel_id)
        author = self.fake._user(user)
        guild = self.fake._guild_of(chan)
        self.fake._check_participant(chan, guild, author)
        buttons = [
            c
            for row in message.components
            for c in row.get("components") or []
            if c.get("type") == 2 and not c.get("disabled")
        ]
        if not any(b.get("custom_id") == custom_id for b in buttons):
            raise LookupError(f"message {message.id} shows no button {custom_id!r}")
        data = {"custom_id": custom_id, "component_type": 2}
        perms = chan.permissions_for(guild, author.id)
        inter = await self._inject(
            chan, guild, author, custom_id, 3, data, perms, "en-US", message=message
        )
        return inter

    async def message_command(
        self,
        channel: FakeChannel | int,
        user: FakeUser | int,
        name: str,
        target: FakeMessage | int,
        *,
        permissions: int | None = None,
    ) -> FakeInteraction:
        """A user runs a registered message command (Apps menu of a message): an
        INTERACTION_CREATE of type 2 whose data has ``type`` 3, ``target_id`` and the message
        in ``resolved.messages``, as Discord sends it."""
        chan = self.fake._channel(channel)
        author = self.fake._user(user)
        guild = self.fake._guild_of(chan)
        self.fake._check_participant(chan, guild, author)
        message = self.fake.message(target)
        if message.channel_id != chan.id or message.deleted:
            raise ValueError(f"message {message.id} is not in channel {chan.id}")
        command = self._find_command(name, guild, kind=3)
        if command is None:
            raise LookupError(f"message command {name!r} is not registered")
        user_perms = chan.permissions_for(guild, author.id) if permissions is None else permissions
        check_command_usable(command, guild, int(user_perms), name)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): self.fake.message_payload(message)}},
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._inject(chan, guild, author, name, 2, data, int(user_perms), "en-US")

    async def submit_modal(
        self, opened_by: FakeInteraction, values: Mapping[str, str]
    ) -> FakeInteraction:
        """The user fills in and submits the modal the bot opened in answer to `opened_by`:
        an INTERACTION_CREATE of type 5 (a new interaction and token) with the modal's
        ``custom_id`` and its components as Discord sends them back (each text input with its
        ``value``; labels and action rows kept). ``values`` by the inputs' custom ids; a
        required input left out raises ValueError."""
        modal = opened_by.modal
        if modal is None:
            raise LookupError("the bot did not answer that interaction with a modal")
        chan = self.fake._channel(opened_by.channel_id)
        author = self.fake._user(opened_by.user_id)
        guild = self.fake._guild_of(chan)
        left = dict(values)

        def filled(component: dict[str, Any]) -> dict[str, Any]:
            kind = component["type"]
            if kind == 1:
                return {
                    "type": 1,
                    "id": component.get("id", 0),
                    "components": [filled(c) for c in component["components"]],
                }
            if kind == 18:
                return {
                    "type": 18,
                    "id": component.get("id", 0),
                    "component": filled(component["component"]),
                }
            if kind != 4:
                raise ValueError(f"the fake cannot fill a component of type {kind}")
            custom_id = component["custom_id"]
            value = left.pop(custom_id, component.get("value") or "")
            if component.get("required", True) and not value:
                raise ValueError(f"the modal's input {custom_id!r} is required")
            low, high = component.get("min_length") or 0, component.get("max_length") or 4000
            if value and not low <= len(value) <= high:
                raise ValueError(f"{custom_id!r} takes {low} to {high} characters")
            return {"type": 4, "id": component.get("id", 0), "custom_id": custom_id, "value": value}

        components = [filled(c) for c in modal["components"]]
        if left:
            raise ValueError(f"the modal has no inputs {sorted(left)}")
        user_perms = chan.permissions_for(guild, author.id)
        data = {"custom_id": modal["custom_id"], "components": components}
        label = f"modal {modal['custom_id']}"
        return await self._inject(chan, guild, author, label, 5, data, int(user_perms), "en-US")

    async def _inject(
        self,
        chan: FakeChannel,
        guild: FakeGuild | None,
        author: FakeUser,
        name: str,
        kind: int,
        data: dict[str, Any],
        user_perms: int,
        locale: str,
        *,
        message: FakeMessage | None = None,
    ) -> FakeInteraction:
        """Dispatch an INTERACTION_CREATE of ``kind`` and remember it for its callbacks."""
        inter_id = snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload: dict[str, Any] = {
            "id": str(inter_id),
            "application_id": str(self.fake.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(chan.id),
            "channel": {**chan.payload(self.fake.users), "permissions": str(user_perms)},
            "app_permissions": str(chan.permissions_for(guild, self.fake.bot_user.id)),
            "locale": locale,
            "entitlements": [],
            "attachment_size_limit": self.fake.attachment_size_limit,
        }
        if message is not None:
            payload["message"] = self.fake.message_payload(message)
        if guild is not None:
            member = guild.members[author.id]
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = {**member.payload(author), "permissions": str(user_perms)}
            payload["context"] = 0
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
        else:
            payload["user"] = author.payload()
            payload["context"] = 1
            payload["authorizing_integration_owners"] = {"0": "0"}
        inter = FakeInteraction(
            id=inter_id,
            token=token,
            name=name,
            channel_id=chan.id,
            guild_id=chan.guild_id,
            user_id=author.id,
            payload=payload,
            t_created=time.monotonic(),
            message_id=None if message is None else message.id,
            kind=kind,
            _fake=self.fake,
        )
        self.fake.interactions[inter_id] = inter
        self.fake._interactions_by_token[token] = inter
        await self.fake._dispatch(
            "INTERACTION_CREATE", payload, chan.guild_id, require_connection=True
        )
        return inter

    def _interaction_error(
        self, inter: FakeInteraction | None, call: Call, spec: tuple
    ) -> ApiError:
        if inter is not None:
            inter.errors.append((spec[0], spec[1], call.path))
        return api_error(spec)

    async def callback(self, request: web.Request, call: Call) -> Any:
        """POST /interactions/{id}/{token}/callback (4, 5; 6, 7 after a click; 8-12 recorded)."""
        inter = self.fake.interactions.get(opt_int(request.match_info["interaction_id"]) or 0)
        if inter is not None:
            call.channel_id = inter.channel_id
        if inter is None or not secrets.compare_digest(inter.token, request.match_info["token"]):
            raise self._interaction_error(inter, call, UNKNOWN_INTERACTION)
        if inter.acknowledged:
            raise self._interaction_error(inter, call, ALREADY_ACKNOWLEDGED)
        if call.t_start - inter.t_created > self.fake.interaction_deadline:
            raise self._interaction_error(inter, call, UNKNOWN_INTERACTION)
        body = call.json if isinstance(call.json, dict) else {}
        uploads: list[Upload] = call.uploads
        cb_type = body.get("type")
        data = body.get("data") or {}
        chan = self.fake.channels[inter.channel_id]
        msg: FakeMessage | None = None
        if inter.kind == 4 and cb_type != 8:
            inter.errors.append((400, 50035, call.path))
            raise invalid_form({"type": form_error("BASE_TYPE_CHOICES", "Autocomplete only.")})
        if cb_type == 4:
            validate_message_body(data, uploads=uploads, prefix=("data",))
            msg = self.fake._make_message(
                chan, data, uploads, msg_type=TYPE_CHAT_INPUT_COMMAND, interaction=inter
            )
        elif cb_type == 5:
            flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
            msg = self.fake._make_message(
                chan,
                {"content": "", "allowed_mentions": {"parse": []}},
                (),
                msg_type=TYPE_CHAT_INPUT_COMMAND,
                flags=flags,
                interaction=inter,
            )
            msg.revisions[0].payload = dict(body)
            msg.revisions[0].allowed_mentions = None
            msg.revisions[0].placeholder = True
        elif cb_type in (6, 7) and inter.message_id is not None:
            if cb_type == 7:  # UPDATE_MESSAGE: the clicked message is edited in place
                clicked = self.fake.message(inter.message_id)
                validate_message_body(
                    data, uploads=uploads, prefix=("data",), partial=True, existing=clicked
                )
                self.fake._apply_edit(clicked, data, uploads)
                await self.fake._dispatch_message(
                    "MESSAGE_UPDATE", clicked, require_connection=False
                )
        elif cb_type == 8 and inter.kind == 4:
            validate_choices(data)
        elif cb_type == 9 and inter.kind in (2, 3):
            validate_modal(data)
        elif cb_type in (10, 12) and inter.kind != 4:
            pass  # premium required, launch activity: no message
        else:
            inter.errors.append((400, 50035, call.path))
            raise invalid_form(
                {"type": form_error("BASE_TYPE_CHOICES", f"Value {cb_type!r} is not valid here.")}
            )
        inter.callback_type = int(cb_type)
        inter.callback = dict(body)
        inter.t_callback = call.t_start
        if msg is not None:
            inter.original_id = msg.id
            inter.deferred_first_followup_pending = cb_type == 5
            self.fake._add_message(msg)
            if not msg.ephemeral:
                await self.fake._dispatch_message("MESSAGE_CREATE", msg, require_connection=False)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return None
        result: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.kind,
                "response_message_loading": cb_type == 5,
                "response_message_ephemeral": bool(msg is not None and msg.ephemeral),
            }
        }
        if msg is not None:
            result["interaction"]["response_message_id"] = str(msg.id)
            result["resource"] = {"type": cb_type, "message": self.fake.message_payload(msg)}
        return result

    def _webhook_interaction(self, request: web.Request, call: Call) -> FakeInteraction:
        if opt_int(request.match_info["app_id"]) != self.fake.application_id:
            raise api_error(UNKNOWN_WEBHOOK)
        inter = self.fake._interactions_by_token.get(request.match_info["token"])
        if inter is None:
            raise api_error(UNKNOWN_WEBHOOK)
        call.channel_id = inter.channel_id
        if call.t_start - inter.t_created > self.fake.interaction_token_lifetime:
            raise self._interaction_error(inter, call, INVALID_WEBHOOK_TOKEN)
        return inter

    def _webhook_message(
        self, request: web.Request, inter: FakeInteraction, call: Call
    ) -> FakeMessage:
        raw = request.match_info.get("message_id")
        if raw is None:  # @original
            mid = inter.original_id
        else:
            mid = opt_int(raw)
            if mid not in (inter.original_id, *inter.followup_ids):
                mid = None
        msg = self.fake._messages.get(mid) if mid is not None else None
        if msg is None or msg.deleted:
            raise self._interaction_error(inter, call, UNKNOWN_MESSAGE)
        return msg

    async def webhook_get(self, request: web.Request, call: Call) -> Any:
        """GET the original response or a follow-up."""
        inter = self._webhook_interaction(request, call)
        return self.fake.message_payload(self._webhook_message(request, inter, call))

    async def webhook_edit(self, request: web.Request, call: Call) -> Any:
        """PATCH the original response (a deferral included) or a follow-up."""
        inter = self._webhook_interaction(request, call)
        msg = self._webhook_message(request, inter, call)
        body = call.json if isinstance(call.json, dict) else {}
        uploads: list[Upload] = call.uploads
        try:
            validate_message_body(body, uploads=uploads, partial=True, existing=msg)
        except ApiError as exc:
            inter.errors.append((exc.status, exc.code, call.path))
            raise
        if msg.id == inter.original_id:
            inter.deferred_first_followup_pending = False
        self.fake._apply_edit(msg, body, uploads)
        if not msg.ephemeral:
            await self.fake._dispatch_message("MESSAGE_UPDATE", msg, require_connection=False)
        return self.fake.message_payload(msg)

    async def webhook_delete(self, request: web.Request, call: Call) -> Any:
        """DELETE the original response or a follow-up."""
        inter = self._webhook_interaction(request, call)
        msg = self._webhook_message(request, inter, call)
        await self.fake._delete(msg, require_connection=False)
        return None

    async def followup(self, request: web.Request, call: Call) -> Any:
        """POST a follow-up; the first one after a deferral fills the "thinking…" message."""
        inter = self._webhook_interaction(request, call)
        if not inter.acknowledged:
            raise self._interaction_error(inter, call, UNKNOWN_WEBHOOK)
        body = call.json if isinstance(call.json, dict) else {}
        uploads: list[Upload] = call.uploads
        try:
            validate_message_body(body, uploads=uploads)
        except ApiError as exc:
            inter.errors.append((exc.status, exc.code, call.path))
            raise
        chan = self.fake.channels[inter.channel_id]
        original = self.fake.message(inter.original_id) if inter.original_id else None
        if inter.deferred_first_followup_pending and original is not None and not original.deleted:
            # Discord: the first follow-up after a deferral fills the "thinking…" message.
            inter.deferred_first_followup_pending = False
            self.fake._apply_edit(original, body, uploads)
            msg = original
            event = "MESSAGE_UPDATE"
        else:
            msg = self.fake._make_message(chan, body, uploads, interaction=inter)
            self.fake._add_message(msg)
            inter.followup_ids.append(msg.id)
            event = "MESSAGE_CREATE"
        if not msg.ephemeral:
            await self.fake._dispatch_message(event, msg, require_connection=False)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return None
        return self.fake.message_payload(msg)

    def _command_scope(self, request: web.Request) -> tuple[int | None, list[dict[str, Any]]]:
        if opt_int(request.match_info["app_id"]) != self.fake.application_id:
            raise ApiError(
                403, 20012, "You are not authorized to perform this action on this application"
            )
        if "guild_id" not in request.match_info:
            return None, self.fake.global_commands
        guild = self.fake._req_guild(request)
        return guild.id, self.fake.guild_commands.setdefault(guild.id, [])

    def _store_command(
        self, cmd: dict[str, Any], guild_id: int | None, existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        ctype = int(cmd.get("type") or 1)
        old = next((c for c in existing if c["name"] == cmd["name"] and c["type"] == ctype), None)
        stored = {
            "id": old["id"] if old else str(snowflake()),
            "application_id": str(self.fake.application_id),
            "version": str(snowflake()),
            "type": ctype,
            "name": cmd["name"],
            "description": cmd.get("description") or "",
            "options": cmd.get("options") or [],
            "default_member_permissions": cmd.get("default_member_permissions"),
            "dm_permission": cmd.get("dm_permission", True),
            "nsfw": bool(cmd.get("nsfw", False)),
            "contexts": cmd.get("contexts"),
            "integration_types": cmd.get("integration_types") or [0],
            "name_localizations": cmd.get("name_localizations"),
            "description_localizations": cmd.get("description_localizations"),
        }
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    async def commands_get(self, request: web.Request, call: Call) -> Any:
        """GET the registered commands."""
        return self._command_scope(request)[1]

    async def commands_put(self, request: web.Request, call: Call) -> Any:
        """PUT: bulk-overwrite the commands (ids kept for unchanged names)."""
        guild_id, existing = self._command_scope(request)
        body = call.json
        if not isinstance(body, list):
            raise invalid_form(form_error("LIST_TYPE_CONVERT", "Only iterables may be used."))
        errors = {}
        for i, cmd in enumerate(body):
            try:
                validate_command(cmd)
            except ApiError as exc:
                errors[str(i)] = exc.errors
        if errors:
            raise invalid_form(errors)
        names = [(c["name"], int(c.get("type") or 1)) for c in body]
        if len(set(names)) != len(names):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "_errors": [
                        {
                            "code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                            "message": "Application command names must be unique",
                        }
                    ]
                },
            )
        stored = [self._store_command(c, guild_id, existing) for c in body]
        existing[:] = stored
        self.fake.command_syncs.append((time.monotonic(), guild_id, [c["name"] for c in stored]))
        return stored

    async def command_create(self, request: web.Request, call: Call) -> Any:
        """POST: create or replace one command."""
        guild_id, existing = self._command_scope(request)
        cmd = validate_command(call.json)
        stored = self._store_command(cmd, guild_id, existing)
        existing[:] = [c for c in existing if c["id"] != stored["id"]] + [stored]
        return (200, stored)

    def _find_stored(self, request: web.Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        _, existing = self._command_scope(request)
        cid = request.match_info["command_id"]
        for cmd in existing:
            if cmd["id"] == cid:
                return existing, cmd
        raise api_error(UNKNOWN_COMMAND)

    async def command_get(self, request: web.Request, call: Call) -> Any:
        """GET one command."""
        return self._find_stored(request)[1]

    async def command_edit(self, request: web.Request, call: Call) -> Any:
        """PATCH one command."""
        _, cmd = self._find_stored(request)
        body = call.json if isinstance(call.json, dict) else {}
        merged = {**cmd, **body}
        validate_command(merged)
        cmd.update({k: v for k, v in body.items() if k in cmd})
        cmd["version"] = str(snowflake())
        return cmd

    async def command_delete(self, request: web.Request, call: Call) -> Any:
        """DELETE one command."""
        existing, cmd = self._find_stored(request)
        existing.remove(cmd)
        return None

    def _find_command(
        self, name: str, guild: FakeGuild | None, kind: int = 1
    ) -> dict[str, Any] | None:
        if guild is not None:
            for cmd in self.fake.guild_commands.get(guild.id, []):
                if cmd["name"] == name and cmd["type"] == kind:
                    return cmd
        for cmd in self.fake.global_commands:
            if cmd["name"] == name and cmd["type"] == kind:
                return cmd
        return None

    def _build_options(
        self,
        chan: FakeChannel,
        guild: FakeGuild | None,
        defs: list[dict[str, Any]],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        command: str,
        *,
        partial: bool = False,
    ) -> list[dict[str, Any]]:
        by_name = {d["name"]: d for d in defs}
        for d in defs:
            if d.get("required") and d["name"] not in values and not partial:
                raise ValueError(f"/{command}: required option {d['name']!r} missing")
        out = []
        for key, value in values.items():
            d = by_name.get(key)
            if d is None:
                raise ValueError(f"/{command} has no option {key!r} (has {sorted(by_name)})")
            otype = int(d["type"])
            if otype == 3:
                val: Any = str(value)
            elif otype == 4:
                val = int(value)
            elif otype == 5:
                val = bool(value)
            elif otype == 10:
                val = float(value)
            elif otype in (6, 9) and not isinstance(value, FakeRole):
                user = self.fake._user(value)
                val = str(user.id)
                resolved.setdefault("users", {})[val] = user.payload()
                if guild is not None and user.id in guild.members:
                    member = guild.members[user.id].payload()
                    member["permissions"] = str(chan.permissions_for(guild, user.id))
                    resolved.setdefault("members", {})[val] = member
            elif otype in (8, 9):
                role = value if isinstance(value, FakeRole) else guild.roles[as_id(value)]  # type: ignore[union-attr]
                val = str(role.id)
                resolved.setdefault("roles", {})[val] = role.payload()
            elif otype == 7:
                target = self.fake._channel(value)
                val = str(target.id)
                resolved.setdefault("channels", {})[val] = {
                    **target.payload(self.fake.users),
                    "permissions": str(target.permissions_for(guild, self.fake.bot_user.id)),
                }
            elif otype == 11:
                if not isinstance(value, AttachmentSpec):
                    raise TypeError(f"option {key!r} needs fake.attachment(...), got {value!r}")
                stored = self.fake._store_attachment(chan.id, value)
                val = str(stored.id)
                resolved.setdefault("attachments", {})[val] = {**stored.payload, "ephemeral": True}
            else:
                raise ValueError(f"option {key!r} has type {otype}, which takes no value")
            out.append({"name": key, "type": otype, "value": val})
        return out
