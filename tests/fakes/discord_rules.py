"""Discord's rules as the fake enforces them: error bodies, limits, payload validation."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from tests.fakes.discord_models import (
    AllowedMentionsError,
    FakeGuild,
    FakeMessage,
    Perm,
    Upload,
    validate_allowed_mentions,
)

__all__ = [
    "ApiError",
    "api_error",
    "as_id",
    "check_command_usable",
    "form_error",
    "invalid_form",
    "nest",
    "opt_int",
    "parse_emoji",
    "validate_choices",
    "validate_command",
    "validate_message_body",
    "validate_modal",
    "validate_options",
]

MAX_CONTENT = 2000
MAX_EMBED_DESCRIPTION = 4096
MAX_EMBED_TOTAL = 6000
MAX_REACTIONS = 20
DEFAULT_ROUTE_LIMIT = (50, 1.0)

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12

# Message types.
TYPE_DEFAULT = 0
TYPE_REPLY = 19
TYPE_CHAT_INPUT_COMMAND = 20

_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
_MENU_NAME = re.compile(r"^[-_' \w]{1,32}$")
_CUSTOM_EMOJI = re.compile(r"^<?(a)?:?([\w~]{1,32}):(\d{1,20})>?$")


class ApiError(Exception):
    """An error answered the way Discord does: ``{"message", "code"[, "errors"]}``."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            data["errors"] = self.errors
        return data


def form_error(code: str, message: str) -> dict[str, Any]:
    """One leaf of a 50035 ``errors`` tree."""
    return {"_errors": [{"code": code, "message": message}]}


def invalid_form(errors: dict[str, Any]) -> ApiError:
    """Discord's 400 "Invalid Form Body" (code 50035) with its ``errors`` tree."""
    return ApiError(400, 50035, "Invalid Form Body", errors)


def nest(prefix: Sequence[str], errors: dict[str, Any]) -> dict[str, Any]:
    """Put an ``errors`` tree under the keys of ``prefix`` (e.g. ``("data",)``)."""
    for key in reversed(prefix):
        errors = {key: errors}
    return errors


UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
UNKNOWN_GUILD = (404, 10004, "Unknown Guild")
UNKNOWN_MEMBER = (404, 10007, "Unknown Member")
UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_USER = (404, 10013, "Unknown User")
UNKNOWN_EMOJI = (400, 10014, "Unknown Emoji")
UNKNOWN_WEBHOOK = (404, 10015, "Unknown Webhook")
UNKNOWN_COMMAND = (404, 10063, "Unknown application command")
UNKNOWN_INTERACTION = (404, 10062, "Unknown interaction")
MISSING_ACCESS = (403, 50001, "Missing Access")
CANNOT_EDIT_OTHERS = (403, 50005, "Cannot edit a message authored by another user")
EMPTY_MESSAGE = (400, 50006, "Cannot send an empty message")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")
INVALID_WEBHOOK_TOKEN = (401, 50027, "Invalid Webhook Token")
ALREADY_ACKNOWLEDGED = (400, 40060, "Interaction has already been acknowledged.")
MAX_REACTIONS_REACHED = (400, 30010, "Maximum number of reactions reached (20)")
DM_ACTION = (403, 50003, "Cannot execute action on a DM channel")
NON_TEXT_CHANNEL = (400, 50008, "Cannot send messages in a non-text channel")
THREAD_ARCHIVED = (400, 50083, "Thread is archived")
THREAD_ALREADY_CREATED = (400, 160004, "A thread has already been created for this message")
UNAUTHORIZED = (401, 0, "401: Unauthorized")
NOT_FOUND = (404, 0, "404: Not Found")


def api_error(spec: tuple[int, int, str]) -> ApiError:
    """An :class:`ApiError` from one of the ``(status, code, message)`` constants."""
    return ApiError(*spec)


