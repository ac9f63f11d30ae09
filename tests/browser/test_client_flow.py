"""The client's way in, in real Chromium: link, device check, sign-in code, waiting room,
admitted by the host through the console, the call screen; and the ways it can go wrong."""

from __future__ import annotations

import re

import pyotp
import pytest
from playwright.async_api import Browser, expect

from gateway.domain.model import RoomPolicy
from gateway.domain.waiting_room import ParticipantState
from tests.browser.kit import (
    SCREENSHOTS,
    bounded,
    client_to_waiting,
    host_console,
    new_tab,
    open_link,
    totp_now,
)
from tests.factories import CLIENT_NAME
from tests.gateway_harness import RunningGateway

pytestmark = [pytest.mark.integration, bounded]


async def test_a_client_waits_and_the_host_admits_them(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    client = await new_tab(chromium)
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client)
    page = client.page
    # The token is gone from the address bar; the waiting room shows nobody else.
    assert page.url == gateway.url + "/join"
    await expect(page.locator("#waiting-title")).to_have_text("You're in the waiting room")
    await expect(page.locator("#screen-waiting")).to_contain_text("Your therapist will let you in")
    await expect(page.locator("#waiting-host-away")).to_be_visible()

    host = await host_console(chromium, gateway, seeded)
    row = host.page.locator("#waiting-list .row", has_text=CLIENT_NAME)
    await expect(row).to_be_visible()
    await expect(row.locator(".badge")).to_have_text("Verified")
    await expect(row.locator(".since")).to_have_text("Just arrived")
    await expect(page.locator("#waiting-host-away")).to_be_hidden()

    await row.get_by_role("button", name=f"Admit {CLIENT_NAME}").click()
    await expect(page.locator("#screen-call")).to_be_visible()
    await expect(page.locator("#call-status-text")).to_have_text(
        re.compile("Connecting…|Connected")
    )
    await expect(page.get_by_role("button", name="Mute")).to_be_enabled()
    await expect(host.page.locator("#session-list .row", has_text=CLIENT_NAME)).to_be_visible()
    client.assert_no_errors()
    host.assert_no_errors()


async def test_a_used_link_shows_the_used_link_page(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    first = await new_tab(chromium)
    await open_link(first.page, gateway, seeded.client_path)
    await expect(first.page.locator("#screen-welcome")).to_be_visible()

    again = await new_tab(chromium)
    response = await again.page.goto(gateway.url + seeded.client_path)
    assert response is not None
    assert response.status == 410
    await expect(again.page.locator("h1")).to_have_text("This link can't be used")
    await expect(again.page.locator("main")).to_contain_text("ask your therapist")


async def test_a_link_waits_for_its_button_at_top_level(
    gateway: RunningGateway, chromium: Browser
) -> None:
    """A mail scanner that renders the link in a browser, scripts and all, uses nothing
    up: at top level the page waits for the person's press, which posts once."""
    seeded = await gateway.seed()
    tab = await new_tab(chromium)
    page = tab.page
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    # A fragment shows that the page's script ran: it puts it in the form's action.
    response = await page.goto(gateway.url + seeded.client_path + "#top")
    assert response is not None
    assert response.status == 200
    await expect(page.locator("#open-link")).to_have_attribute(
        "action", seeded.client_path + "#top"
    )
    await expect(page.locator("h1")).to_have_text("Join your session")
    await page.wait_for_timeout(1500)
    assert page.url == gateway.url + seeded.client_path + "#top"
    assert posts == []
    assert await page.context.cookies() == []
    participant = await gateway.services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.INVITED  # nothing used up

    # An impatient double press posts once.
    await page.get_by_role("button", name="Join the waiting room").dblclick()
    await page.wait_for_url(gateway.url + "/join#top")
    await expect(page.locator("#screen-welcome")).to_be_visible()
    assert posts == [gateway.url + seeded.client_path]
    assert [c["name"] for c in await page.context.cookies()] == [gateway.cookie_name]
    participant = await gateway.services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.KNOCKING
    tab.assert_no_errors()


async def test_a_link_opens_with_scripts_off_by_pressing_its_button(
    gateway: RunningGateway, chromium: Browser
) -> None:
    """Opening the link only shows its page; without scripts the person presses its
    button all the same, which posts the page's form and redeems the link."""
    seeded = await gateway.seed()
    context = await chromium.new_context(java_script_enabled=False)
    context.set_default_timeout(8000)
    page = await context.new_page()
    response = await page.goto(gateway.url + seeded.client_path)
    assert response is not None
    assert response.status == 200
    await expect(page.locator("h1")).to_have_text("Join your session")
    participant = await gateway.services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.INVITED  # nothing used up yet
    assert await context.cookies() == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "link-page-without-scripts.png", full_page=True)

    await page.get_by_role("button", name="Join the waiting room").click()
    await page.wait_for_url(gateway.url + "/join")
    # The client's page (not "Open your link"): the session is there. (That page needs
    # scripts; Chromium with scripts turned off by the test still hides its <noscript>.)
    await expect(page.locator("#loading-title")).to_have_text("Getting your waiting room ready…")
    assert [c["name"] for c in await context.cookies()] == [gateway.cookie_name]
    participant = await gateway.services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.KNOCKING
    await context.close()


