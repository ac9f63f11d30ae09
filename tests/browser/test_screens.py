"""Every screen of the client's way in, and of the host's console, on a phone (360 px)
and on a laptop: a screenshot of each in artifacts/screenshots/ for people to look at,
and the walk itself checks what each screen says."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from gateway.domain.model import RoomPolicy
from gateway.settings import new_recording_key
from tests.browser.kit import (
    LOOPBACK_MEDIA,
    PHONE,
    SCREENSHOTS,
    WIDE,
    call_bounded,
    new_tab,
    open_link,
    press_link_button,
    totp_now,
    video_frames_decoded,
)
from tests.factories import CLIENT_NAME
from tests.gateway_harness import RunningGateway, running_gateway

pytestmark = [pytest.mark.integration, call_bounded]

CONSENT_VERSION = "2025-03"
SECOND_CLIENT = "Yusuf Second-Client"

#: getUserMedia refused, as when someone taps "Block".
DENY_DEVICES = """
Object.defineProperty(navigator.mediaDevices, "getUserMedia", {
  value: () => Promise.reject(new DOMException("Permission denied", "NotAllowedError")),
});
"""


class Album:
    """Numbered screenshots of one viewport."""

    def __init__(self, name: str) -> None:
        self.folder = SCREENSHOTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    async def shoot(self, page: Page, what: str) -> None:
        self.count += 1
        # Fade-ins finished at once, so the picture is what a person sees after a moment.
        await page.screenshot(
            path=self.folder / f"{self.count:02d}-{what}.png", full_page=True, animations="disabled"
        )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """The browser tests' gateway, able to record (so the consent screens show)."""
    async with running_gateway(
        host_away_grace=0,
        recording_keys=[new_recording_key()],
        recording_dir=str(tmp_path / "recordings"),
        **LOOPBACK_MEDIA,
    ) as running:
        yield running


