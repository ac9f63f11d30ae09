"""The API key service on both stores: the plaintext once, one refusal for all, revocation."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import FrozenClock
from gateway.domain.apikeys import Scope, parse_presented
from gateway.domain.ids import new_id
from gateway.errors import InvalidInput, NotFound, Unauthenticated
from gateway.services import Services
from gateway.storage import Store
from tests.factories import make_settings


@pytest.fixture
def services(any_store: Store, clock: FrozenClock) -> Services:
    return Services.build(settings=make_settings(), store=any_store, clock=clock)


async def a_platform(services: Services) -> str:
    platform, _ = await services.provisioning.create_platform(name="Clinic", actor="test")
    return platform.id


async def test_a_key_for_an_absent_platform_is_refused(services: Services) -> None:
    with pytest.raises(NotFound):
        await services.apikeys.create(
            platform_id=new_id("plt"), name="x", scopes=["audit:read"], actor="test"
        )
    platform_id = await a_platform(services)
    with pytest.raises(InvalidInput):
        await services.apikeys.create(platform_id=platform_id, name="x", scopes=[], actor="test")
    assert await services.apikeys.list_keys(platform_id) == []


async def test_revoking_an_absent_key_is_not_found(services: Services) -> None:
    for key_id in (new_id("key"), "not-an-id", "qr:apikey:*"):
        with pytest.raises(NotFound):
            await services.apikeys.revoke(key_id, actor="test")


async def test_a_key_authenticates_until_it_is_revoked(
    services: Services, clock: FrozenClock
) -> None:
    platform_id = await a_platform(services)
    issued = await services.apikeys.create(
        platform_id=platform_id, name="sync", scopes=[Scope.HOSTS_WRITE], actor="test"
    )
    assert issued.plaintext not in repr(issued)
    key = await services.apikeys.authenticate(issued.plaintext)
    assert key == issued.key
    clock.advance(10)
    revoked = await asyncio.gather(
        *(services.apikeys.revoke(key.id, actor="test") for _ in range(20))
    )
    assert {r.revoked_at for r in revoked} == {clock.now()}
    with pytest.raises(Unauthenticated):
        await services.apikeys.authenticate(issued.plaintext)
    listed = await services.apikeys.list_keys(platform_id)
    assert [(k.id, k.revoked_at) for k in listed] == [(key.id, clock.now())]


async def test_the_store_keeps_only_the_hash(services: Services) -> None:
    platform_id = await a_platform(services)
    issued = await services.apikeys.create(
        platform_id=platform_id, name="sync", scopes=[Scope.AUDIT_READ], actor="test"
    )
    _, secret = parse_presented(issued.plaintext)
    stored = await services.store.get_api_key(issued.key.id)
    assert stored is not None
    assert secret not in repr(stored)
    entries = await services.store.read_audit()
    assert [e.action for e in entries][-1] == "apikey.created"
    assert all(secret not in repr(e.to_dict()) for e in entries)
