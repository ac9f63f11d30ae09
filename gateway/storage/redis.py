"""The shared store: state in Redis, for several gateway processes or a restart.

Every check-then-act is one Redis command (``SET NX``) or one Lua script, so it is
atomic however many processes call it. Records are hashes of strings; floats travel
as ``repr()`` strings so they round-trip exactly (Lua numbers and cjson would not).

Keys, all under the prefix (default ``qr:``), as ``<kind>:<id>`` with a colon-free kind:

==========================  ==========================================================
``platform:<id>``           hash: id, name, created_at, webhook_url (if set)
``apikey:<id>``             hash: id, platform_id, name, scopes (space-separated),
                            created_at, secret_hash, revoked_at (once revoked)
``platform_apikeys:<id>``   set of the platform's API key ids
``host:<id>``               hash: id, display_name, created_at, platform_id
``room:<id>``               hash: id, host_id, policy (JSON), created_at, locked,
                            host_presence
``apt:<id>``                hash: id, room_id, created_at, ended_at (once ended)
``apt_participants:<id>``   set of participant ids
``apt_sessions:<id>``       set of browser-session hashes
``participant:<id>``        hash: id, appointment_id, role, display_name, state,
                            state_since, created_at, verified_at (once verified)
``jti:<jti>``               a used link id, kept until its link has expired (+ grace)
``connections:<id>``       live connections of a participant, across processes
``rate:<key>:<window>``     hits in one rate-limit window; expires with the window
``totp_secret:<id>``        the sealed TOTP secret (never the plaintext)
``totp_step:<id>``          the newest time step used
``totp_attempts:<id>``      hash: count, last_at; expires after the cool-down
``consent_records:<sid>``   list of JSON records (what was given), oldest first
``consent_withdrawn:<sid>`` hash: record index -> withdrawn_at
``consent_live:<sid>``      hash: ``<kind>:<participant id>`` -> live record index
``audit:log``               list of JSON entries, entry ``seq`` at index ``seq - 1``
``audit:head``              ``<seq>:<hash>`` of the newest entry
``session:<hash>``          hash: participant_id, appointment_id, role, created_at,
                            expires_at, verified; expires at ``expires_at``
``webhook_secret:<id>``     the platform's sealed webhook signing secret
``webhook:<id>``            hash: id, platform_id, kind, body, created_at, due_at,
                            attempts, claim (while leased)
``webhooks:due``            sorted set of delivery ids by when each is next visible
                            to claimers (its due time, or a lease's end)
==========================  ==========================================================

Two scripts build key names from the prefix (ending every session of an appointment,
claiming webhooks),
so this store needs one Redis primary (Sentinel if wanted), not Redis Cluster; and
Redis 7 or newer (``PEXPIREAT ... NX`` / ``GT``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from gateway.domain.apikeys import ApiKey, Scope
from gateway.domain.audit import GENESIS_HASH, AuditDraft, AuditEntry, chain, entry_from_dict
from gateway.domain.consent import ConsentKind, ConsentRecord
from gateway.domain.ids import new_id
from gateway.domain.model import (
    Appointment,
    BrowserSession,
    Host,
    Participant,
    Platform,
    Role,
    Room,
)
from gateway.domain.totp import AttemptGrant
from gateway.domain.waiting_room import HostPresence, ParticipantState, RoomCondition
from gateway.domain.webhooks import WebhookClaim, WebhookDelivery, WebhookType
from gateway.errors import HostAbsent, RoomLocked, StoreError, StoreUnavailable
from gateway.storage.secretbox import SecretBox

if TYPE_CHECKING:
    from gateway.storage.base import Store

__all__ = ["RedisStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S", bound="RedisStore")

#: Errors that mean "Redis cannot serve us now": joins and admissions fail closed.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, MasterDownError)

#: A used jti outlives its link by this much, so gateway clocks that disagree a little
#: cannot make a link valid again on one process after its jti was forgotten.
_JTI_GRACE_SECONDS = 60.0
#: Attempt counters vanish this long after their cool-down (garbage collection only:
#: the script compares the caller's ``now`` with the stored time, never the TTL).
_ATTEMPTS_GRACE_SECONDS = 60.0
#: A connection count left behind by a crashed process fades after this long.
_CONNECTIONS_TTL_SECONDS = 24 * 3600.0
#: How often an audit append re-reads the head after another process appended first.
_AUDIT_APPEND_TRIES = 32


def _translate_errors(
    method: Callable[Concatenate[_S, _P], Awaitable[_T]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
    """Redis failures become :class:`StoreUnavailable` or :class:`StoreError`.

    A closed store refuses too: the client would otherwise quietly open connections
    that nobody closes.
    """

    @functools.wraps(method)
    async def translated(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            return await method(self, *args, **kwargs)
        except _UNREACHABLE as exc:
            raise StoreUnavailable(f"redis unavailable ({type(exc).__name__})") from exc
        except RedisError as exc:
            raise StoreError(f"redis refused an operation ({type(exc).__name__})") from exc

    return translated


# --- Lua ------------------------------------------------------------------------------------
# Scripts return false (a nil reply, None here) when the record does not exist.

# KEYS[1] hash; ARGV field, value, ... -> the whole hash after the update.
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], unpack(ARGV))
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] API key; ARGV[1] revoked_at. The first revocation wins.
_REVOKE_API_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] appointment; ARGV[1] ended_at. The first end wins.
_END_APPOINTMENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'ended_at', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] participant; ARGV[1] target, ARGV[2] at, ARGV[3..] source states.
# -> {moved (0/1), the participant's fields}
_TRANSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local state = redis.call('HGET', KEYS[1], 'state')
local moved = 0
for i = 5, #ARGV do
  if ARGV[i] == state then
    moved = 1
    break
  end
end
if moved == 1 and #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  if ARGV[3] == '1' and redis.call('HGET', KEYS[2], 'locked') == '1' then
    return {-1}
  end
  if ARGV[4] == '1' and redis.call('HGET', KEYS[2], 'host_presence') ~= 'present' then
    return {-2}
  end
end
if moved == 1 then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'state_since', ARGV[2])
end
return {moved, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] connection counter; ARGV[1] delta, ARGV[2] ttl ms. -> the new count (>= 0).
_CHANGE_CONNECTIONS = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return count
"""