@pytest.mark.parametrize("viewport", [PHONE, WIDE], ids=["360x740", "1280x800"])
async def test_every_screen(
    gateway: RunningGateway, chromium: Browser, viewport: dict[str, int]
) -> None:
    album = Album(f"{viewport['width']}x{viewport['height']}")
    seeded = await gateway.seed(
        policy=RoomPolicy(telehealth_consent_version=CONSENT_VERSION, recording_allowed=True)
    )
    second = await gateway.invite_client(seeded, SECOND_CLIENT)
    client = await new_tab(chromium, viewport=viewport)
    page = client.page

    # The link's page, welcome and device check.
    await page.goto(gateway.url + seeded.client_path)
    await album.shoot(page, "client-link")
    await press_link_button(page, gateway, seeded.client_path)
    await expect(page.locator("#screen-welcome")).to_be_visible()
    await album.shoot(page, "client-welcome")
    await page.click("#check-start")
    await expect(page.locator("#check-continue")).to_be_visible()
    await expect(page.locator("#check-video")).to_have_js_property("readyState", 4)
    # The fake microphone beeps: the level meter hears it.
    await expect(page.locator("#check-mic-status")).to_have_text("We can hear you.")
    await album.shoot(page, "client-device-check")

    # Sign-in code: set-up, a wrong code, the right one.
    await page.click("#check-continue")
    await expect(page.locator("#enrol")).to_be_visible()
    await expect(page.locator("#enrol-qr svg")).to_be_visible()
    key = await page.locator("#enrol-key").text_content()
    assert key is not None
    assert len(key.replace(" ", "")) == 32
    assert (await page.get_attribute("#enrol-open", "href") or "").startswith("otpauth://totp/")
    await album.shoot(page, "client-enrol")
    right = await totp_now(gateway, seeded.client.id)
    await page.fill("#code-input", "000000" if right != "000000" else "111111")
    await page.click("#code-submit")
    await expect(page.locator("#code-error")).not_to_be_empty()
    await album.shoot(page, "client-code-error")
    await page.fill("#code-input", await totp_now(gateway, seeded.client.id))
    await page.click("#code-submit")

    # Consent to telehealth.
    await expect(page.locator("#screen-consent")).to_be_visible()
    await expect(page.locator("#consent-version")).to_have_text(CONSENT_VERSION)
    await page.click("#consent-decline")
    await expect(page.locator("#consent-declined")).to_be_visible()
    await album.shoot(page, "client-consent-declined")
    await page.click("#consent-accept")

    # The waiting room, host away, then a message from the host.
    await expect(page.locator("#screen-waiting")).to_be_visible()
    await expect(page.locator("#waiting-host-away")).to_be_visible()
    await album.shoot(page, "client-waiting-host-away")

    host = await new_tab(chromium, viewport=viewport)
    console = host.page
    await console.goto(gateway.url + seeded.host_path)
    await album.shoot(console, "host-link")
    await press_link_button(console, gateway, seeded.host_path)
    await expect(console.get_by_role("button", name="Show my set-up code")).to_be_visible()
    await album.shoot(console, "host-enrol-offer")
    await console.get_by_role("button", name="Show my set-up code").click()
    await album.shoot(console, "host-enrol")
    await console.fill("#code", "12")
    await console.get_by_role("button", name="Sign in").click()
    await expect(console.get_by_role("alert")).to_have_text("Type the 6 digits your app shows.")
    await album.shoot(console, "host-sign-in-error")
    await console.fill("#code", await totp_now(gateway, seeded.host.id))
    await console.get_by_role("button", name="Sign in").click()
    row = console.locator("#waiting-list .row", has_text=CLIENT_NAME)
    await expect(row).to_be_visible()
    await expect(page.locator("#waiting-host-away")).to_be_hidden()
    await album.shoot(console, "host-console-one-waiting")
    await row.get_by_role("button", name=f"Message {CLIENT_NAME}").click()
    await expect(console.locator("#message-dialog")).to_be_visible()
    await console.get_by_role("button", name="Running about 5 minutes late, sorry.").click()
    await album.shoot(console, "host-message-dialog")
    await console.click("#message-send")
    await expect(console.locator("#message-dialog")).to_be_hidden()
    await expect(page.locator("#waiting-messages")).to_contain_text("Running about 5 minutes")
    await album.shoot(page, "client-waiting-with-message")

    # A second client whose browser blocks the camera, then waits and is denied.
    other = await new_tab(chromium, viewport=viewport)
    await other.page.add_init_script(DENY_DEVICES)
    await open_link(other.page, gateway, second.path)
    await other.page.click("#check-start")
    await expect(other.page.locator("#check-help")).to_be_visible()
    await expect(other.page.locator("#check-help-title")).to_have_text(
        "Your browser is blocking the camera and microphone"
    )
    await album.shoot(other.page, "client-devices-blocked")
    await other.page.click("#check-skip")
    await expect(other.page.locator("#enrol")).to_be_visible()
    await other.page.fill("#code-input", await totp_now(gateway, second.participant.id))
    await other.page.click("#code-submit")
    await other.page.click("#consent-accept")
    await expect(other.page.locator("#screen-waiting")).to_be_visible()
    await expect(console.locator("#waiting-list .row")).to_have_count(2)
    await album.shoot(console, "host-console-two-waiting")
    other_row = console.locator("#waiting-list .row", has_text=SECOND_CLIENT)
    await other_row.get_by_role("button", name=f"Deny {SECOND_CLIENT}").click()
    await expect(console.locator("#confirm-dialog")).to_be_visible()
    await album.shoot(console, "host-confirm-deny")
    await console.locator("#confirm-dialog").get_by_role("button", name="Deny").click()
    await expect(other.page.locator("#end-title")).to_have_text("You can't join this session")
    await album.shoot(other.page, "client-end-denied")

    # Admitted: the call, each side seeing the other through the gateway; then the end.
    await row.get_by_role("button", name=f"Admit {CLIENT_NAME}").click()
    await expect(page.locator("#screen-call")).to_be_visible()
    await expect(page.locator("#call-self")).to_have_js_property("readyState", 4)
    for side in (page, console):
        await expect(side.locator("#call-status")).to_be_hidden(timeout=45_000)
        await expect(side.locator("#call-remote")).to_have_js_property("readyState", 4)
        assert await video_frames_decoded(side) > 0
    await album.shoot(page, "client-call-video")
    await album.shoot(console, "host-call-video")

    # Recording: refused until everyone agrees; the question; the indicator.
    await console.click("#record")
    await expect(console.locator("#record-problem")).to_contain_text("haven't agreed")
    await console.locator("#record-box").scroll_into_view_if_needed()
    await album.shoot(console, "host-recording-refused")
    await console.get_by_role("button", name="Ask for consent").click()
    await expect(page.locator("#recording-dialog")).to_be_visible()
    await expect(console.locator("#recording-dialog")).to_be_visible()
    await album.shoot(page, "client-recording-consent")
    await album.shoot(console, "host-recording-consent")
    for side in (page, console):
        dialog = side.locator("#recording-dialog")
        await dialog.get_by_role("button", name="I agree to recording").click()
    await expect(page.locator("#call-consent-text")).to_have_text("You agreed to recording.")
    await console.click("#record")
    await expect(page.locator("#call-recording")).to_be_visible()
    await expect(console.locator("#call-recording")).to_be_visible()
    await album.shoot(page, "client-call-recording")
    await console.locator("#host-call").scroll_into_view_if_needed()
    await album.shoot(console, "host-call-recording")
    await page.click("#call-mic")
    await page.click("#call-cam")
    await expect(page.locator("#call-mic")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#call-self-off")).to_be_visible()
    await album.shoot(page, "client-call-muted-camera-off")
    await expect(console.locator("#session-list .row", has_text=CLIENT_NAME)).to_be_visible()
    await album.shoot(console, "host-console-in-session")

    await console.click("#end-session")
    await console.locator("#confirm-dialog").get_by_role("button", name="End the session").click()
    await expect(console.locator("#console-ended")).to_be_visible()
    await album.shoot(console, "host-ended")
    await expect(page.locator("#end-title")).to_have_text("The session has ended")
    await album.shoot(page, "client-end")

    client.assert_no_errors()
    other.assert_no_errors()
    host.assert_no_errors(allowed=("400 (Bad Request) (http://127.0.0.1:",))
