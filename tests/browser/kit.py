"""Steps a person takes in the browser, shared by the browser tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, WebSocketRoute, expect

from gateway.domain.model import Participant
from tests.factories import Seeded
from tests.gateway_harness import RunningGateway

__all__ = [
    "LOOPBACK_MEDIA",
    "PHONE",
    "SCREENSHOTS",
    "WIDE",
    "SocketTap",
    "Tab",
    "bounded",
    "call_bounded",
    "client_to_waiting",
    "host_console",
    "new_tab",
    "open_link",
    "press_link_button",
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


class SocketTap:
    """Stands between a page and the gateway's socket on one namespace: notes the calls
    the page makes, and holds, drops or itself gives the answers to chosen events. Attach
    it before the page connects."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        #: Every call the page made, in order: (event, payload or None).
        self.calls: list[tuple[str, Any]] = []
        #: The gateway's answers to these events are kept until :meth:`release`.
        self.holding: set[str] = set()
        #: The gateway's answers to these events never reach the page.
        self.dropping: set[str] = set()
        #: event -> (events sent the page before the answer, the answer, events after):
        #: the gateway never sees these calls.
        self.fakes: dict[
            str, tuple[list[tuple[str, Any]], dict[str, Any], list[tuple[str, Any]]]
        ] = {}
        self._asked: dict[str, str] = {}  # ack id -> event, for calls the gateway answers
        self._held: list[tuple[WebSocketRoute, str]] = []
        self._call = re.compile(rf"^42{re.escape(namespace)},(?P<ack>\d+)(?P<body>\[.*)$", re.S)
        self._answer = re.compile(rf"^43{re.escape(namespace)},(?P<ack>\d+)\[", re.S)

    async def attach(self, page: Page) -> None:
        await page.route_web_socket("**/socket.io/**", self._route)

    def fake(
        self,
        event: str,
        answer: dict[str, Any],
        *,
        before: list[tuple[str, Any]] | None = None,
        after: list[tuple[str, Any]] | None = None,
    ) -> None:
        """Answer ``event`` with ``answer`` instead of the gateway, sending the page the
        events ``before`` first and ``after`` next, as (name, data)."""
        self.fakes[event] = (before or [], answer, after or [])

    def calls_of(self, event: str) -> list[Any]:
        return [payload for name, payload in self.calls if name == event]

    def release(self) -> None:
        """Let the held answers through, in order."""
        held, self._held = self._held, []
        for ws, message in held:
            ws.send(message)

    def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            match = self._call.match(message) if isinstance(message, str) else None
            if match is None:
                server.send(message)
                return
            event, *payload = json.loads(match["body"])
            self.calls.append((event, payload[0] if payload else None))
            if event in self.fakes:
                before, answer, after = self.fakes[event]
                for name, data in before:
                    ws.send(f"42{self.namespace},{json.dumps([name, data])}")
                ws.send(f"43{self.namespace},{match['ack']}{json.dumps([answer])}")
                for name, data in after:
                    ws.send(f"42{self.namespace},{json.dumps([name, data])}")
                return
            self._asked[match["ack"]] = event
            server.send(message)

        def from_server(message: str | bytes) -> None:
            match = self._answer.match(message) if isinstance(message, str) else None
            event = self._asked.pop(match["ack"], None) if match else None
            if event in self.dropping:
                return
            if event in self.holding:
                self._held.append((ws, message))
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)


async def video_frames_decoded(page: Page) -> int:
    """Video frames the page's open peer connection has decoded (-1: no open one)."""
    frames: int = await page.evaluate(_FRAMES_DECODED)
    return frames


async def totp_now(gateway: RunningGateway, participant_id: str) -> str:
    """The code an authenticator app would show now (the secret is read from the store)."""
    secret = await gateway.services.store.get_totp_secret(participant_id)
    assert secret is not None, "not enrolled"
    return str(pyotp.TOTP(secret).now())


#: A link page's button, and where its post leads, by the link's kind (/j/…, /h/…).
_LINK_BUTTONS = {"/j/": ("Join the waiting room", "/join"), "/h/": ("Open my console", "/host")}


async def open_link(page: Page, gateway: RunningGateway, link_path: str) -> None:
    """Open a link at top level and press its page's button, as the person does (the page
    never posts by itself there: docs/decisions/0011); returns on the page it leads to."""
    await page.goto(gateway.url + link_path)
    await press_link_button(page, gateway, link_path)


async def press_link_button(page: Page, gateway: RunningGateway, link_path: str) -> None:
    """On a link's page (top level): press its button, wait for the page it leads to."""
    button, landing = _LINK_BUTTONS[link_path[:3]]
    await page.get_by_role("button", name=button).click()
    await page.wait_for_url(gateway.url + landing)


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
    await open_link(page, gateway, link_path)
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
    await open_link(page, gateway, seeded.host_path)
    await page.get_by_role("button", name="Show my set-up code").click()
    await page.fill("#code", await totp_now(gateway, seeded.host.id))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#room-state")).to_contain_text("Open")
    return tab
