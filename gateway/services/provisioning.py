"""Creating hosts, rooms, appointments and participants."""

from __future__ import annotations

from gateway.clock import Clock
from gateway.domain.ids import new_id
from gateway.domain.model import (
    Appointment,
    Host,
    Participant,
    Platform,
    Role,
    Room,
    RoomPolicy,
    clean_display_name,
)
from gateway.domain.waiting_room import ParticipantState
from gateway.domain.webhooks import clean_webhook_url, new_webhook_secret
from gateway.errors import AppointmentEnded, InvalidInput, NotFound
from gateway.services.audit import AuditLog
from gateway.storage.base import Store

__all__ = ["Provisioning"]


class Provisioning:
    """What a platform (or the demo) sets up before anyone joins."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        allow_http_webhooks: bool = False,
        allow_private_webhooks: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        #: Development only: webhook URLs may be plain http (loopback always may).
        self._allow_http_webhooks = allow_http_webhooks
        #: Development and tests only: webhook URLs may name loopback or private hosts.
        self._allow_private_webhooks = allow_private_webhooks

    async def create_platform(
        self, *, name: str, webhook_url: str | None = None, actor: str
    ) -> tuple[Platform, str | None]:
        """A new platform, and its webhook signing secret (shown this once) if it has a
        webhook URL; None otherwise."""
        url = None if webhook_url is None else self._webhook_url(webhook_url)
        platform = Platform(
            id=new_id("plt"),
            name=_name(name),
            created_at=self._clock.now(),
            webhook_url=url,
        )
        secret = None
        if url is not None:
            # The secret first: a platform with a URL but no secret would send nothing.
            secret = new_webhook_secret()
            await self._store.set_webhook_secret(platform.id, secret)
        await self._store.put_platform(platform)
        await self._audit.record(
            "platform.created", actor=actor, subjects={"platform": platform.id}
        )
        return platform, secret

    def _webhook_url(self, value: str) -> str:
        try:
            return clean_webhook_url(
                value,
                allow_http=self._allow_http_webhooks,
                allow_private=self._allow_private_webhooks,
            )
        except ValueError as exc:
            raise InvalidInput(str(exc), field="webhook_url") from None

    async def create_host(self, *, display_name: str, platform_id: str, actor: str) -> Host:
        if await self._store.get_platform(platform_id) is None:
            raise NotFound("platform")
        host = Host(
            id=new_id("hst"),
            display_name=_name(display_name),
            created_at=self._clock.now(),
            platform_id=platform_id,
        )
        await self._store.put_host(host)
        await self._audit.record(
            "host.created", actor=actor, subjects={"host": host.id, "platform": platform_id}
        )
        return host

    async def create_room(self, *, host_id: str, policy: RoomPolicy, actor: str) -> Room:
        if await self._store.get_host(host_id) is None:
            raise NotFound("host")
        room = Room(id=new_id("rm"), host_id=host_id, policy=policy, created_at=self._clock.now())
        await self._store.put_room(room)
        await self._audit.record(
            "room.created", actor=actor, subjects={"room": room.id, "host": host_id}
        )
        return room

    async def create_appointment(
        self, *, room_id: str, actor: str
    ) -> tuple[Appointment, Participant]:
        """A new appointment in the room, with its host's participant record."""
        room = await self._store.get_room(room_id)
        if room is None:
            raise NotFound("room")
        host = await self._store.get_host(room.host_id)
        if host is None:
            raise NotFound("host")
        now = self._clock.now()
        appointment = Appointment(id=new_id("apt"), room_id=room_id, created_at=now)
        await self._store.put_appointment(appointment)
        host_participant = Participant(
            id=new_id("ptc"),
            appointment_id=appointment.id,
            role=Role.HOST,
            display_name=host.display_name,
            state=ParticipantState.INVITED,
            state_since=now,
            created_at=now,
        )
        await self._store.put_participant(host_participant)
        await self._audit.record(
            "appointment.created",
            actor=actor,
            subjects={"appointment": appointment.id, "room": room_id},
        )
        return appointment, host_participant

    async def add_client(
        self, *, appointment_id: str, display_name: str, actor: str
    ) -> Participant:
        appointment = await self._store.get_appointment(appointment_id)
        if appointment is None:
            raise NotFound("appointment")
        if appointment.ended_at is not None:
            raise AppointmentEnded(appointment_id=appointment_id)
        now = self._clock.now()
        participant = Participant(
            id=new_id("ptc"),
            appointment_id=appointment_id,
            role=Role.CLIENT,
            display_name=_name(display_name),
            state=ParticipantState.INVITED,
            state_since=now,
            created_at=now,
        )
        await self._store.put_participant(participant)
        await self._audit.record(
            "participant.created",
            actor=actor,
            subjects={"appointment": appointment_id, "participant": participant.id},
        )
        return participant


def _name(value: str) -> str:
    try:
        return clean_display_name(value)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="display_name") from None
