"""The platform REST API under ``/api/v1``: thin handlers over the services.

Every handler authenticates the API key and checks its scope first, then reads its
input strictly (gateway.web.api_schema), asks the services, and answers JSON. Errors are
raised, never answered here: gateway.web.middleware turns them into JSON error bodies.
Another platform's resource is NotFound, exactly like an absent one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import hdrs, web

from gateway.domain.apikeys import MAX_PRESENTED_LENGTH, ApiKey, Scope, require_scope
from gateway.domain.audit import AuditEntry
from gateway.domain.consent import ConsentRecord
from gateway.domain.links import LinkPurpose
from gateway.domain.model import Appointment, Host, Participant, Role, Room
from gateway.errors import Unauthenticated
from gateway.services import Services
from gateway.web.api_schema import (
    AuditQuery,
    NewAppointment,
    NewClient,
    NewHost,
    NewRoom,
    read_json_object,
    require_empty,
)
from gateway.web.keys import SERVICES

__all__ = ["API_PREFIX", "api_routes", "dumps"]

API_PREFIX = "/api/v1"

api_routes = web.RouteTableDef()

_PURPOSE_OF = {Role.CLIENT: LinkPurpose.CLIENT_JOIN, Role.HOST: LinkPurpose.HOST_SIGN_IN}
_BEARER = "bearer "


# --- answers ---------------------------------------------------------------------------------


def dumps(data: object) -> str:
    """JSON with ``<``, ``>`` and ``&`` escaped, so no byte of it can read as markup."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    # These characters only ever occur inside JSON strings, where \\uXXXX means the same.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json(data: object, *, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=dumps, headers={"Cache-Control": "no-store"}
    )


def _time(at: float | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, e.g. ``2027-01-15T08:00:00.250Z``."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _host(host: Host) -> dict[str, Any]:
    return {"id": host.id, "display_name": host.display_name, "created_at": _time(host.created_at)}


def _room(room: Room) -> dict[str, Any]:
    policy = room.policy
    return {
        "id": room.id,
        "host_id": room.host_id,
        "policy": {
            "client_totp_required": policy.client_totp_required,
            "relay_only": policy.relay_only,
            "recording_allowed": policy.recording_allowed,
            "telehealth_consent_version": policy.telehealth_consent_version,
        },
        "locked": room.locked,
        "created_at": _time(room.created_at),
    }


def _participant(participant: Participant) -> dict[str, Any]:
    return {
        "id": participant.id,
        "appointment_id": participant.appointment_id,
        "role": participant.role.value,
        "display_name": participant.display_name,
        "state": participant.state.value,
        "state_since": _time(participant.state_since),
        "created_at": _time(participant.created_at),
    }


def _appointment(appointment: Appointment, participants: list[Participant]) -> dict[str, Any]:
    return {
        "id": appointment.id,
        "room_id": appointment.room_id,
        "created_at": _time(appointment.created_at),
        "ended_at": _time(appointment.ended_at),
        "participants": [_participant(p) for p in participants],
    }


def _audit_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": _time(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "outcome": entry.outcome,
        "subjects": dict(entry.subjects),
    }


def _consent(record: ConsentRecord) -> dict[str, Any]:
    return {
        "kind": record.kind.value,
        "text_version": record.text_version,
        "given_at": _time(record.given_at),
        "withdrawn_at": _time(record.withdrawn_at),
    }


# --- authentication ----------------------------------------------------------------------------


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def _authorized(request: web.Request, scope: Scope) -> ApiKey:
    """The request's live API key, if it carries ``scope``; else 401 or 403."""
    headers = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(headers) != 1:
        raise Unauthenticated("send one Authorization: Bearer header")
    header = headers[0]
    if len(header) > len(_BEARER) + MAX_PRESENTED_LENGTH or not header.lower().startswith(_BEARER):
        raise Unauthenticated("send one Authorization: Bearer header")
    key = await _services(request).apikeys.authenticate(header[len(_BEARER) :].strip(" "))
    require_scope(key, scope)
    return key


# --- hosts and rooms ----------------------------------------------------------------------------


@api_routes.post(f"{API_PREFIX}/hosts")
async def create_host(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.HOSTS_WRITE)
    new = NewHost.parse(await read_json_object(request))
    host = await _services(request).provisioning.create_host(
        display_name=new.display_name, platform_id=key.platform_id, actor=key.id
    )
    return _json(_host(host), status=201)


@api_routes.get(f"{API_PREFIX}/hosts/{{host_id}}", allow_head=False)
async def get_host(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.HOSTS_READ)
    host = await _services(request).platform_access.host(
        key.platform_id, request.match_info["host_id"]
    )
    return _json(_host(host))


@api_routes.post(f"{API_PREFIX}/rooms")
async def create_room(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.ROOMS_WRITE)
    new = NewRoom.parse(await read_json_object(request))
    services = _services(request)
    host = await services.platform_access.host(key.platform_id, new.host_id)
    room = await services.provisioning.create_room(host_id=host.id, policy=new.policy, actor=key.id)
    return _json(_room(room), status=201)


@api_routes.get(f"{API_PREFIX}/rooms/{{room_id}}", allow_head=False)
async def get_room(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.ROOMS_READ)
    room = await _services(request).platform_access.room(
        key.platform_id, request.match_info["room_id"]
    )
    return _json(_room(room))


# --- appointments and participants ----------------------------------------------------------


