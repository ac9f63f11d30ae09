"""Building blocks for tests: settings, and a seeded host, room, appointment and client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.domain.links import LinkPurpose
from gateway.domain.model import Appointment, Participant, Room, RoomPolicy
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key

# Marker values: tests grep logs and bodies for these to prove PHI never leaks.
CLIENT_NAME = "Zelda Marker-Client"
HOST_NAME = "Dr Quentin Marker-Host"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "secret_keys": [new_secret_key()],
        "data_keys": [new_data_key()],
        "public_url": "http://127.0.0.1:8080",
        # The tests' webhook receivers listen on loopback.
        "webhook_allow_private": True,
    }
    values.update(overrides)
    return Settings.load({}, overrides=values)


@dataclass(frozen=True)
class Seeded:
    room: Room
    appointment: Appointment
    host: Participant
    client: Participant
    client_link: str
    host_link: str

    @property
    def client_path(self) -> str:
        return "/j/" + self.client_link.rsplit("/j/", 1)[1]

    @property
    def host_path(self) -> str:
        return "/h/" + self.host_link.rsplit("/h/", 1)[1]


async def seed(services: Services, *, policy: RoomPolicy | None = None) -> Seeded:
    """One host, room, appointment and client, with a link for each."""
    prov = services.provisioning
    platform, _ = await prov.create_platform(name="Test platform", actor="test")
    host = await prov.create_host(display_name=HOST_NAME, platform_id=platform.id, actor="test")
    room = await prov.create_room(host_id=host.id, policy=policy or RoomPolicy(), actor="test")
    appointment, host_participant = await prov.create_appointment(room_id=room.id, actor="test")
    client = await prov.add_client(
        appointment_id=appointment.id, display_name=CLIENT_NAME, actor="test"
    )
    client_link = await services.links.issue(
        LinkPurpose.CLIENT_JOIN, participant_id=client.id, actor="test"
    )
    host_link = await services.links.issue(
        LinkPurpose.HOST_SIGN_IN, participant_id=host_participant.id, actor="test"
    )
    return Seeded(
        room=room,
        appointment=appointment,
        host=host_participant,
        client=client,
        client_link=client_link.url,
        host_link=host_link.url,
    )