def as_id(value: Any) -> int:
    """An id from an object with ``.id``, a dict with ``"id"``, or an int/str."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value)
    if isinstance(value, Mapping):
        return int(value["id"])
    return int(value.id)


def opt_int(value: Any) -> int | None:
    """``int(value)``, or None when it is missing or not a number."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def validate_message_body(
    body: Mapping[str, Any],
    *,
    uploads: Sequence[Upload] = (),
    prefix: Sequence[str] = (),
    partial: bool = False,
    existing: FakeMessage | None = None,
) -> None:
    """400 like Discord for too long content/embeds, bad allowed_mentions, empty message."""
    errors: dict[str, Any] = {}
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        errors["content"] = form_error("BASE_TYPE_STRING", "Must be a string.")
    elif isinstance(content, str) and len(content) > MAX_CONTENT:
        errors["content"] = form_error(
            "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        errors["embeds"] = form_error("BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds[:10]):
        desc = embed.get("description") or ""
        title = embed.get("title") or ""
        total += len(desc) + len(title)
        if len(desc) > MAX_EMBED_DESCRIPTION:
            errors.setdefault("embeds", {}).setdefault(str(i), {})["description"] = form_error(
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_EMBED_DESCRIPTION} or fewer in length.",
            )
        if len(title) > 256:
            errors.setdefault("embeds", {}).setdefault(str(i), {})["title"] = form_error(
                "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length."
            )
    if total > MAX_EMBED_TOTAL and "embeds" not in errors:
        errors["embeds"] = form_error(
            "MESSAGE_EMBED_TOTAL_LENGTH", "Embed size exceeds maximum size of 6000"
        )
    try:
        validate_allowed_mentions(body.get("allowed_mentions"))
    except AllowedMentionsError as exc:
        errors.update(exc.errors)
    if errors:
        raise invalid_form(nest(prefix, errors))
    # emptiness of the resulting message
    if partial and existing is not None:
        content_after = content if "content" in body else existing.content
        embeds_after = embeds if "embeds" in body else existing.embeds
        if "attachments" in body:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            atts_after = [a for a in existing.attachments if a["id"] in keep] + list(uploads)
        else:
            atts_after = list(existing.attachments) + list(uploads)
        comps_after = body.get("components") if "components" in body else existing.components
    else:
        content_after = content
        embeds_after = embeds
        atts_after = list(uploads)
        comps_after = body.get("components")
    if partial and not any(k in body for k in ("content", "embeds", "attachments")):
        return
    if (
        not (content_after or "").strip()
        and not embeds_after
        and not atts_after
        and not comps_after
        and not body.get("sticker_ids")
        and not body.get("poll")
    ):
        raise api_error(EMPTY_MESSAGE)


