"""The embedded store: everything in this process's memory.

Each method runs without an ``await`` between its read and its write, so on one event
loop every method is atomic. State is lost when the process stops: use RedisStore for
anything that must survive a restart or span processes.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Collection, Sequence

from gateway.domain.apikeys import ApiKey, revoke
from gateway.domain.audit import (
    GENESIS_HASH,
    NO_ANCHOR,
    AuditAnchor,
    AuditDraft,
    AuditEntry,
    chain,
    leading_older_than,
    pruned_record,
)
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
from gateway.domain.waiting_room import HostPresence, ParticipantState, RoomCondition, RoomStatus
from gateway.domain.webhooks import WebhookClaim, WebhookDelivery
from gateway.errors import StoreError
from gateway.storage.secretbox import ResealReport, SecretBox

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
        # Recordings by id, each appointment's in order, and its active one (-> id).
        self._recordings: dict[str, Recording] = {}
        self._appointment_recordings: dict[str, list[str]] = {}
        self._active_recordings: dict[str, str] = {}
        # Data lifecycle: where the pruned audit log starts, what is left of participants
        # whose data is gone, and the ended appointments whose data was purged (-> end).
        self._audit_anchor = NO_ANCHOR
        self._tombstones: dict[str, ParticipantTombstone] = {}
        self._purged_appointments: dict[str, float] = {}

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

    async def end_appointment(
        self, appointment_id: str, at: float
    ) -> tuple[bool, Appointment | None]:
        appointment = self._appointments.get(appointment_id)
        if appointment is None or appointment.ended_at is not None:
            return False, appointment
        appointment = dataclasses.replace(appointment, ended_at=at)
        self._appointments[appointment_id] = appointment
        return True, appointment

    async def open_appointments(self, *, created_before: float, limit: int) -> list[str]:
        open_ = [
            (a.created_at, a.id)
            for a in self._appointments.values()
            if a.ended_at is None and a.created_at < created_before
        ]
        return [appointment_id for _, appointment_id in heapq.nsmallest(max(limit, 0), open_)]

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

    async def connection_count(self, participant_id: str) -> int:
        return self._connections.get(participant_id, 0)

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

    async def link_used(self, jti: str) -> bool:
        return jti in self._used_jtis

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

    async def reseal_secrets(self) -> ResealReport:
        report = ResealReport()
        for secrets in (self._totp_secrets, self._webhook_secrets):
            for owner, sealed in list(secrets.items()):
                report += _reseal_one(self._box, secrets, owner, sealed)
        return report

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
        return self._append_audit(draft, at=at)

    def _append_audit(self, draft: AuditDraft, *, at: float) -> AuditEntry:
        # A pruned log always keeps its newest entry (the audit.pruned one), so the chain
        # continues from it.
        entry = chain(draft, prev=self._audit[-1] if self._audit else None, at=at)
        self._audit.append(entry)
        return entry

    async def read_audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        if limit <= 0:
            return []
        # Entry ``seq`` is at index ``seq - 1 - anchor`` once the log has been pruned.
        start = max(after_seq - self._audit_anchor.seq, 0)
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

    # --- recordings -------------------------------------------------------------------------

    async def begin_recording(self, recording: Recording) -> bool:
        appointment_id = recording.appointment_id
        if appointment_id in self._active_recordings or recording.id in self._recordings:
            return False
        self._recordings[recording.id] = recording
        self._appointment_recordings.setdefault(appointment_id, []).append(recording.id)
        self._active_recordings[appointment_id] = recording.id
        return True

    async def touch_recording(self, recording_id: str, *, at: float) -> Recording | None:
        recording = self._recordings.get(recording_id)
        if recording is not None and recording.active:
            recording = self._recordings[recording_id] = dataclasses.replace(
                recording, heartbeat_at=at
            )
        return recording

    async def claim_recording(self, recording_id: str, *, node: str, at: float) -> Recording | None:
        recording = self._recordings.get(recording_id)
        if recording is None or not recording.active or recording.node:
            return None
        recording = self._recordings[recording_id] = dataclasses.replace(
            recording, node=node, heartbeat_at=at
        )
        return recording

    async def request_recording_stop(
        self, recording_id: str, *, reason: StopReason
    ) -> Recording | None:
        recording = self._recordings.get(recording_id)
        if recording is not None and recording.active and recording.stop_reason is None:
            recording = self._recordings[recording_id] = dataclasses.replace(
                recording, stop_reason=StopReason(reason)
            )
        return recording

    async def finish_recording(
        self,
        recording_id: str,
        *,
        stopped_at: float,
        reason: StopReason,
        sealed: SealedFile | None,
        consents: Sequence[ConsentLink],
    ) -> tuple[bool, Recording | None]:
        recording = self._recordings.get(recording_id)
        if recording is None or not recording.active:
            return False, recording
        recording = self._recordings[recording_id] = recording.finished(
            at=stopped_at, reason=StopReason(reason), sealed=sealed, consents=consents
        )
        if self._active_recordings.get(recording.appointment_id) == recording_id:
            del self._active_recordings[recording.appointment_id]
        return True, recording

    async def get_recording(self, recording_id: str) -> Recording | None:
        return self._recordings.get(recording_id)

    async def active_recording(self, appointment_id: str) -> Recording | None:
        recording_id = self._active_recordings.get(appointment_id)
        return None if recording_id is None else self._recordings[recording_id]

    async def list_recordings(self, appointment_id: str) -> list[Recording]:
        return [self._recordings[r] for r in self._appointment_recordings.get(appointment_id, [])]

    # --- data lifecycle -------------------------------------------------------------------

    async def audit_anchor(self) -> AuditAnchor:
        return self._audit_anchor

    async def prune_audit(
        self, *, before: float, limit: int, actor: str, at: float
    ) -> AuditPrune | None:
        count = leading_older_than(self._audit[: max(limit, 0)], before)
        if count == 0:
            return None
        last = self._audit[count - 1]
        # Chained after the newest entry before any is removed: the log is never empty.
        entry = chain(pruned_record(last, count=count, actor=actor), prev=self._audit[-1], at=at)
        del self._audit[:count]
        self._audit_anchor = AuditAnchor(seq=last.seq, hash=last.hash)
        self._audit.append(entry)
        return AuditPrune(entries=count, anchor=self._audit_anchor, entry=entry)

    async def erase_participant(
        self, participant_id: str, *, appointment_id: str, record: AuditDraft, at: float
    ) -> Erasure | None:
        participant = self._participants.get(participant_id)
        if participant is None or participant.appointment_id != appointment_id:
            return None
        tombstone = self._forget_participant(participant, at=at, reason=GoneReason.ERASED)
        doomed = [h for h, s in self._sessions.items() if s.participant_id == participant_id]
        for session_hash in doomed:
            del self._sessions[session_hash]
        records = self._consents.get(appointment_id, [])
        kept = [r for r in records if r.participant_id != participant_id]
        if records:
            self._consents[appointment_id] = kept
        entry = self._append_audit(record, at=at)
        return Erasure(
            tombstone=tombstone,
            sessions=len(doomed),
            consents=len(records) - len(kept),
            entry=entry,
        )

    def _forget_participant(
        self, participant: Participant, *, at: float, reason: GoneReason
    ) -> ParticipantTombstone:
        participant_id = participant.id
        del self._participants[participant_id]
        for table in (self._totp_secrets, self._totp_steps, self._totp_attempts):
            table.pop(participant_id, None)
        self._connections.pop(participant_id, None)
        tombstone = ParticipantTombstone(
            participant_id=participant_id,
            appointment_id=participant.appointment_id,
            at=at,
            reason=reason,
        )
        self._tombstones[participant_id] = tombstone
        return tombstone

    async def get_participant_tombstone(self, participant_id: str) -> ParticipantTombstone | None:
        return self._tombstones.get(participant_id)

    async def purge_ended_appointments(
        self, *, ended_before: float, limit: int, actor: str, at: float
    ) -> list[AppointmentPurge]:
        ended = [
            (a.ended_at, a.id)
            for a in self._appointments.values()
            if a.ended_at is not None
            and a.ended_at < ended_before
            and a.id not in self._purged_appointments
        ]
        due = heapq.nsmallest(max(limit, 0), ended)
        purged: list[AppointmentPurge] = []
        for ended_at, appointment_id in due:
            members = [p for p in self._participants.values() if p.appointment_id == appointment_id]
            for participant in members:
                self._forget_participant(participant, at=at, reason=GoneReason.RETENTION)
            # A secret written for an erased participant as it was erased (decision 0004)
            # goes too, as in Redis, where the id stays listed under its appointment.
            for gone in [
                i for i, t in self._tombstones.items() if t.appointment_id == appointment_id
            ]:
                for table in (self._totp_secrets, self._totp_steps, self._totp_attempts):
                    table.pop(gone, None)
            doomed = [h for h, s in self._sessions.items() if s.appointment_id == appointment_id]
            for session_hash in doomed:
                del self._sessions[session_hash]
            self._consents.pop(appointment_id, None)
            self._purged_appointments[appointment_id] = ended_at
            entry = self._append_audit(
                appointment_purged_record(appointment_id, actor=actor), at=at
            )
            purged.append(
                AppointmentPurge(
                    appointment_id=appointment_id, participants=len(members), entry=entry
                )
            )
        return purged

    async def forget_purged_appointments(self, *, ended_before: float, limit: int) -> int:
        due = heapq.nsmallest(
            max(limit, 0),
            ((at, i) for i, at in self._purged_appointments.items() if at < ended_before),
        )
        for _, appointment_id in due:
            del self._purged_appointments[appointment_id]
            self._appointments.pop(appointment_id, None)
            gone = [p for p, t in self._tombstones.items() if t.appointment_id == appointment_id]
            for participant_id in gone:
                del self._tombstones[participant_id]
        return len(due)

    async def forget_expired(self, *, now: float, limit: int) -> ExpiredState:
        # An expired link is refused by its signature, so its jti need not be kept.
        jtis = [j for j, expires_at in self._used_jtis.items() if expires_at < now][:limit]
        for jti in jtis:
            del self._used_jtis[jti]
        sessions = [h for h, s in self._sessions.items() if s.expires_at <= now][:limit]
        for session_hash in sessions:
            del self._sessions[session_hash]
        return ExpiredState(links=len(jtis), sessions=len(sessions))


def _reseal_one(
    box: SecretBox, secrets: dict[str, bytes], owner: str, sealed: bytes
) -> ResealReport:
    try:
        fresh = box.reseal(sealed)
    except StoreError:
        return ResealReport(unreadable=1)
    if fresh is None:
        return ResealReport(current=1)
    secrets[owner] = fresh  # no await since the read: nobody wrote in between
    return ResealReport(resealed=1)
