"""Link redemption over real HTTP: opening a link (GET, HEAD) uses nothing up; its page
posts to redeem it, exactly once, from our own origin; one answer for every refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from gateway.clock import FrozenClock
from gateway.domain.waiting_room import ParticipantState
from gateway.services import Services
from gateway.settings import Settings
from gateway.storage import Store
from gateway.web import SERVICES, create_app
from tests.factories import CLIENT_NAME, Seeded, make_settings, seed
from tests.gateway_harness import link_form

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]

#: What a browser posts the link page's form with: our own origin.
OURS = {"Origin": "http://127.0.0.1:8080"}


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


async def post(
    client: TestClient,
    path: str,
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> ClientResponse:
    """Post a link's form as its page does (from our origin unless ``headers`` say)."""
    async with client.post(
        path, data=form or {"frame": ""}, headers=headers or OURS, allow_redirects=False
    ) as resp:
        await resp.read()
        return resp


async def redeem(client: TestClient, path: str) -> ClientResponse:
    """Open the link's page, then post its form, as a browser does."""
    async with client.get(path, allow_redirects=False) as page:
        assert page.status == 200, page.status
        action, fields = link_form(await page.text())
    assert action == path
    return await post(client, action, form=fields)


async def test_fifty_concurrent_redemptions_exactly_one_wins(
    client: TestClient,
    seeded: Seeded,
) -> None:
    async def attempt() -> int:
        return (await post(client, seeded.client_path)).status

    statuses = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sorted(statuses).count(303) == 1
    assert statuses.count(410) == 49


async def test_opening_a_link_uses_nothing_up(client: TestClient, seeded: Seeded) -> None:
    """Mail scanners and link previews fetch links: GET and HEAD only show the page."""
    for path, heading, button in (
        (seeded.client_path, "Join your session", "Join the waiting room"),
        (seeded.host_path, "Open your console", "Open my console"),
    ):
        for _ in range(2):
            async with client.head(path, allow_redirects=False) as head:
                assert head.status == 200
                assert "Set-Cookie" not in head.headers
            async with client.get(path, allow_redirects=False) as page:
                assert page.status == 200
                assert "Set-Cookie" not in page.headers
                assert page.headers["Cache-Control"] == "no-store"
                assert page.headers["Referrer-Policy"] == "no-referrer"
                body = await page.text()
        assert f"<h1>{heading}</h1>" in body
        assert f">{button}</button>" in body
        assert "/open-link.js" in body
        assert link_form(body) == (path, {"frame": ""})
    participant = await services_of(client).store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.INVITED
    actions = [e.action for e in await services_of(client).store.read_audit()]
    assert "link.redeemed" not in actions
    # Still unused: the browser's post redeems it.
    client_post = await post(client, seeded.client_path)
    assert (client_post.status, client_post.headers["Location"]) == (303, "/join")
    host_post = await post(client, seeded.host_path)
    assert (host_post.status, host_post.headers["Location"]) == (303, "/host")


async def test_a_used_link_gets_the_refusal_page_on_get_head_and_post(
    client: TestClient, seeded: Seeded
) -> None:
    assert (await redeem(client, seeded.client_path)).status == 303
    second = await post(client, seeded.client_path)
    assert second.status == 410
    assert "Set-Cookie" not in second.headers
    page = await client.get(seeded.client_path, allow_redirects=False)
    assert page.status == 410
    assert "This link can't be used" in await page.text()
    assert "Set-Cookie" not in page.headers
    assert (await client.head(seeded.client_path, allow_redirects=False)).status == 410


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
        for method in ("GET", "POST"):
            headers = OURS if method == "POST" else {}
            resp = await client.request(method, path, headers=headers, allow_redirects=False)
            assert resp.status == 410, (label, method)
            assert "Set-Cookie" not in resp.headers, (label, method)
            bodies.add(await resp.text())
    # Used and expired look the same too, when opened and when posted.
    assert (await redeem(client, seeded.client_path)).status == 303
    fresh = await seed(services_of(client))
    clock.advance(48 * 3600 + 1)
    for path in (seeded.client_path, fresh.client_path):
        opened = await client.get(path, allow_redirects=False)
        posted = await client.post(path, headers=OURS, allow_redirects=False)
        assert (opened.status, posted.status) == (410, 410)
        bodies.update([await opened.text(), await posted.text()])
    assert len(bodies) == 1


