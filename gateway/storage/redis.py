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
                            (less the anchor's seq once the retention pruned it)
``audit:head``              ``<seq>:<hash>`` of the newest entry
``session:<hash>``          hash: participant_id, appointment_id, role, created_at,
                            expires_at, verified; expires at ``expires_at``
``webhook_secret:<id>``     the platform's sealed webhook signing secret
``webhook:<id>``            hash: id, platform_id, kind, body, created_at, due_at,
                            attempts, claim (while leased)
``webhooks:due``            sorted set of delivery ids by when each is next visible
                            to claimers (its due time, or a lease's end)
``audit:anchor``            ``<seq>:<hash>`` of the last entry the retention pruned
``appointments:ended``      sorted set of ended appointment ids by ``ended_at``, until
                            the retention purges their participant data
``appointments:purged``     sorted set of purged appointment ids by ``ended_at``
``appointments:open``       sorted set of appointment ids not ended, by ``created_at``
                            (the retention ends those nobody ended)
``participant_gone:<id>``   hash: participant_id, appointment_id, at, reason: what is
                            left of an erased or purged participant
``recording:<id>``          hash: id, appointment_id, room_id, started_at, started_by,
                            node, heartbeat_at, audio_tracks (JSON); stop_reason (once
                            asked or stopped); stopped_at, sealed (JSON), consents
                            (JSON) once stopped
``apt_recordings:<id>``     list of the appointment's recording ids, oldest first
``recording_active:<id>``   the id of the appointment's active recording
==========================  ==========================================================

Some scripts build key names from the prefix (ending every session of an appointment,
claiming webhooks, erasing a participant, purging and forgetting appointments),
so this store needs one Redis primary (Sentinel if wanted), not Redis Cluster; and
Redis 7 or newer (``PEXPIREAT ... NX`` / ``GT``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from gateway.domain.apikeys import ApiKey, Scope
from gateway.domain.audit import (
    GENESIS_HASH,
    AuditAnchor,
    AuditDraft,
    AuditEntry,
    chain,
    entry_from_dict,
    leading_older_than,
    pruned_record,
)
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
from gateway.domain.recording import ConsentLink, Recording, SealedFile, StopReason
from gateway.domain.retention import (
    AppointmentPurge,
    AuditPrune,
    Erasure,
    ExpiredState,
    GoneReason,
    ParticipantTombstone,
    appointment_purged_record,
)
from gateway.domain.totp import AttemptGrant
from gateway.domain.waiting_room import HostPresence, ParticipantState, RoomCondition
from gateway.domain.webhooks import WebhookClaim, WebhookDelivery, WebhookType
from gateway.errors import HostAbsent, RoomLocked, StoreError, StoreUnavailable
from gateway.storage.secretbox import ResealReport, SecretBox

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

# KEYS[1] a sealed secret; ARGV[1] the value read, ARGV[2] its replacement. Compare and
# set, keeping any expiry: 1 if replaced, 0 if someone wrote it since (or it is gone).
_RESEAL_SEALED_VALUE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""

# KEYS[1] API key; ARGV[1] revoked_at. The first revocation wins.
_REVOKE_API_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] appointment, KEYS[2] ended index, KEYS[3] open index; ARGV[1] ended_at,
# ARGV[2] appointment id. The first end wins (and is indexed for the retention); the id
# leaves the open index even if the appointment is gone. -> {first (0/1), the fields}
_END_APPOINTMENT = """
redis.call('ZREM', KEYS[3], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local first = redis.call('HSETNX', KEYS[1], 'ended_at', ARGV[1])
if first == 1 then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
end
return {first, redis.call('HGETALL', KEYS[1])}
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

# KEYS[1] head, KEYS[2] log, KEYS[3] anchor; ARGV[1] expected head ('' when empty),
# ARGV[2] entry JSON, ARGV[3] entry seq, ARGV[4] new head.
# -> 1 appended, 0 someone appended first.
_APPEND_AUDIT = """
local head = redis.call('GET', KEYS[1]) or ''
if head ~= ARGV[1] then return 0 end
local anchored = tonumber(string.match(redis.call('GET', KEYS[3]) or '0', '^%d+') or '0')
if redis.call('LLEN', KEYS[2]) + anchored ~= tonumber(ARGV[3]) - 1 then
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

# --- data lifecycle -------------------------------------------------------------------------
# Retention and erasure change several keys and append their audit entry in one script. The
# entry is chained in Python (Lua has no SHA-256) after the head it expects; a script that
# finds another head returns 0 and the caller chains again. Every check comes before the
# first write: a script is not rolled back by an error reply.

# KEYS[1] log, KEYS[2] anchor; ARGV[1] after seq, ARGV[2] limit. -> entry JSONs.
_READ_AUDIT = """
local anchored = tonumber(string.match(redis.call('GET', KEYS[2]) or '0', '^%d+') or '0')
local start = tonumber(ARGV[1]) - anchored
if start < 0 then start = 0 end
return redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""

# Shared by the scripts below.
_LIFECYCLE_LUA = """
-- nil when the entry may be appended; else what the script should return.
local function audit_ready(head_key, log_key, anchor_key, expected_head, seq)
  if (redis.call('GET', head_key) or '') ~= expected_head then return 0 end
  local anchored = tonumber(string.match(redis.call('GET', anchor_key) or '0', '^%d+') or '0')
  if redis.call('LLEN', log_key) + anchored ~= tonumber(seq) - 1 then
    return redis.error_reply('audit log and audit head disagree')
  end
  return nil
end

local function audit_push(head_key, log_key, entry, new_head)
  redis.call('RPUSH', log_key, entry)
  redis.call('SET', head_key, new_head)
end

-- A participant's record, TOTP state and connection count; a tombstone in place of the
-- record. Skips an id whose record belongs to another appointment. -> 1 if a record went.
local function forget_participant(prefix, pid, apt, at, reason)
  local key = prefix .. 'participant:' .. pid
  local owner = redis.call('HGET', key, 'appointment_id')
  if owner and owner ~= apt then return 0 end
  redis.call('DEL', key, prefix .. 'totp_secret:' .. pid, prefix .. 'totp_step:' .. pid,
             prefix .. 'totp_attempts:' .. pid, prefix .. 'connections:' .. pid)
  if not owner then return 0 end
  redis.call('HSET', prefix .. 'participant_gone:' .. pid, 'participant_id', pid,
             'appointment_id', apt, 'at', at, 'reason', reason)
  return 1
end

local function push_all(command, key, items)
  for i = 1, #items, 100 do
    redis.call(command, key, unpack(items, i, math.min(i + 99, #items)))
  end
end

-- Drops one participant's consent records from a session's list, renumbering the live
-- and withdrawn indexes of the records kept. -> how many were dropped.
local function drop_consents(prefix, sid, pid)
  local records_key = prefix .. 'consent_records:' .. sid
  local live_key = prefix .. 'consent_live:' .. sid
  local withdrawn_key = prefix .. 'consent_withdrawn:' .. sid
  local live, withdrawn = {}, {}
  local flat = redis.call('HGETALL', live_key)
  for i = 1, #flat, 2 do live[flat[i + 1]] = flat[i] end
  flat = redis.call('HGETALL', withdrawn_key)
  for i = 1, #flat, 2 do withdrawn[flat[i]] = flat[i + 1] end
  local kept, new_live, new_withdrawn, dropped = {}, {}, {}, 0
  for i, raw in ipairs(redis.call('LRANGE', records_key, 0, -1)) do
    local old = tostring(i - 1)
    if cjson.decode(raw)['participant_id'] == pid then
      dropped = dropped + 1
    else
      local new = tostring(#kept)
      kept[#kept + 1] = raw
      if live[old] then
        new_live[#new_live + 1] = live[old]
        new_live[#new_live + 1] = new
      end
      if withdrawn[old] then
        new_withdrawn[#new_withdrawn + 1] = new
        new_withdrawn[#new_withdrawn + 1] = withdrawn[old]
      end
    end
  end
  if dropped == 0 then return 0 end
  redis.call('DEL', records_key, live_key, withdrawn_key)
  push_all('RPUSH', records_key, kept)
  push_all('HSET', live_key, new_live)
  push_all('HSET', withdrawn_key, new_withdrawn)
  return dropped
end
"""

# KEYS[1] log, KEYS[2] head, KEYS[3] anchor; ARGV[1] expected anchor, ARGV[2] how many
# entries to remove, ARGV[3] hash of the last one, ARGV[4] new anchor, ARGV[5] expected
# head, ARGV[6] audit.pruned entry JSON, ARGV[7] its seq, ARGV[8] new head.
# -> 1 pruned, 0 someone appended first, -1 someone pruned first.
_PRUNE_AUDIT = (
    _LIFECYCLE_LUA
    + """
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[1] then return -1 end
local count = tonumber(ARGV[2])
local last = redis.call('LINDEX', KEYS[1], count - 1)
if not last or cjson.decode(last)['hash'] ~= ARGV[3] then
  return redis.error_reply('audit log changed under a prune')
end
local ready = audit_ready(KEYS[2], KEYS[1], KEYS[3], ARGV[5], ARGV[7])
if ready then return ready end
redis.call('LTRIM', KEYS[1], count, -1)
redis.call('SET', KEYS[3], ARGV[4])
audit_push(KEYS[2], KEYS[1], ARGV[6], ARGV[8])
return 1
"""
)

# KEYS[1] audit head, KEYS[2] audit log, KEYS[3] audit anchor; ARGV[1] key prefix,
# ARGV[2] participant id, ARGV[3] appointment id, ARGV[4] at, ARGV[5] expected head,
# ARGV[6] entry JSON, ARGV[7] entry seq, ARGV[8] new head.
# -> false (no such participant in that appointment), 0 (head moved), or
#    {browser sessions ended, consent records dropped}
_ERASE_PARTICIPANT = (
    _LIFECYCLE_LUA
    + """
local prefix, pid, apt = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', prefix .. 'participant:' .. pid, 'appointment_id') ~= apt then
  return false
end
local ready = audit_ready(KEYS[1], KEYS[2], KEYS[3], ARGV[5], ARGV[7])
if ready then return ready end
forget_participant(prefix, pid, apt, ARGV[4], 'erased')
local sessions = 0
local set = prefix .. 'apt_sessions:' .. apt
for _, member in ipairs(redis.call('SMEMBERS', set)) do
  local key = prefix .. 'session:' .. member
  if redis.call('HGET', key, 'participant_id') == pid then
    sessions = sessions + redis.call('DEL', key)
    redis.call('SREM', set, member)
  end
end
local consents = drop_consents(prefix, apt, pid)
audit_push(KEYS[1], KEYS[2], ARGV[6], ARGV[8])
return {sessions, consents}
"""
)

# KEYS[1] ended index, KEYS[2] purged index, KEYS[3] audit head, KEYS[4] audit log,
# KEYS[5] audit anchor; ARGV[1] key prefix, ARGV[2] appointment id, ARGV[3] at,
# ARGV[4] expected head, ARGV[5] entry JSON, ARGV[6] entry seq, ARGV[7] new head.
# -> false (not waiting to be purged: another process did it), 0 (head moved), or
#    {participant records removed}
_PURGE_APPOINTMENT = (
    _LIFECYCLE_LUA
    + """
local prefix, apt = ARGV[1], ARGV[2]
local ended_at = redis.call('ZSCORE', KEYS[1], apt)
if not ended_at then return false end
local ready = audit_ready(KEYS[3], KEYS[4], KEYS[5], ARGV[4], ARGV[6])
if ready then return ready end
local participants = 0
for _, pid in ipairs(redis.call('SMEMBERS', prefix .. 'apt_participants:' .. apt)) do
  participants = participants + forget_participant(prefix, pid, apt, ARGV[3], 'retention')
end
local set = prefix .. 'apt_sessions:' .. apt
for _, member in ipairs(redis.call('SMEMBERS', set)) do
  local key = prefix .. 'session:' .. member
  if redis.call('HGET', key, 'appointment_id') == apt then redis.call('DEL', key) end
end
redis.call('DEL', set, prefix .. 'consent_records:' .. apt, prefix .. 'consent_live:' .. apt,
           prefix .. 'consent_withdrawn:' .. apt)
redis.call('ZREM', KEYS[1], apt)
redis.call('ZADD', KEYS[2], ended_at, apt)
audit_push(KEYS[3], KEYS[4], ARGV[5], ARGV[7])
return {participants}
"""
)

# KEYS[1] purged index; ARGV[1] key prefix, ARGV[2] ended before (exclusive), ARGV[3]
# limit. -> how many appointments were forgotten.
_FORGET_PURGED = """
local prefix = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, apt in ipairs(due) do
  local members = prefix .. 'apt_participants:' .. apt
  for _, pid in ipairs(redis.call('SMEMBERS', members)) do
    local gone = prefix .. 'participant_gone:' .. pid
    if redis.call('HGET', gone, 'appointment_id') == apt then redis.call('DEL', gone) end
  end
  redis.call('DEL', members, prefix .. 'apt:' .. apt)
  redis.call('ZREM', KEYS[1], apt)
end
return #due
"""

# Recordings. KEYS[1] the appointment's active id, KEYS[2] the record, KEYS[3] the
# appointment's list; ARGV[1] id, ARGV[2..] field, value, ... -> 1 begun, 0 one is active.
_BEGIN_RECORDING = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
redis.call('RPUSH', KEYS[3], ARGV[1])
return 1
"""

# KEYS[1] the record; ARGV[1] field, ARGV[2] value, ARGV[3] 1 to keep a value already set.
# Changes an active recording only. -> the record after.
_UPDATE_ACTIVE_RECORDING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if not redis.call('HGET', KEYS[1], 'stopped_at') then
  if ARGV[3] == '1' then
    redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
  else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  end
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] the record; ARGV[1] node, ARGV[2] at. An active record nobody writes yet only.
# -> the record once claimed, else false.
_CLAIM_RECORDING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HGET', KEYS[1], 'stopped_at') then return false end
if redis.call('HGET', KEYS[1], 'node') ~= '' then return false end
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'heartbeat_at', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] the record; ARGV[1] key prefix, ARGV[2..] field, value, ... (stopped_at first).
# The first finish wins and frees the appointment. -> {1 finished / 0 already, record}
_FINISH_RECORDING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HGET', KEYS[1], 'stopped_at') then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local fields = redis.call('HMGET', KEYS[1], 'id', 'appointment_id')
local active = ARGV[1] .. 'recording_active:' .. fields[2]
if redis.call('GET', active) == fields[1] then redis.call('DEL', active) end
return {1, redis.call('HGETALL', KEYS[1])}
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


def _recording_fields(recording: Recording) -> dict[str, str]:
    """The fields a recording has from its start (the rest come when it stops)."""
    return {
        "id": recording.id,
        "appointment_id": recording.appointment_id,
        "room_id": recording.room_id,
        "started_at": _num(recording.started_at),
        "started_by": recording.started_by,
        "node": recording.node,
        "heartbeat_at": _num(recording.heartbeat_at),
        "audio_tracks": json.dumps(list(recording.audio_tracks)),
    }


def _recording_end_fields(
    *,
    stopped_at: float,
    reason: StopReason,
    sealed: SealedFile | None,
    consents: Sequence[ConsentLink],
) -> dict[str, str]:
    fields = {
        "stopped_at": _num(stopped_at),
        "stop_reason": StopReason(reason).value,
        "consents": json.dumps(
            [[c.participant_id, c.text_version, _num(c.given_at)] for c in consents]
        ),
    }
    if sealed is not None:
        fields["sealed"] = json.dumps([sealed.file_name, sealed.sealed_hash, sealed.key_id])
    return fields


def _recording(f: Mapping[str, str]) -> Recording:
    sealed = json.loads(f["sealed"]) if "sealed" in f else None
    return Recording(
        id=f["id"],
        appointment_id=f["appointment_id"],
        room_id=f["room_id"],
        started_at=float(f["started_at"]),
        started_by=f["started_by"],
        node=f["node"],
        heartbeat_at=float(f["heartbeat_at"]),
        audio_tracks=tuple(json.loads(f["audio_tracks"])),
        stop_reason=StopReason(f["stop_reason"]) if "stop_reason" in f else None,
        stopped_at=float(f["stopped_at"]) if "stopped_at" in f else None,
        sealed=None
        if sealed is None
        else SealedFile(file_name=sealed[0], sealed_hash=sealed[1], key_id=sealed[2]),
        consents=tuple(
            ConsentLink(participant_id=p, text_version=v, given_at=float(at))
            for p, v, at in json.loads(f.get("consents", "[]"))
        ),
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
        self._read_audit = client.register_script(_READ_AUDIT)
        self._prune_audit = client.register_script(_PRUNE_AUDIT)
        self._erase_participant = client.register_script(_ERASE_PARTICIPANT)
        self._purge_appointment = client.register_script(_PURGE_APPOINTMENT)
        self._forget_purged = client.register_script(_FORGET_PURGED)
        self._begin_recording = client.register_script(_BEGIN_RECORDING)
        self._update_active_recording = client.register_script(_UPDATE_ACTIVE_RECORDING)
        self._finish_recording = client.register_script(_FINISH_RECORDING)
        self._claim_recording = client.register_script(_CLAIM_RECORDING)
        self._reseal_secret = client.register_script(_RESEAL_SEALED_VALUE)

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
        key = self._key("apt", appointment.id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=_encodable(_appointment_fields(appointment)))
            if appointment.ended_at is not None:
                # Ended already (a restore, a test): the retention finds it like any other.
                ended = self._key("appointments", "ended")
                pipe.zadd(ended, {appointment.id: appointment.ended_at})
                pipe.zrem(self._key("appointments", "open"), appointment.id)
            else:
                open_ = self._key("appointments", "open")
                pipe.zadd(open_, {appointment.id: appointment.created_at})
            await pipe.execute()

    @_translate_errors
    async def get_appointment(self, appointment_id: str) -> Appointment | None:
        fields = await self._hash(self._key("apt", appointment_id))
        return None if fields is None else _appointment(fields)

    @_translate_errors
    async def end_appointment(
        self, appointment_id: str, at: float
    ) -> tuple[bool, Appointment | None]:
        raw = await self._end_appointment(
            keys=[
                self._key("apt", appointment_id),
                self._key("appointments", "ended"),
                self._key("appointments", "open"),
            ],
            args=[_num(at), appointment_id],
        )
        if raw is None:
            return False, None
        first, fields = raw
        return first == 1, _appointment(_fields(fields))

    @_translate_errors
    async def open_appointments(self, *, created_before: float, limit: int) -> list[str]:
        if limit <= 0:
            return []
        due = await self._client.zrangebyscore(
            self._key("appointments", "open"),
            "-inf",
            f"({_num(created_before)}",
            start=0,
            num=int(limit),
        )
        return [_text(cast(bytes | str, member)) for member in due]

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
    async def connection_count(self, participant_id: str) -> int:
        count = await self._client.get(self._key("connections", participant_id))
        return 0 if count is None else max(int(count), 0)

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

    @_translate_errors
    async def link_used(self, jti: str) -> bool:
        return bool(await self._client.exists(self._key("jti", jti)))

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
    async def reseal_secrets(self) -> ResealReport:
        report = ResealReport()
        for kind in ("totp_secret", "webhook_secret"):
            pattern = f"{_glob_escape(self._prefix)}{kind}:*"
            async for key in self._client.scan_iter(match=pattern, count=500):
                report += await self._reseal_key(key)
        return report

    async def _reseal_key(self, key: bytes | str) -> ResealReport:
        sealed = await self._client.get(key)
        if sealed is None:
            return ResealReport(changed=1)
        try:
            fresh = self._box.reseal(sealed if isinstance(sealed, bytes) else sealed.encode())
        except StoreError:
            return ResealReport(unreadable=1)
        if fresh is None:
            return ResealReport(current=1)
        replaced = await self._reseal_secret(keys=[key], args=[sealed, fresh])
        return ResealReport(resealed=1) if replaced else ResealReport(changed=1)

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
                    keys=[
                        self._key("audit", "head"),
                        self._key("audit", "log"),
                        self._key("audit", "anchor"),
                    ],
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
        raws = await self._read_audit(
            keys=[self._key("audit", "log"), self._key("audit", "anchor")],
            args=[str(max(int(after_seq), 0)), str(int(limit))],
        )
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

    # --- recordings -------------------------------------------------------------------------

    @_translate_errors
    async def begin_recording(self, recording: Recording) -> bool:
        args: list[EncodableT] = [recording.id]
        for name, value in _recording_fields(recording).items():
            args += [name, value]
        begun = await self._begin_recording(
            keys=[
                self._key("recording_active", recording.appointment_id),
                self._key("recording", recording.id),
                self._key("apt_recordings", recording.appointment_id),
            ],
            args=args,
        )
        return bool(begun == 1)

    async def _update_active(
        self, recording_id: str, field: str, value: str, *, keep: bool
    ) -> Recording | None:
        raw = await self._update_active_recording(
            keys=[self._key("recording", recording_id)], args=[field, value, "1" if keep else "0"]
        )
        return None if raw is None else _recording(_fields(raw))

    @_translate_errors
    async def touch_recording(self, recording_id: str, *, at: float) -> Recording | None:
        return await self._update_active(recording_id, "heartbeat_at", _num(at), keep=False)

    @_translate_errors
    async def claim_recording(self, recording_id: str, *, node: str, at: float) -> Recording | None:
        raw = await self._claim_recording(
            keys=[self._key("recording", recording_id)], args=[node, _num(at)]
        )
        return None if raw is None else _recording(_fields(raw))

    @_translate_errors
    async def request_recording_stop(
        self, recording_id: str, *, reason: StopReason
    ) -> Recording | None:
        value = StopReason(reason).value
        return await self._update_active(recording_id, "stop_reason", value, keep=True)

    @_translate_errors
    async def finish_recording(
        self,
        recording_id: str,
        *,
        stopped_at: float,
        reason: StopReason,
        sealed: SealedFile | None,
        consents: Sequence[ConsentLink],
    ) -> tuple[bool, Recording | None]:
        args: list[EncodableT] = [self._prefix]
        fields = _recording_end_fields(
            stopped_at=stopped_at, reason=reason, sealed=sealed, consents=consents
        )
        for name, value in fields.items():
            args += [name, value]
        raw = await self._finish_recording(keys=[self._key("recording", recording_id)], args=args)
        if raw is None:
            return False, None
        finished, record = raw
        return finished == 1, _recording(_fields(record))

    @_translate_errors
    async def get_recording(self, recording_id: str) -> Recording | None:
        fields = await self._hash(self._key("recording", recording_id))
        return None if fields is None else _recording(fields)

    @_translate_errors
    async def active_recording(self, appointment_id: str) -> Recording | None:
        recording_id = await self._client.get(self._key("recording_active", appointment_id))
        if recording_id is None:
            return None
        fields = await self._hash(self._key("recording", _text(recording_id)))
        return None if fields is None else _recording(fields)

    @_translate_errors
    async def list_recordings(self, appointment_id: str) -> list[Recording]:
        ids = await self._client.lrange(self._key("apt_recordings", appointment_id), 0, -1)
        async with self._client.pipeline(transaction=False) as pipe:
            for recording_id in ids:
                pipe.hgetall(self._key("recording", _text(recording_id)))
            raws = await pipe.execute() if ids else []
        return [_recording(_fields(raw)) for raw in raws if raw]

    # --- data lifecycle -------------------------------------------------------------------

    @_translate_errors
    async def audit_anchor(self) -> AuditAnchor:
        raw = await self._client.get(self._key("audit", "anchor"))
        return AuditAnchor.parse(None if raw is None else _text(raw))

    def _audit_keys(self) -> list[str]:
        return [self._key("audit", "head"), self._key("audit", "log"), self._key("audit", "anchor")]

    async def _newest_audit(self) -> AuditEntry | None:
        newest = await self._client.lindex(self._key("audit", "log"), -1)
        return None if newest is None else entry_from_dict(json.loads(newest))

    @_translate_errors
    async def prune_audit(
        self, *, before: float, limit: int, actor: str, at: float
    ) -> AuditPrune | None:
        if limit <= 0:
            return None
        head, log, anchor_key = self._audit_keys()
        async with self._audit_lock:
            for _ in range(_AUDIT_APPEND_TRIES):
                anchor = await self.audit_anchor()
                page = await self.read_audit(after_seq=anchor.seq, limit=limit)
                count = leading_older_than(page, before)
                if count == 0:
                    return None
                last = page[count - 1]
                newest = await self._newest_audit()
                entry = chain(pruned_record(last, count=count, actor=actor), prev=newest, at=at)
                new_anchor = AuditAnchor(seq=last.seq, hash=last.hash)
                done = await self._prune_audit(
                    keys=[log, head, anchor_key],
                    args=[
                        anchor.value(),
                        str(count),
                        last.hash,
                        new_anchor.value(),
                        "" if newest is None else _head_value(newest.seq, newest.hash),
                        _audit_json(entry),
                        str(entry.seq),
                        _head_value(entry.seq, entry.hash),
                    ],
                )
                if done == 1:
                    return AuditPrune(entries=count, anchor=new_anchor, entry=entry)
                if done == -1:
                    return None  # another process pruned first; its pass carries on
        raise StoreError(f"audit prune lost the race {_AUDIT_APPEND_TRIES} times")

    @_translate_errors
    async def erase_participant(
        self, participant_id: str, *, appointment_id: str, record: AuditDraft, at: float
    ) -> Erasure | None:
        async with self._audit_lock:
            for _ in range(_AUDIT_APPEND_TRIES):
                newest = await self._newest_audit()
                entry = chain(record, prev=newest, at=at)
                raw = await self._erase_participant(
                    keys=self._audit_keys(),
                    args=[
                        self._prefix,
                        participant_id,
                        appointment_id,
                        _num(at),
                        "" if newest is None else _head_value(newest.seq, newest.hash),
                        _audit_json(entry),
                        str(entry.seq),
                        _head_value(entry.seq, entry.hash),
                    ],
                )
                if raw is None:
                    return None
                if isinstance(raw, list):
                    sessions, consents = raw
                    tombstone = ParticipantTombstone(
                        participant_id=participant_id,
                        appointment_id=appointment_id,
                        at=at,
                        reason=GoneReason.ERASED,
                    )
                    return Erasure(
                        tombstone=tombstone,
                        sessions=int(sessions),
                        consents=int(consents),
                        entry=entry,
                    )
        raise StoreError(f"erasure lost the audit race {_AUDIT_APPEND_TRIES} times")

    @_translate_errors
    async def get_participant_tombstone(self, participant_id: str) -> ParticipantTombstone | None:
        fields = await self._hash(self._key("participant_gone", participant_id))
        if fields is None:
            return None
        return ParticipantTombstone(
            participant_id=fields["participant_id"],
            appointment_id=fields["appointment_id"],
            at=float(fields["at"]),
            reason=GoneReason(fields["reason"]),
        )

    @_translate_errors
    async def purge_ended_appointments(
        self, *, ended_before: float, limit: int, actor: str, at: float
    ) -> list[AppointmentPurge]:
        if limit <= 0:
            return []
        ended = self._key("appointments", "ended")
        purged_index = self._key("appointments", "purged")
        purged: list[AppointmentPurge] = []
        async with self._audit_lock:
            # Chosen under the lock: purges running at once in this process then take
            # different appointments, not the same ones twice. Another process's purge
            # may still choose the same; the loser skips those (the script finds them
            # gone) and the next sweep takes what it left.
            due = await self._client.zrangebyscore(
                ended, "-inf", f"({_num(ended_before)}", start=0, num=int(limit)
            )
            for member in due:
                appointment_id = _text(cast(bytes | str, member))
                for _ in range(_AUDIT_APPEND_TRIES):
                    newest = await self._newest_audit()
                    entry = chain(
                        appointment_purged_record(appointment_id, actor=actor), prev=newest, at=at
                    )
                    raw = await self._purge_appointment(
                        keys=[ended, purged_index, *self._audit_keys()],
                        args=[
                            self._prefix,
                            appointment_id,
                            _num(at),
                            "" if newest is None else _head_value(newest.seq, newest.hash),
                            _audit_json(entry),
                            str(entry.seq),
                            _head_value(entry.seq, entry.hash),
                        ],
                    )
                    if raw is None:
                        break  # another process purged it
                    if isinstance(raw, list):
                        purged.append(
                            AppointmentPurge(
                                appointment_id=appointment_id,
                                participants=int(raw[0]),
                                entry=entry,
                            )
                        )
                        break
                else:
                    raise StoreError(f"purge lost the audit race {_AUDIT_APPEND_TRIES} times")
        return purged

    @_translate_errors
    async def forget_purged_appointments(self, *, ended_before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        forgotten = await self._forget_purged(
            keys=[self._key("appointments", "purged")],
            args=[self._prefix, _num(ended_before), str(int(limit))],
        )
        return int(forgotten)

    async def forget_expired(self, *, now: float, limit: int) -> ExpiredState:
        # Used link ids and browser sessions are written with a TTL (see consume_link and
        # create_session): Redis forgets them by itself.
        return ExpiredState()


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


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
