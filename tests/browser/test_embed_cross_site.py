"""Embedded by a platform on another site, over https, in a Chromium that blocks
third-party cookies: the session cookie the frame gets is partitioned (CHIPS), so it is
kept, the client reaches the waiting room inside the frame, and the session exists only
in that platform's partition (docs/decisions/0005-embedded-session-cookies.md)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import BrowserContext, async_playwright, expect

from gateway.domain.model import RoomPolicy
from gateway.web import SERVICES, create_app
from gateway.web.access_log import RedactingAccessLogger
from tests.browser.kit import LOOPBACK_MEDIA, bounded
from tests.factories import make_settings, seed
from tests.fixtures.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.fixtures.servers import free_port

pytestmark = [pytest.mark.integration, bounded]

GATEWAY_HOST = "gateway.test"
PLATFORM_HOST = "platform.test"

_PLATFORM_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Practice portal</title>
<link rel="icon" href="data:,"></head>
<body><div id="session"></div>
<script src="%(gateway)s/static/embed/quietroom-embed.js"></script>
<script>
const link = new URLSearchParams(location.search).get("link");
QuietroomEmbed.create({link, container: document.getElementById("session"), height: "700px"});
</script>
</body></html>
"""


def tls_context(folder: Path) -> ssl.SSLContext:
    """A self-signed certificate for both made-up sites (the browser is told to accept it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(GATEWAY_HOST),
                    x509.DNSName(PLATFORM_HOST),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


@asynccontextmanager
async def serving(app: web.Application, port: int, tls: ssl.SSLContext) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
        yield
    finally:
        await runner.cleanup()


@asynccontextmanager
async def chromium_blocking_third_party_cookies(profile: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with third-party cookies blocked (the profile's setting), both made-up
    sites resolving to loopback, and the self-signed certificate accepted."""
    preferences = profile / "Default" / "Preferences"
    preferences.parent.mkdir(parents=True)
    preferences.write_text(
        json.dumps({"profile": {"cookie_controls_mode": 1, "block_third_party_cookies": True}})
    )
    rules = f"MAP {GATEWAY_HOST} 127.0.0.1, MAP {PLATFORM_HOST} 127.0.0.1"
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"],
            ignore_https_errors=True,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(8000)
        try:
            yield context
        finally:
            await context.close()


async def test_a_cross_site_frame_keeps_a_partitioned_session(tmp_path: Path) -> None:
    tls = tls_context(tmp_path)
    gateway_port, platform_port = free_port(), free_port()
    gateway_origin = f"https://{GATEWAY_HOST}:{gateway_port}"
    platform_origin = f"https://{PLATFORM_HOST}:{platform_port}"
    settings = make_settings(
        public_url=gateway_origin,
        port=gateway_port,
        host_away_grace=0,
        frame_ancestors=(platform_origin,),
        **LOOPBACK_MEDIA,
    )
    gateway = create_app(settings)

    async def platform_page(request: web.Request) -> web.Response:
        return web.Response(
            text=_PLATFORM_PAGE % {"gateway": gateway_origin}, content_type="text/html"
        )

    platform = web.Application()
    platform.router.add_get("/", platform_page)
    async with (
        serving(gateway, gateway_port, tls),
        serving(platform, platform_port, tls),
        chromium_blocking_third_party_cookies(tmp_path / "profile") as browser,
    ):
        seeded = await seed(gateway[SERVICES], policy=RoomPolicy(client_totp_required=False))
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        link = gateway_origin + seeded.client_path
        await page.goto(f"{platform_origin}/?{urlencode({'link': link})}")
        frame = page.frame_locator("iframe")
        await frame.locator("#check-start").click()
        await frame.locator("#check-continue").click()
        # The frame kept its session: the page and its socket know who this is.
        await expect(frame.locator("#screen-waiting")).to_be_visible()

        cookies = [c for c in await browser.cookies() if c["name"] == "__Host-qr_session"]
        assert len(cookies) == 1
        cookie = cookies[0]
        assert cookie["sameSite"] == "None"
        assert cookie["secure"] is True
        assert cookie["httpOnly"] is True
        assert cookie.get("partitionKey") == f"https://{PLATFORM_HOST}"

        # The session lives in the platform's partition only: top-level, it is not there.
        top = await browser.new_page()
        response = await top.goto(gateway_origin + "/join")
        assert response is not None
        assert response.status == 401
        assert errors == []
