"""Recording as the rules allow it: consent, start, stop, and stopping on its own.

Recording may run only while the room allows it, the gateway has a recording key, and
every person in the session (:func:`~gateway.domain.recording.recording_audience`: the
host and each admitted client) has a live recording consent. This service applies that
rule to the store and drives the media plane's recorder (a :class:`RecorderBackend`,
attached by the application when it has media: :class:`gateway.media.recorder.MediaRecorders`).

* A refused start says why, and names who lacks consent (ids; the host included).
* Each start, stop and refusal goes to the audit log and the event bus (and from there
  to the sockets and the platform's webhook); a stopped recording's record keeps the
  sealed file's hash and the consents it rests on.
* Stopping on its own, within a second: the service hears consent withdrawals,
  admissions, joins and the session's end on the event bus and checks the rule again at
  once; a watchdog checks it again every ``check_interval`` for every recording this
  process writes (a change made by another gateway process, a failed recorder, a stop
  asked by another process). A withdrawal that cannot reach the store still halts the
  recording here.
* Several processes: a recording is written by the process that carries the session's
  media. A start on another process leaves the record unclaimed (no ``node``) and the
  media's process claims it at its next check; the writer beats in the record. Another
  process that must stop it asks through the store, and the writer stops within
  ``check_interval``. A record whose writer stopped beating for ``stale_after`` seconds
  (or that no process claimed in that time) is finished as lost by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from gateway.clock import Clock
from gateway.domain.consent import (
    ConsentKind,
    ConsentRecord,
    give,
    has_live_consent,
    may_record,
    recording_consenters,
)
from gateway.domain.ids import new_id
from gateway.domain.model import BrowserSession, Role
from gateway.domain.recording import (
    RECORDING_CONSENT,
    ConsentLink,
    ConsentText,
    Recording,
    SealedFile,
    StopReason,
    consents_covering,
    recording_audience,
)
from gateway.errors import ConsentMissing, NotAllowed, StoreError
from gateway.services.audit import AuditLog
from gateway.services.events import Event, EventBus, EventKind
from gateway.services.waiting_room import ACTIVE_STATES, Seat, WaitingRoomService
from gateway.storage.base import Store

__all__ = ["ConsentState", "RecorderBackend", "RecordingService", "RecordingStatus"]

log = logging.getLogger(__name__)

#: The audit actor of what the gateway does on its own.
_GATEWAY = "gateway"

#: How long detaching waits for a check in progress, seconds.
_CLOSE_TIMEOUT = 5.0

#: Sessions with media here are looked at for recordings to take up every this many checks.
_ADOPT_EVERY = 4

#: Events after which the rule is checked again at once.
_CHECK_ON = {
    EventKind.CONSENT_WITHDRAWN: StopReason.CONSENT_WITHDRAWN,
    EventKind.PARTICIPANT_ADMITTED: StopReason.PARTICIPANT_WITHOUT_CONSENT,
    EventKind.PARTICIPANT_JOINED: StopReason.PARTICIPANT_WITHOUT_CONSENT,
    EventKind.SESSION_ENDED: StopReason.SESSION_ENDED,
}


class RecorderBackend(Protocol):
    """What the media plane does for recordings, on this process."""

    def here(self, session_id: str) -> bool:
        """Whether this process writes the session's recording (its media is here)."""

    def sessions(self) -> list[str]:
        """The sessions whose media is on this process now."""

    async def begin(
        self, *, recording_id: str, session_id: str, host_id: str, participants: Sequence[str]
    ) -> None: ...

    def has(self, recording_id: str) -> bool: ...

    def failed(self, recording_id: str) -> bool: ...

    def recording_ids(self) -> list[str]: ...

    def halt(self, recording_id: str) -> None:
        """Take no more media for it, at once."""

    async def end(self, recording_id: str) -> SealedFile | None:
        """Seal it; None when nothing could be sealed (the recorder failed)."""

    async def discard(self, recording_id: str) -> None:
        """Drop it: nothing of it is sealed or published."""


