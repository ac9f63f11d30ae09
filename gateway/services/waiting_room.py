"""The waiting room, live: clients get ready and wait; the host admits, denies, removes.

Every move is the domain's transition table applied as one compare-and-set in the
store, then an event on the bus. Who may do what is decided here from the server-side
browser session, never from a payload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.clock import Clock
from gateway.domain import consent as consent_rules
from gateway.domain import waiting_room as rules
from gateway.domain.consent import ConsentKind, ConsentRecord
from gateway.domain.model import Appointment, BrowserSession, Participant, Role, Room
from gateway.domain.totp import Enrolment
from gateway.domain.waiting_room import HostPresence, ParticipantEvent, ParticipantState
from gateway.errors import ConsentMissing, IllegalTransition, NotAllowed, NotFound, TotpLockedOut
from gateway.services.audit import AuditLog
from gateway.services.events import Event, EventBus, EventKind
from gateway.services.identity import IdentityService
from gateway.storage.base import Store

__all__ = ["QueueEntry", "Seat", "WaitingRoomService"]

log = logging.getLogger(__name__)

_EVENT_KINDS = {
    ParticipantEvent.KNOCK: EventKind.PARTICIPANT_KNOCKING,
    ParticipantEvent.WAIT: EventKind.PARTICIPANT_WAITING,
    ParticipantEvent.ADMIT: EventKind.PARTICIPANT_ADMITTED,
    ParticipantEvent.DENY: EventKind.PARTICIPANT_DENIED,
    ParticipantEvent.JOIN: EventKind.PARTICIPANT_JOINED,
    ParticipantEvent.LEAVE: EventKind.PARTICIPANT_LEFT,
    ParticipantEvent.REMOVE: EventKind.PARTICIPANT_REMOVED,
}

#: States a client may still act in (prove identity, consent, wait, talk).
ACTIVE_STATES = frozenset(
    {
        ParticipantState.KNOCKING,
        ParticipantState.WAITING,
        ParticipantState.ADMITTED,
        ParticipantState.IN_SESSION,
    }
)


@dataclass(frozen=True, slots=True)
class Seat:
    """A participant with the appointment and room they belong to."""

    participant: Participant
    appointment: Appointment
    room: Room


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """What the host sees of one client (PHI for the host's eyes only)."""

    participant_id: str
    display_name: str
    state: ParticipantState
    verified: bool
    since: float
    #: A live consent to recording for this session.
    recording_consent: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "participant_id": self.participant_id,
            "display_name": self.display_name,
            "state": self.state.value,
            "verified": self.verified,
            "since": self.since,
            "recording_consent": self.recording_consent,
        }


