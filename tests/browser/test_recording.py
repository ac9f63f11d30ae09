"""Recording in the browser: refused until everyone has agreed (the host is told who has
not, by name), the consent question on both sides, the indicator everyone sees, and a
withdrawal from the call screen that stops the recording on both pages. Then what the
pages do when answers are lost, slow, or come after the gateway changed its mind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from gateway.domain.consent import ConsentKind
from gateway.domain.model import RoomPolicy
from gateway.domain.recording import RECORDING_CONSENT, StopReason
from gateway.settings import new_recording_key
from tests.browser.kit import (
    LOOPBACK_MEDIA,
    SocketTap,
    Tab,
    call_bounded,
    client_to_waiting,
    host_console,
    new_tab,
    video_frames_decoded,
)
from tests.factories import CLIENT_NAME, Seeded
from tests.gateway_harness import RunningGateway, SocketClient, eventually, running_gateway

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


# --- answers lost, slow, or overtaken ----------------------------------------------------

#: How long the page waits for an answer before saying it got none (lib/signal.js).
ANSWER_TIMEOUT_MS = 10_000


async def asked_client_in_call(
    gateway: RunningGateway, chromium: Browser, tap: SocketTap
) -> tuple[Seeded, Tab, SocketClient]:
    """A client page (its socket behind ``tap``) admitted to the call by a host socket,
    which asks for consent: the client sees the question."""
    seeded = await gateway.seed(
        policy=RoomPolicy(recording_allowed=True, client_totp_required=False)
    )
    client = await new_tab(chromium)
    await tap.attach(client.page)
    await client_to_waiting(client, gateway, seeded.client_path, seeded.client, identity=False)
    host = await (await gateway.signed_in_host(seeded)).socket("/host")
    assert (await host.call("admit", {"participant_id": seeded.client.id}))["ok"]
    await expect(client.page.locator("#screen-call")).to_be_visible()
    assert (await host.call("recording.ask"))["ok"]
    await expect(client.page.locator("#recording-dialog")).to_be_visible()
    return seeded, client, host


async def choose(page: Page, button: str) -> None:
    """Answer the consent question with ``button``."""
    await page.locator("#recording-dialog").get_by_role("button", name=button).click()
    await expect(page.locator("#recording-dialog")).to_be_hidden()


async def reopen_and_choose(page: Page, button: str) -> None:
    """Open the question again from the call screen's consent bar and answer it."""
    await page.get_by_role("button", name="Agree to recording").click()
    await expect(page.locator("#recording-dialog")).to_be_visible()
    await choose(page, button)


async def consent_on_record(gateway: RunningGateway, seeded: Seeded) -> bool:
    """Whether the gateway holds a live recording consent of the client."""
    consenting = await gateway.services.recordings.consenting(seeded.appointment.id)
    return seeded.client.id in consenting


async def test_declining_after_a_lost_answer_withdraws_the_consent_the_gateway_holds(
    recording_gateway: RunningGateway, chromium: Browser
) -> None:
    gateway = recording_gateway
    tap = SocketTap("/client")
    tap.dropping.add("consent.recording")
    seeded, client, _ = await asked_client_in_call(gateway, chromium, tap)
    page = client.page

    # The agreement reaches the gateway; its answer is lost. The page cannot know.
    await choose(page, "I agree to recording")

    async def on_record() -> bool:
        return await consent_on_record(gateway, seeded)

    await eventually(on_record, what="consent on record")
    bar = page.locator("#call-consent-text")
    await expect(bar).to_contain_text("We didn't get an answer", timeout=ANSWER_TIMEOUT_MS + 5000)

    # The person declines from the bar: the gateway is told, and holds no consent.
    tap.dropping.clear()
    await reopen_and_choose(page, "Don't record me")
    await expect(bar).to_have_text("You haven't agreed to recording.")

    async def withdrawn() -> bool:
        return not await consent_on_record(gateway, seeded)

    await eventually(withdrawn, what="consent withdrawn")
    assert [c["given"] for c in tap.calls_of("consent.recording")] == [True, False]
    client.assert_no_errors()


