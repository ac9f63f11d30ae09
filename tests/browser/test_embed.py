"""A platform's page on another origin embeds the gateway with the SDK and hears what
happens in the session: waiting, admitted, recording, ended; nothing from anyone else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from gateway.domain.model import RoomPolicy
from gateway.domain.recording import RECORDING_CONSENT
from gateway.settings import new_recording_key
from tests.browser.kit import LOOPBACK_MEDIA, bounded, call_bounded, new_tab
from tests.fixtures.servers import free_port
from tests.gateway_harness import eventually, running_gateway

pytestmark = [pytest.mark.integration, bounded]

_PLATFORM_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Practice portal</title>
<link rel="icon" href="data:,"></head>
<body>
<h1>Your appointment</h1>
<div id="session"></div>
<script src="%(gateway)s/static/embed/quietroom-embed.js"></script>
<script>
window.received = [];
const link = new URLSearchParams(location.search).get("link");
const room = QuietroomEmbed.create({
  link: link,
  container: document.getElementById("session"),
  height: "700px",
});
for (const name of QuietroomEmbed.events) {
  room.on(name, (detail) => window.received.push(Object.assign({event: name}, detail)));
}
</script>
</body></html>
"""


@asynccontextmanager
async def platform_site(gateway_url: str, port: int) -> AsyncIterator[str]:
    """A page on another loopback port (another origin) that embeds the gateway."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=_PLATFORM_PAGE % {"gateway": gateway_url}, content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def received(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate("window.received")
    return events


@call_bounded
async def test_the_embed_sdk_hears_waiting_admitted_recording_and_ended(
    chromium: Browser, tmp_path: Path
) -> None:
    port = free_port()
    platform_origin = f"http://127.0.0.1:{port}"
    async with (
        running_gateway(
            host_away_grace=0,
            frame_ancestors=(platform_origin,),
            recording_keys=[new_recording_key()],
            recording_dir=str(tmp_path / "recordings"),
            **LOOPBACK_MEDIA,
        ) as gateway,
        platform_site(gateway.url, port) as platform,
    ):
        seeded = await gateway.seed(
            policy=RoomPolicy(client_totp_required=False, recording_allowed=True)
        )
        tab = await new_tab(chromium)
        page = tab.page
        link = gateway.url + seeded.client_path
        await page.goto(f"{platform}/?{urlencode({'link': link})}")
        frame_element = page.locator("iframe")
        await expect(frame_element).to_have_attribute(
            "allow", "camera; microphone; autoplay; screen-wake-lock"
        )
        frame = page.frame_locator("iframe")
        await frame.locator("#check-start").click()
        await frame.locator("#check-continue").click()
        await expect(frame.locator("#screen-waiting")).to_be_visible()

        async def heard(*names: str) -> bool:
            return [e["event"] for e in await received(page)] == list(names)

        await eventually(lambda: heard("waiting"), what="waiting event")

        # Someone else posting to the platform page is not the gateway: ignored.
        await page.evaluate("window.postMessage({source: 'quietroom', event: 'admitted'}, '*')")
        host = await gateway.signed_in_host(seeded)
        console = await host.socket("/host")
        assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
        await expect(frame.locator("#screen-call")).to_be_visible()
        await eventually(lambda: heard("waiting", "admitted"), what="admitted event")

        # Recorded, with everyone's consent (the client's given in the frame), then not.
        version = RECORDING_CONSENT.version
        given = await console.call("consent.recording", {"version": version, "given": True})
        assert given["ok"], given
        assert (await console.call("recording.ask"))["ok"]
        dialog = frame.locator("#recording-dialog")
        await dialog.get_by_role("button", name="I agree to recording").click()
        await expect(frame.locator("#call-consent-text")).to_have_text("You agreed to recording.")
        started = await console.call("recording.start")
        assert started["ok"], started
        await expect(frame.locator("#call-recording")).to_be_visible()
        assert (await console.call("recording.stop"))["ok"]
        await expect(frame.locator("#call-recording")).to_be_hidden()
        recorded = ("waiting", "admitted", "recording", "recording")
        await eventually(lambda: heard(*recorded), what="recording events")

        assert (await console.call("end"))["ok"]
        await expect(frame.locator("#end-title")).to_have_text("The session has ended")
        await eventually(lambda: heard(*recorded, "ended"), what="ended event")
        events = await received(page)
        assert events[2:] == [
            {"event": "recording", "recording": True},
            {"event": "recording", "recording": False},
            {"event": "ended", "reason": "ended"},
        ]
        # Ids and names stay inside the frame.
        assert seeded.client.id not in json.dumps(events)
        tab.assert_no_errors()


async def test_the_frame_tells_no_page_but_the_one_it_names(chromium: Browser) -> None:
    """Framed by an allowed page that claims to be someone else: nobody hears anything."""
    port, other = free_port(), free_port()
    platform_origin = f"http://127.0.0.1:{port}"
    async with (
        running_gateway(
            host_away_grace=0,
            frame_ancestors=(platform_origin, f"http://127.0.0.1:{other}"),
            **LOOPBACK_MEDIA,
        ) as gateway,
        platform_site(gateway.url, port) as platform,
    ):
        seeded = await gateway.seed(policy=RoomPolicy(client_totp_required=False))
        tab = await new_tab(chromium)
        page = tab.page
        await page.goto(platform + "/?link=")
        # A hand-made frame whose fragment names another allowed origin.
        await page.evaluate(
            """([src]) => {
                window.raw = [];
                window.addEventListener("message", (e) => window.raw.push(e.data));
                const frame = document.createElement("iframe");
                frame.allow = "camera; microphone";
                frame.src = src;
                document.body.append(frame);
            }""",
            [f"{gateway.url}{seeded.client_path}#embed=http://127.0.0.1:{other}"],
        )
        frame = page.frame_locator("iframe >> nth=-1")
        await frame.locator("#check-start").click()
        await frame.locator("#check-continue").click()
        await expect(frame.locator("#screen-waiting")).to_be_visible()
        await page.wait_for_timeout(300)
        assert await page.evaluate("window.raw") == []
