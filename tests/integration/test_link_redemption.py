"""Link redemption over real HTTP: exactly once, one answer for every refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.clock import FrozenClock
from gateway.domain.waiting_room import ParticipantState
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage import Store
from gateway.web import SERVICES, create_app
from tests.factories import CLIENT_NAME, Seeded, make_settings, seed

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, settings: Settings, any_store: Store, clock: FrozenClock
) -> TestClient:
    app = create_app(settings, clock=clock, store_factory=lambda _: any_store)
    return await aiohttp_client(app)


def services_of(client: TestClient) -> Services:
    return client.app[SERVICES]


@pytest.fixture
async def seeded(client: TestClient) -> Seeded:
    return await seed(services_of(client))


async def test_fifty_concurrent_redemptions_exactly_one_wins(
    client: TestClient,
    seeded: Seeded,
) -> None:
    async def attempt() -> int:
        async with client.get(seeded.client_path, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sorted(statuses).count(303) == 1
    assert statuses.count(410) == 49


async def test_second_get_gets_the_refusal_page(client: TestClient, seeded: Seeded) -> None:
    first = await client.get(seeded.client_path, allow_redirects=False)
    assert first.status == 303
    second = await client.get(seeded.client_path, allow_redirects=False)
    assert second.status == 410
    assert "This link can't be used" in await second.text()


async def test_every_refusal_looks_the_same(
    client: TestClient,
    seeded: Seeded,
    clock: FrozenClock,
) -> None:
    token = seeded.client_path.removeprefix("/j/")
    payload, stamp, signature = token.split(".")
    # Change a character in the middle: the last one may carry only padding bits.
    middle = len(signature) // 2
    flipped = (
        signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    )
    candidates = {
        "tampered signature": f"/j/{payload}.{stamp}.{flipped}",
        "tampered payload": f"/j/{payload[:-2]}xx.{stamp}.{signature}",
        "truncated": f"/j/{token[:-5]}",
        "garbage": "/j/not-a-token",
        "overlong": "/j/" + "a" * 600,
        "other purpose": "/j/" + seeded.host_path.removeprefix("/h/"),
    }
    bodies = set()
    for label, path in candidates.items():
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 410, label
        assert "Set-Cookie" not in resp.headers, label
        bodies.add(await resp.text())
    # Used and expired look the same too.
    assert (await client.get(seeded.client_path, allow_redirects=False)).status == 303
    used = await client.get(seeded.client_path, allow_redirects=False)
    bodies.add(await used.text())
    fresh = await seed(services_of(client))
    clock.advance(48 * 3600 + 1)
    expired = await client.get(fresh.client_path, allow_redirects=False)
    assert (used.status, expired.status) == (410, 410)
    bodies.add(await expired.text())
    assert len(bodies) == 1


async def test_future_dated_link_is_refused(
    client: TestClient,
    clock: FrozenClock,
) -> None:
    clock.advance(3600)
    fresh = await seed(services_of(client))
    clock.advance(-3600)
    resp = await client.get(fresh.client_path, allow_redirects=False)
    assert resp.status == 410


async def test_redemption_sets_a_safe_cookie_and_drops_the_token(
    client: TestClient,
    seeded: Seeded,
) -> None:
    resp = await client.get(seeded.client_path, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/join"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    follow = await client.get("/join")
    assert follow.status == 200
    page = await follow.text()
    assert "waiting room" in page
    assert CLIENT_NAME not in page


async def test_redeemed_client_is_knocking(
    client: TestClient,
    seeded: Seeded,
) -> None:
    await client.get(seeded.client_path, allow_redirects=False)
    participant = await services_of(client).store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.KNOCKING


async def test_pages_refuse_without_a_session(client: TestClient) -> None:
    for path in ("/join", "/host"):
        resp = await client.get(path)
        assert resp.status == 401
    resp = await client.get("/join", cookies={"qr_session": "forged-value"})
    assert resp.status == 401


async def test_a_client_session_is_not_a_host_session(
    client: TestClient,
    seeded: Seeded,
) -> None:
    await client.get(seeded.client_path, allow_redirects=False)
    assert (await client.get("/host")).status == 401


@pytest.mark.parametrize(
    "state", [ParticipantState.DENIED, ParticipantState.REMOVED, ParticipantState.KNOCKING]
)
async def test_denied_or_removed_client_cannot_come_back(
    client: TestClient,
    seeded: Seeded,
    state: ParticipantState,
) -> None:
    store = services_of(client).store
    moved, _ = await store.transition_participant(
        seeded.client.id, sources=[ParticipantState.INVITED], target=state, at=0.0
    )
    assert moved
    resp = await client.get(seeded.client_path, allow_redirects=False)
    assert resp.status == 410


async def test_ended_appointment_refuses_its_links(
    client: TestClient,
    seeded: Seeded,
) -> None:
    await services_of(client).store.end_appointment(seeded.appointment.id, at=1.0)
    resp = await client.get(seeded.client_path, allow_redirects=False)
    assert resp.status == 410


async def test_security_headers_on_every_answer(client: TestClient) -> None:
    for path in ("/healthz", "/join", "/j/x", "/nowhere"):
        resp = await client.get(path, allow_redirects=False)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in resp.headers  # plain HTTP here


async def test_health_answers(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_refusals_and_redemptions_are_audited_without_secrets(
    client: TestClient,
    seeded: Seeded,
) -> None:
    await client.get(seeded.client_path, allow_redirects=False)
    await client.get(seeded.client_path, allow_redirects=False)
    entries = await services_of(client).store.read_audit()
    actions = [(e.action, e.outcome) for e in entries]
    assert ("link.redeemed", "ok") in actions
    assert ("link.refused", "linkalreadyused") in actions
    token = seeded.client_path.removeprefix("/j/")
    for entry in entries:
        text = repr(entry.to_dict())
        assert token not in text
        assert CLIENT_NAME not in text