# KEYS[1] window counter; ARGV[1] ttl ms. -> hits in the window, this one included.
_HIT_RATE_LIMIT = """
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return hits
"""

# KEYS[1] newest used step; ARGV[1] step. -> 1 if recorded, 0 if not newer.
_USE_TOTP_STEP = """
local used = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= used then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] attempts hash; ARGV[1] limit, ARGV[2] cooldown, ARGV[3] now, ARGV[4] ttl ms.
# -> {allowed (0/1), attempts, last attempt time (as given, a string)}
_BEGIN_TOTP_ATTEMPT = """
local limit = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local count = 0
local last = ARGV[3]
local stored = redis.call('HMGET', KEYS[1], 'count', 'last_at')
if stored[1] and stored[2] and now < tonumber(stored[2]) + cooldown then
  count = tonumber(stored[1])
  last = stored[2]
end
if count >= limit then return {0, count, last} end
count = count + 1
redis.call('HSET', KEYS[1], 'count', count, 'last_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, count, ARGV[3]}
"""

# KEYS[1] records, KEYS[2] live index; ARGV[1] live field, ARGV[2] record JSON.
# -> the live record's JSON if there is one (kept), else false (appended).
_GIVE_CONSENT = """
local live = redis.call('HGET', KEYS[2], ARGV[1])
if live then return redis.call('LINDEX', KEYS[1], tonumber(live)) end
local length = redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], length - 1)
return false
"""

# KEYS[1] records, KEYS[2] live index, KEYS[3] withdrawn times; ARGV[1] live field,
# ARGV[2] at. -> {record JSON, withdrawn_at} or false when nothing was live.
_WITHDRAW_CONSENT = """
local live = redis.call('HGET', KEYS[2], ARGV[1])
if not live then return false end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], live, ARGV[2])
return {redis.call('LINDEX', KEYS[1], tonumber(live)), ARGV[2]}
"""

# KEYS[1] head, KEYS[2] log; ARGV[1] expected head ('' when empty), ARGV[2] entry JSON,
# ARGV[3] entry seq, ARGV[4] new head. -> 1 appended, 0 someone appended first.
_APPEND_AUDIT = """
local head = redis.call('GET', KEYS[1]) or ''
if head ~= ARGV[1] then return 0 end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[3]) - 1 then
  return redis.error_reply('audit log and audit head disagree')
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] the appointment's session set; ARGV[1] session key prefix, ARGV[2] participant.
# Ends that participant's sessions only (a new device took over).
_DELETE_PARTICIPANT_SESSIONS = """
local ended = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. member
  if redis.call('HGET', key, 'participant_id') == ARGV[2] then
    ended = ended + redis.call('DEL', key)
    redis.call('SREM', KEYS[1], member)
  end
end
return ended
"""

# KEYS[1] the appointment's session set; ARGV[1] session key prefix, ARGV[2] appointment.
# Checks each session still belongs to the appointment (a hash may have been reused).
_DELETE_APPOINTMENT_SESSIONS = """
local ended = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. member
  if redis.call('HGET', key, 'appointment_id') == ARGV[2] then
    ended = ended + redis.call('DEL', key)
  end
end
redis.call('DEL', KEYS[1])
return ended
"""

