"""The embedded store: everything in this process's memory.

Each method runs without an ``await`` between its read and its write, so on one event
loop every method is atomic. State is lost when the process stops: use RedisStore for
anything that must survive a restart or span processes.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Collection

from gateway.domain.apikeys import ApiKey, revoke
from gateway.domain.audit import GENESIS_HASH, AuditDraft, AuditEntry, chain
from gateway.domain.consent import ConsentKind, ConsentRecord, withdraw
from gateway.domain.ids import new_id
from gateway.domain.model import (
    Appointment,
    BrowserSession,
    Host,
    Participant,
    Platform,
    Room,
)
from gateway.domain.totp import AttemptGrant
from gateway.domain.waiting_room import HostPresence, ParticipantState, RoomCondition, RoomStatus
from gateway.domain.webhooks import WebhookClaim, WebhookDelivery
from gateway.storage.secretbox import SecretBox

__all__ = ["MemoryStore"]


@dataclasses.dataclass(slots=True)
class _Attempts:
    count: int
    last_at: float


class MemoryStore:
    """A :class:`~gateway.storage.base.Store` in a dict, for one process."""

    def __init__(self, *, secret_box: SecretBox) -> None:
        self._box = secret_box
        self._platforms: dict[str, Platform] = {}
        self._api_keys: dict[str, ApiKey] = {}
        self._hosts: dict[str, Host] = {}
        self._rooms: dict[str, Room] = {}
        self._appointments: dict[str, Appointment] = {}
        self._participants: dict[str, Participant] = {}
        self._used_jtis: dict[str, float] = {}
        self._totp_secrets: dict[str, bytes] = {}
        self._totp_steps: dict[str, int] = {}
        self._totp_attempts: dict[str, _Attempts] = {}
        self._consents: dict[str, list[ConsentRecord]] = {}
        self._audit: list[AuditEntry] = []
        self._sessions: dict[str, BrowserSession] = {}
        self._webhook_secrets: dict[str, bytes] = {}
        self._webhooks: dict[str, WebhookDelivery] = {}
        #: When each delivery is next visible to claimers: its due time, or a lease's end.
        self._webhook_visible: dict[str, float] = {}
        self._webhook_claims: dict[str, str] = {}
        self._connections: dict[str, int] = {}
        self._rate_windows: dict[str, tuple[int, int]] = {}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- hosts, rooms, appointments, participants --------------------------------------

    async def put_platform(self, platform: Platform) -> None:
        self._platforms[platform.id] = platform

    async def get_platform(self, platform_id: str) -> Platform | None:
        return self._platforms.get(platform_id)

    # --- platform API keys --------------------------------------------------------------

    async def put_api_key(self, key: ApiKey) -> None:
        self._api_keys[key.id] = key

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return self._api_keys.get(key_id)

    async def revoke_api_key(self, key_id: str, at: float) -> ApiKey | None:
        key = self._api_keys.get(key_id)
        if key is None:
            return None
        self._api_keys[key_id] = key = revoke(key, at=at)
        return key

    async def list_api_keys(self, platform_id: str) -> list[ApiKey]:
        found = [k for k in self._api_keys.values() if k.platform_id == platform_id]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    async def put_host(self, host: Host) -> None:
        self._hosts[host.id] = host

    async def get_host(self, host_id: str) -> Host | None:
        return self._hosts.get(host_id)

    async def put_room(self, room: Room) -> None:
        self._rooms[room.id] = room

    async def get_room(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    async def set_room_lock(self, room_id: str, locked: bool) -> Room | None:
        room = self._rooms.get(room_id)
        if room is None:
            return None
        self._rooms[room_id] = room = dataclasses.replace(room, locked=locked)
        return room

    async def set_host_presence(self, room_id: str, presence: HostPresence) -> Room | None:
        room = self._rooms.get(room_id)
        if room is None:
            return None
        self._rooms[room_id] = room = dataclasses.replace(room, host_presence=presence)
        return room

    async def put_appointment(self, appointment: Appointment) -> None:
        self._appointments[appointment.id] = appointment

    async def get_appointment(self, appointment_id: str) -> Appointment | None:
        return self._appointments.get(appointment_id)

    async def end_appointment(self, appointment_id: str, at: float) -> Appointment | None:
        appointment = self._appointments.get(appointment_id)
        if appointment is None or appointment.ended_at is not None:
            return appointment
        appointment = dataclasses.replace(appointment, ended_at=at)
        self._appointments[appointment_id] = appointment
        return appointment

    async def put_participant(self, participant: Participant) -> None:
        self._participants[participant.id] = participant

    async def get_participant(self, participant_id: str) -> Participant | None:
        return self._participants.get(participant_id)

    async def list_participants(self, appointment_id: str) -> list[Participant]:
        found = [p for p in self._participants.values() if p.appointment_id == appointment_id]
        return sorted(found, key=lambda p: (p.created_at, p.id))

    async def transition_participant(
        self,
        participant_id: str,
        *,
        sources: Collection[ParticipantState],
        target: ParticipantState,
        at: float,
        room: RoomCondition | None = None,
    ) -> tuple[bool, Participant | None]:
        participant = self._participants.get(participant_id)
        if participant is None or participant.state not in sources:
            return False, participant
        if room is not None:
            stored = self._rooms.get(room.room_id)
            if stored is not None:
                room.check(
                    RoomStatus(
                        room_id=stored.id, host_presence=stored.host_presence, locked=stored.locked
                    )
                )
        moved = dataclasses.replace(participant, state=target, state_since=at)
        self._participants[participant_id] = moved
        return True, moved

    async def set_participant_verified(self, participant_id: str, at: float) -> Participant | None:
        participant = self._participants.get(participant_id)
        if participant is None:
            return None
        participant = dataclasses.replace(participant, verified_at=at)
        self._participants[participant_id] = participant
        return participant

    # --- presence and rate limits -------------------------------------------------------

    async def change_connections(self, participant_id: str, delta: int) -> int:
        count = max(self._connections.get(participant_id, 0) + delta, 0)
        if count:
            self._connections[participant_id] = count
        else:
            self._connections.pop(participant_id, None)
        return count

    async def hit_rate_limit(self, key: str, *, limit: int, window: float, now: float) -> bool:
        bucket = int(now // window)
        current_bucket, hits = self._rate_windows.get(key, (bucket, 0))
        if current_bucket != bucket:
            hits = 0
        hits += 1
        self._rate_windows[key] = (bucket, hits)
        if len(self._rate_windows) > 50_000:
            self._rate_windows = {k: v for k, v in self._rate_windows.items() if v[0] == bucket}
        return hits <= limit

    # --- links -------------------------------------------------------------------------

    async def consume_link(self, jti: str, *, expires_at: float, now: float) -> bool:
        self._forget_expired_jtis(now)
        if jti in self._used_jtis:
            return False
        self._used_jtis[jti] = expires_at
        return True

    def _forget_expired_jtis(self, now: float) -> None:
        # An expired link is refused by its signature, so its jti need not be kept.
        if len(self._used_jtis) > 10_000:
            for jti in [j for j, exp in self._used_jtis.items() if exp < now]:
                del self._used_jtis[jti]

    # --- TOTP ---------------------------------------------------------------------------

    async def set_totp_secret(self, participant_id: str, secret: str) -> None:
        self._totp_secrets[participant_id] = self._box.seal(secret)
        self._totp_steps.pop(participant_id, None)

    async def add_totp_secret(self, participant_id: str, secret: str) -> bool:
        if participant_id in self._totp_secrets:
            return False
        await self.set_totp_secret(participant_id, secret)
        return True

    async def get_totp_secret(self, participant_id: str) -> str | None:
        sealed = self._totp_secrets.get(participant_id)
        return None if sealed is None else self._box.open(sealed)

    async def use_totp_step(self, participant_id: str, step: int) -> bool:
        if step <= self._totp_steps.get(participant_id, -1):
            return False
        self._totp_steps[participant_id] = step
        return True

    async def begin_totp_attempt(
        self, participant_id: str, *, limit: int, cooldown: float, now: float
    ) -> AttemptGrant:
        attempts = self._totp_attempts.get(participant_id)
        if attempts is None or now >= attempts.last_at + cooldown:
            attempts = _Attempts(count=0, last_at=now)
        if attempts.count >= limit:
            return AttemptGrant(
                allowed=False, attempts=attempts.count, locked_until=attempts.last_at + cooldown
            )
        attempts.count += 1
        attempts.last_at = now
        self._totp_attempts[participant_id] = attempts
        return AttemptGrant(allowed=True, attempts=attempts.count, locked_until=0.0)

    async def clear_totp_attempts(self, participant_id: str) -> None:
        self._totp_attempts.pop(participant_id, None)

    # --- consent ---------------------------------------------------------------------------

    async def give_consent(self, record: ConsentRecord) -> ConsentRecord:
        records = self._consents.setdefault(record.session_id, [])
        for existing in records:
            if (
                existing.participant_id == record.participant_id
                and existing.kind is record.kind
                and existing.live
            ):
                return existing
        records.append(record)
        return record

    async def withdraw_consent(
        self, *, participant_id: str, session_id: str, kind: ConsentKind, at: float
    ) -> ConsentRecord | None:
        records = self._consents.get(session_id, [])
        for index, existing in enumerate(records):
            if (
                existing.participant_id == participant_id
                and existing.kind is kind
                and existing.live
            ):
                records[index] = withdrawn = withdraw(existing, at=at)
                return withdrawn
        return None

    async def list_consents(self, session_id: str) -> list[ConsentRecord]:
        return list(self._consents.get(session_id, []))

    # --- audit ---------------------------------------------------------------------------------

    async def append_audit(self, draft: AuditDraft, *, at: float) -> AuditEntry:
        entry = chain(draft, prev=self._audit[-1] if self._audit else None, at=at)
        self._audit.append(entry)
        return entry

    async def read_audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        if limit <= 0:
            return []
        start = max(after_seq, 0)
        return self._audit[start : start + limit]

    async def audit_head(self) -> tuple[int, str]:
        if not self._audit:
            return 0, GENESIS_HASH
        return self._audit[-1].seq, self._audit[-1].hash

    # --- browser sessions --------------------------------------------------------------------

    async def create_session(self, session_hash: str, session: BrowserSession) -> None:
        self._sessions[session_hash] = session

    async def get_session(self, session_hash: str, *, now: float) -> BrowserSession | None:
        session = self._sessions.get(session_hash)
        if session is not None and session.expires_at <= now:
            del self._sessions[session_hash]
            return None
        return session

    async def mark_session_verified(self, session_hash: str) -> BrowserSession | None:
        session = self._sessions.get(session_hash)
        if session is None:
            return None
        self._sessions[session_hash] = session = dataclasses.replace(session, verified=True)
        return session

    async def touch_session(self, session_hash: str, at: float) -> BrowserSession | None:
        session = self._sessions.get(session_hash)
        if session is None:
            return None
        self._sessions[session_hash] = session = dataclasses.replace(session, last_seen=at)
        return session

    async def delete_session(self, session_hash: str) -> None:
        self._sessions.pop(session_hash, None)

    async def delete_participant_sessions(self, appointment_id: str, participant_id: str) -> int:
        doomed = [
            h
            for h, s in self._sessions.items()
            if s.appointment_id == appointment_id and s.participant_id == participant_id
        ]
        for session_hash in doomed:
            del self._sessions[session_hash]
        return len(doomed)

    async def delete_appointment_sessions(self, appointment_id: str) -> int:
        doomed = [h for h, s in self._sessions.items() if s.appointment_id == appointment_id]
        for session_hash in doomed:
            del self._sessions[session_hash]
        return len(doomed)

    # --- webhooks ------------------------------------------------------------------------------

    async def set_webhook_secret(self, platform_id: str, secret: str) -> None:
        self._webhook_secrets[platform_id] = self._box.seal(secret)

    async def get_webhook_secret(self, platform_id: str) -> str | None:
        sealed = self._webhook_secrets.get(platform_id)
        return None if sealed is None else self._box.open(sealed)

    async def enqueue_webhook(self, delivery: WebhookDelivery) -> None:
        self._webhooks[delivery.id] = delivery
        self._webhook_visible[delivery.id] = delivery.due_at
        self._webhook_claims.pop(delivery.id, None)

    async def claim_webhooks(self, *, now: float, lease: float, limit: int) -> list[WebhookClaim]:
        if limit <= 0:
            return []
        due = heapq.nsmallest(
            limit, ((at, i) for i, at in self._webhook_visible.items() if at <= now)
        )
        claim = new_id("clm")
        claimed: list[WebhookClaim] = []
        for _, delivery_id in due:
            self._webhook_visible[delivery_id] = now + lease
            self._webhook_claims[delivery_id] = claim
            claimed.append(WebhookClaim(delivery=self._webhooks[delivery_id], claim=claim))
        return claimed

    async def complete_webhook(self, delivery_id: str) -> bool:
        return self._drop_webhook(delivery_id)

    async def reschedule_webhook(
        self, delivery_id: str, *, claim: str, due_at: float, attempts: int
    ) -> bool:
        if self._webhook_claims.get(delivery_id) != claim:
            return False
        self._webhooks[delivery_id] = dataclasses.replace(
            self._webhooks[delivery_id], due_at=due_at, attempts=attempts
        )
        self._webhook_visible[delivery_id] = due_at
        del self._webhook_claims[delivery_id]
        return True

    async def abandon_webhook(self, delivery_id: str, *, claim: str) -> bool:
        if self._webhook_claims.get(delivery_id) != claim:
            return False
        return self._drop_webhook(delivery_id)

    def _drop_webhook(self, delivery_id: str) -> bool:
        self._webhook_visible.pop(delivery_id, None)
        self._webhook_claims.pop(delivery_id, None)
        return self._webhooks.pop(delivery_id, None) is not None
