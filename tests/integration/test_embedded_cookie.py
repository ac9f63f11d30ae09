"""The session cookie in a platform's frame on another site: SameSite=None and
Partitioned (CHIPS), so browsers that block third-party cookies keep it, in that
platform's partition only; opened directly, the link keeps the SameSite=Lax cookie.
(docs/decisions/0005-embedded-session-cookies.md)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.web import SERVICES, create_app
from tests.factories import make_settings, seed

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]

CROSS_SITE_FRAME = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}


async def redeem(
    aiohttp_client: ClientFactory, public_url: str, headers: dict[str, str]
) -> web.StreamResponse:
    app = create_app(make_settings(public_url=public_url))
    client = await aiohttp_client(app)
    seeded = await seed(client.app[SERVICES])
    async with client.get(seeded.client_path, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 303
        return resp


async def test_in_a_cross_site_frame_the_cookie_is_partitioned(
    aiohttp_client: ClientFactory,
) -> None:
    resp = await redeem(aiohttp_client, "https://gateway.example", CROSS_SITE_FRAME)
    cookies = resp.headers.getall("Set-Cookie")
    assert len(cookies) == 1
    name_value, *attributes = [part.strip() for part in cookies[0].split(";")]
    assert name_value.startswith("__Host-qr_session=")
    assert len(name_value) > len("__Host-qr_session=") + 40
    assert set(attributes[1:]) == {"Path=/", "Secure", "HttpOnly", "SameSite=None", "Partitioned"}
    assert attributes[0].startswith("Max-Age=")
    assert int(attributes[0].removeprefix("Max-Age=")) > 0


@pytest.mark.parametrize(
    ("public_url", "headers"),
    [
        # Opened directly, or framed by a page of the same site: first-party, Lax.
        ("https://gateway.example", {"Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none"}),
        ("https://gateway.example", {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "same-site"}),
        ("https://gateway.example", {}),
        # Plain http (development): SameSite=None would need Secure; stays Lax.
        ("http://127.0.0.1:8080", CROSS_SITE_FRAME),
    ],
    ids=["top-level", "same-site-frame", "no-fetch-metadata", "plain-http"],
)
async def test_otherwise_the_cookie_stays_lax_and_unpartitioned(
    aiohttp_client: ClientFactory, public_url: str, headers: dict[str, str]
) -> None:
    resp = await redeem(aiohttp_client, public_url, headers)
    cookies = resp.headers.getall("Set-Cookie")
    assert len(cookies) == 1
    assert "SameSite=Lax" in cookies[0]
    assert "HttpOnly" in cookies[0]
    assert "Partitioned" not in cookies[0]
    assert ("Secure" in cookies[0]) is public_url.startswith("https://")
