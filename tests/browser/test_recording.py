"""Recording in the browser: refused until everyone has agreed (the host is told who has
not, by name), the consent question on both sides, the indicator everyone sees, and a
withdrawal from the call screen that stops the recording on both pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from gateway.domain.model import RoomPolicy
from gateway.domain.recording import RECORDING_CONSENT, StopReason
from gateway.settings import new_recording_key
from tests.browser.kit import (
    LOOPBACK_MEDIA,
    call_bounded,
    client_to_waiting,
    host_console,
    new_tab,
    video_frames_decoded,
)
from tests.factories import CLIENT_NAME
from tests.gateway_harness import RunningGateway, eventually, running_gateway

pytestmark = [pytest.mark.integration, call_bounded]

MEDIA_TIMEOUT_MS = 45_000


@pytest.fixture
async def recording_gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """A gateway that can record (a recording key, a folder for sealed files)."""
    async with running_gateway(
        host_away_grace=0,
        recording_keys=[new_recording_key()],
        recording_dir=str(tmp_path / "recordings"),
        **LOOPBACK_MEDIA,
    ) as running:
        yield running


async def test_recording_needs_everyone_and_stops_when_consent_is_withdrawn(
    recording_gateway: RunningGateway, chromium: Browser
) -> None:
    gateway = recording_gateway
    seeded = await gateway.seed(policy=RoomPolicy(recording_allowed=True))
    store = gateway.services.store
    client = await new_tab(chromium)
    page = client.page
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    await (
        console.locator("#waiting-list .row", has_text=CLIENT_NAME)
        .get_by_role("button", name=f"Admit {CLIENT_NAME}")
        .click()
    )

    async def both_decoding() -> bool:
        return await video_frames_decoded(page) > 0 and await video_frames_decoded(console) > 0

    await eventually(both_decoding, timeout=MEDIA_TIMEOUT_MS / 1000, what="video both ways")
    session_row = console.locator("#session-list .row", has_text=CLIENT_NAME)
    await expect(session_row.locator(".consent-badge")).to_have_text("Not agreed to recording")

    # Refused: nobody has agreed yet; the host learns who, by name (and that it is them too).
    record = console.locator("#record")
    await expect(record).to_have_text("Start recording")
    await record.click()
    problem = console.locator("#record-problem")
    await expect(problem).to_contain_text(f"{CLIENT_NAME} and you haven't agreed to recording")
    assert await store.active_recording(seeded.appointment.id) is None

    # Asked: the question reaches the client's call screen and the host's console.
    await console.get_by_role("button", name="Ask for consent").click()
    for side in (page, console):
        dialog = side.locator("#recording-dialog")
        await expect(dialog).to_be_visible()
        await expect(dialog).to_contain_text("Your therapist would like to record this session.")
        await expect(side.locator("#recording-dialog-version")).to_have_text(
            RECORDING_CONSENT.version
        )
        # The question has the focus, not "I agree".
        await expect(side.locator("#recording-dialog-title")).to_be_focused()
    await expect(console.locator("#record-note")).to_contain_text(f"Asked {CLIENT_NAME}")
    await (
        console.locator("#recording-dialog")
        .get_by_role("button", name="I agree to recording")
        .click()
    )
    # Still one missing: the client, named alone now.
    await record.click()
    await expect(problem).to_contain_text(f"{CLIENT_NAME} hasn't agreed to recording yet.")
    await (
        page.locator("#recording-dialog").get_by_role("button", name="I agree to recording").click()
    )
    await expect(page.locator("#call-consent-text")).to_have_text("You agreed to recording.")
    await expect(session_row.locator(".consent-badge")).to_have_text("Agreed to recording")

    # Everyone agreed: recording, and both pages show it.
    await record.click()
    await expect(record).to_have_text("Stop recording")
    await expect(problem).to_be_empty()
    for side in (page, console):
        await expect(side.locator("#call-recording")).to_be_visible()
    await expect(page.locator("#announcer")).to_contain_text("This session is now being recorded.")
    active = await store.active_recording(seeded.appointment.id)
    assert active is not None

    # The client withdraws from the call screen: the recording stops, both pages say so.
    await page.get_by_role("button", name="Withdraw consent").click()
    await expect(page.locator("#call-consent-text")).to_have_text(
        "You haven't agreed to recording."
    )
    for side in (page, console):
        await expect(side.locator("#call-recording")).to_be_hidden()
    await expect(record).to_have_text("Start recording")
    await expect(session_row.locator(".consent-badge")).to_have_text("Not agreed to recording")
    assert await store.active_recording(seeded.appointment.id) is None
    recordings = await store.list_recordings(seeded.appointment.id)
    assert [r.id for r in recordings] == [active.id]

    # What was recorded is sealed on disk, and the record says why it stopped.
    async def sealed() -> bool:
        stored = await store.get_recording(active.id)
        return stored is not None and stored.sealed is not None

    await eventually(sealed, what="recording sealed")
    stopped = await store.get_recording(active.id)
    assert stopped is not None
    assert stopped.sealed is not None
    assert stopped.stop_reason is StopReason.CONSENT_WITHDRAWN
    sealed_file = Path(gateway.settings.recording_dir) / stopped.sealed.file_name
    assert sealed_file.stat().st_size > 0
    # The person can change their mind: the question can be opened again.
    await page.get_by_role("button", name="Agree to recording").click()
    await expect(page.locator("#recording-dialog")).to_be_visible()
    await page.locator("#recording-dialog").get_by_role("button", name="Don't record me").click()
    await expect(page.locator("#recording-dialog")).to_be_hidden()
    client.assert_no_errors()
    host.assert_no_errors()
