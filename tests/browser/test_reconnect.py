"""The network drops and comes back: the client sees a calm "reconnecting" state, keeps
its place in the waiting room and in the call, on the same cookie."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from gateway.domain.model import ParticipantState, RoomPolicy
from tests.browser.kit import call_bounded, client_to_waiting, new_tab
from tests.gateway_harness import RunningGateway, eventually

pytestmark = [pytest.mark.integration, call_bounded]


class Network:
    """The page's WebSocket connections, cut and restored at will."""

    def __init__(self) -> None:
        self.up = True
        self.open: list[WebSocketRoute] = []

    async def attach(self, page: Page) -> None:
        await page.route_web_socket("**/socket.io/**", self._route)

    async def _route(self, ws: WebSocketRoute) -> None:
        if not self.up:
            await ws.close(code=1006, reason="offline")
            return
        ws.connect_to_server()
        self.open.append(ws)

    async def cut(self) -> None:
        self.up = False
        routes, self.open = self.open, []
        for ws in routes:
            await ws.close(code=1006, reason="offline")

    def restore(self) -> None:
        self.up = True


async def test_a_dropped_connection_shows_reconnecting_and_keeps_the_place(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed(policy=RoomPolicy(client_totp_required=False))
    tab = await new_tab(chromium)
    page = tab.page
    network = Network()
    await network.attach(page)
    await client_to_waiting(tab, gateway, seeded.client_path, seeded.client, identity=False)

    await network.cut()
    banner = page.locator("#connection-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Reconnecting")
    await expect(page.locator("#screen-waiting")).to_be_visible()
    network.restore()
    await expect(banner).to_be_hidden(timeout=10_000)
    await expect(page.locator("#screen-waiting")).to_be_visible()
    participant = await gateway.services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.WAITING

    # In the call: the stage says so, and the call screen stays.
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
    await expect(page.locator("#screen-call")).to_be_visible()
    await network.cut()
    await expect(page.locator("#call-status")).to_contain_text("Reconnecting")
    network.restore()
    # Back: the media connects (again, if it must); the host has no camera here.
    await expect(page.locator("#call-status-text")).to_have_text(
        "Connected. Waiting for your therapist's video…", timeout=30_000
    )
    await expect(page.locator("#screen-call")).to_be_visible()

    async def in_session() -> bool:
        participant = await gateway.services.store.get_participant(seeded.client.id)
        return participant is not None and participant.state is ParticipantState.IN_SESSION

    await eventually(in_session, timeout=30, what="client in session")
    tab.assert_no_errors(allowed=("WebSocket",))