async def test_future_dated_link_is_refused(
    client: TestClient,
    clock: FrozenClock,
) -> None:
    clock.advance(3600)
    fresh = await seed(services_of(client))
    clock.advance(-3600)
    assert (await client.get(fresh.client_path, allow_redirects=False)).status == 410
    assert (await post(client, fresh.client_path)).status == 410


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://attacker.example"},
        {"Origin": "https://attacker.example", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "null"},  # without Fetch Metadata a null Origin proves nothing
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null", "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "none"},
    ],
    ids=[
        "other-origin",
        "other-origin-claiming-same-origin",
        "null-without-fetch-metadata",
        "null-cross-site",
        "null-same-site",
        "no-origin-cross-site",
        "no-origin-typed-in",
    ],
)
async def test_a_post_from_another_site_is_refused_and_uses_nothing_up(
    client: TestClient, seeded: Seeded, headers: dict[str, str]
) -> None:
    """No session yet, so no form token: the Origin check stops login CSRF."""
    refused = await post(client, seeded.client_path, headers=headers)
    assert refused.status == 403
    assert "Set-Cookie" not in refused.headers
    participant = await services_of(client).store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.INVITED
    assert (await redeem(client, seeded.client_path)).status == 303


@pytest.mark.parametrize(
    "headers",
    [
        # Our own page under Referrer-Policy: no-referrer posts with "Origin: null".
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {},  # no Origin, no Fetch Metadata: not a browser post from another site
    ],
    ids=["null-same-origin", "our-origin", "no-origin-same-origin", "no-headers"],
)
async def test_a_post_from_our_own_page_redeems(
    client: TestClient, seeded: Seeded, headers: dict[str, str]
) -> None:
    async with client.post(
        seeded.client_path, data={"frame": ""}, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/join"
        assert "qr_session=" in resp.headers["Set-Cookie"]


async def test_redemption_sets_a_safe_cookie_and_drops_the_token(
    client: TestClient,
    seeded: Seeded,
) -> None:
    resp = await redeem(client, seeded.client_path)
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
    await redeem(client, seeded.client_path)
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
    await redeem(client, seeded.client_path)
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
    assert (await client.get(seeded.client_path, allow_redirects=False)).status == 410
    assert (await post(client, seeded.client_path)).status == 410


async def test_ended_appointment_refuses_its_links(
    client: TestClient,
    seeded: Seeded,
) -> None:
    await services_of(client).store.end_appointment(seeded.appointment.id, at=1.0)
    assert (await client.get(seeded.client_path, allow_redirects=False)).status == 410
    assert (await post(client, seeded.client_path)).status == 410


async def test_security_headers_on_every_answer(client: TestClient, seeded: Seeded) -> None:
    for path in ("/healthz", "/join", "/j/x", seeded.client_path, "/nowhere"):
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
    await redeem(client, seeded.client_path)
    await post(client, seeded.client_path)
    await client.get(seeded.client_path, allow_redirects=False)
    await client.get("/j/not-a-token", allow_redirects=False)
    entries = await services_of(client).store.read_audit()
    actions = [(e.action, e.outcome) for e in entries]
    assert actions.count(("link.redeemed", "ok")) == 1
    # Refused when posted again and when opened again, and a forged one when opened.
    assert actions.count(("link.refused", "linkalreadyused")) == 2
    assert ("link.refused", "linkinvalid") in actions
    token = seeded.client_path.removeprefix("/j/")
    for entry in entries:
        text = repr(entry.to_dict())
        assert token not in text
        assert CLIENT_NAME not in text
