"""The session cookie in a platform's frame on another site: SameSite=None and
Partitioned (CHIPS), so browsers that block third-party cookies keep it, in that
platform's partition only; opened directly, the link keeps the SameSite=Lax cookie.
The link's page sees where it is opened (Fetch Metadata on the GET) and carries it to
its post, which honours it only when it is itself made in a frame.
(docs/decisions/0005-embedded-session-cookies.md)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.web import SERVICES, create_app
from tests.factories import make_settings, seed
from tests.gateway_harness import link_form

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]

CROSS_SITE_FRAME = {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "cross-site"}
#: The frame's page posting its form: same-origin, still in the frame (Origin: null
#: under Referrer-Policy: no-referrer).
POST_IN_FRAME = {"Origin": "null", "Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "same-origin"}
POST_TOP_LEVEL = {"Origin": "null", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "same-origin"}


async def redeem(
    aiohttp_client: ClientFactory,
    public_url: str,
    opened: dict[str, str],
    posted: dict[str, str],
    *,
    form: dict[str, str] | None = None,
) -> list[str]:
    """Open a link with ``opened`` headers, post its page's form (or ``form``) with
    ``posted`` headers: the Set-Cookie lines of the answer."""
    app = create_app(make_settings(public_url=public_url))
    client = await aiohttp_client(app)
    seeded = await seed(client.app[SERVICES])
    async with client.get(seeded.client_path, headers=opened, allow_redirects=False) as page:
        assert page.status == 200
        assert "Set-Cookie" not in page.headers
        action, fields = link_form(await page.text())
    async with client.post(
        action, data=fields if form is None else form, headers=posted, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        return resp.headers.getall("Set-Cookie")


def assert_partitioned(cookies: list[str]) -> None:
    assert len(cookies) == 1
    name_value, *attributes = [part.strip() for part in cookies[0].split(";")]
    assert name_value.startswith("__Host-qr_session=")
    assert len(name_value) > len("__Host-qr_session=") + 40
    assert set(attributes[1:]) == {"Path=/", "Secure", "HttpOnly", "SameSite=None", "Partitioned"}
    assert attributes[0].startswith("Max-Age=")
    assert int(attributes[0].removeprefix("Max-Age=")) > 0


def assert_lax(cookies: list[str], *, secure: bool = True) -> None:
    assert len(cookies) == 1
    assert "SameSite=Lax" in cookies[0]
    assert "HttpOnly" in cookies[0]
    assert "Partitioned" not in cookies[0]
    assert ("Secure" in cookies[0]) is secure


async def test_in_a_cross_site_frame_the_cookie_is_partitioned(
    aiohttp_client: ClientFactory,
) -> None:
    cookies = await redeem(
        aiohttp_client, "https://gateway.example", CROSS_SITE_FRAME, POST_IN_FRAME
    )
    assert_partitioned(cookies)


async def test_the_frame_flag_counts_only_for_a_post_made_in_a_frame(
    aiohttp_client: ClientFactory,
) -> None:
    """The page's hidden field alone (a top-level post, or one without Fetch Metadata)
    does not make the cookie third-party."""
    for posted in (POST_TOP_LEVEL, {"Origin": "https://gateway.example"}):
        cookies = await redeem(aiohttp_client, "https://gateway.example", CROSS_SITE_FRAME, posted)
        assert_lax(cookies)
    forged = await redeem(
        aiohttp_client,
        "https://gateway.example",
        {"Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none"},
        POST_TOP_LEVEL,
        form={"frame": "cross-site"},
    )
    assert_lax(forged)


@pytest.mark.parametrize(
    ("public_url", "opened", "posted"),
    [
        # Opened directly, or framed by a page of the same site: first-party, Lax.
        (
            "https://gateway.example",
            {"Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none"},
            POST_TOP_LEVEL,
        ),
        (
            "https://gateway.example",
            {"Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "same-site"},
            POST_IN_FRAME,
        ),
        ("https://gateway.example", {}, {}),
        # Plain http (development): SameSite=None would need Secure; stays Lax.
        ("http://127.0.0.1:8080", CROSS_SITE_FRAME, POST_IN_FRAME),
    ],
    ids=["top-level", "same-site-frame", "no-fetch-metadata", "plain-http"],
)
async def test_otherwise_the_cookie_stays_lax_and_unpartitioned(
    aiohttp_client: ClientFactory, public_url: str, opened: dict[str, str], posted: dict[str, str]
) -> None:
    cookies = await redeem(aiohttp_client, public_url, opened, posted)
    assert_lax(cookies, secure=public_url.startswith("https://"))