class WaitingRoomService:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        events: EventBus,
        identity: IdentityService,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self._events = events
        self._identity = identity
        #: The recording consent text in force (RecordingService sets it): the host's
        #: "agreed" mark counts only a consent to that version.
        self.recording_consent_version: str | None = None

    # --- reading -------------------------------------------------------------------------

    async def seat(self, participant_id: str) -> Seat:
        """The participant, appointment and room, or NotFound."""
        participant = await self._store.get_participant(participant_id)
        if participant is None:
            raise NotFound("participant")
        appointment = await self._store.get_appointment(participant.appointment_id)
        if appointment is None:
            raise NotFound("appointment")
        room = await self._store.get_room(appointment.room_id)
        if room is None:
            raise NotFound("room")
        return Seat(participant=participant, appointment=appointment, room=room)

    async def seat_of(self, session: BrowserSession) -> Seat:
        """The seat a browser session stands for; refused once the session has ended."""
        seat = await self.seat(session.participant_id)
        if seat.appointment.id != session.appointment_id:
            raise NotAllowed("the session does not belong to this appointment")
        if seat.appointment.ended_at is not None:
            raise NotAllowed("the session has ended")
        return seat

    async def queue(self, host: BrowserSession) -> list[QueueEntry]:
        """Every client who has knocked, with state, verification and since when."""
        seat = await self._host_seat(host)
        return await self.queue_of(seat.appointment.id)

    async def queue_of(self, appointment_id: str) -> list[QueueEntry]:
        """The host's view of an appointment; callers must have checked who asks."""
        participants = await self._store.list_participants(appointment_id)
        consenting = await self._recording_consenting(appointment_id)
        return [
            _entry(p, consenting)
            for p in participants
            if p.role is Role.CLIENT and p.state is not ParticipantState.INVITED
        ]

    async def queue_entry(self, participant_id: str) -> QueueEntry | None:
        """One client's row in the host's view; None for hosts and unknown ids."""
        participant = await self._store.get_participant(participant_id)
        if participant is None or participant.role is not Role.CLIENT:
            return None
        return _entry(participant, await self._recording_consenting(participant.appointment_id))

    async def _recording_consenting(self, appointment_id: str) -> set[str]:
        records = await self._store.list_consents(appointment_id)
        return consent_rules.recording_consenters(
            records, session_id=appointment_id, version=self.recording_consent_version
        )

    # --- the client's side -----------------------------------------------------------------

    async def identity_needed(self, seat: Seat) -> bool:
        return rules.identity_needed(
            host=seat.participant.role is Role.HOST,
            client_totp_required=seat.room.policy.client_totp_required,
        )

    async def check_identity_proven(self, seat: Seat, session: BrowserSession) -> None:
        """NotAllowed unless this session proved the identity the room asks for."""
        rules.check_identity_proven(
            needed=await self.identity_needed(seat), verified=session.verified
        )

    async def record_verified(self, session_hash: str, seat: Seat) -> None:
        """After a correct TOTP code: the browser session and the participant are verified."""
        now = self._clock.now()
        await self._store.mark_session_verified(session_hash)
        await self._store.set_participant_verified(seat.participant.id, now)

    async def enrol_identity(self, session: BrowserSession) -> Enrolment:
        """First-visit TOTP enrolment, shown once."""
        seat = await self._acting_seat_of(session)
        if not await self.identity_needed(seat):
            raise NotAllowed("this room does not ask for a sign-in code")
        return await self._identity.enrol_first_time(seat.participant.id)

    async def prove_identity(
        self, session_hash: str, session: BrowserSession, code: object
    ) -> BrowserSession:
        """Check a TOTP code for this browser session; the host hears of a lockout."""
        seat = await self._acting_seat_of(session)
        try:
            await self._identity.verify(seat.participant.id, code)
        except TotpLockedOut as exc:
            if exc.just_locked:
                await self._publish(EventKind.PARTICIPANT_LOCKED_OUT, seat)
            raise
        await self.record_verified(session_hash, seat)
        return replace(session, verified=True)

    async def return_after_leaving(self, session: BrowserSession) -> Participant:
        """Back on the same device after the grace period (or after leaving): the
        participant knocks again and waits; identity proven in this session still holds."""
        seat = await self.seat_of(session)
        if seat.participant.state is not ParticipantState.LEFT:
            return seat.participant
        return await self._move(seat, ParticipantEvent.KNOCK, actor=seat.participant.id)

    async def accept_telehealth_consent(
        self, session: BrowserSession, *, text_version: object
    ) -> ConsentRecord:
        """Record the client's informed consent to the version of the text the room asks.
        Where the room asks for a sign-in code, only after it was given in this session:
        consent is recorded for a proven identity, not for whoever holds the link."""
        seat = await self._acting_seat_of(session)
        await self.check_identity_proven(seat, session)
        required = seat.room.policy.telehealth_consent_version
        if required is None:
            raise NotAllowed("this room asks no informed consent")
        if text_version != required:
            raise NotAllowed("the consent text has changed; please read the current one")
        record = consent_rules.give(
            participant_id=seat.participant.id,
            session_id=seat.appointment.id,
            kind=ConsentKind.TELEHEALTH,
            text_version=required,
            at=self._clock.now(),
        )
        stored = await self._store.give_consent(record)
        await self._audit.record(
            "consent.given",
            actor=seat.participant.id,
            subjects={
                "appointment": seat.appointment.id,
                "kind": ConsentKind.TELEHEALTH.value,
                "version": _id_safe(required),
            },
        )
        await self._publish(EventKind.CONSENT_GIVEN, seat, extra={"kind": "telehealth"})
        return stored

    async def get_in_line(self, session: BrowserSession) -> Participant:
        """A knocking client joins the queue once identity and consent are done."""
        seat = await self.seat_of(session)
        if seat.participant.role is not Role.CLIENT:
            raise NotAllowed("only clients wait")
        rules.check_knock(_status(seat.room))
        await self.check_identity_proven(seat, session)
        required = seat.room.policy.telehealth_consent_version
        if required is not None:
            records = await self._store.list_consents(seat.appointment.id)
            if not consent_rules.has_live_consent(
                records,
                participant_id=seat.participant.id,
                session_id=seat.appointment.id,
                kind=ConsentKind.TELEHEALTH,
                version=required,
            ):
                raise ConsentMissing(kind="telehealth", lacking=[seat.participant.id])
        return await self._move(seat, ParticipantEvent.WAIT, actor=seat.participant.id)

    async def leave(self, session: BrowserSession) -> Participant:
        seat = await self.seat_of(session)
        return await self._move(seat, ParticipantEvent.LEAVE, actor=seat.participant.id)

    async def joined_media(self, participant_id: str) -> Participant | None:
        """An admitted client's media connected: now in session. None when that changes
        nothing (a host, a client already in session, or one who left meanwhile)."""
        try:
            seat = await self.seat(participant_id)
        except NotFound:
            return None
        if seat.participant.role is Role.HOST or seat.participant.state is not (
            ParticipantState.ADMITTED
        ):
            return None
        try:
            return await self._move(seat, ParticipantEvent.JOIN, actor=participant_id)
        except IllegalTransition:
            return None

    async def drop_after_grace(self, participant_id: str) -> Participant | None:
        """Called when a participant's last connection stayed closed past the grace period:
        they have left. Nothing happens if they came back or are already out."""
        if await self._store.change_connections(participant_id, 0) > 0:
            return None
        try:
            seat = await self.seat(participant_id)
        except NotFound:
            return None
        if seat.participant.role is Role.HOST or seat.participant.state not in ACTIVE_STATES:
            return None
        try:
            return await self._move(seat, ParticipantEvent.LEAVE, actor="gateway")
        except IllegalTransition:
            return None

    # --- the host's side ---------------------------------------------------------------------

    async def host_arrived(self, host: BrowserSession) -> Room:
        seat = await self._host_seat(host)
        return await self._set_presence(seat, HostPresence.PRESENT)

    async def host_gone(self, host_participant_id: str) -> Room | None:
        """The host's last connection closed (after its grace): clients see "host away"."""
        if await self._store.change_connections(host_participant_id, 0) > 0:
            return None
        seat = await self.seat(host_participant_id)
        return await self._set_presence(seat, HostPresence.AWAY)

    async def admit(self, host: BrowserSession, participant_id: object) -> Participant:
        seat, client = await self._client_of(host, participant_id)
        room = await self._store.get_room(seat.room.id)
        rules.check_admission(_status(room or seat.room))
        return await self._move(client, ParticipantEvent.ADMIT, actor=host.participant_id)

    async def admit_all(self, host: BrowserSession) -> list[Participant]:
        """Admit everyone waiting now; someone who stopped waiting meanwhile is skipped."""
        seat = await self._host_seat(host)
        room = await self._store.get_room(seat.room.id)
        rules.check_admission(_status(room or seat.room))
        admitted = []
        for participant in await self._store.list_participants(seat.appointment.id):
            if participant.role is Role.CLIENT and participant.state is ParticipantState.WAITING:
                client = Seat(participant=participant, appointment=seat.appointment, room=seat.room)
                try:
                    admitted.append(
                        await self._move(client, ParticipantEvent.ADMIT, actor=host.participant_id)
                    )
                except IllegalTransition:
                    continue
        return admitted

    async def deny(self, host: BrowserSession, participant_id: object) -> Participant:
        _, client = await self._client_of(host, participant_id)
        return await self._move(client, ParticipantEvent.DENY, actor=host.participant_id)

    async def remove(self, host: BrowserSession, participant_id: object) -> Participant:
        _, client = await self._client_of(host, participant_id)
        return await self._move(client, ParticipantEvent.REMOVE, actor=host.participant_id)

    async def message(self, host: BrowserSession, participant_id: object, text: object) -> str:
        """Check a message to one waiting client; the caller delivers it. Not stored."""
        message = rules.clean_host_message(text)
        seat, client = await self._client_of(host, participant_id)
        if client.participant.state not in {ParticipantState.KNOCKING, ParticipantState.WAITING}:
            raise IllegalTransition(current=client.participant.state.value, event="message")
        await self._audit.record(
            "host.message",
            actor=host.participant_id,
            subjects={"appointment": seat.appointment.id, "participant": client.participant.id},
        )
        return message

    async def set_locked(self, host: BrowserSession, locked: object) -> Room:
        if not isinstance(locked, bool):
            raise NotAllowed("locked is true or false")
        seat = await self._host_seat(host)
        room = await self._store.set_room_lock(seat.room.id, locked)
        if room is None:
            raise NotFound("room")
        await self._audit.record(
            "room.locked" if locked else "room.unlocked",
            actor=host.participant_id,
            subjects={"room": room.id, "appointment": seat.appointment.id},
        )
        await self._publish(EventKind.ROOM_LOCKED if locked else EventKind.ROOM_UNLOCKED, seat)
        return room

    async def end(self, *, appointment_id: str, actor: str) -> Appointment:
        """End the session: every link and session cookie dies, everyone is out.

        Every call is audited and published, the first or not: a retry after a failure
        half-way (the store gone between the end and the audit entry) must still close
        the session's media and tell its browsers. The first end time is kept."""
        return (await self._end(appointment_id, actor=actor, only_first=False))[1]

    async def end_abandoned(self, appointment_id: str, *, actor: str) -> bool:
        """End an appointment nobody ended (the retention's call), as :meth:`end` does,
        unless one of its participants has a live connection: then it is left for a later
        pass. True if this call ended it."""
        appointment = await self._store.get_appointment(appointment_id)
        if appointment is None or appointment.ended_at is not None:
            # Gone, or ended meanwhile: ending it again only takes its id out of the
            # store's index of open appointments.
            await self._store.end_appointment(appointment_id, self._clock.now())
            return False
        for participant in await self._store.list_participants(appointment_id):
            if await self._store.connection_count(participant.id) > 0:
                return False
        try:
            first, _ = await self._end(appointment_id, actor=actor, only_first=True)
        except NotFound:
            return False
        return first

    async def _end(
        self, appointment_id: str, *, actor: str, only_first: bool
    ) -> tuple[bool, Appointment]:
        """Whether this call ended it, and the appointment. With ``only_first``, nothing
        is done unless this call ended it (two sweepers, or a sweeper and an End, do not
        end one appointment twice)."""
        first, appointment = await self._store.end_appointment(appointment_id, self._clock.now())
        if appointment is None:
            raise NotFound("appointment")
        if only_first and not first:
            return False, appointment
        ended = await self._store.delete_appointment_sessions(appointment_id)
        for participant in await self._store.list_participants(appointment_id):
            if participant.state in ACTIVE_STATES:
                await self._store.transition_participant(
                    participant.id,
                    sources=rules.sources_of(ParticipantEvent.LEAVE),
                    target=rules.target_of(ParticipantEvent.LEAVE),
                    at=self._clock.now(),
                )
        await self._audit.record(
            "session.ended",
            actor=actor,
            subjects={"appointment": appointment_id, "room": appointment.room_id},
        )
        log.info(
            "session ended (%d browser sessions closed)",
            ended,
            extra={"appointment_id": appointment_id},
        )
        await self._events.publish(
            Event(
                kind=EventKind.SESSION_ENDED,
                at=self._clock.now(),
                appointment_id=appointment_id,
                room_id=appointment.room_id,
            )
        )
        return first, appointment

    async def end_by_host(self, host: BrowserSession) -> Appointment:
        seat = await self._host_seat(host)
        return await self.end(appointment_id=seat.appointment.id, actor=host.participant_id)

    async def take_out(self, participant_id: str, *, actor: str) -> Participant | None:
        """Take a client out of a live session without a host (before their data is
        erased): a knocking client leaves, a waiting or admitted one is removed, as the
        host's Remove does (media stops, the client and the host are told). None when
        the client was not in the session."""
        for _ in range(3):  # the state may move under us (admitted, joined): try again
            try:
                seat = await self.seat(participant_id)
            except NotFound:
                return None
            state = seat.participant.state
            if seat.participant.role is not Role.CLIENT or state not in ACTIVE_STATES:
                return None
            knocking = state is ParticipantState.KNOCKING
            event = ParticipantEvent.LEAVE if knocking else ParticipantEvent.REMOVE
            try:
                return await self._move(seat, event, actor=actor)
            except IllegalTransition:
                continue
        return None

    # --- internals ---------------------------------------------------------------------------

    async def _acting_seat_of(self, session: BrowserSession) -> Seat:
        """The seat of someone who may still act: a denied, removed or departed client
        proves no identity and gives no consent."""
        seat = await self.seat_of(session)
        if seat.participant.role is Role.CLIENT and seat.participant.state not in ACTIVE_STATES:
            raise NotAllowed(f"not possible while {seat.participant.state.value}")
        return seat

    async def _host_seat(self, host: BrowserSession) -> Seat:
        if host.role is not Role.HOST or not host.verified:
            raise NotAllowed("this needs the host's signed-in session")
        return await self.seat_of(host)

    async def _client_of(self, host: BrowserSession, participant_id: object) -> tuple[Seat, Seat]:
        """The host's seat and a client of the same appointment; anything else: NotFound."""
        seat = await self._host_seat(host)
        if not isinstance(participant_id, str):
            raise NotFound("participant")
        client = await self._store.get_participant(participant_id)
        if (
            client is None
            or client.appointment_id != seat.appointment.id
            or client.role is not Role.CLIENT
        ):
            raise NotFound("participant")
        return seat, Seat(participant=client, appointment=seat.appointment, room=seat.room)

    async def _move(self, seat: Seat, event: ParticipantEvent, *, actor: str) -> Participant:
        moved, current = await self._store.transition_participant(
            seat.participant.id,
            sources=rules.sources_of(event),
            target=rules.target_of(event),
            at=self._clock.now(),
            room=_ROOM_CONDITIONS[event](seat.room.id) if event in _ROOM_CONDITIONS else None,
        )
        if current is None:
            raise NotFound("participant")
        if not moved:
            raise IllegalTransition(current=current.state.value, event=event.value)
        await self._audit.record(
            f"participant.{event.value}",
            actor=actor,
            subjects={"appointment": seat.appointment.id, "participant": current.id},
        )
        moved_seat = Seat(participant=current, appointment=seat.appointment, room=seat.room)
        await self._publish(_EVENT_KINDS[event], moved_seat)
        return current

    async def _set_presence(self, seat: Seat, presence: HostPresence) -> Room:
        room = await self._store.set_host_presence(seat.room.id, presence)
        if room is None:
            raise NotFound("room")
        await self._audit.record(
            f"host.{presence.value}",
            actor=seat.participant.id,
            subjects={"room": room.id, "appointment": seat.appointment.id},
        )
        kind = EventKind.HOST_PRESENT if presence is HostPresence.PRESENT else EventKind.HOST_AWAY
        await self._publish(kind, Seat(seat.participant, seat.appointment, room))
        return room

    async def _publish(
        self, kind: EventKind, seat: Seat, extra: dict[str, str] | None = None
    ) -> None:
        participant_id = None if seat.participant.role is Role.HOST else seat.participant.id
        if kind in {EventKind.HOST_PRESENT, EventKind.HOST_AWAY}:
            participant_id = None
        await self._events.publish(
            Event(
                kind=kind,
                at=self._clock.now(),
                appointment_id=seat.appointment.id,
                room_id=seat.room.id,
                participant_id=participant_id,
                extra=extra or {},
            )
        )


def _entry(participant: Participant, recording_consenting: set[str]) -> QueueEntry:
    return QueueEntry(
        participant_id=participant.id,
        display_name=participant.display_name,
        state=participant.state,
        verified=participant.verified_at is not None,
        since=participant.state_since,
        recording_consent=participant.id in recording_consenting,
    )


#: Moves that hold only while the room allows them, checked atomically with the move (the
#: checks before it give the same answer sooner, and cannot see a lock made meanwhile).
_ROOM_CONDITIONS: dict[ParticipantEvent, Callable[[str], rules.RoomCondition]] = {
    ParticipantEvent.WAIT: lambda room_id: rules.RoomCondition(room_id, unlocked=True),
    ParticipantEvent.ADMIT: lambda room_id: rules.RoomCondition(room_id, host_present=True),
}


def _status(room: Room) -> rules.RoomStatus:
    return rules.RoomStatus(room_id=room.id, host_presence=room.host_presence, locked=room.locked)


def _id_safe(version: str) -> str:
    """A consent text version as an audit value (identifier characters only)."""
    safe = "".join(c if c.isalnum() or c in "._:-" else "_" for c in version)[:80]
    return safe or "unversioned"
