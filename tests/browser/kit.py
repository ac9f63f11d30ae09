"""Steps a person takes in the browser, shared by the browser tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, expect

from gateway.domain.model import Participant
from tests.factories import Seeded
from tests.gateway_harness import RunningGateway

__all__ = [
    "LOOPBACK_MEDIA",
    "PHONE",
    "SCREENSHOTS",
    "WIDE",
    "Tab",
    "bounded",
    "call_bounded",
    "client_to_waiting",
    "host_console",
    "new_tab",
    "totp_now",
    "video_frames_decoded",
]

#: Every browser test ends within this many seconds (the run stays fast and bounded).
bounded = pytest.mark.timeout(20)
#: Tests with real calls: two Chromiums encoding and decoding video on a shared machine.
call_bounded = pytest.mark.timeout(90)

#: Test-only: every RTCPeerConnection a page makes, kept in ``window.__peers`` so a test
#: can read its statistics. Installed by the test (an init script), never by the page.
WATCH_PEERS = """
(() => {
  const Real = window.RTCPeerConnection;
  if (!Real || Real.__watched) { return; }
  window.__peers = [];
  class Watched extends Real {
    constructor(...args) { super(...args); window.__peers.push(this); }
  }
  Watched.__watched = true;
  window.RTCPeerConnection = Watched;
})();
"""

#: The video frames decoded so far by the page's newest open peer connection.
_FRAMES_DECODED = """
async () => {
  const open = (window.__peers || []).filter((pc) => pc.connectionState !== "closed");
  const pc = open[open.length - 1];
  if (!pc) { return -1; }
  let frames = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") { frames += s.framesDecoded || 0; }
  });
  return frames;
}
"""

#: Gateway settings for media on loopback: the browser tests run in a network namespace
#: with only ``lo`` (CI), and Chromium connects there (--allow-loopback-in-peer-connection).
LOOPBACK_MEDIA: dict[str, Any] = {"media_addresses": ["127.0.0.1"], "media_allow_loopback": True}

PHONE = {"width": 360, "height": 740}
WIDE = {"width": 1280, "height": 800}

#: Screenshots for people to look at; ignored by git (/artifacts/).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@dataclass
class Tab:
    """A page in a fresh browser profile, with every script error it logged."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def assert_no_errors(self, *, allowed: tuple[str, ...] = ()) -> None:
        """No uncaught exception, no CSP violation, no failed module import."""
        unexpected = [e for e in self.errors if not any(a in e for a in allowed)]
        assert unexpected == [], unexpected


async def new_tab(browser: Browser, *, viewport: dict[str, int] | None = None) -> Tab:
    context = await browser.new_context(viewport=viewport or WIDE)  # type: ignore[arg-type]
    context.set_default_timeout(8000)
    page = await context.new_page()
    tab = Tab(page=page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(f"console: {message.text} ({message.location.get('url')})")

    await context.add_init_script(WATCH_PEERS)
    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
    return tab


async def video_frames_decoded(page: Page) -> int:
    """Video frames the page's open peer connection has decoded (-1: no open one)."""
    frames: int = await page.evaluate(_FRAMES_DECODED)
    return frames


async def totp_now(gateway: RunningGateway, participant_id: str) -> str:
    """The code an authenticator app would show now (the secret is read from the store)."""
    secret = await gateway.services.store.get_totp_secret(participant_id)
    assert secret is not None, "not enrolled"
    return str(pyotp.TOTP(secret).now())


async def client_to_waiting(
    tab: Tab,
    gateway: RunningGateway,
    link_path: str,
    participant: Participant,
    *,
    identity: bool = True,
) -> None:
    """Open the link, check devices, set up and type the sign-in code, and wait."""
    page = tab.page
    await page.goto(gateway.url + link_path)
    await expect(page.locator("#screen-welcome")).to_be_visible()
    await page.click("#check-start")
    await expect(page.locator("#check-continue")).to_be_visible()
    await page.click("#check-continue")
    if identity:
        await expect(page.locator("#enrol")).to_be_visible()
        await page.fill("#code-input", await totp_now(gateway, participant.id))
        await page.click("#code-submit")
    await expect(page.locator("#screen-waiting")).to_be_visible()


async def host_console(browser: Browser, gateway: RunningGateway, seeded: Seeded) -> Tab:
    """The host opens the sign-in link, sets up the app, signs in with a code: console."""
    tab = await new_tab(browser)
    page = tab.page
    await page.goto(gateway.url + seeded.host_path)
    await page.get_by_role("button", name="Show my set-up code").click()
    await page.fill("#code", await totp_now(gateway, seeded.host.id))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#room-state")).to_contain_text("Open")
    return tab