@api_routes.post(f"{API_PREFIX}/appointments")
async def create_appointment(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.APPOINTMENTS_WRITE)
    new = NewAppointment.parse(await read_json_object(request))
    services = _services(request)
    room = await services.platform_access.room(key.platform_id, new.room_id)
    appointment, host_participant = await services.provisioning.create_appointment(
        room_id=room.id, actor=key.id
    )
    answer = _appointment(appointment, [host_participant])
    answer["host_participant_id"] = host_participant.id
    return _json(answer, status=201)


@api_routes.get(f"{API_PREFIX}/appointments/{{appointment_id}}", allow_head=False)
async def get_appointment(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.APPOINTMENTS_READ)
    services = _services(request)
    appointment = await services.platform_access.appointment(
        key.platform_id, request.match_info["appointment_id"]
    )
    participants = await services.store.list_participants(appointment.id)
    return _json(_appointment(appointment, participants))


@api_routes.post(f"{API_PREFIX}/appointments/{{appointment_id}}/clients")
async def add_client(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.APPOINTMENTS_WRITE)
    new = NewClient.parse(await read_json_object(request))
    services = _services(request)
    appointment = await services.platform_access.appointment(
        key.platform_id, request.match_info["appointment_id"]
    )
    client = await services.provisioning.add_client(
        appointment_id=appointment.id, display_name=new.display_name, actor=key.id
    )
    return _json(_participant(client), status=201)


@api_routes.post(f"{API_PREFIX}/appointments/{{appointment_id}}/end")
async def end_appointment(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.SESSIONS_WRITE)
    require_empty(await read_json_object(request))
    services = _services(request)
    appointment = await services.platform_access.appointment(
        key.platform_id, request.match_info["appointment_id"]
    )
    ended = await services.waiting_room.end(appointment_id=appointment.id, actor=key.id)
    return _json(_appointment(ended, await services.store.list_participants(ended.id)))


@api_routes.post(f"{API_PREFIX}/participants/{{participant_id}}/links")
async def issue_link(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.LINKS_WRITE)
    require_empty(await read_json_object(request))
    services = _services(request)
    participant = await services.platform_access.participant(
        key.platform_id, request.match_info["participant_id"]
    )
    link = await services.links.issue(
        _PURPOSE_OF[participant.role], participant_id=participant.id, actor=key.id
    )
    return _json({"url": link.url, "expires_at": _time(link.claims.expires_at)}, status=201)


@api_routes.post(f"{API_PREFIX}/participants/{{participant_id}}/totp")
async def enrol_totp(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.TOTP_WRITE)
    require_empty(await read_json_object(request))
    services = _services(request)
    participant = await services.platform_access.participant(
        key.platform_id, request.match_info["participant_id"]
    )
    enrolment = await services.identity.enrol(participant.id, actor=key.id)
    return _json({"otpauth_uri": enrolment.otpauth_uri, "qr_svg": enrolment.qr_svg}, status=201)


@api_routes.get(f"{API_PREFIX}/participants/{{participant_id}}/records", allow_head=False)
async def participant_records(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.RECORDS_READ)
    services = _services(request)
    records = await services.platform_access.records(
        key.platform_id, request.match_info["participant_id"]
    )
    # Reading someone's records is itself on record.
    await services.audit.record(
        "records.exported", actor=key.id, subjects={"participant": records.participant.id}
    )
    return _json(
        {
            "participant": _participant(records.participant),
            "appointment": _appointment(records.appointment, []),
            "consents": [_consent(c) for c in records.consents],
            "audit": [_audit_entry(e) for e in records.audit],
        }
    )


@api_routes.delete(f"{API_PREFIX}/participants/{{participant_id}}")
async def erase_participant(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.RECORDS_ERASE)
    require_empty(await read_json_object(request))
    tombstone = await _services(request).erasure.erase(
        key.platform_id, request.match_info["participant_id"], actor=key.id
    )
    return _json(
        {
            "id": tombstone.participant_id,
            "appointment_id": tombstone.appointment_id,
            "erased_at": _time(tombstone.at),
            "reason": tombstone.reason.value,
        }
    )


# --- audit --------------------------------------------------------------------------------------


@api_routes.get(f"{API_PREFIX}/audit", allow_head=False)
async def read_audit(request: web.Request) -> web.Response:
    key = await _authorized(request, Scope.AUDIT_READ)
    query = AuditQuery.parse(request.query)
    page = await _services(request).platform_access.audit_page(
        key.platform_id,
        since=query.since,
        until=query.until,
        after_seq=query.after_seq,
        limit=query.limit,
    )
    return _json(
        {
            "entries": [_audit_entry(e) for e in page.entries],
            "next_after_seq": page.next_after_seq,
        }
    )


@api_routes.get(f"{API_PREFIX}/audit/verify", allow_head=False)
async def verify_audit(request: web.Request) -> web.Response:
    await _authorized(request, Scope.AUDIT_READ)
    report = await _services(request).audit.verify()
    return _json(
        {
            "entries": report.entries,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "pruned_through_seq": report.pruned_through,
        }
    )


# --- the description of all of the above ---------------------------------------------------------


@cache
def _openapi() -> str:
    return resources.files("gateway.web").joinpath("openapi.yaml").read_text("utf-8")


@api_routes.get(f"{API_PREFIX}/openapi.yaml", allow_head=False)
async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_openapi(), content_type="application/yaml", charset="utf-8")
