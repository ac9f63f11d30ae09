"""Recording consent and control over the real sockets, on both stores (no media here:
tests/media_plane/test_recording.py records a real call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.domain.model import RoomPolicy
from gateway.domain.recording import RECORDING_CONSENT, StopReason
from gateway.settings import new_recording_key
from gateway.storage import Store
from tests.gateway_harness import RunningGateway, SocketClient, running_gateway

VERSION = RECORDING_CONSENT.version


@pytest.fixture
async def gateway(any_store: Store, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        any_store,
        reconnect_grace=1,
        host_away_grace=0,
        recording_keys=[new_recording_key()],
        recording_dir=str(tmp_path / "recordings"),
    ) as running:
        yield running


async def admitted(
    gateway: RunningGateway, policy: RoomPolicy | None = None
) -> tuple[str, str, SocketClient, SocketClient]:
    seeded = await gateway.seed(policy=policy or RoomPolicy(recording_allowed=True))
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    _, client = await gateway.verified_client(seeded)
    assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
    await client.wait_for("state", lambda s: s == {"state": "admitted"})
    return seeded.host.id, seeded.client.id, console, client


async def test_ask_consent_start_and_a_withdrawal_that_stops(gateway: RunningGateway) -> None:
    host_id, client_id, console, client = await admitted(gateway)
    queue = await console.call("queue")
    assert queue["recording"] == {
        "active": False,
        "allowed": True,
        "consent_given": False,
        "version": VERSION,
    }
    assert queue["participants"][0]["recording_consent"] is False
    status = await client.call("status")
    assert status["recording"] == {"active": False, "consent_given": False, "version": VERSION}

    asked = await console.call("recording.ask")
    assert asked == {"ok": True, "lacking": [host_id, client_id]}
    question = {"version": VERSION, "text": RECORDING_CONSENT.text}
    assert await client.wait_for("recording.asked") == question
    assert await console.wait_for("recording.asked") == question

    refused = await console.call("recording.start")
    assert refused["ok"] is False
    assert refused["error"]["code"] == "consent_missing"
    assert refused["error"]["lacking"] == [host_id, client_id]

    assert await client.call("consent.recording", {"version": VERSION, "given": True}) == {
        "ok": True,
        "given": True,
        "version": VERSION,
    }
    row = await console.wait_for("participant", lambda r: r["recording_consent"] is True)
    assert row["participant_id"] == client_id
    refused = await console.call("recording.start")
    assert refused["error"]["lacking"] == [host_id]  # the host's own consent is needed too
    assert (await console.call("consent.recording", {"version": VERSION, "given": True}))["given"]

    started = await console.call("recording.start")
    assert started["ok"], started
    recording_id = started["recording_id"]
    assert await client.wait_for("recording") == {"active": True}
    assert await console.wait_for("recording") == {"active": True}
    assert (await client.call("status"))["recording"]["active"] is True
    assert (await console.call("queue"))["recording"] == {
        "active": True,
        "allowed": True,
        "consent_given": True,
        "version": VERSION,
    }

    withdrawn = await client.call("consent.recording", {"version": VERSION, "given": False})
    assert withdrawn == {"ok": True, "given": False, "version": VERSION}
    assert await client.wait_for("recording", lambda r: r == {"active": False}) == {"active": False}
    await console.wait_for("recording", lambda r: r == {"active": False})
    record = await gateway.services.store.get_recording(recording_id)
    assert record is not None
    assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
    status = await client.call("status")
    assert status["recording"] == {"active": False, "consent_given": False, "version": VERSION}


async def test_a_console_opened_afresh_knows_the_hosts_consent_and_can_withdraw_it(
    gateway: RunningGateway,
) -> None:
    seeded = await gateway.seed(policy=RoomPolicy(recording_allowed=True))
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    _, client = await gateway.verified_client(seeded)
    assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
    for sock in (console, client):
        assert (await sock.call("consent.recording", {"version": VERSION, "given": True}))["ok"]
    started = await console.call("recording.start")
    assert started["ok"], started
    await console.close()  # the host reloads the console: same browser session

    console = await host.socket("/host")
    recording = (await console.call("queue"))["recording"]
    assert recording == {
        "active": True,
        "allowed": True,
        "consent_given": True,
        "version": VERSION,
    }
    withdrawn = await console.call("consent.recording", {"version": VERSION, "given": False})
    assert withdrawn == {"ok": True, "given": False, "version": VERSION}
    assert await client.wait_for("recording", lambda r: r == {"active": False}) == {"active": False}
    record = await gateway.services.store.get_recording(started["recording_id"])
    assert record is not None
    assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
    assert (await console.call("queue"))["recording"]["consent_given"] is False


async def test_the_host_stops_and_a_waiting_client_hears_nothing(gateway: RunningGateway) -> None:
    seeded = await gateway.seed(policy=RoomPolicy(recording_allowed=True))
    host = await gateway.signed_in_host(seeded)
    console = await host.socket("/host")
    _, client = await gateway.verified_client(seeded)
    second = await gateway.invite_client(seeded, "Second Person")
    _, waiting = await gateway.verified_client(seeded, second)
    assert (await console.call("admit", {"participant_id": seeded.client.id}))["ok"]
    for sock in (console, client):
        assert (await sock.call("consent.recording", {"version": VERSION, "given": True}))["ok"]
    # A waiting client may agree ahead (and is then no reason to stop).
    assert (await waiting.call("consent.recording", {"version": VERSION, "given": True}))["ok"]

    started = await console.call("recording.start")
    assert started["ok"], started
    await client.wait_for("recording", lambda r: r == {"active": True})
    assert (await console.call("recording.stop")) == {"ok": True}
    await client.wait_for("recording", lambda r: r == {"active": False})
    assert (await console.call("recording.stop")) == {"ok": True}  # twice is fine

    assert waiting.events("recording") == []
    assert (await waiting.call("status"))["recording"]["active"] is False
    record = await gateway.services.store.get_recording(started["recording_id"])
    assert record is not None
    assert record.stop_reason is StopReason.HOST


async def test_a_room_without_recording_refuses_and_payloads_are_checked(
    gateway: RunningGateway,
) -> None:
    _, _, console, client = await admitted(gateway, RoomPolicy())
    assert (await console.call("queue"))["recording"] == {
        "active": False,
        "allowed": False,
        "consent_given": False,
        "version": VERSION,
    }
    refused = await console.call("recording.start")
    assert refused["error"]["code"] == "not_allowed"
    for payload in (
        {"version": VERSION},
        {"version": VERSION, "given": "yes"},
        {"version": 1, "given": True},
        {"version": "x" * 65, "given": True},
        {"version": VERSION, "given": True, "participant_id": "ptc_x"},
    ):
        answer = await client.call("consent.recording", payload)
        assert answer["error"]["code"] == "invalid_input", payload
    await asyncio.sleep(1.5)  # under the per-connection rate limit
    stale = await client.call("consent.recording", {"version": "recording-1999", "given": True})
    assert stale["error"]["code"] == "not_allowed"
    for event in ("recording.start", "recording.stop", "recording.ask"):
        assert (await client.call(event))["error"]["code"] == "invalid_input"
