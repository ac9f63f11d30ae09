"""The one store interface. MemoryStore and RedisStore both implement it, and one
contract suite (tests/contract) runs against both.

Every check-then-act is one method here, so each implementation can make it atomic:
a single-threaded critical section in MemoryStore, one Redis command or Lua script
(or a WATCH/MULTI transaction) in RedisStore. Callers never read, decide in Python,
and write back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from gateway.domain.apikeys import ApiKey
from gateway.domain.audit import AuditAnchor, AuditDraft, AuditEntry
from gateway.domain.consent import ConsentKind, ConsentRecord
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
    ParticipantTombstone,
)
from gateway.domain.totp import AttemptGrant
from gateway.domain.waiting_room import HostPresence, ParticipantState, RoomCondition
from gateway.domain.webhooks import WebhookClaim, WebhookDelivery
from gateway.storage.secretbox import ResealReport

__all__ = ["Store"]


class Store(Protocol):
    """Durable state of the gateway."""

    # --- life -----------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""

    async def close(self) -> None:
        """Release connections; safe to call twice."""

    # --- platforms, hosts, rooms, appointments, participants --------------------------

    async def put_platform(self, platform: Platform) -> None: ...

    async def get_platform(self, platform_id: str) -> Platform | None: ...

    # --- platform API keys --------------------------------------------------------------

    async def put_api_key(self, key: ApiKey) -> None:
        """Keep a new key (its secret's hash only) and list it under its platform."""

    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    async def revoke_api_key(self, key_id: str, at: float) -> ApiKey | None:
        """Set ``revoked_at`` once (the first revocation wins); None if there is no key."""

    async def list_api_keys(self, platform_id: str) -> list[ApiKey]:
        """Every key of the platform, revoked ones included, oldest first."""

    async def put_host(self, host: Host) -> None: ...

    async def get_host(self, host_id: str) -> Host | None: ...

    async def put_room(self, room: Room) -> None: ...

    async def get_room(self, room_id: str) -> Room | None: ...

    async def set_room_lock(self, room_id: str, locked: bool) -> Room | None:
        """Lock or unlock; None if the room does not exist."""

    async def set_host_presence(self, room_id: str, presence: HostPresence) -> Room | None:
        """Mark the host present or away; None if the room does not exist."""

    async def put_appointment(self, appointment: Appointment) -> None: ...

    async def get_appointment(self, appointment_id: str) -> Appointment | None: ...

    async def end_appointment(
        self, appointment_id: str, at: float
    ) -> tuple[bool, Appointment | None]:
        """Set ``ended_at`` once (the first end wins): whether this call ended it, and the
        appointment as stored; ``(False, None)`` if it does not exist."""

    async def open_appointments(self, *, created_before: float, limit: int) -> list[str]:
        """The ids of up to ``limit`` appointments created before ``created_before`` that
        have not ended, oldest first (the retention ends those nobody ended)."""

    async def put_participant(self, participant: Participant) -> None:
        """Create a participant (or overwrite one wholesale, for setup)."""

    async def get_participant(self, participant_id: str) -> Participant | None: ...

    async def list_participants(self, appointment_id: str) -> list[Participant]:
        """Every participant of the appointment, oldest first."""

    async def transition_participant(
        self,
        participant_id: str,
        *,
        sources: Collection[ParticipantState],
        target: ParticipantState,
        at: float,
        room: RoomCondition | None = None,
    ) -> tuple[bool, Participant | None]:
        """Compare-and-set the state: move to ``target`` only from one of ``sources``,
        and only while ``room`` holds (else its RoomLocked or HostAbsent is raised and
        nothing moves).

        Returns (moved, participant after the call). Exactly one of any number of
        concurrent identical moves succeeds.
        """

    async def set_participant_verified(self, participant_id: str, at: float) -> Participant | None:
        """Record that the participant proved identity at ``at``; None if absent."""

    # --- presence and rate limits -------------------------------------------------------

    async def change_connections(self, participant_id: str, delta: int) -> int:
        """Add ``delta`` to the participant's count of live connections (never below
        zero) and return the new count, across every gateway process."""

    async def connection_count(self, participant_id: str) -> int:
        """The participant's count of live connections, read only (a count left by a
        process that died still fades as :meth:`change_connections` lets it)."""

    async def hit_rate_limit(self, key: str, *, limit: int, window: float, now: float) -> bool:
        """Count one hit on ``key`` in the fixed window containing ``now``. True while
        the window holds at most ``limit`` hits (this one included), False past it."""

    # --- links -------------------------------------------------------------------------

    async def consume_link(self, jti: str, *, expires_at: float, now: float) -> bool:
        """Mark the link's jti used. True for the first caller only, ever (until the
        link itself would have expired anyway, after which its signature refuses it)."""

    async def link_used(self, jti: str) -> bool:
        """Whether the link's jti was consumed. Only a hint for showing a page: redeeming
        still goes through :meth:`consume_link`, the one atomic step."""

    # --- TOTP ---------------------------------------------------------------------------

    async def set_totp_secret(self, participant_id: str, secret: str) -> None:
        """Keep the secret, encrypted at rest; replaces any earlier one and its steps."""

    async def add_totp_secret(self, participant_id: str, secret: str) -> bool:
        """Keep the secret only if the participant has none yet (first enrolment wins)."""

    async def get_totp_secret(self, participant_id: str) -> str | None: ...

    async def reseal_secrets(self) -> ResealReport:
        """Seal every stored secret (TOTP seeds, webhook signing secrets) under the
        newest data key, so that older keys can be dropped. Each one is replaced only if
        it is unchanged since it was read (a concurrent write wins and is counted); one
        that no key opens is counted and left alone. Safe while gateways serve, and to
        repeat."""

    async def use_totp_step(self, participant_id: str, step: int) -> bool:
        """Record ``step`` as used if it is newer than any used before. True if it was."""

    async def begin_totp_attempt(
        self, participant_id: str, *, limit: int, cooldown: float, now: float
    ) -> AttemptGrant:
        """Count one attempt before the code is checked.

        If ``limit`` attempts are already on record (and the cool-down since the last
        one has not passed), refuse without counting. Otherwise count this one and
        restart the cool-down. Concurrent callers never get more than ``limit`` grants.
        """

    async def clear_totp_attempts(self, participant_id: str) -> None:
        """A correct code wipes the attempt counter."""

    # --- consent ---------------------------------------------------------------------------

    async def give_consent(self, record: ConsentRecord) -> ConsentRecord:
        """Record consent. If a live record of that kind already exists for the
        participant and session, it is kept and returned (consent is idempotent)."""

    async def withdraw_consent(
        self, *, participant_id: str, session_id: str, kind: ConsentKind, at: float
    ) -> ConsentRecord | None:
        """Withdraw the live record of that kind; None if there was none."""

    async def list_consents(self, session_id: str) -> list[ConsentRecord]:
        """Every consent record of the session, withdrawn ones included, oldest first."""

    # --- audit ---------------------------------------------------------------------------------

    async def append_audit(self, draft: AuditDraft, *, at: float) -> AuditEntry:
        """Chain ``draft`` after the newest entry, atomically."""

    async def read_audit(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        """Entries with seq > ``after_seq``, oldest first."""

    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry; (0, GENESIS_HASH) for an empty log."""

    # --- browser sessions --------------------------------------------------------------------

    async def create_session(self, session_hash: str, session: BrowserSession) -> None:
        """Keep a browser session under the hash of its cookie, until it expires."""

    async def get_session(self, session_hash: str, *, now: float) -> BrowserSession | None: ...

    async def mark_session_verified(self, session_hash: str) -> BrowserSession | None: ...

    async def touch_session(self, session_hash: str, at: float) -> BrowserSession | None:
        """Record activity on the session now; None if it does not exist."""

    async def delete_session(self, session_hash: str) -> None: ...

    async def delete_participant_sessions(self, appointment_id: str, participant_id: str) -> int:
        """End every browser session of one participant (a new device took over)."""

    async def delete_appointment_sessions(self, appointment_id: str) -> int:
        """End every browser session of the appointment; returns how many."""

    # --- webhooks ------------------------------------------------------------------------------

    async def set_webhook_secret(self, platform_id: str, secret: str) -> None:
        """Keep the platform's webhook signing secret, encrypted at rest; replaces any."""

    async def get_webhook_secret(self, platform_id: str) -> str | None: ...

    async def enqueue_webhook(self, delivery: WebhookDelivery) -> None:
        """Put a delivery in the outbox, due at ``delivery.due_at``."""

    async def claim_webhooks(self, *, now: float, lease: float, limit: int) -> list[WebhookClaim]:
        """Lease up to ``limit`` deliveries due by ``now``, earliest due first.

        A claimed delivery is due again at ``now + lease`` (if its sender died), so no
        other claimer gets it before then; concurrent claimers never share a delivery.
        """

    async def complete_webhook(self, delivery_id: str) -> bool:
        """Delivered: drop it from the outbox. False if it was not there."""

    async def reschedule_webhook(
        self, delivery_id: str, *, claim: str, due_at: float, attempts: int
    ) -> bool:
        """Due again at ``due_at`` after ``attempts`` failures; only under its live claim."""

    async def abandon_webhook(self, delivery_id: str, *, claim: str) -> bool:
        """Give up: drop it from the outbox; only under its live claim."""

    # --- recordings -------------------------------------------------------------------------
    # An appointment has at most one active recording. The process writing it beats
    # (touch) while it writes; any process may ask it to stop; it finishes it once.

    async def begin_recording(self, recording: Recording) -> bool:
        """Keep ``recording`` as its appointment's active recording, unless one is active
        already (then nothing changes). True if it is now the active one."""

    async def touch_recording(self, recording_id: str, *, at: float) -> Recording | None:
        """The writer is alive: set an active recording's ``heartbeat_at``. The record as
        it is now (a stop may have been asked); None if there is no such recording."""

    async def claim_recording(self, recording_id: str, *, node: str, at: float) -> Recording | None:
        """``node`` writes the active recording that no process writes yet (started where
        its session's media was not): sets ``node`` and ``heartbeat_at``. The record if
        this call claimed it, else None."""

    async def request_recording_stop(
        self, recording_id: str, *, reason: StopReason
    ) -> Recording | None:
        """Ask the process writing an active recording to stop it: ``stop_reason`` is set
        once (the first request wins). The record; None if there is no such recording."""

    async def finish_recording(
        self,
        recording_id: str,
        *,
        stopped_at: float,
        reason: StopReason,
        sealed: SealedFile | None,
        consents: Sequence[ConsentLink],
    ) -> tuple[bool, Recording | None]:
        """Stop it for good: the first finish wins (True) and frees the appointment for
        another recording; later ones change nothing (False). With the record as it is
        now; None if there is no such recording."""

    async def get_recording(self, recording_id: str) -> Recording | None: ...

    async def active_recording(self, appointment_id: str) -> Recording | None:
        """The appointment's recording that has not finished, if any."""

    async def list_recordings(self, appointment_id: str) -> list[Recording]:
        """Every recording of the appointment, oldest first."""

    # --- data lifecycle -------------------------------------------------------------------
    # Retention and erasure. Each method is one atomic step and safe to repeat, so gateway
    # processes sweeping one Redis at the same time do no harm; the audit entry of each
    # step is appended in that same step.

    async def audit_anchor(self) -> AuditAnchor:
        """Where the audit log starts: seq and hash of the last pruned entry
        (``NO_ANCHOR`` for a log never pruned)."""

    async def prune_audit(
        self, *, before: float, limit: int, actor: str, at: float
    ) -> AuditPrune | None:
        """Remove the leading entries made before ``before`` (at most ``limit``), set the
        anchor to the last one removed and append the ``audit.pruned`` entry naming it.

        None when no entry is that old, or when another process pruned meanwhile.
        """

    async def erase_participant(
        self, participant_id: str, *, appointment_id: str, record: AuditDraft, at: float
    ) -> Erasure | None:
        """Remove everything kept about the participant: the record with the display
        name, the TOTP secret, used step and attempts, the live-connection count, browser
        sessions and consent records; leave a tombstone (ids, time, reason); append
        ``record``. None when the appointment has no such participant (anymore)."""

    async def get_participant_tombstone(self, participant_id: str) -> ParticipantTombstone | None:
        """What is left of a participant whose data was erased or purged; None otherwise."""

    async def purge_ended_appointments(
        self, *, ended_before: float, limit: int, actor: str, at: float
    ) -> list[AppointmentPurge]:
        """For up to ``limit`` appointments ended before ``ended_before`` and not purged yet,
        oldest end first: what :meth:`erase_participant` removes, for each participant
        (leaving tombstones), and the appointment's consents and browser sessions; each
        appointment with its ``appointment.purged`` entry. The appointment record itself
        (ids and times) stays, so the audit entries about it keep their owner."""

    async def forget_purged_appointments(self, *, ended_before: float, limit: int) -> int:
        """Remove what is left of up to ``limit`` purged appointments that ended before
        ``ended_before``: the appointment record and its participants' tombstones."""

    async def forget_expired(self, *, now: float, limit: int) -> ExpiredState:
        """Forget up to ``limit`` used link ids and browser sessions that have expired.
        (RedisStore gives each a TTL when it is written, and has nothing to do here.)"""
