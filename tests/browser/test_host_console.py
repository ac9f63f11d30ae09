"""The host's console in Chromium: knocks heard (chime, notification, title), lock and
unlock, admit everyone, a locked-out client, the waiting-time wording."""

from __future__ import annotations

import pyotp
import pytest
from playwright.async_api import Browser, expect

from tests.browser.kit import bounded, host_console, new_tab, open_link, totp_now
from tests.factories import CLIENT_NAME
from tests.gateway_harness import RunningGateway

pytestmark = [pytest.mark.integration, bounded]

SECOND_CLIENT = "Yusuf Second-Client"

#: Count chimes and notifications; let the test say when the console is in the background.
SPY = """
window.spy = {tones: 0, notes: []};
const realOscillator = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () {
  window.spy.tones += 1;
  return realOscillator.call(this);
};
window.Notification = class {
  static permission = "default";
  static async requestPermission() { this.permission = "granted"; return "granted"; }
  constructor(title, options) { window.spy.notes.push({title, body: options.body}); }
  close() {}
};
Object.defineProperty(document, "visibilityState", {get: () => window.spyVisibility || "visible"});
"""


async def test_knocks_are_heard_and_the_room_can_be_locked_and_emptied(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    await console.add_init_script(SPY)
    await console.reload()
    await expect(console.locator("#room-state")).to_contain_text("Open")

    # Alerts on: a test chime at once; then a knock in the background chimes and notifies.
    await console.get_by_role("button", name="Turn on sound and alerts").click()
    await expect(console.locator("#alerts")).to_have_text("Turn off sound and alerts")
    assert await console.evaluate("window.spy.tones") == 2
    await console.evaluate("window.spyVisibility = 'hidden'")
    await gateway.verified_client(seeded)
    await expect(console.locator("#waiting-list .row", has_text=CLIENT_NAME)).to_be_visible()
    assert await console.evaluate("window.spy.tones") == 4
    notes = await console.evaluate("window.spy.notes")
    assert notes == [
        {"title": "Someone is waiting", "body": "A client is in your Quietroom waiting room."}
    ]
    assert (await console.title()).startswith("(1) ")
    await expect(console.locator("#announcer")).to_contain_text(f"{CLIENT_NAME} is waiting.")

    # Locked: a new client is held at the door, and comes in by itself once unlocked.
    await console.get_by_role("button", name="Lock the room").click()
    await expect(console.locator("#room-state")).to_contain_text("Locked")
    invite = await gateway.invite_client(seeded, SECOND_CLIENT)
    other = await new_tab(chromium)
    page = other.page
    await open_link(page, gateway, invite.path)
    await page.click("#check-start")
    await page.click("#check-continue")
    await expect(page.locator("#enrol")).to_be_visible()
    await page.fill("#code-input", await totp_now(gateway, invite.participant.id))
    await page.click("#code-submit")
    await expect(page.locator("#screen-locked")).to_be_visible()
    await expect(page.locator("#locked-title")).to_have_text("Please wait a moment")
    await console.reload()  # a fresh console shows the lock too
    await expect(console.get_by_role("button", name="Unlock the room")).to_be_visible()
    await console.get_by_role("button", name="Unlock the room").click()
    await expect(page.locator("#screen-waiting")).to_be_visible()
    await expect(console.locator("#waiting-list .row")).to_have_count(2)

    await console.get_by_role("button", name="Admit everyone waiting").click()
    await expect(console.locator("#session-list .row")).to_have_count(2)
    await expect(console.locator("#waiting-empty")).to_be_visible()
    await expect(page.locator("#screen-call")).to_be_visible()
    assert not (await console.title()).startswith("(")
    other.assert_no_errors()
    host.assert_no_errors()


async def test_the_host_is_told_when_a_client_is_locked_out(
    gateway: RunningGateway, chromium: Browser
) -> None:
    seeded = await gateway.seed()
    host = await host_console(chromium, gateway, seeded)
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    sock = await client.socket("/client")
    assert (await sock.call("identity.enrol"))["ok"]
    secret = await gateway.services.store.get_totp_secret(seeded.client.id)
    assert secret is not None
    totp = pyotp.TOTP(secret)
    wrong = (f"{n:06d}" for n in range(1_000_000) if not totp.verify(f"{n:06d}", valid_window=2))
    for _ in range(gateway.settings.totp_max_failures):
        assert not (await sock.call("identity.verify", {"code": next(wrong)}))["ok"]
    notice = host.page.locator("#notices [role=alert]")
    await expect(notice).to_contain_text(f"{CLIENT_NAME} typed too many wrong codes")
    await notice.get_by_role("button", name="Dismiss").click()
    await expect(notice).to_have_count(0)
    host.assert_no_errors()


async def test_waiting_times_read_plainly(gateway: RunningGateway, chromium: Browser) -> None:
    tab = await new_tab(chromium)
    seeded = await gateway.seed()
    await open_link(tab.page, gateway, seeded.client_path)
    ui = await tab.page.evaluate(
        """async () => {
            const src = document.querySelector("script[type=module]").src;
            const ui = await import(new URL("lib/ui.js", src).href);
            return [0, 59, 60, 59 * 60, 3600, 3900].map((s) => ui.waitedFor(0, s));
        }"""
    )
    assert ui == ["just now", "just now", "1 min", "59 min", "1 h", "1 h 5 min"]
