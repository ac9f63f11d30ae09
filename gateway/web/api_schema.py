"""Strict reading of platform API requests: JSON objects only, known fields only.

Every refusal is an :class:`InvalidInput` (400) or an :class:`UnsupportedMediaType`
(415) naming the field; the error middleware turns it into the JSON error answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway.domain.ids import is_valid_id
from gateway.domain.model import RoomPolicy, clean_display_name
from gateway.errors import InvalidInput, UnsupportedMediaType
from gateway.services.platform_access import MAX_AUDIT_PAGE

__all__ = [
    "AuditQuery",
    "NewAppointment",
    "NewClient",
    "NewHost",
    "NewRoom",
    "read_json_object",
    "require_empty",
]

JSON_TYPE = "application/json"
#: Deeper nesting than this is refused (no request here needs more than two levels).
_MAX_DEPTH = 8
_CONSENT_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TIMESTAMP_MAX = 40
_SEQ_MAX_DIGITS = 12
_POLICY_FIELDS = frozenset(
    {"client_totp_required", "relay_only", "recording_allowed", "telehealth_consent_version"}
)


# --- bodies ---------------------------------------------------------------------------------


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an absent body reads as ``{}``.

    A body must be ``application/json`` (UTF-8); the application's size cap applies
    before this reads it (413).
    """
    if not request.body_exists:
        return {}
    if request.content_type != JSON_TYPE:
        raise UnsupportedMediaType(f"the request body must be {JSON_TYPE}")
    if (request.charset or "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("the request body must be UTF-8")
    raw = await request.read()
    try:
        body = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInput("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    if _depth(body) > _MAX_DEPTH:
        raise InvalidInput("the request body is nested too deeply")
    return body


def require_empty(body: Mapping[str, Any]) -> None:
    """For actions that take no fields: an empty object (or no body at all)."""
    _known(body, required=frozenset(), optional=frozenset())


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate field")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: object, level: int = 1) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _known(body: Mapping[str, Any], *, required: Set[str], optional: Set[str]) -> None:
    for name in body:
        if name not in required and name not in optional:
            raise InvalidInput(f"unknown field {name[:40]!r}", field=name[:40])
    for name in sorted(required):
        if name not in body:
            raise InvalidInput(f"{name} is required", field=name)


def _display_name(value: object) -> str:
    try:
        return clean_display_name(value)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="display_name") from None


def _an_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not is_valid_id(value):
        raise InvalidInput(f"{field} is not an id", field=field)
    return value


def _boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be true or false", field=field)
    return value


@dataclass(frozen=True, slots=True)
class NewHost:
    display_name: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> NewHost:
        _known(body, required={"display_name"}, optional=frozenset())
        return cls(display_name=_display_name(body["display_name"]))


@dataclass(frozen=True, slots=True)
class NewRoom:
    host_id: str
    policy: RoomPolicy

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> NewRoom:
        _known(body, required={"host_id"}, optional={"policy"})
        return cls(host_id=_an_id(body["host_id"], "host_id"), policy=_policy(body.get("policy")))


def _policy(value: object) -> RoomPolicy:
    if value is None:
        return RoomPolicy()
    if not isinstance(value, dict):
        raise InvalidInput("policy must be an object", field="policy")
    _known(value, required=frozenset(), optional=_POLICY_FIELDS)
    defaults = RoomPolicy()
    version = value.get("telehealth_consent_version")
    if version is not None and not (
        isinstance(version, str) and _CONSENT_VERSION.fullmatch(version)
    ):
        raise InvalidInput(
            "telehealth_consent_version is 1 to 64 letters, digits, '.', '_', ':' or '-'",
            field="telehealth_consent_version",
        )
    return RoomPolicy(
        client_totp_required=_boolean(
            value.get("client_totp_required", defaults.client_totp_required),
            "client_totp_required",
        ),
        relay_only=_boolean(value.get("relay_only", defaults.relay_only), "relay_only"),
        recording_allowed=_boolean(
            value.get("recording_allowed", defaults.recording_allowed), "recording_allowed"
        ),
        telehealth_consent_version=version,
    )


@dataclass(frozen=True, slots=True)
class NewAppointment:
    room_id: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> NewAppointment:
        _known(body, required={"room_id"}, optional=frozenset())
        return cls(room_id=_an_id(body["room_id"], "room_id"))


@dataclass(frozen=True, slots=True)
class NewClient:
    display_name: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> NewClient:
        _known(body, required={"display_name"}, optional=frozenset())
        return cls(display_name=_display_name(body["display_name"]))


# --- query strings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None
    until: float | None
    after_seq: int
    limit: int

    @classmethod
    def parse(cls, query: MultiMapping[str]) -> AuditQuery:
        """``since`` and ``until`` are RFC 3339 times with an offset; ``after_seq`` and
        ``limit`` are decimal integers (``limit`` 1 to 1000, default 100)."""
        allowed = {"since", "until", "after_seq", "limit"}
        for name in query:
            if name not in allowed:
                raise InvalidInput(f"unknown parameter {name[:40]!r}", field=name[:40])
        for name in allowed:
            if len(query.getall(name, [])) > 1:
                raise InvalidInput(f"{name} given more than once", field=name)
        since = _timestamp(query.get("since"), "since")
        until = _timestamp(query.get("until"), "until")
        if since is not None and until is not None and until <= since:
            raise InvalidInput("until must be after since", field="until")
        return cls(
            since=since,
            until=until,
            after_seq=_integer(query.get("after_seq"), "after_seq", default=0, low=0),
            limit=_integer(query.get("limit"), "limit", default=100, low=1, high=MAX_AUDIT_PAGE),
        )


def _timestamp(value: str | None, field: str) -> float | None:
    if value is None:
        return None
    try:
        if len(value) > _TIMESTAMP_MAX or not value.isascii() or "T" not in value:
            raise ValueError(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field} is an RFC 3339 time such as 2027-01-31T09:00:00Z", field=field
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} needs a UTC offset (Z or +hh:mm)", field=field)
    stamp = moment.timestamp()
    if not math.isfinite(stamp):
        raise InvalidInput(f"{field} is out of range", field=field)
    return stamp


def _integer(
    value: str | None, field: str, *, default: int, low: int, high: int | None = None
) -> int:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= _SEQ_MAX_DIGITS):
        raise InvalidInput(f"{field} is a whole number", field=field)
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise InvalidInput(f"{field} is {bound}", field=field)
    return number