async def test_a_choice_made_while_another_is_on_its_way_follows_it(
    recording_gateway: RunningGateway, chromium: Browser
) -> None:
    gateway = recording_gateway
    tap = SocketTap("/client")
    seeded, client, _ = await asked_client_in_call(gateway, chromium, tap)
    page = client.page
    bar = page.locator("#call-consent-text")
    calls = tap.calls_of

    def sent(count: int) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return len(calls("consent.recording")) >= count

        return probe

    # Agreed, the answer slow; meanwhile the person declines. The "no" goes once the
    # "yes" is answered, and the page ends where the gateway does.
    tap.holding.add("consent.recording")
    await choose(page, "I agree to recording")
    await expect(bar).to_have_text("You haven't agreed to recording.")
    await reopen_and_choose(page, "Don't record me")
    assert [c["given"] for c in calls("consent.recording")] == [True]
    tap.holding.clear()
    tap.release()
    await eventually(sent(2), what="the withdrawal sent")
    await expect(bar).to_have_text("You haven't agreed to recording.")

    async def withdrawn() -> bool:
        return not await consent_on_record(gateway, seeded)

    await eventually(withdrawn, what="consent withdrawn")

    # Agreed (slow), declined, agreed again: the newest choice wins, but the withdrawal
    # in between is still sent (it would have stopped a recording).
    tap.holding.add("consent.recording")
    await page.get_by_role("button", name="Agree to recording").click()
    await choose(page, "I agree to recording")
    await reopen_and_choose(page, "Don't record me")
    await reopen_and_choose(page, "I agree to recording")
    tap.holding.clear()
    tap.release()
    await eventually(sent(5), what="both choices sent")
    await expect(bar).to_have_text("You agreed to recording.")
    assert [c["given"] for c in calls("consent.recording")] == [True, False, True, False, True]
    assert await consent_on_record(gateway, seeded)
    records = await gateway.services.store.list_consents(seeded.appointment.id)
    mine = [r for r in records if r.kind is ConsentKind.RECORDING]
    assert [r.live for r in mine if r.participant_id == seeded.client.id] == [False, False, True]
    client.assert_no_errors()


async def test_the_console_shows_a_recording_only_when_the_gateway_says_one_runs(
    recording_gateway: RunningGateway, chromium: Browser
) -> None:
    gateway = recording_gateway
    seeded = await gateway.seed(policy=RoomPolicy(recording_allowed=True))
    await gateway.verified_client(seeded)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    tap = SocketTap("/host")
    await tap.attach(console)
    await console.reload()
    await (
        console.locator("#waiting-list .row", has_text=CLIENT_NAME)
        .get_by_role("button", name=f"Admit {CLIENT_NAME}")
        .click()
    )
    record = console.locator("#record")
    await expect(record).to_be_enabled()

    # The gateway started a recording and stopped it at once (someone's consent changed
    # meanwhile); its answer to the start comes after that: the console shows none. (The
    # `room` event after the answer shows when the page has dealt with the answer.)
    tap.fake(
        "recording.start",
        {"ok": True, "recording_id": "r1"},
        before=[("recording", {"active": True}), ("recording", {"active": False})],
        after=[("room", {"locked": True})],
    )
    await record.click()
    await expect(console.locator("#lock")).to_have_text("Unlock the room")
    await expect(record).to_have_text("Start recording")
    await expect(console.locator("#call-recording")).to_be_hidden()
    await expect(console.locator("#record-note")).not_to_contain_text("Recording now")
    await expect(console.locator("#record-problem")).to_be_empty()

    # A recording shows when the gateway says it runs, and stops showing when it says it
    # stopped, whenever that comes.
    tap.fake(
        "recording.start",
        {"ok": True, "recording_id": "r2"},
        after=[("recording", {"active": True})],
    )
    await record.click()
    await expect(record).to_have_text("Stop recording")
    await expect(console.locator("#call-recording")).to_be_visible()
    tap.fake("recording.stop", {"ok": True}, before=[("recording", {"active": False})])
    await record.click()
    await expect(record).to_have_text("Start recording")
    await expect(console.locator("#call-recording")).to_be_hidden()
    assert [name for name, _ in tap.calls if name.startswith("recording.")] == [
        "recording.start",
        "recording.start",
        "recording.stop",
    ]
    host.assert_no_errors()


async def test_a_host_can_withdraw_their_consent_after_reloading_the_console(
    recording_gateway: RunningGateway, chromium: Browser
) -> None:
    gateway = recording_gateway
    seeded = await gateway.seed(policy=RoomPolicy(recording_allowed=True))
    await gateway.verified_client(seeded)
    host = await host_console(chromium, gateway, seeded)
    console = host.page
    await (
        console.locator("#waiting-list .row", has_text=CLIENT_NAME)
        .get_by_role("button", name=f"Admit {CLIENT_NAME}")
        .click()
    )
    await console.get_by_role("button", name="Ask for consent").click()
    await (
        console.locator("#recording-dialog")
        .get_by_role("button", name="I agree to recording")
        .click()
    )
    mine = console.locator("#record-consent")
    await expect(mine).to_have_text("Withdraw my consent")

    # After a reload the page no longer has the question, only what the gateway holds.
    await console.reload()
    await expect(mine).to_be_visible()
    await expect(mine).to_have_text("Withdraw my consent")
    await mine.click()
    await expect(mine).to_be_hidden()  # nothing to agree to until asked again

    async def withdrawn() -> bool:
        held = await gateway.services.recordings.consent_of(seeded.host.id, seeded.appointment.id)
        return not held.given

    await eventually(withdrawn, what="the host's consent withdrawn")
    host.assert_no_errors()
