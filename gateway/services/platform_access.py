"""What one platform may see: its own hosts and everything under them, nothing else.

A resource of another platform is refused exactly like an absent one (:class:`NotFound`
of the same kind), so a platform cannot learn which ids exist elsewhere. Ownership runs
host -> platform; rooms, appointments and participants belong to their host's platform.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.audit import AuditEntry
from gateway.domain.consent import ConsentRecord
from gateway.domain.ids import is_valid_id
from gateway.domain.model import Appointment, Host, Participant, Room
from gateway.errors import NotFound
from gateway.storage.base import Store

__all__ = ["MAX_AUDIT_PAGE", "AuditPage", "ParticipantRecords", "PlatformAccess"]

#: The most audit entries one page returns.
MAX_AUDIT_PAGE = 1000
#: The most entries one page request examines; past it the caller pages on.
_MAX_SCAN = 5000
_READ_PAGE = 500
#: Gateway clocks may disagree this much: an export starts this long before creation.
_CLOCK_SLACK = 300.0


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    #: Pass as ``after_seq`` for the next page; None when there is nothing further.
    next_after_seq: int | None


@dataclass(frozen=True, slots=True)
class ParticipantRecords:
    """Everything kept about one participant: their appointment, consents and audit."""

    participant: Participant
    appointment: Appointment
    consents: list[ConsentRecord]
    audit: list[AuditEntry]


#: The platform of each (kind, id) looked up while serving one request.
_Owners = dict[tuple[str, str], str | None]


class PlatformAccess:
    """Looks records up on behalf of one platform."""

    def __init__(self, *, store: Store) -> None:
        self._store = store

    async def host(self, platform_id: str, host_id: str) -> Host:
        host = await self._store.get_host(host_id) if is_valid_id(host_id) else None
        if host is None or not platform_id or host.platform_id != platform_id:
            raise NotFound("host")
        return host

    async def room(self, platform_id: str, room_id: str) -> Room:
        room = await self._store.get_room(room_id) if is_valid_id(room_id) else None
        if room is None or await self._host_platform(room.host_id) != platform_id:
            raise NotFound("room")
        return room

    async def appointment(self, platform_id: str, appointment_id: str) -> Appointment:
        appointment = (
            await self._store.get_appointment(appointment_id)
            if is_valid_id(appointment_id)
            else None
        )
        if appointment is None or await self._room_platform(appointment.room_id) != platform_id:
            raise NotFound("appointment")
        return appointment

    async def participant(self, platform_id: str, participant_id: str) -> Participant:
        participant = (
            await self._store.get_participant(participant_id)
            if is_valid_id(participant_id)
            else None
        )
        if participant is None:
            raise NotFound("participant")
        appointment = await self._store.get_appointment(participant.appointment_id)
        if appointment is None or await self._room_platform(appointment.room_id) != platform_id:
            raise NotFound("participant")
        return participant

    # --- audit ---------------------------------------------------------------------------

    async def audit_page(
        self,
        platform_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> AuditPage:
        """The platform's audit entries with seq > ``after_seq`` and ``since <= at < until``.

        Entries are in log order, which is time order up to clock differences between
        gateway processes; the scan stops at the first entry at or after ``until``.
        """
        limit = max(1, min(limit, MAX_AUDIT_PAGE))
        if since is not None:
            after_seq = max(after_seq, await self._entries_before(since))
        owners: _Owners = {}
        found: list[AuditEntry] = []
        examined = 0
        cursor = after_seq
        while examined < _MAX_SCAN:
            page = await self._store.read_audit(
                after_seq=cursor, limit=min(_READ_PAGE, _MAX_SCAN - examined)
            )
            if not page:
                return AuditPage(entries=found, next_after_seq=None)
            for entry in page:
                if until is not None and entry.at >= until:
                    return AuditPage(entries=found, next_after_seq=None)
                examined += 1
                cursor = entry.seq
                if since is not None and entry.at < since:
                    continue
                if await self._entry_platform(entry, owners) == platform_id:
                    found.append(entry)
                    if len(found) == limit:
                        return AuditPage(entries=found, next_after_seq=cursor)
        return AuditPage(entries=found, next_after_seq=cursor)

    async def records(self, platform_id: str, participant_id: str) -> ParticipantRecords:
        """One participant's export: their appointment, consents and every audit entry
        that names them (as actor or subject)."""
        participant = await self.participant(platform_id, participant_id)
        appointment = await self.appointment(platform_id, participant.appointment_id)
        consents = [
            c
            for c in await self._store.list_consents(appointment.id)
            if c.participant_id == participant.id
        ]
        entries: list[AuditEntry] = []
        cursor = await self._entries_before(participant.created_at - _CLOCK_SLACK)
        while page := await self._store.read_audit(after_seq=cursor, limit=_READ_PAGE):
            entries.extend(
                e
                for e in page
                if e.actor == participant.id or e.subjects.get("participant") == participant.id
            )
            cursor = page[-1].seq
        return ParticipantRecords(
            participant=participant, appointment=appointment, consents=consents, audit=entries
        )

    async def _entries_before(self, at: float) -> int:
        """How many entries come before time ``at``, by binary search over the log."""
        low, high = 0, (await self._store.audit_head())[0]
        while low < high:
            middle = (low + high) // 2
            page = await self._store.read_audit(after_seq=middle, limit=1)
            if not page or page[0].at >= at:
                high = middle
            else:
                low = middle + 1
        return low

    async def _entry_platform(self, entry: AuditEntry, owners: _Owners) -> str | None:
        """The platform an entry is about, from the first subject that tells."""
        subjects = entry.subjects
        candidates = [
            (kind, subjects[kind])
            for kind in ("platform", "apikey", "host", "room", "appointment", "participant")
            if kind in subjects
        ]
        for kind, ident in candidates:
            if (kind, ident) not in owners:
                owners[kind, ident] = await self._platform_of(kind, ident)
            owner = owners[kind, ident]
            if owner is not None:
                return owner
        return None

    async def _platform_of(self, kind: str, ident: str) -> str | None:
        if kind == "platform":
            return ident
        if kind == "apikey":
            key = await self._store.get_api_key(ident)
            return None if key is None else key.platform_id
        if kind == "host":
            return await self._host_platform(ident)
        if kind == "room":
            return await self._room_platform(ident)
        if kind == "appointment":
            appointment = await self._store.get_appointment(ident)
            return None if appointment is None else await self._room_platform(appointment.room_id)
        participant = await self._store.get_participant(ident)
        if participant is not None:
            return await self._platform_of("appointment", participant.appointment_id)
        # Erased or purged: the tombstone still says whose entries these are.
        tombstone = await self._store.get_participant_tombstone(ident)
        if tombstone is None:
            return None
        return await self._platform_of("appointment", tombstone.appointment_id)

    async def _host_platform(self, host_id: str) -> str | None:
        host = await self._store.get_host(host_id)
        return host.platform_id if host is not None and host.platform_id else None

    async def _room_platform(self, room_id: str) -> str | None:
        room = await self._store.get_room(room_id)
        return None if room is None else await self._host_platform(room.host_id)