def validate_command(cmd: Any) -> dict[str, Any]:
    """400 (50035) for an application command Discord would refuse; returns ``cmd``."""
    errors: dict[str, Any] = {}
    if not isinstance(cmd, dict):
        raise invalid_form(form_error("DICT_TYPE_CONVERT", "Only dictionaries may be used."))
    ctype = int(cmd.get("type") or 1)
    name = cmd.get("name")
    pattern = _COMMAND_NAME if ctype == 1 else _MENU_NAME  # menus: any case, spaces
    lower = ctype != 1 or name == str(name).lower()
    if not isinstance(name, str) or not pattern.match(name) or not lower:
        errors["name"] = form_error("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    desc = cmd.get("description") or ""
    if ctype == 1 and not 1 <= len(desc) <= 100:
        errors["description"] = form_error(
            "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    opt_errors = validate_options(cmd.get("options") or [])
    if opt_errors:
        errors["options"] = opt_errors
    if errors:
        raise invalid_form(errors)
    return cmd


def validate_choices(data: Any) -> None:
    """400 (50035) for autocomplete choices Discord would refuse: at most 25, each with a
    name of 1-100 characters and a value (a string of at most 100)."""
    choices = (data or {}).get("choices")
    if not isinstance(choices, list):
        raise invalid_form({"data": {"choices": form_error("BASE_TYPE_REQUIRED", "Required")}})
    if len(choices) > 25:
        raise invalid_form(
            {"data": {"choices": form_error("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer.")}}
        )
    for i, choice in enumerate(choices):
        name, value = choice.get("name"), choice.get("value")
        if not isinstance(name, str) or not 1 <= len(name) <= 100 or value is None:
            raise invalid_form(
                {"data": {"choices": {str(i): form_error("BASE_TYPE_BAD_LENGTH", "Bad choice")}}}
            )
        if isinstance(value, str) and len(value) > 100:
            raise invalid_form(
                {"data": {"choices": {str(i): form_error("BASE_TYPE_BAD_LENGTH", "Too long")}}}
            )


def validate_modal(data: Any) -> None:
    """400 (50035) for a modal Discord would refuse: custom_id 1-100 characters, title 1-45,
    1-5 components, each an action row holding one text input (with its label) or a label
    (type 18, text 1-45) holding one; a text input: custom_id 1-100, style 1 or 2, lengths
    within 0-4000."""
    data = data or {}
    errors: dict[str, Any] = {}
    if not 1 <= len(str(data.get("custom_id") or "")) <= 100:
        errors["custom_id"] = form_error("BASE_TYPE_BAD_LENGTH", "Must be 1-100 in length.")
    if not 1 <= len(str(data.get("title") or "")) <= 45:
        errors["title"] = form_error("BASE_TYPE_BAD_LENGTH", "Must be 1-45 in length.")
    components = data.get("components")
    if not isinstance(components, list) or not 1 <= len(components) <= 5:
        errors["components"] = form_error("BASE_TYPE_BAD_LENGTH", "Must be 1-5 in length.")
        components = []
    for i, row in enumerate(components):
        kind = row.get("type")
        if kind == 1 and len(row.get("components") or []) == 1:
            text_input, label = row["components"][0], row["components"][0].get("label")
        elif kind == 18 and isinstance(row.get("component"), dict):
            text_input, label = row["component"], row.get("label")
        else:
            errors[str(i)] = form_error("UNION_TYPE_CHOICES", "Not a valid modal component.")
            continue
        if text_input.get("type") != 4:
            errors[str(i)] = form_error("UNION_TYPE_CHOICES", "Not a text input.")
        elif not 1 <= len(str(label or "")) <= 45:
            errors[str(i)] = form_error("BASE_TYPE_BAD_LENGTH", "A label of 1-45 characters.")
        elif not 1 <= len(str(text_input.get("custom_id") or "")) <= 100:
            errors[str(i)] = form_error("BASE_TYPE_BAD_LENGTH", "A custom_id of 1-100.")
        elif text_input.get("style") not in (1, 2):
            errors[str(i)] = form_error("BASE_TYPE_CHOICES", "Style must be 1 or 2.")
        elif (
            not 0 <= int(text_input.get("min_length") or 0) <= 4000
            or not 1 <= int(text_input.get("max_length") or 4000) <= 4000
        ):
            errors[str(i)] = form_error("NUMBER_TYPE_MAX", "Lengths must be within 0-4000.")
    if errors:
        raise invalid_form({"data": errors})


def validate_options(options: list[Any]) -> dict[str, Any]:
    """The ``errors`` tree for a command's options (empty when they are valid)."""
    errors: dict[str, Any] = {}
    if len(options) > 25:
        return form_error("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    for i, opt in enumerate(options):
        err: dict[str, Any] = {}
        otype = int(opt.get("type") or 0)
        if not 1 <= otype <= 11:
            err["type"] = form_error("BASE_TYPE_CHOICES", "Value must be a valid option type.")
        name = opt.get("name")
        if not isinstance(name, str) or not _COMMAND_NAME.match(name) or name != name.lower():
            err["name"] = form_error("APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        if not 1 <= len(opt.get("description") or "") <= 100:
            err["description"] = form_error(
                "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        if len(opt.get("choices") or []) > 25:
            err["choices"] = form_error("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if otype in (1, 2):
            sub = validate_options(opt.get("options") or [])
            if sub:
                err["options"] = sub
        elif opt.get("required"):
            if seen_optional:
                err["required"] = form_error(
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        if err:
            errors[str(i)] = err
    return errors


def check_command_usable(
    command: Mapping[str, Any], guild: FakeGuild | None, user_perms: int, name: str
) -> None:
    """PermissionError where Discord's client would not even offer the command."""
    contexts = command.get("contexts")
    if contexts is not None and (0 if guild else 1) not in contexts:
        raise PermissionError(f"/{name} is not offered in {'guilds' if guild else 'DMs'}")
    if guild is None and contexts is None and command.get("dm_permission") is False:
        raise PermissionError(f"/{name} is guild-only")
    required = command.get("default_member_permissions")
    if guild is not None and required is not None and not user_perms & Perm.ADMINISTRATOR:
        needed = int(required)
        if needed == 0 or needed & user_perms != needed:
            raise PermissionError(f"/{name} needs permissions {needed} the user lacks")


def parse_emoji(raw: str) -> tuple[str, dict[str, Any]]:
    """Storage key and emoji object for ``🛑``, ``name:id``, ``<:name:id>`` or ``<a:…>``."""
    raw = urllib.parse.unquote(raw).strip()
    match = _CUSTOM_EMOJI.match(raw)
    if match:
        animated, name, eid = match.groups()
        emoji: dict[str, Any] = {"id": eid, "name": name}
        if animated:
            emoji["animated"] = True
        return f"{name}:{eid}", emoji
    if not raw or raw.isascii():
        raise api_error(UNKNOWN_EMOJI)
    return raw, {"id": None, "name": raw}