async def test_a_wrong_code_shows_a_plain_error(gateway: RunningGateway, chromium: Browser) -> None:
    seeded = await gateway.seed()
    tab = await new_tab(chromium)
    page = tab.page
    await open_link(page, gateway, seeded.client_path)
    await page.click("#check-start")
    await page.click("#check-continue")
    await expect(page.locator("#enrol")).to_be_visible()
    secret = await gateway.services.store.get_totp_secret(seeded.client.id)
    assert secret is not None
    totp = pyotp.TOTP(secret)
    # A well-formed code that no nearby time step would accept.
    wrong = next(
        f"{n:06d}" for n in range(1_000_000) if not totp.verify(f"{n:06d}", valid_window=2)
    )
    await page.fill("#code-input", wrong)
    await page.click("#code-submit")
    error = page.locator("#code-error")
    await expect(error).to_have_text("That code did not work. Please check it and try again.")
    await expect(page.locator("#code-input")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#code-input")).to_be_focused()

    await page.fill("#code-input", "12")
    await page.click("#code-submit")
    await expect(error).to_have_text("Please type the 6 digits your app shows.")

    await page.fill("#code-input", await totp_now(gateway, seeded.client.id))
    await page.click("#code-submit")
    await expect(page.locator("#screen-waiting")).to_be_visible()
    tab.assert_no_errors()


async def test_a_denied_client_sees_the_end_screen(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    client = await new_tab(chromium)
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client)
    host = await host_console(chromium, gateway, seeded)
    row = host.page.locator("#waiting-list .row", has_text=CLIENT_NAME)
    await row.get_by_role("button", name=f"Deny {CLIENT_NAME}").click()
    dialog = host.page.locator("#confirm-dialog")
    await expect(dialog).to_contain_text(f"Deny {CLIENT_NAME}?")
    await dialog.get_by_role("button", name="Deny").click()

    await expect(client.page.locator("#screen-end")).to_be_visible()
    await expect(client.page.locator("#end-title")).to_have_text("You can't join this session")
    await expect(host.page.locator("#waiting-list .row")).to_have_count(0)
    # Coming back on the same device changes nothing.
    await client.page.reload()
    await expect(client.page.locator("#end-title")).to_have_text("You can't join this session")
    host.assert_no_errors()


async def test_the_way_in_works_with_the_keyboard_alone(
    gateway: RunningGateway, chromium: Browser
) -> None:
    """Every screen takes the focus to its heading and announces it; Tab and Enter do
    the rest."""
    seeded = await gateway.seed(
        policy=RoomPolicy(client_totp_required=False, telehealth_consent_version="v7")
    )
    tab = await new_tab(chromium)
    page = tab.page
    announcer = page.locator("#announcer")
    await open_link(page, gateway, seeded.client_path)
    await expect(page.locator("#welcome-title")).to_be_focused()
    await expect(announcer).to_have_text("Welcome.")
    await page.keyboard.press("Tab")
    await expect(page.locator("#check-start")).to_be_focused()
    await page.keyboard.press("Enter")
    # Once the devices work, the focus waits on "continue".
    await expect(page.locator("#check-continue")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#consent-title")).to_be_focused()
    await expect(page.locator("#consent-version")).to_have_text("v7")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="I agree")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#waiting-title")).to_be_focused()
    await expect(announcer).to_contain_text("You're in the waiting room.")
    # Leaving asks first; Escape keeps the person where they are.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Leave the waiting room")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#leave-dialog")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#leave-dialog")).to_be_hidden()
    await expect(page.locator("#screen-waiting")).to_be_visible()
    tab.assert_no_errors()


#: getUserMedia that waits for ``window.grantDevices()``, as a permission prompt does
#: until the person answers it; the streams it gave are kept in ``window.openedStreams``.
SLOW_PROMPT = """
(() => {
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  let answer;
  const answered = new Promise((resolve) => { answer = resolve; });
  window.grantDevices = () => answer();
  window.openedStreams = [];
  Object.defineProperty(navigator.mediaDevices, "getUserMedia", {
    value: async (constraints) => {
      await answered;
      const stream = await real(constraints);
      window.openedStreams.push(stream);
      return stream;
    },
  });
})();
"""


async def test_a_camera_allowed_after_the_session_ended_is_turned_off_at_once(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    client = await new_tab(chromium)
    page = client.page
    await page.add_init_script(SLOW_PROMPT)
    await open_link(page, gateway, seeded.client_path)
    await expect(page.locator("#screen-welcome")).to_be_visible()
    await page.click("#check-start")
    await expect(page.locator("#check-mic-status")).to_have_text(
        "Starting your camera and microphone…"
    )

    # The therapist ends the session while the permission prompt is still open.
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    ended = await console.call("end")
    assert ended["ok"], ended
    await expect(page.locator("#screen-end")).to_be_visible()

    await page.evaluate("window.grantDevices()")
    await page.wait_for_function(
        "() => window.openedStreams.length === 1 && "
        "window.openedStreams[0].getTracks().every((track) => track.readyState === 'ended')"
    )
    await expect(page.locator("#screen-end")).to_be_visible()
    assert await page.evaluate("document.getElementById('check-video').srcObject") is None
    await console.close()
    client.assert_no_errors()