# KEYS[1] due set; ARGV[1] now, ARGV[2] lease end, ARGV[3] limit, ARGV[4] claim,
# ARGV[5] delivery key prefix. -> the claimed deliveries' fields, earliest due first.
_CLAIM_WEBHOOKS = """
local claimed = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    redis.call('HSET', key, 'claim', ARGV[4])
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""

# KEYS[1] delivery, KEYS[2] due set; ARGV[1] claim, ARGV[2] due_at, ARGV[3] attempts,
# ARGV[4] delivery id. -> 1 rescheduled, 0 not under this claim (or gone).
_RESCHEDULE_WEBHOOK = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'due_at', ARGV[2], 'attempts', ARGV[3])
redis.call('HDEL', KEYS[1], 'claim')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""

# KEYS[1] delivery, KEYS[2] due set; ARGV[1] claim, ARGV[2] delivery id.
# -> 1 dropped, 0 not under this claim (or gone).
_ABANDON_WEBHOOK = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""


# --- encoding -------------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _num(value: float) -> str:
    return repr(float(value))


def _fields(raw: object) -> dict[str, str]:
    """A hash as str -> str, from HGETALL (a mapping) or a script (a flat list)."""
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = list(zip(raw[::2], raw[1::2], strict=True))
    else:
        raise StoreError("redis answered with an unexpected shape")
    return {_text(k): _text(v) for k, v in pairs}


def _encodable(fields: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    return {name: value for name, value in fields.items()}


def _platform_fields(platform: Platform) -> dict[str, str]:
    fields = {"id": platform.id, "name": platform.name, "created_at": _num(platform.created_at)}
    if platform.webhook_url is not None:
        fields["webhook_url"] = platform.webhook_url
    return fields


def _platform(f: Mapping[str, str]) -> Platform:
    return Platform(
        id=f["id"],
        name=f["name"],
        created_at=float(f["created_at"]),
        webhook_url=f.get("webhook_url"),
    )


def _api_key_fields(key: ApiKey) -> dict[str, str]:
    fields = {
        "id": key.id,
        "platform_id": key.platform_id,
        "name": key.name,
        "scopes": " ".join(sorted(scope.value for scope in key.scopes)),
        "created_at": _num(key.created_at),
        "secret_hash": key.secret_hash,
    }
    if key.revoked_at is not None:
        fields["revoked_at"] = _num(key.revoked_at)
    return fields


def _api_key(f: Mapping[str, str]) -> ApiKey:
    revoked_at = f.get("revoked_at")
    return ApiKey(
        id=f["id"],
        platform_id=f["platform_id"],
        name=f["name"],
        scopes=frozenset(Scope(s) for s in f["scopes"].split()),
        created_at=float(f["created_at"]),
        secret_hash=f["secret_hash"],
        revoked_at=None if revoked_at is None else float(revoked_at),
    )


def _host_fields(host: Host) -> dict[str, str]:
    return {
        "id": host.id,
        "display_name": host.display_name,
        "created_at": _num(host.created_at),
        "platform_id": host.platform_id,
    }


def _host(f: Mapping[str, str]) -> Host:
    return Host(
        id=f["id"],
        display_name=f["display_name"],
        created_at=float(f["created_at"]),
        platform_id=f.get("platform_id", ""),
    )


def _room_fields(room: Room) -> dict[str, str]:
    return {
        "id": room.id,
        "host_id": room.host_id,
        "policy": json.dumps(room.policy.to_dict(), separators=(",", ":")),
        "created_at": _num(room.created_at),
        "locked": "1" if room.locked else "0",
        "host_presence": room.host_presence.value,
    }


def _room(f: Mapping[str, str]) -> Room:
    return Room.from_dict(
        {
            "id": f["id"],
            "host_id": f["host_id"],
            "policy": json.loads(f["policy"]),
            "created_at": float(f["created_at"]),
            "locked": f["locked"] == "1",
            "host_presence": f["host_presence"],
        }
    )


def _appointment_fields(appointment: Appointment) -> dict[str, str]:
    fields = {
        "id": appointment.id,
        "room_id": appointment.room_id,
        "created_at": _num(appointment.created_at),
    }
    if appointment.ended_at is not None:
        fields["ended_at"] = _num(appointment.ended_at)
    return fields


def _appointment(f: Mapping[str, str]) -> Appointment:
    ended_at = f.get("ended_at")
    return Appointment(
        id=f["id"],
        room_id=f["room_id"],
        created_at=float(f["created_at"]),
        ended_at=None if ended_at is None else float(ended_at),
    )


def _participant_fields(participant: Participant) -> dict[str, str]:
    return {
        "id": participant.id,
        "appointment_id": participant.appointment_id,
        "role": participant.role.value,
        "display_name": participant.display_name,
        "state": participant.state.value,
        "state_since": _num(participant.state_since),
        "created_at": _num(participant.created_at),
        **(
            {}
            if participant.verified_at is None
            else {"verified_at": _num(participant.verified_at)}
        ),
    }


def _participant(f: Mapping[str, str]) -> Participant:
    return Participant.from_dict(dict(f))


def _session_fields(session: BrowserSession) -> dict[str, str]:
    return {
        "participant_id": session.participant_id,
        "appointment_id": session.appointment_id,
        "role": session.role.value,
        "created_at": _num(session.created_at),
        "expires_at": _num(session.expires_at),
        "verified": "1" if session.verified else "0",
        "last_seen": _num(session.last_seen),
    }


def _session(f: Mapping[str, str]) -> BrowserSession:
    return BrowserSession(
        participant_id=f["participant_id"],
        appointment_id=f["appointment_id"],
        role=Role(f["role"]),
        created_at=float(f["created_at"]),
        expires_at=float(f["expires_at"]),
        verified=f["verified"] == "1",
        last_seen=float(f.get("last_seen", "0.0")),
    )


def _consent_json(record: ConsentRecord) -> str:
    # Only what was given; the withdrawal time lives beside it, set by a script.
    return json.dumps(
        {
            "participant_id": record.participant_id,
            "session_id": record.session_id,
            "kind": record.kind.value,
            "text_version": record.text_version,
            "given_at": float(record.given_at),
        },
        separators=(",", ":"),
    )


def _consent(raw: bytes | str, withdrawn_at: str | None) -> ConsentRecord:
    data = json.loads(raw)
    return ConsentRecord(
        participant_id=data["participant_id"],
        session_id=data["session_id"],
        kind=ConsentKind(data["kind"]),
        text_version=data["text_version"],
        given_at=float(data["given_at"]),
        withdrawn_at=None if withdrawn_at is None else float(withdrawn_at),
    )


def _live_field(participant_id: str, kind: ConsentKind) -> str:
    return f"{kind.value}:{participant_id}"


def _audit_json(entry: AuditEntry) -> str:
    return json.dumps(entry.to_dict(), separators=(",", ":"), ensure_ascii=True)


def _head_value(seq: int, digest: str) -> str:
    return "" if seq == 0 else f"{seq}:{digest}"


def _webhook_fields(delivery: WebhookDelivery) -> dict[str, str]:
    return {
        "id": delivery.id,
        "platform_id": delivery.platform_id,
        "kind": delivery.kind.value,
        "body": delivery.body,
        "created_at": _num(delivery.created_at),
        "due_at": _num(delivery.due_at),
        "attempts": str(int(delivery.attempts)),
    }


def _webhook(f: Mapping[str, str]) -> WebhookDelivery:
    return WebhookDelivery(
        id=f["id"],
        platform_id=f["platform_id"],
        kind=WebhookType(f["kind"]),
        body=f["body"],
        created_at=float(f["created_at"]),
        due_at=float(f["due_at"]),
        attempts=int(f["attempts"]),
    )


# --- the store ------------------------------------------------------------------------------


class RedisStore:
    """A :class:`~gateway.storage.base.Store` in Redis, shared by gateway processes.

    Give it a ``redis.asyncio.Redis`` client (yours to close) or a URL (the store makes
    and closes its own client; :meth:`from_url` does the same with options).
    """

    def __init__(
        self,
        client: Redis | str,
        *,
        secret_box: SecretBox,
        prefix: str = "qr:",
        owns_client: bool | None = None,
    ) -> None:
        if isinstance(client, str):
            client = _connect(client)
            owns_client = True if owns_client is None else owns_client
        self._client = client
        self._owns_client = bool(owns_client)
        self._box = secret_box
        self._prefix = prefix
        self._closed = False
        # One append at a time from this process; the script still guards other processes.
        self._audit_lock = asyncio.Lock()
        self._hset_if_exists = client.register_script(_HSET_IF_EXISTS)
        self._end_appointment = client.register_script(_END_APPOINTMENT)
        self._revoke_api_key = client.register_script(_REVOKE_API_KEY)
        self._transition = client.register_script(_TRANSITION)
        self._change_connections = client.register_script(_CHANGE_CONNECTIONS)
        self._hit_rate_limit = client.register_script(_HIT_RATE_LIMIT)
        self._use_totp_step = client.register_script(_USE_TOTP_STEP)
        self._begin_totp_attempt = client.register_script(_BEGIN_TOTP_ATTEMPT)
        self._give_consent = client.register_script(_GIVE_CONSENT)
        self._withdraw_consent = client.register_script(_WITHDRAW_CONSENT)
        self._append_audit = client.register_script(_APPEND_AUDIT)
        self._delete_appointment_sessions = client.register_script(_DELETE_APPOINTMENT_SESSIONS)
        self._delete_participant_sessions = client.register_script(_DELETE_PARTICIPANT_SESSIONS)
        self._claim_webhooks = client.register_script(_CLAIM_WEBHOOKS)
        self._reschedule_webhook = client.register_script(_RESCHEDULE_WEBHOOK)
        self._abandon_webhook = client.register_script(_ABANDON_WEBHOOK)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        secret_box: SecretBox,
        prefix: str = "qr:",
        max_connections: int = 64,
        timeout: float = 5.0,
    ) -> RedisStore:
        """A store with its own client for ``url`` (``redis://``, ``rediss://``, ``unix://``).

        ``timeout`` bounds connecting, each command, and the wait for a free connection.
        """
        client = _connect(url, max_connections=max_connections, timeout=timeout)
        return cls(client, secret_box=secret_box, prefix=prefix, owns_client=True)

    @property
    def client(self) -> Redis:
        """The Redis client this store talks through."""
        return self._client

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}{kind}:{ident}"

    # --- life -----------------------------------------------------------------------

    @_translate_errors
    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    # --- hosts, rooms, appointments, participants --------------------------------------

    async def _replace_hash(self, key: str, fields: Mapping[str, str]) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encodable(fields))
            await pipe.execute()

    async def _hash(self, key: str) -> dict[str, str] | None:
        raw = await self._client.hgetall(key)
        return _fields(raw) if raw else None

    @_translate_errors
    async def put_platform(self, platform: Platform) -> None:
        await self._replace_hash(self._key("platform", platform.id), _platform_fields(platform))

    @_translate_errors
    async def get_platform(self, platform_id: str) -> Platform | None:
        fields = await self._hash(self._key("platform", platform_id))
        return None if fields is None else _platform(fields)

    # --- platform API keys --------------------------------------------------------------

    @_translate_errors
    async def put_api_key(self, key: ApiKey) -> None:
        hash_key = self._key("apikey", key.id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(hash_key)
            pipe.hset(hash_key, mapping=_encodable(_api_key_fields(key)))
            pipe.sadd(self._key("platform_apikeys", key.platform_id), key.id)
            await pipe.execute()

    @_translate_errors
    async def get_api_key(self, key_id: str) -> ApiKey | None:
        fields = await self._hash(self._key("apikey", key_id))
        return None if fields is None else _api_key(fields)

    @_translate_errors
    async def revoke_api_key(self, key_id: str, at: float) -> ApiKey | None:
        raw = await self._revoke_api_key(keys=[self._key("apikey", key_id)], args=[_num(at)])
        return None if raw is None else _api_key(_fields(raw))

    @_translate_errors
    async def list_api_keys(self, platform_id: str) -> list[ApiKey]:
        members = await self._client.smembers(self._key("platform_apikeys", platform_id))
        async with self._client.pipeline(transaction=False) as pipe:
            for member in sorted(_text(m) for m in members):
                pipe.hgetall(self._key("apikey", member))
            raws = await pipe.execute()
        found = [_api_key(_fields(raw)) for raw in raws if raw]
        found = [k for k in found if k.platform_id == platform_id]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    @_translate_errors
    async def put_host(self, host: Host) -> None:
        await self._replace_hash(self._key("host", host.id), _host_fields(host))

    @_translate_errors
    async def get_host(self, host_id: str) -> Host | None:
        fields = await self._hash(self._key("host", host_id))
        return None if fields is None else _host(fields)

    @_translate_errors
    async def put_room(self, room: Room) -> None:
        await self._replace_hash(self._key("room", room.id), _room_fields(room))

    @_translate_errors
    async def get_room(self, room_id: str) -> Room | None:
        fields = await self._hash(self._key("room", room_id))
        return None if fields is None else _room(fields)

    @_translate_errors
    async def set_room_lock(self, room_id: str, locked: bool) -> Room | None:
        raw = await self._hset_if_exists(
            keys=[self._key("room", room_id)], args=["locked", "1" if locked else "0"]
        )
        return None if raw is None else _room(_fields(raw))

    @_translate_errors
    async def set_host_presence(self, room_id: str, presence: HostPresence) -> Room | None:
        raw = await self._hset_if_exists(
            keys=[self._key("room", room_id)], args=["host_presence", presence.value]
        )
        return None if raw is None else _room(_fields(raw))

    @_translate_errors
    async def put_appointment(self, appointment: Appointment) -> None:
        await self._replace_hash(self._key("apt", appointment.id), _appointment_fields(appointment))

    @_translate_errors
    async def get_appointment(self, appointment_id: str) -> Appointment | None:
        fields = await self._hash(self._key("apt", appointment_id))
        return None if fields is None else _appointment(fields)

    @_translate_errors
    async def end_appointment(self, appointment_id: str, at: float) -> Appointment | None:
        raw = await self._end_appointment(keys=[self._key("apt", appointment_id)], args=[_num(at)])
        return None if raw is None else _appointment(_fields(raw))

    @_translate_errors
    async def put_participant(self, participant: Participant) -> None:
        key = self._key("participant", participant.id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encodable(_participant_fields(participant)))
            pipe.sadd(self._key("apt_participants", participant.appointment_id), participant.id)
            await pipe.execute()

    @_translate_errors
    async def get_participant(self, participant_id: str) -> Participant | None:
        fields = await self._hash(self._key("participant", participant_id))
        return None if fields is None else _participant(fields)

    @_translate_errors
    async def list_participants(self, appointment_id: str) -> list[Participant]:
        members = await self._client.smembers(self._key("apt_participants", appointment_id))
        async with self._client.pipeline(transaction=False) as pipe:
            for member in sorted(_text(m) for m in members):
                pipe.hgetall(self._key("participant", member))
            raws = await pipe.execute()
        found = [_participant(_fields(raw)) for raw in raws if raw]
        # A participant re-put under another appointment leaves a stale member behind.
        found = [p for p in found if p.appointment_id == appointment_id]
        return sorted(found, key=lambda p: (p.created_at, p.id))

    @_translate_errors
    async def transition_participant(
        self,
        participant_id: str,
        *,
        sources: Collection[ParticipantState],
        target: ParticipantState,
        at: float,
        room: RoomCondition | None = None,
    ) -> tuple[bool, Participant | None]:
        keys = [self._key("participant", participant_id)]
        if room is not None:
            keys.append(self._key("room", room.room_id))
        raw = await self._transition(
            keys=keys,
            args=[
                target.value,
                _num(at),
                "1" if room is not None and room.unlocked else "0",
                "1" if room is not None and room.host_present else "0",
                *(ParticipantState(s).value for s in sources),
            ],
        )
        if raw is None:
            return False, None
        if raw[0] == -1 and room is not None:
            raise RoomLocked(room_id=room.room_id)
        if raw[0] == -2 and room is not None:
            raise HostAbsent(room_id=room.room_id)
        moved, fields = raw
        return moved == 1, _participant(_fields(fields))

    @_translate_errors
    async def set_participant_verified(self, participant_id: str, at: float) -> Participant | None:
        raw = await self._hset_if_exists(
            keys=[self._key("participant", participant_id)], args=["verified_at", _num(at)]
        )
        return None if raw is None else _participant(_fields(raw))

    # --- presence and rate limits -------------------------------------------------------

    @_translate_errors
    async def change_connections(self, participant_id: str, delta: int) -> int:
        count = await self._change_connections(
            keys=[self._key("connections", participant_id)],
            args=[int(delta), int(_CONNECTIONS_TTL_SECONDS * 1000)],
        )
        return int(count)

    @_translate_errors
    async def hit_rate_limit(self, key: str, *, limit: int, window: float, now: float) -> bool:
        bucket = int(now // window)
        hits = await self._hit_rate_limit(
            keys=[self._key("rate", f"{key}:{bucket}")],
            args=[math.ceil(window * 1000) + 1000],
        )
        return int(hits) <= limit

    # --- links -------------------------------------------------------------------------

    @_translate_errors
    async def consume_link(self, jti: str, *, expires_at: float, now: float) -> bool:
        remaining = max(expires_at - now, 0.0) + _JTI_GRACE_SECONDS
        first = await self._client.set(
            self._key("jti", jti), b"1", nx=True, px=math.ceil(remaining * 1000)
        )
        return bool(first)

    # --- TOTP ---------------------------------------------------------------------------

    @_translate_errors
    async def set_totp_secret(self, participant_id: str, secret: str) -> None:
        sealed = self._box.seal(secret)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._key("totp_secret", participant_id), sealed)
            pipe.delete(self._key("totp_step", participant_id))
            await pipe.execute()

    @_translate_errors
    async def add_totp_secret(self, participant_id: str, secret: str) -> bool:
        # A fresh participant has no used step to clear, so one SET NX is the whole act.
        first = await self._client.set(
            self._key("totp_secret", participant_id), self._box.seal(secret), nx=True
        )
        return bool(first)

    @_translate_errors
    async def get_totp_secret(self, participant_id: str) -> str | None:
        sealed = await self._client.get(self._key("totp_secret", participant_id))
        if sealed is None:
            return None
        return self._box.open(sealed if isinstance(sealed, bytes) else sealed.encode("ascii"))

    @_translate_errors
    async def use_totp_step(self, participant_id: str, step: int) -> bool:
        recorded = await self._use_totp_step(
            keys=[self._key("totp_step", participant_id)], args=[str(int(step))]
        )
        return bool(recorded == 1)

    @_translate_errors
    async def begin_totp_attempt(
        self, participant_id: str, *, limit: int, cooldown: float, now: float
    ) -> AttemptGrant:
        ttl_ms = math.ceil((max(cooldown, 0.0) + _ATTEMPTS_GRACE_SECONDS) * 1000)
        allowed, attempts, last_at = await self._begin_totp_attempt(
            keys=[self._key("totp_attempts", participant_id)],
            args=[str(int(limit)), _num(cooldown), _num(now), str(ttl_ms)],
        )
        if allowed == 1:
            return AttemptGrant(allowed=True, attempts=int(attempts), locked_until=0.0)
        return AttemptGrant(
            allowed=False,
            attempts=int(attempts),
            locked_until=float(_text(last_at)) + cooldown,
        )

    @_translate_errors
    async def clear_totp_attempts(self, participant_id: str) -> None:
        await self._client.delete(self._key("totp_attempts", participant_id))

    # --- consent ---------------------------------------------------------------------------

    @_translate_errors
    async def give_consent(self, record: ConsentRecord) -> ConsentRecord:
        existing = await self._give_consent(
            keys=[
                self._key("consent_records", record.session_id),
                self._key("consent_live", record.session_id),
            ],
            args=[_live_field(record.participant_id, record.kind), _consent_json(record)],
        )
        return record if existing is None else _consent(existing, None)

    @_translate_errors
    async def withdraw_consent(
        self, *, participant_id: str, session_id: str, kind: ConsentKind, at: float
    ) -> ConsentRecord | None:
        raw = await self._withdraw_consent(
            keys=[
                self._key("consent_records", session_id),
                self._key("consent_live", session_id),
                self._key("consent_withdrawn", session_id),
            ],
            args=[_live_field(participant_id, ConsentKind(kind)), _num(at)],
        )
        if raw is None:
            return None
        record, withdrawn_at = raw
        return _consent(record, _text(withdrawn_at))

    @_translate_errors
    async def list_consents(self, session_id: str) -> list[ConsentRecord]:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lrange(self._key("consent_records", session_id), 0, -1)
            pipe.hgetall(self._key("consent_withdrawn", session_id))
            records, withdrawn_raw = await pipe.execute()
        withdrawn = _fields(withdrawn_raw)
        return [_consent(raw, withdrawn.get(str(index))) for index, raw in enumerate(records)]

    # --- audit ---------------------------------------------------------------------------------

    @_translate_errors
    async def append_audit(self, draft: AuditDraft, *, at: float) -> AuditEntry:
        async with self._audit_lock:
            for _ in range(_AUDIT_APPEND_TRIES):
                newest = await self._client.lindex(self._key("audit", "log"), -1)
                prev = None if newest is None else entry_from_dict(json.loads(newest))
                entry = chain(draft, prev=prev, at=at)
                appended = await self._append_audit(
                    keys=[self._key("audit", "head"), self._key("audit", "log")],
                    args=[
                        "" if prev is None else _head_value(prev.seq, prev.hash),
                        _audit_json(entry),
                        str(entry.seq),
                        _head_value(entry.seq, entry.hash),
                    ],
                )
                if appended == 1:
                    return entry
        raise StoreError(f"audit append lost the race {_AUDIT_APPEND_TRIES} times")

    @_translate_errors
    async def read_audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        if limit <= 0:
            return []
        start = max(after_seq, 0)
        raws = await self._client.lrange(self._key("audit", "log"), start, start + limit - 1)
        return [entry_from_dict(json.loads(raw)) for raw in raws]

    @_translate_errors
    async def audit_head(self) -> tuple[int, str]:
        head = await self._client.get(self._key("audit", "head"))
        if not head:
            return 0, GENESIS_HASH
        seq, _, digest = _text(head).partition(":")
        return int(seq), digest

    # --- browser sessions --------------------------------------------------------------------

    @_translate_errors
    async def create_session(self, session_hash: str, session: BrowserSession) -> None:
        key = self._key("session", session_hash)
        members = self._key("apt_sessions", session.appointment_id)
        expires_ms = math.ceil(session.expires_at * 1000)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encodable(_session_fields(session)))
            pipe.pexpireat(key, expires_ms)
            pipe.sadd(members, session_hash)
            # The set lives as long as its longest-lived session.
            pipe.pexpireat(members, expires_ms, nx=True)
            pipe.pexpireat(members, expires_ms, gt=True)
            await pipe.execute()

    @_translate_errors
    async def get_session(self, session_hash: str, *, now: float) -> BrowserSession | None:
        fields = await self._hash(self._key("session", session_hash))
        if fields is None:
            return None
        session = _session(fields)
        # Redis drops it at expires_at by its own clock; the caller's clock decides too.
        return None if session.expires_at <= now else session

    @_translate_errors
    async def mark_session_verified(self, session_hash: str) -> BrowserSession | None:
        raw = await self._hset_if_exists(
            keys=[self._key("session", session_hash)], args=["verified", "1"]
        )
        return None if raw is None else _session(_fields(raw))

    @_translate_errors
    async def touch_session(self, session_hash: str, at: float) -> BrowserSession | None:
        raw = await self._hset_if_exists(
            keys=[self._key("session", session_hash)], args=["last_seen", _num(at)]
        )
        return None if raw is None else _session(_fields(raw))

    @_translate_errors
    async def delete_session(self, session_hash: str) -> None:
        # Its member in the appointment's set is harmless: deleting them all checks each.
        await self._client.delete(self._key("session", session_hash))

    @_translate_errors
    async def delete_appointment_sessions(self, appointment_id: str) -> int:
        ended = await self._delete_appointment_sessions(
            keys=[self._key("apt_sessions", appointment_id)],
            args=[self._key("session", ""), appointment_id],
        )
        return int(ended)

    @_translate_errors
    async def delete_participant_sessions(self, appointment_id: str, participant_id: str) -> int:
        ended = await self._delete_participant_sessions(
            keys=[self._key("apt_sessions", appointment_id)],
            args=[self._key("session", ""), participant_id],
        )
        return int(ended)

    # --- webhooks ------------------------------------------------------------------------------

    @_translate_errors
    async def set_webhook_secret(self, platform_id: str, secret: str) -> None:
        await self._client.set(self._key("webhook_secret", platform_id), self._box.seal(secret))

    @_translate_errors
    async def get_webhook_secret(self, platform_id: str) -> str | None:
        sealed = await self._client.get(self._key("webhook_secret", platform_id))
        if sealed is None:
            return None
        return self._box.open(sealed if isinstance(sealed, bytes) else sealed.encode("ascii"))

    @_translate_errors
    async def enqueue_webhook(self, delivery: WebhookDelivery) -> None:
        key = self._key("webhook", delivery.id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encodable(_webhook_fields(delivery)))
            pipe.zadd(self._key("webhooks", "due"), {delivery.id: delivery.due_at})
            await pipe.execute()

    @_translate_errors
    async def claim_webhooks(self, *, now: float, lease: float, limit: int) -> list[WebhookClaim]:
        if limit <= 0:
            return []
        claim = new_id("clm")
        raws = await self._claim_webhooks(
            keys=[self._key("webhooks", "due")],
            args=[_num(now), _num(now + lease), str(int(limit)), claim, self._key("webhook", "")],
        )
        return [WebhookClaim(delivery=_webhook(_fields(raw)), claim=claim) for raw in raws]

    @_translate_errors
    async def complete_webhook(self, delivery_id: str) -> bool:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("webhook", delivery_id))
            pipe.zrem(self._key("webhooks", "due"), delivery_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    @_translate_errors
    async def reschedule_webhook(
        self, delivery_id: str, *, claim: str, due_at: float, attempts: int
    ) -> bool:
        done = await self._reschedule_webhook(
            keys=[self._key("webhook", delivery_id), self._key("webhooks", "due")],
            args=[claim, _num(due_at), str(int(attempts)), delivery_id],
        )
        return bool(done == 1)

    @_translate_errors
    async def abandon_webhook(self, delivery_id: str, *, claim: str) -> bool:
        done = await self._abandon_webhook(
            keys=[self._key("webhook", delivery_id), self._key("webhooks", "due")],
            args=[claim, delivery_id],
        )
        return bool(done == 1)


def _connect(url: str, *, max_connections: int = 64, timeout: float = 5.0) -> Redis:
    """A client that waits for a free connection and gives up quickly when Redis is down.

    Commands are sent at most once: a retried script whose reply was lost could apply a
    check-then-act twice (count an attempt twice, report a done move as refused), so a
    lost reply surfaces as StoreUnavailable instead. Dead pooled connections are still
    replaced when checked out, so a restarted Redis is picked up at once.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries=0),
    )
    return Redis.from_pool(pool)


if TYPE_CHECKING:

    def _implements_store(store: RedisStore) -> Store:
        return store