@dataclass(frozen=True, slots=True)
class ConsentState:
    """One participant's recording consent, as their page shows it."""

    given: bool
    #: The version of the text of their live consent, else of the text they would see.
    version: str


@dataclass(frozen=True, slots=True)
class RecordingStatus:
    """Whether the session is being recorded, and whether it could be."""

    active: bool
    #: The room allows recording and this gateway can record.
    allowed: bool
    recording_id: str | None = None


@dataclass(slots=True)
class _Held:
    """An appointment's lock and how many wait for it or hold it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(slots=True)
class _Unfinished:
    """A recording stopped here whose record could not be finished yet (store down)."""

    recording: Recording
    reason: StopReason
    stopped_at: float
    sealed: SealedFile | None


class RecordingService:
    """See the module. ``attach`` a backend to record; without one, starts are refused."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        events: EventBus,
        waiting_room: WaitingRoomService,
        consent_text: ConsentText = RECORDING_CONSENT,
        check_interval: float = 0.25,
        stale_after: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self._events = events
        self._waiting_room = waiting_room
        self._consent_text = consent_text
        waiting_room.recording_consent_version = consent_text.version
        self._check_interval = check_interval
        self._stale_after = stale_after
        self._backend: RecorderBackend | None = None
        #: This process, as named in the records of the recordings it writes.
        self.node = secrets.token_hex(8)
        self._locks: dict[str, _Held] = {}
        self._watchdog: asyncio.Task[None] | None = None
        #: The recordings this process writes (started here, not finished yet).
        self._local: dict[str, Recording] = {}
        self._consents_at_start: dict[str, tuple[ConsentLink, ...]] = {}
        self._unfinished: dict[str, _Unfinished] = {}
        #: Since when the store could not be reached by the watchdog (None: it can).
        self._store_down_since: float | None = None
        self._checks = 0
        #: The check of each recording written here that is still running.
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._closing = asyncio.Event()

    # --- the media plane ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether this gateway can record (a recorder is attached)."""
        return self._backend is not None

    @property
    def consent_text(self) -> ConsentText:
        return self._consent_text

    async def attach(self, backend: RecorderBackend) -> None:
        """Record with ``backend`` from now on: hear the events, run the watchdog."""
        self._backend = backend
        self._events.subscribe(self.on_event)
        if self._watchdog is None:
            self._closing = asyncio.Event()
            self._watchdog = asyncio.create_task(self._watch(), name="recording watchdog")

    async def detach(self) -> None:
        """Seal whatever is still recorded here, and stop listening. Safe to call twice."""
        await self.stop_all()
        self._events.unsubscribe(self.on_event)
        task, self._watchdog = self._watchdog, None
        if task is not None:
            # Let a check in progress finish (cancelled halfway, a stop could be half
            # done; and a Redis client may turn a cancellation into a connection error).
            self._closing.set()
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        checks, self._checking = list(self._checking.values()), {}
        if checks:
            _, late = await asyncio.wait(checks, timeout=_CLOSE_TIMEOUT)
            for check in late:
                check.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
        self._backend = None

    async def stop_all(self, reason: StopReason = StopReason.SHUTDOWN) -> None:
        """Stop and seal every recording this process writes (at shutdown)."""
        backend = self._backend
        if backend is None:
            return
        for recording_id in backend.recording_ids():
            backend.halt(recording_id)
        for recording_id in backend.recording_ids():
            recording = self._local.get(recording_id)
            if recording is None:
                await backend.end(recording_id)
                continue
            async with self._lock(recording.appointment_id):
                with contextlib.suppress(StoreError):  # finished once the store is back
                    await self._stop(recording, reason, actor=_GATEWAY)

    # --- consent ------------------------------------------------------------------------------

    async def consent_of(self, participant_id: str, appointment_id: str) -> ConsentState:
        records = await self._store.list_consents(appointment_id)
        live = _live_recording_consent(records, participant_id, appointment_id)
        if live is None or live.text_version != self._consent_text.version:
            # A consent to an older wording does not count: the page asks again.
            return ConsentState(given=False, version=self._consent_text.version)
        return ConsentState(given=True, version=live.text_version)

    async def set_consent(
        self, session: BrowserSession, *, version: str, given: bool
    ) -> ConsentState:
        """Give (to the text ``version`` the person was shown) or withdraw the caller's
        recording consent. A withdrawal stops a recording of the session at once."""
        if not given:
            try:
                return await self._withdraw(await self._acting_seat(session))
            except StoreError:
                # The withdrawal cannot be recorded; what is recorded here stops anyway.
                await self._seal_local(session.appointment_id, StopReason.CONSENT_WITHDRAWN)
                raise
        seat = await self._acting_seat(session)
        # Consent is given by a proven identity (a withdrawal above is taken from anyone
        # holding the session: it can only stop a recording).
        await self._waiting_room.check_identity_proven(seat, session)
        appointment_id = seat.appointment.id
        participant_id = seat.participant.id
        if version != self._consent_text.version:
            raise NotAllowed("the consent text has changed; please read the current one")
        records = await self._store.list_consents(appointment_id)
        live = _live_recording_consent(records, participant_id, appointment_id)
        if live is not None and live.text_version == version:
            return ConsentState(given=True, version=version)
        if live is not None:  # agreed to an older text: that consent ends, this one begins
            await self._withdraw(seat)
        record = give(
            participant_id=participant_id,
            session_id=appointment_id,
            kind=ConsentKind.RECORDING,
            text_version=version,
            at=self._clock.now(),
        )
        stored = await self._store.give_consent(record)
        await self._audit.record(
            "consent.given",
            actor=participant_id,
            subjects={
                "appointment": appointment_id,
                "kind": ConsentKind.RECORDING.value,
                "version": version,
            },
        )
        await self._publish(EventKind.CONSENT_GIVEN, seat, participant_id=participant_id)
        return ConsentState(given=True, version=stored.text_version)

    async def _withdraw(self, seat: Seat) -> ConsentState:
        appointment_id = seat.appointment.id
        participant_id = seat.participant.id
        withdrawn = await self._store.withdraw_consent(
            participant_id=participant_id,
            session_id=appointment_id,
            kind=ConsentKind.RECORDING,
            at=self._clock.now(),
        )
        if withdrawn is None:
            return ConsentState(given=False, version=self._consent_text.version)
        await self._audit.record(
            "consent.withdrawn",
            actor=participant_id,
            subjects={
                "appointment": appointment_id,
                "kind": ConsentKind.RECORDING.value,
                "version": withdrawn.text_version,
            },
        )
        # The bus brings it to on_event, which stops a recording of the session.
        await self._publish(EventKind.CONSENT_WITHDRAWN, seat, participant_id=participant_id)
        return ConsentState(given=False, version=withdrawn.text_version)

    async def ask(self, host: BrowserSession) -> list[str]:
        """Who in the session lacks a recording consent now (ids, host first); the
        caller shows them the consent text. NotAllowed where :meth:`start` would refuse
        anyway (the room does not allow recording, or the gateway cannot record): nobody
        is asked about a recording that cannot happen."""
        seat = await self._host_seat(host)
        refusal = self._cannot_record(seat)
        if refusal is not None:
            raise NotAllowed(refusal[1])
        lacking = await self._lacking(seat.appointment.id)
        await self._audit.record(
            "recording.consent_asked",
            actor=host.participant_id,
            subjects={"appointment": seat.appointment.id, "asked": str(len(lacking))},
        )
        return lacking

    def _cannot_record(self, seat: Seat) -> tuple[str, str] | None:
        """Why this session cannot be recorded at all (reason, message); None if it can."""
        if not seat.room.policy.recording_allowed:
            return ("not_allowed", "this room does not allow recording")
        if self._backend is None:
            return _UNAVAILABLE
        return None

    async def consenting(self, appointment_id: str) -> set[str]:
        """The participants of the appointment with a live recording consent to the text
        in force."""
        records = await self._store.list_consents(appointment_id)
        return recording_consenters(
            records, session_id=appointment_id, version=self._consent_text.version
        )

    # --- status -------------------------------------------------------------------------------

    async def status(self, seat: Seat) -> RecordingStatus:
        allowed = seat.room.policy.recording_allowed and self.available
        recording = await self._store.active_recording(seat.appointment.id)
        active = recording is not None and recording.alive(
            now=self._clock.now(), stale_after=self._stale_after
        )
        return RecordingStatus(
            active=active,
            allowed=allowed,
            recording_id=recording.id if recording is not None and active else None,
        )

    # --- start and stop -----------------------------------------------------------------------

    async def start(self, host: BrowserSession) -> Recording:
        """Start recording the host's session; the active recording if one runs already.

        Raises :class:`NotAllowed` when the room does not allow recording or the gateway
        cannot record, :class:`ConsentMissing` naming who lacks consent.
        """
        seat = await self._host_seat(host)
        appointment_id = seat.appointment.id
        async with self._lock(appointment_id):
            refusal = self._cannot_record(seat)
            backend = self._backend
            if refusal is not None or backend is None:
                code, message = refusal or _UNAVAILABLE
                await self._refuse(seat, host, code)
                raise NotAllowed(message)
            now = self._clock.now()
            active = await self._store.active_recording(appointment_id)
            if active is not None:
                if active.alive(now=now, stale_after=self._stale_after):
                    if active.stop_reason is not None:
                        raise NotAllowed("the recording is stopping; try again in a moment")
                    return active
                await self._stop(active, StopReason.LOST, actor=_GATEWAY)
            audience, lacking = await self._audience(appointment_id)
            if lacking:
                await self._refuse(seat, host, "consent_missing", lacking=len(lacking))
                raise ConsentMissing(kind=ConsentKind.RECORDING.value, lacking=lacking)
            here = backend.here(appointment_id)
            recording = Recording(
                id=new_id("rec"),
                appointment_id=appointment_id,
                room_id=seat.room.id,
                started_at=now,
                started_by=host.participant_id,
                # Elsewhere: the process that carries the session's media claims it.
                node=self.node if here else "",
                heartbeat_at=now,
                audio_tracks=tuple(audience),
            )
            if not await self._store.begin_recording(recording):
                current = await self._store.active_recording(appointment_id)
                if current is not None:
                    return current  # another process started one just now
                raise NotAllowed("recording could not start; please try again")
            # A withdrawal or an admission that landed after the check above found no
            # recording to stop. From now on the record exists and they will; look again
            # before any media is taken.
            reason = await self._must_stop(recording)
            if reason is not None:
                await self._store.finish_recording(
                    recording.id,
                    stopped_at=self._clock.now(),
                    reason=reason,
                    sealed=None,
                    consents=(),
                )
                await self._refused_by(seat, host, reason)
            if here:
                try:
                    await self._begin_here(recording, seat.participant.id)
                except NotAllowed:
                    await self._refuse(seat, host, "unavailable")
                    raise
                # A withdrawal or an admission that landed while the recorder started
                # waits for this lock to stop it: look again before anyone is told, and
                # keep nothing of what was taken since.
                reason = await self._must_stop(recording)
                if reason is not None:
                    await self._discard_here(recording, reason)
                    await self._refused_by(seat, host, reason)
            await self._audit.record(
                "recording.started",
                actor=host.participant_id,
                subjects={"appointment": appointment_id, "recording": recording.id},
            )
            log.info(
                "recording %s started (%d participants)",
                recording.id,
                len(audience),
                extra={"appointment_id": appointment_id},
            )
            await self._publish(
                EventKind.RECORDING_STARTED, seat, extra={"recording": recording.id}
            )
            # Consent may have changed while the recorder started (another process).
            reason = await self._must_stop(recording)
            if reason is not None:
                await self._stop(recording, reason, actor=_GATEWAY)
                await self._refused_by(seat, host, reason, audit=False)
            return recording

    async def _discard_here(self, recording: Recording, reason: StopReason) -> None:
        """Drop a recording this process began but never announced, and finish its
        record with no file."""
        assert self._backend is not None
        await self._backend.discard(recording.id)
        self._local.pop(recording.id, None)
        self._consents_at_start.pop(recording.id, None)
        await self._store.finish_recording(
            recording.id, stopped_at=self._clock.now(), reason=reason, sealed=None, consents=()
        )

    async def _refused_by(
        self, seat: Seat, host: BrowserSession, reason: StopReason, *, audit: bool = True
    ) -> NoReturn:
        """Raise what the host is told when a start cannot go on after all (and, unless
        it was started and stopped, audit the refusal)."""
        if reason in (StopReason.CONSENT_WITHDRAWN, StopReason.PARTICIPANT_WITHOUT_CONSENT):
            _, lacking = await self._audience(seat.appointment.id)
            if audit:
                await self._refuse(seat, host, "consent_missing", lacking=len(lacking))
            raise ConsentMissing(kind=ConsentKind.RECORDING.value, lacking=lacking)
        if audit:
            await self._refuse(seat, host, reason.value)
        if reason is StopReason.SESSION_ENDED:
            raise NotAllowed("the session has ended")
        raise NotAllowed("recording could not start; please try again")

    async def _begin_here(self, recording: Recording, host_id: str) -> None:
        """Start writing ``recording`` on this process; its record is finished as failed
        if the recorder cannot start."""
        assert self._backend is not None
        self._local[recording.id] = recording
        # The consents it starts on, kept here too: an erasure may remove their records
        # before the recording stops, and its record must still name them.
        self._consents_at_start[recording.id] = consents_covering(
            await self._store.list_consents(recording.appointment_id),
            session_id=recording.appointment_id,
            started_at=self._clock.now(),
            stopped_at=self._clock.now(),
        )
        try:
            await self._backend.begin(
                recording_id=recording.id,
                session_id=recording.appointment_id,
                host_id=host_id,
                participants=recording.audio_tracks,
            )
        except Exception:
            self._local.pop(recording.id, None)
            self._consents_at_start.pop(recording.id, None)
            await self._store.finish_recording(
                recording.id,
                stopped_at=self._clock.now(),
                reason=StopReason.FAILED,
                sealed=None,
                consents=(),
            )
            log.exception(
                "recording %s could not start",
                recording.id,
                extra={"appointment_id": recording.appointment_id},
            )
            raise NotAllowed("recording could not start; please try again") from None

    async def stop(self, host: BrowserSession) -> Recording | None:
        """The host stops the recording; None if none was running."""
        seat = await self._host_seat(host)
        appointment_id = seat.appointment.id
        async with self._lock(appointment_id):
            recording = await self._store.active_recording(appointment_id)
            if recording is None:
                return None
            return await self._stop(recording, StopReason.HOST, actor=host.participant_id)

    async def enforce(self, appointment_id: str) -> None:
        """Stop the appointment's recording if the rule no longer allows it.

        A recorder on this process stops taking media at once, before the appointment's
        lock is taken: a start holding it may take a while (the recorder starting, the
        audit entry, the announcement), and nothing may be recorded after a withdrawal
        meanwhile. The stop itself (sealed, audited, announced) waits for the lock."""
        current = await self._store.active_recording(appointment_id)
        if current is None:
            return
        backend = self._backend
        if (
            backend is not None
            and backend.has(current.id)
            and await self._must_stop(current) is not None
        ):
            backend.halt(current.id)
        async with self._lock(appointment_id):
            recording = await self._store.active_recording(appointment_id)
            if recording is None:
                return
            reason = await self._must_stop(recording)
            if reason is not None:
                await self._stop(recording, reason, actor=_GATEWAY)

    async def on_event(self, event: Event) -> None:
        """An :class:`EventBus` subscriber: check the rule again after what may break it."""
        if event.kind in _CHECK_ON:
            await self.enforce(event.appointment_id)

    # --- internals ----------------------------------------------------------------------------

    async def _must_stop(self, recording: Recording) -> StopReason | None:
        """Why the recording must stop now, or None while it may go on."""
        if recording.stop_reason is not None:
            return recording.stop_reason
        if self._backend is not None and self._backend.failed(recording.id):
            return StopReason.FAILED
        appointment = await self._store.get_appointment(recording.appointment_id)
        if appointment is None or appointment.ended_at is not None:
            return StopReason.SESSION_ENDED
        audience = recording_audience(await self._store.list_participants(appointment.id))
        records = await self._store.list_consents(appointment.id)
        decision = may_record(
            audience, records, session_id=appointment.id, version=self._consent_text.version
        )
        if decision.allowed:
            return None
        withdrawn = any(
            r.kind is ConsentKind.RECORDING
            and r.participant_id in decision.lacking
            and r.withdrawn_at is not None
            and r.withdrawn_at >= recording.started_at
            for r in records
        )
        return StopReason.CONSENT_WITHDRAWN if withdrawn else StopReason.PARTICIPANT_WITHOUT_CONSENT

    async def _stop(self, recording: Recording, reason: StopReason, *, actor: str) -> Recording:
        """Stop it (the appointment's lock held): sealed here if written here, asked of
        its writer if that is another live process, finished as lost otherwise."""
        backend = self._backend
        if backend is not None and backend.has(recording.id):
            backend.halt(recording.id)
            sealed = await backend.end(recording.id)
            if sealed is None:
                reason = StopReason.FAILED
            return await self._finish(recording, reason, sealed=sealed, actor=actor)
        now = self._clock.now()
        if not recording.node:  # no process writes it yet: nothing was recorded
            return await self._finish(recording, reason, sealed=None, actor=actor)
        if recording.node != self.node and recording.alive(now=now, stale_after=self._stale_after):
            asked = await self._store.request_recording_stop(recording.id, reason=reason)
            log.info(
                "recording %s: stop asked of its process (%s)",
                recording.id,
                reason.value,
                extra={"appointment_id": recording.appointment_id},
            )
            return asked or recording
        return await self._finish(recording, StopReason.LOST, sealed=None, actor=actor)

    async def _finish(
        self,
        recording: Recording,
        reason: StopReason,
        *,
        sealed: SealedFile | None,
        actor: str,
        stopped_at: float | None = None,
    ) -> Recording:
        stopped_at = self._clock.now() if stopped_at is None else stopped_at
        try:
            records = await self._store.list_consents(recording.appointment_id)
            links = consents_covering(
                records,
                session_id=recording.appointment_id,
                started_at=recording.started_at,
                stopped_at=stopped_at,
            )
            kept = set(self._consents_at_start.get(recording.id, ())) - set(links)
            if kept:
                links = tuple(sorted((*links, *kept), key=lambda c: (c.given_at, c.participant_id)))
            finished, record = await self._store.finish_recording(
                recording.id, stopped_at=stopped_at, reason=reason, sealed=sealed, consents=links
            )
        except StoreError:
            # Sealed (or lost) here already; the record is finished when the store is back.
            self._unfinished[recording.id] = _Unfinished(recording, reason, stopped_at, sealed)
            raise
        self._unfinished.pop(recording.id, None)
        self._local.pop(recording.id, None)
        self._consents_at_start.pop(recording.id, None)
        record = record or recording
        if not finished:
            return record
        subjects = {
            "appointment": recording.appointment_id,
            "recording": recording.id,
            "reason": reason.value,
        }
        if sealed is not None:
            subjects["sealed_hash"] = sealed.sealed_hash
        await self._audit.record("recording.stopped", actor=actor, subjects=subjects)
        log.info(
            "recording %s stopped (%s)",
            recording.id,
            reason.value,
            extra={"appointment_id": recording.appointment_id},
        )
        await self._events.publish(
            Event(
                kind=EventKind.RECORDING_STOPPED,
                at=self._clock.now(),
                appointment_id=recording.appointment_id,
                room_id=recording.room_id,
                extra={"recording": recording.id, "reason": reason.value},
            )
        )
        return record

    async def _refuse(
        self, seat: Seat, host: BrowserSession, reason: str, *, lacking: int = 0
    ) -> None:
        subjects = {"appointment": seat.appointment.id, "reason": reason}
        if lacking:
            subjects["lacking"] = str(lacking)
        await self._audit.record(
            "recording.refused", actor=host.participant_id, outcome="refused", subjects=subjects
        )
        await self._publish(EventKind.RECORDING_REFUSED, seat, extra={"reason": reason})

    async def _lacking(self, appointment_id: str) -> list[str]:
        _, lacking = await self._audience(appointment_id)
        return lacking

    async def _audience(self, appointment_id: str) -> tuple[list[str], list[str]]:
        """Who is in the session now (the host first), and who of them lacks a live
        consent to the current text (ids, in the same order)."""
        audience = recording_audience(await self._store.list_participants(appointment_id))
        decision = may_record(
            audience,
            await self._store.list_consents(appointment_id),
            session_id=appointment_id,
            version=self._consent_text.version,
        )
        return list(audience), [p for p in audience if p in decision.lacking]

    async def _host_seat(self, host: BrowserSession) -> Seat:
        if host.role is not Role.HOST or not host.verified:
            raise NotAllowed("this needs the host's signed-in session")
        return await self._waiting_room.seat_of(host)

    async def _acting_seat(self, session: BrowserSession) -> Seat:
        """The host, or a client who may still act (not denied, removed or gone)."""
        seat = await self._waiting_room.seat_of(session)
        if seat.participant.role is Role.HOST:
            if not session.verified:
                raise NotAllowed("this needs the host's signed-in session")
        elif seat.participant.state not in ACTIVE_STATES:
            raise NotAllowed(f"not possible while {seat.participant.state.value}")
        return seat

    async def _publish(
        self,
        kind: EventKind,
        seat: Seat,
        *,
        participant_id: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        await self._events.publish(
            Event(
                kind=kind,
                at=self._clock.now(),
                appointment_id=seat.appointment.id,
                room_id=seat.room.id,
                participant_id=participant_id,
                extra={"kind": ConsentKind.RECORDING.value} if extra is None else extra,
            )
        )

    async def _seal_local(self, appointment_id: str | None, reason: StopReason) -> None:
        """Without the store: stop and seal what this process records (of one appointment,
        or all); the records are finished by the watchdog once the store answers."""
        backend = self._backend
        if backend is None:
            return
        for recording_id, recording in list(self._local.items()):
            if appointment_id is not None and recording.appointment_id != appointment_id:
                continue
            backend.halt(recording_id)
            sealed = await backend.end(recording_id)
            self._local.pop(recording_id, None)
            log.error(
                "recording %s stopped without the store (%s)",
                recording_id,
                reason.value,
                extra={"appointment_id": recording.appointment_id},
            )
            self._unfinished[recording_id] = _Unfinished(
                recording,
                reason if sealed is not None else StopReason.FAILED,
                self._clock.now(),
                sealed,
            )

    @contextlib.asynccontextmanager
    async def _lock(self, appointment_id: str) -> AsyncIterator[None]:
        """One start, stop or check of an appointment at a time, in this process."""
        held = self._locks.get(appointment_id)
        if held is None:
            held = self._locks[appointment_id] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self._locks[appointment_id]

    # --- the watchdog -------------------------------------------------------------------------

    async def _watch(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_interval):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            try:
                await self._check_once()
                self._store_down_since = None
            except StoreError as exc:
                now = self._clock.now()
                if self._store_down_since is None:
                    self._store_down_since = now
                    log.warning("recording watchdog: store unreachable (%s)", exc.code)
                elif now - self._store_down_since >= self._stale_after:
                    # Consent cannot be checked (nor withdrawn): stop taking media.
                    await self._seal_unchecked()
            except Exception:  # a bug must not end the watchdog
                log.exception("recording watchdog failed")

    async def _check_once(self) -> None:
        """Beat for every recording written here, and stop those that must stop."""
        for recording_id, unfinished in list(self._unfinished.items()):
            async with self._lock(unfinished.recording.appointment_id):
                if recording_id in self._unfinished:
                    await self._finish(
                        unfinished.recording,
                        unfinished.reason,
                        sealed=unfinished.sealed,
                        actor=_GATEWAY,
                        stopped_at=unfinished.stopped_at,
                    )
        backend = self._backend
        if backend is None:
            return
        self._checks += 1
        if self._checks % _ADOPT_EVERY == 0:
            await self._adopt(backend)
        # Each recording in a task of its own: one that is slow to seal (or whose
        # appointment's lock a host's stop holds while it seals) must delay neither the
        # checks of the others nor the next look; it is looked at again once done.
        for recording_id in backend.recording_ids():
            if recording_id not in self._checking:
                self._checking[recording_id] = asyncio.create_task(
                    self._check_recording(backend, recording_id), name="recording check"
                )
        if not self._checking:
            return
        await asyncio.wait(list(self._checking.values()), timeout=self._check_interval)
        failure: BaseException | None = None
        for recording_id, task in list(self._checking.items()):
            if not task.done():
                continue
            del self._checking[recording_id]
            if not task.cancelled() and task.exception() is not None and failure is None:
                failure = task.exception()
        if failure is not None:
            raise failure

    async def _check_recording(self, backend: RecorderBackend, recording_id: str) -> None:
        recording = await self._store.touch_recording(recording_id, at=self._clock.now())
        if recording is None or not recording.active:
            # Finished by another process (this one was thought dead): stop writing, and
            # let a later recording of the session be taken up here.
            backend.halt(recording_id)
            self._local.pop(recording_id, None)
            self._consents_at_start.pop(recording_id, None)
            await backend.end(recording_id)
            log.warning("recording %s was finished elsewhere while written here", recording_id)
            return
        async with self._lock(recording.appointment_id):
            reason = await self._must_stop(recording)
            if reason is not None and backend.has(recording_id):
                await self._stop(recording, reason, actor=_GATEWAY)

    async def _adopt(self, backend: RecorderBackend) -> None:
        """For the sessions whose media is here: claim and start their recordings started
        elsewhere, and finish as lost those whose writer died."""
        local = {r.appointment_id for r in self._local.values()}
        for session_id in backend.sessions():
            if session_id in local:
                continue
            recording = await self._store.active_recording(session_id)
            if recording is None or recording.stop_reason is not None:
                continue
            now = self._clock.now()
            if recording.node:
                if not recording.alive(now=now, stale_after=self._stale_after):
                    # Its writer died (the session's media moved here): everyone is told.
                    async with self._lock(session_id):
                        await self._stop(recording, StopReason.LOST, actor=_GATEWAY)
                continue
            async with self._lock(session_id):
                if now - recording.started_at >= self._stale_after:
                    # Nobody took it up in time; pages have shown it as not recording
                    # since (status): starting it now would record unannounced.
                    await self._finish(recording, StopReason.LOST, sealed=None, actor=_GATEWAY)
                    continue
                claimed = await self._store.claim_recording(recording.id, node=self.node, at=now)
                if claimed is None:
                    continue
                reason = await self._must_stop(claimed)
                if reason is not None:  # what changed since the start was not seen there
                    await self._finish(claimed, reason, sealed=None, actor=_GATEWAY)
                    continue
                log.info(
                    "recording %s taken up where the media is",
                    claimed.id,
                    extra={"appointment_id": session_id},
                )
                with contextlib.suppress(NotAllowed):  # finished as failed; logged
                    await self._begin_here(claimed, claimed.started_by)

    async def _seal_unchecked(self) -> None:
        """The store has been unreachable for ``stale_after``: consent can be neither
        checked nor withdrawn, so every recording here stops (sealed); their records are
        finished once the store answers again."""
        await self._seal_local(None, StopReason.STORE_UNAVAILABLE)


_UNAVAILABLE = ("unavailable", "recording is not set up on this gateway")


def _live_recording_consent(
    records: Sequence[ConsentRecord], participant_id: str, appointment_id: str
) -> ConsentRecord | None:
    if not has_live_consent(
        records,
        participant_id=participant_id,
        session_id=appointment_id,
        kind=ConsentKind.RECORDING,
    ):
        return None
    return next(
        r
        for r in records
        if r.participant_id == participant_id
        and r.session_id == appointment_id
        and r.kind is ConsentKind.RECORDING
        and r.live
    )
