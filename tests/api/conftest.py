"""Fixtures for the platform API: an app on either store, and platforms with keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.clock import FrozenClock
from gateway.domain.apikeys import Scope
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage import Store
from gateway.web import SERVICES, create_app
from gateway.web.access_log import RedactingAccessLogger
from tests.factories import make_settings

ClientFactory = Callable[..., Awaitable[TestClient]]

API = "/api/v1"


@dataclass(frozen=True)
class Tenant:
    """A platform and one of its API keys (the plaintext, as the platform holds it)."""

    platform_id: str
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class Provisioned:
    """Ids of a host, room, appointment and client made through the API."""

    host_id: str
    room_id: str
    appointment_id: str
    host_participant_id: str
    client_id: str


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings, any_store: Store, clock: FrozenClock
) -> TestClient:
    server = TestServer(create_app(settings, clock=clock, store_factory=lambda _: any_store))
    # The production access logger, so log tests see what production would write.
    await server.start_server(access_log_class=RedactingAccessLogger)
    return await aiohttp_client(server)


def services_of(client: TestClient) -> Services:
    return client.app[SERVICES]


async def a_tenant(
    client: TestClient, *, scopes: Iterable[Scope] = tuple(Scope), name: str = "Test platform"
) -> Tenant:
    services = services_of(client)
    platform, _ = await services.provisioning.create_platform(name=name, actor="test")
    issued = await services.apikeys.create(
        platform_id=platform.id, name="test-key", scopes=list(scopes), actor="test"
    )
    return Tenant(platform_id=platform.id, key_id=issued.key.id, key=issued.plaintext)


@pytest.fixture
async def tenant(client: TestClient) -> Tenant:
    return await a_tenant(client)


@pytest.fixture
async def other_tenant(client: TestClient) -> Tenant:
    return await a_tenant(client, name="Other platform")


async def call(
    client: TestClient,
    method: str,
    path: str,
    tenant: Tenant | None,
    *,
    json: Any = None,
    expect: int,
    **kwargs: Any,
) -> Any:
    """One API request; asserts the status and returns the decoded JSON body."""
    headers = dict(kwargs.pop("headers", {}))
    if tenant is not None:
        headers.update(tenant.headers)
    async with client.request(
        method, API + path, json=json, headers=headers, allow_redirects=False, **kwargs
    ) as resp:
        body = await resp.json()
        assert resp.status == expect, body
        assert resp.content_type == "application/json"
        return body


async def provision(client: TestClient, tenant: Tenant, *, client_name: str = "Zed") -> Provisioned:
    """Host, room, appointment and one client, through the API as ``tenant``."""
    host = await call(client, "POST", "/hosts", tenant, json={"display_name": "Dr Who"}, expect=201)
    room = await call(client, "POST", "/rooms", tenant, json={"host_id": host["id"]}, expect=201)
    appointment = await call(
        client, "POST", "/appointments", tenant, json={"room_id": room["id"]}, expect=201
    )
    participant = await call(
        client,
        "POST",
        f"/appointments/{appointment['id']}/clients",
        tenant,
        json={"display_name": client_name},
        expect=201,
    )
    return Provisioned(
        host_id=host["id"],
        room_id=room["id"],
        appointment_id=appointment["id"],
        host_participant_id=appointment["host_participant_id"],
        client_id=participant["id"],
    )
