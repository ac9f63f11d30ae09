"""Erasing one participant's data at their platform's request (decision 0004).

Everything the gateway keeps about the participant goes in one atomic store step: the
record with the display name, the TOTP secret and its counters, browser sessions and
consent records. The audit log keeps its entries (ids only) and gets a
``participant.erased`` entry in that same step; a tombstone (ids, time, reason) is left so
the platform keeps reading those entries and a repeated request is harmless.
"""

from __future__ import annotations

import logging

from gateway.clock import Clock
from gateway.domain.ids import is_valid_id
from gateway.domain.model import Role
from gateway.domain.retention import ParticipantTombstone, erased_record
from gateway.errors import ErasureRefused, NotFound
from gateway.services.audit import AuditLog
from gateway.services.platform_access import PlatformAccess
from gateway.services.waiting_room import WaitingRoomService
from gateway.storage.base import Store

__all__ = ["ParticipantErasure"]

log = logging.getLogger(__name__)


class ParticipantErasure:
    """Erases participants' data for the platform that owns them."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        access: PlatformAccess,
        waiting_room: WaitingRoomService,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self._access = access
        self._waiting_room = waiting_room

    async def erase(
        self, platform_id: str, participant_id: str, *, actor: str
    ) -> ParticipantTombstone:
        """Erase the participant's data; their tombstone afterwards.

        A client still in the session is taken out of it first. The host's participant is
        refused while the appointment has not ended (:class:`ErasureRefused`): a session
        cannot go on without its host, and ending it is the platform's call. A participant
        already erased, or purged by the retention, answers with its tombstone again and
        changes nothing. Another platform's participant is :class:`NotFound`.
        """
        try:
            participant = await self._access.participant(platform_id, participant_id)
        except NotFound:
            return await self._gone(platform_id, participant_id)
        if participant.role is Role.HOST:
            appointment = await self._store.get_appointment(participant.appointment_id)
            if appointment is not None and appointment.ended_at is None:
                raise ErasureRefused(
                    participant_id=participant.id,
                    reason="the host's appointment has not ended (end the session first)",
                )
        await self._waiting_room.take_out(participant.id, actor=actor)
        erasure = await self._store.erase_participant(
            participant.id,
            appointment_id=participant.appointment_id,
            record=erased_record(
                participant_id=participant.id,
                appointment_id=participant.appointment_id,
                actor=actor,
            ),
            at=self._clock.now(),
        )
        if erasure is None:  # erased (or purged) by someone else meanwhile
            return await self._gone(platform_id, participant.id)
        self._audit.appended(erasure.entry)
        log.info(
            "participant erased (%d browser sessions ended, %d consent records removed)",
            erasure.sessions,
            erasure.consents,
            extra={"participant_id": participant.id, "appointment_id": participant.appointment_id},
        )
        return erasure.tombstone

    async def _gone(self, platform_id: str, participant_id: str) -> ParticipantTombstone:
        """The tombstone of the platform's participant whose data is gone, or NotFound."""
        if not is_valid_id(participant_id):
            raise NotFound("participant")
        tombstone = await self._store.get_participant_tombstone(participant_id)
        if tombstone is None:
            raise NotFound("participant")
        try:
            await self._access.appointment(platform_id, tombstone.appointment_id)
        except NotFound:
            raise NotFound("participant") from None
        return tombstone
