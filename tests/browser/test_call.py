"""The call, in real Chromium through the gateway: the client and the host each decode
the other's video, forwarded packet by packet; the controls work; leaving closes it all,
down to what the call listened to and the screen it kept awake."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Browser, CDPSession, Page, WebSocketRoute, expect

from gateway.domain.model import ParticipantState, RoomPolicy
from gateway.web.keys import MEDIA
from tests.browser.kit import (
    SocketTap,
    call_bounded,
    client_to_waiting,
    host_console,
    new_tab,
    video_frames_decoded,
)
from tests.factories import CLIENT_NAME, Seeded
from tests.gateway_harness import RunningGateway, eventually

pytestmark = [pytest.mark.integration, call_bounded]

#: Generous: two Chromiums encode and decode on a shared 2-core machine.
MEDIA_TIMEOUT = 45.0


async def decoding(page: Page, *, above: int = 0) -> None:
    """Wait until the page has decoded more than ``above`` video frames."""

    async def more() -> bool:
        return await video_frames_decoded(page) > above

    await eventually(more, timeout=MEDIA_TIMEOUT, what=f"more than {above} frames decoded")


def video_packets_forwarded(gateway: RunningGateway, seeded: Seeded) -> int:
    assert gateway.app is not None
    forwarder = gateway.app[MEDIA].forwarder(seeded.appointment.id)
    return -1 if forwarder is None else forwarder.stats.video_packets_out


async def test_the_client_and_the_host_see_each_other_through_the_gateway(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    client = await new_tab(chromium)
    page = client.page
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    # No call before anyone is admitted.
    await expect(console.locator("#host-call")).to_be_hidden()
    assert await video_frames_decoded(page) == -1

    row = console.locator("#waiting-list .row", has_text=CLIENT_NAME)
    await row.get_by_role("button", name=f"Admit {CLIENT_NAME}").click()
    await expect(page.locator("#screen-call")).to_be_visible()
    await expect(console.locator("#host-call")).to_be_visible()

    # Both pages decode the other's video, and keep decoding it.
    await decoding(page)
    await decoding(console)
    await decoding(page, above=await video_frames_decoded(page))
    await decoding(console, above=await video_frames_decoded(console))
    # ... which the gateway forwarded.
    forwarded = video_packets_forwarded(gateway, seeded)
    assert forwarded > 0

    async def forwarding_more() -> bool:
        return video_packets_forwarded(gateway, seeded) > forwarded

    await eventually(forwarding_more, timeout=MEDIA_TIMEOUT, what="more video forwarded")

    # The stage shows the video, with no status over it; the client is in session.
    await expect(page.locator("#call-status")).to_be_hidden(timeout=MEDIA_TIMEOUT * 1000)
    await expect(console.locator("#call-status")).to_be_hidden(timeout=MEDIA_TIMEOUT * 1000)
    assert await page.locator("#call-remote").evaluate("v => v.videoWidth") > 0
    assert await console.locator("#call-remote").evaluate("v => v.videoWidth") > 0

    async def in_session() -> bool:
        participant = await gateway.services.store.get_participant(seeded.client.id)
        return participant is not None and participant.state is ParticipantState.IN_SESSION

    await eventually(in_session, timeout=MEDIA_TIMEOUT, what="client in session")
    # Both codecs are offered (H.264 for Safari on iOS); the gateway chose one.
    offered = await page.evaluate("window.__peers.at(-1).localDescription.sdp")
    assert "VP8/90000" in offered
    assert "H264/90000" in offered
    assert "profile-level-id=42e01f" in offered

    # Mute and camera off change the local tracks; the buttons say so.
    await page.get_by_role("button", name="Mute").click()
    await expect(page.locator("#call-mic")).to_have_attribute("aria-pressed", "true")
    assert (
        await page.evaluate(
            "window.__peers.at(-1).getSenders().find(s => s.track && s.track.kind === 'audio')"
            ".track.enabled"
        )
        is False
    )
    await page.get_by_role("button", name="Stop video").click()
    await expect(page.locator("#call-self-off")).to_be_visible()

    # The client leaves: its connection closes, its camera stops; the host's stage says so.
    await page.get_by_role("button", name="Leave").click()
    await page.locator("#leave-dialog").get_by_role("button", name="Leave").click()
    await expect(page.locator("#end-title")).to_have_text("You've left")
    assert await page.evaluate("window.__peers.every(pc => pc.connectionState === 'closed')")
    await expect(console.locator("#call-status-text")).to_contain_text(
        "Waiting for your client's video", timeout=MEDIA_TIMEOUT * 1000
    )

    async def peer_gone() -> bool:
        assert gateway.app is not None
        return gateway.app[MEDIA].peer(seeded.client.id) is None

    await eventually(peer_gone, what="client's gateway peer closed")

    # The host ends the session: the host's media closes too.
    await console.get_by_role("button", name="End session").click()
    await console.locator("#confirm-dialog").get_by_role("button", name="End the session").click()
    await expect(console.locator("#console-ended")).to_be_visible()
    assert await console.evaluate("window.__peers.every(pc => pc.connectionState === 'closed')")
    client.assert_no_errors()
    host.assert_no_errors()


async def test_a_removed_client_s_call_closes(gateway: RunningGateway, chromium: Browser) -> None:
    seeded = await gateway.seed()
    client = await new_tab(chromium)
    page = client.page
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    row = console.locator("#waiting-list .row", has_text=CLIENT_NAME)
    await row.get_by_role("button", name=f"Admit {CLIENT_NAME}").click()
    await decoding(page)

    session_row = console.locator("#session-list .row", has_text=CLIENT_NAME)
    await session_row.get_by_role("button", name=f"Remove {CLIENT_NAME}").click()
    await console.locator("#confirm-dialog").get_by_role("button", name="Remove").click()
    await expect(page.locator("#end-title")).to_have_text("You've left the session")
    assert await page.evaluate("window.__peers.every(pc => pc.connectionState === 'closed')")
    # The camera is released.
    assert await page.evaluate(
        "window.__peers.flatMap(pc => pc.getSenders()).every("
        "s => !s.track || s.track.readyState === 'ended')"
    )
    client.assert_no_errors()
    host.assert_no_errors()


#: A device with a microphone and no camera.
NO_CAMERA = """
(() => {
  const devices = navigator.mediaDevices;
  const real = devices.getUserMedia.bind(devices);
  Object.defineProperty(devices, "getUserMedia", {
    value: (constraints) => constraints && constraints.video
      ? Promise.reject(new DOMException("Requested device not found", "NotFoundError"))
      : real(constraints),
  });
})();
"""

_AUDIO_PACKETS = """
async () => {
  const pc = window.__peers.filter((p) => p.connectionState !== "closed").at(-1);
  let packets = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") { packets += s.packetsReceived || 0; }
  });
  return packets;
}
"""


async def test_a_client_without_a_camera_still_sees_and_hears_the_host(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    client = await new_tab(chromium)
    page = client.page
    await page.add_init_script(NO_CAMERA)
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    row = console.locator("#waiting-list .row", has_text=CLIENT_NAME)
    await row.get_by_role("button", name=f"Admit {CLIENT_NAME}").click()

    # The client receives the host's video on a receive-only section...
    await decoding(page)
    await expect(page.locator("#call-self-off")).to_be_visible()
    await expect(page.get_by_role("button", name="Stop video")).to_be_disabled()
    sdp = await page.evaluate("window.__peers.at(-1).localDescription.sdp")
    video_section = sdp.split("m=video", 1)[1].split("m=", 1)[0]
    assert "a=recvonly" in video_section

    # ... and the host hears the client, and says it waits for the client's video.
    async def host_hears() -> bool:
        packets: int = await console.evaluate(_AUDIO_PACKETS)
        return packets > 0

    await eventually(host_hears, timeout=MEDIA_TIMEOUT, what="host receives the client's audio")
    await expect(console.locator("#call-status-text")).to_have_text(
        "Connected. Waiting for your client's video…", timeout=MEDIA_TIMEOUT * 1000
    )
    client.assert_no_errors()
    host.assert_no_errors()


class OfferRefusals:
    """Stands between the page and the gateway's socket; answers the page's
    ``media.offer`` itself with a refusal while ``refusing`` says so."""

    def __init__(self, refusing: int) -> None:
        #: How many offers to refuse from now on.
        self.refusing = refusing
        self.refused = 0
        self.routes: list[WebSocketRoute] = []

    def tell_page(self, event: str) -> None:
        """Send the page an event as if from the gateway."""
        for ws in self.routes:
            ws.send(f"42/client,{json.dumps([event, {}])}")

    async def attach(self, page: Page) -> None:
        await page.route_web_socket("**/socket.io/**", self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        self.routes.append(ws)

        def from_page(message: str | bytes) -> None:
            match = _EVENT.match(message) if isinstance(message, str) else None
            if match and json.loads(match["body"])[0] == "media.offer" and self.refusing > 0:
                self.refusing -= 1
                self.refused += 1
                refusal = {"ok": False, "error": {"code": "peer_closed", "message": "Closed."}}
                ws.send(f"43/client,{match['ack']}{json.dumps([refusal])}")
                return
            server.send(message)

        ws.on_message(from_page)


#: A Socket.IO event with an acknowledgement id, as the page sends it on /client.
_EVENT = re.compile(r"^42/client,(?P<ack>\d+)(?P<body>\[.*)$", re.S)


async def test_a_failed_connection_is_tried_again_then_explained(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed(policy=RoomPolicy(client_totp_required=False))
    client = await new_tab(chromium)
    page = client.page
    refusals = OfferRefusals(refusing=1)
    await refusals.attach(page)
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client, identity=False)
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")

    # One refused offer: "Trying again…", then connected with a fresh offer.
    assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
    status = page.locator("#call-status-text")
    await expect(status).to_have_text("Trying again…")
    await expect(status).to_have_text(
        "Connected. Waiting for your therapist's video…", timeout=MEDIA_TIMEOUT * 1000
    )
    assert refusals.refused == 1

    # Every offer refused: a bounded number of attempts with growing waits, then a
    # plain message and a button; the button starts over.
    refusals.refusing = 100
    refusals.tell_page("media.restart")  # the session's media moved: offer again
    await expect(status).to_have_text("Connecting…")
    await expect(status).to_contain_text(
        "We couldn't connect the call", timeout=MEDIA_TIMEOUT * 1000
    )
    assert refusals.refused == 1 + 6
    retry = page.get_by_role("button", name="Try again")
    await expect(retry).to_be_visible()
    refusals.refusing = 0
    await retry.click()
    await expect(status).to_have_text(
        "Connected. Waiting for your therapist's video…", timeout=MEDIA_TIMEOUT * 1000
    )
    client.assert_no_errors()


#: Test-only: a screen wake lock that notes what the page asked for and let go of.
FAKE_WAKE_LOCK = """
(() => {
  window.__wakeLocks = [];
  const wakeLock = {
    async request(type) {
      const sentinel = {type, released: false, async release() { sentinel.released = true; }};
      window.__wakeLocks.push(sentinel);
      return sentinel;
    },
  };
  Object.defineProperty(Navigator.prototype, "wakeLock", {get: () => wakeLock});
})();
"""


async def listeners(cdp: CDPSession, expression: str) -> dict[str, int]:
    """How many listeners of each event type the object ``expression`` has (DevTools)."""
    found = await cdp.send("Runtime.evaluate", {"expression": expression})
    answer = await cdp.send(
        "DOMDebugger.getEventListeners", {"objectId": found["result"]["objectId"]}
    )
    counts: dict[str, int] = {}
    for listener in answer["listeners"]:
        counts[listener["type"]] = counts.get(listener["type"], 0) + 1
    return counts


async def test_a_call_started_again_keeps_nothing_of_the_one_before(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    await gateway.verified_client(seeded)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    # Ending the session fails: the host's call stops, and a new one starts.
    tap = SocketTap("/host")
    tap.fake(
        "end",
        {"ok": False, "error": {"code": "store_unavailable", "message": "Please try again."}},
    )
    await tap.attach(console)
    await console.add_init_script(FAKE_WAKE_LOCK)
    await console.reload()
    await expect(console.locator("#room-state")).to_contain_text("Open")
    cdp = await console.context.new_cdp_session(console)
    remote = "document.getElementById('call-remote')"
    before = await listeners(cdp, "document")

    await console.get_by_role("button", name=f"Admit {CLIENT_NAME}").click()
    await expect(console.locator("#host-call")).to_be_visible()

    async def peers(count: int) -> bool:
        made: int = await console.evaluate("window.__peers.length")
        return made == count

    await eventually(lambda: peers(1), what="the first call's peer connection")
    during = await listeners(cdp, "document")
    on_remote = await listeners(cdp, remote)
    assert during.get("visibilitychange", 0) == before.get("visibilitychange", 0) + 1
    assert await console.evaluate("window.__wakeLocks.map(s => s.released)") == [False]

    await console.locator("#call-leave").click()
    await console.locator("#confirm-dialog").get_by_role("button", name="End the session").click()
    await expect(console.locator("#notices")).to_contain_text("Please try again.")
    await eventually(lambda: peers(2), what="the second call's peer connection")
    assert tap.calls_of("end") == [None]

    # One call's worth of listeners, and one wake lock held: the first call's are gone.
    assert await listeners(cdp, "document") == during
    assert await listeners(cdp, remote) == on_remote
    assert await console.evaluate("window.__wakeLocks.map(s => s.released)") == [True, False]
    assert await console.evaluate("window.__peers[0].connectionState") == "closed"

    # Ending for real (the store is back) releases the second call's too.
    del tap.fakes["end"]
    await console.get_by_role("button", name="End the session").click()
    await console.locator("#confirm-dialog").get_by_role("button", name="End the session").click()
    await expect(console.locator("#console-ended")).to_be_visible()
    assert await console.evaluate("window.__wakeLocks.map(s => s.released)") == [True, True]
    ended = await listeners(cdp, "document")
    assert ended.get("visibilitychange", 0) == before.get("visibilitychange", 0)
    host.assert_no_errors()
